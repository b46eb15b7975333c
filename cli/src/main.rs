//! `husk`: a runc-compatible OCI runtime whose containers each run in
//! their own microVM (husk-vmm + husk-agent). Docker, Podman and
//! containerd call it exactly as they call runc.

//!
//! Each command is a thin front end over the `husk-runtime` library (one
//! file per command, or per small group, in `commands/`).

mod args;
mod commands;
mod error;
mod parse;

use std::process::ExitCode;

use clap::Parser;
use husk_runtime::{debug, log, OCI_VERSION};

use args::{Cli, Cmd};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.g.version {
        println!(
            "husk version {VERSION}\ncommit: {}\nspec: {OCI_VERSION}",
            option_env!("HUSK_GIT_COMMIT").unwrap_or("unknown")
        );
        return ExitCode::SUCCESS;
    }
    let Some(cmd) = cli.cmd else {
        eprintln!("husk: no command given (see husk --help)");
        return ExitCode::from(1);
    };
    let monitor = matches!(cmd, Cmd::Monitor(_) | Cmd::ExecMonitor(_));
    if !monitor {
        // A CLI whose reader went away (`husk state X | grep -q`) ends
        // quietly, as C tools do. Relaying processes (monitors, a
        // foreground run or exec) block SIGPIPE and see EPIPE instead.
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // A monitor's stderr is the container's: its own lines go to the log.
    let log = cli.g.log.clone().or_else(|| {
        monitor.then(|| match &cmd {
            Cmd::Monitor(m) => cli.g.root.join(&m.id).join("husk.log"),
            Cmd::ExecMonitor(m) => cli.g.root.join(&m.id).join("husk.log"),
            _ => unreachable!(),
        })
    });
    log::init_log(log, cli.g.log_format == "json", cli.g.debug);
    if cli.g.systemd_cgroup {
        debug!("--systemd-cgroup: ignored, the container's cgroups are in its microVM");
    }
    if let Some(c) = &cli.g.criu {
        debug!("--criu {c}: ignored, husk does not checkpoint");
    }
    match commands::dispatch(&cli.g, cmd) {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(u8::MAX)),
        Err(e) => {
            // One line on stderr, and in the log for daemons that read it.
            if cli.g.log.is_some() {
                log::log("error", &e.to_string());
            }
            eprintln!("husk: {e}");
            ExitCode::from(1)
        }
    }
}
