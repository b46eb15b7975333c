//! The husk-agent command line: which role this process plays (PID 1,
//! a local server, `container run`, or container-init) and its start-up.
//!
//! As PID 1 it mounts the early filesystems, reaps children, listens on
//! AF_VSOCK port `husk_protocol::AGENT_PORT` (or `husk.agent_port=N` from the
//! kernel command line) and serves the husk protocol. It never exits: fatal
//! errors are logged and the VM is reset.
//!
//! Not as PID 1 (tests, debugging) it touches no mounts and serves the same
//! protocol on `--listen-unix PATH` or `--vsock-port N`; `Shutdown` then just
//! ends the process with status 0.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use husk_protocol::vsock;
use husk_protocol::{AGENT_PORT, READY_PORT};
use thiserror::Error;

use crate::log::{debug, info};
use crate::runtime::Runtime;
use crate::server::{Listener, OnShutdown};
use crate::{container, init, local, reaper, server};

const VERSION: &str = env!("CARGO_PKG_VERSION");

const USAGE: &str = "\
usage: husk-agent [--debug] (--listen-unix PATH | --vsock-port PORT)
       husk-agent container run --bundle DIR --id ID
       husk-agent --help | --version

As PID 1 (the guest's /init) husk-agent ignores its arguments, mounts
/proc /sys /dev /dev/pts /dev/shm /run /tmp /sys/fs/cgroup, and serves the
husk protocol on vsock port 1024 (kernel command line: husk.agent_port=N,
husk.debug). Otherwise it mounts nothing and serves on the given socket;
a Shutdown request then makes it exit with status 0.

  --listen-unix PATH  serve on a Unix socket at PATH (for host-side tests)
  --vsock-port PORT   serve on AF_VSOCK port PORT
  --debug             log every request
";

/// The agent's `main`: dispatches on the process's role and arguments.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // container-init (the agent re-executed by itself) may be PID 1 of a
    // new pid namespace: dispatch it first.
    if args.first().map(String::as_str) == Some(container::nsinit::ARG) {
        container::nsinit::main()
    }
    if std::process::id() == 1 {
        pid1_main()
    }
    if args.first().map(String::as_str) == Some("container") {
        return local::main(&args[1..]);
    }
    match parse_args(args) {
        Ok(Cmd::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Cmd::Version) => {
            println!("husk-agent {VERSION}");
            ExitCode::SUCCESS
        }
        Ok(Cmd::Serve { target, debug }) => {
            crate::log::set_debug(debug);
            match serve_local(target) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    info!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("husk-agent: {e} (see --help)");
            ExitCode::from(2)
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Target {
    Unix(PathBuf),
    Vsock(u32),
}

#[derive(Debug, PartialEq, Eq)]
enum Cmd {
    Help,
    Version,
    Serve { target: Target, debug: bool },
}

/// A command line that is not one of the usages.
#[derive(Debug, PartialEq, Eq, Error)]
enum ArgsError {
    #[error("give only one of --listen-unix and --vsock-port")]
    TwoTargets,
    #[error("{0} needs a value")]
    NeedsValue(String),
    #[error("--vsock-port: {0:?} is not a port number")]
    BadPort(String),
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("not PID 1: pass --listen-unix PATH or --vsock-port PORT")]
    NoTarget,
}

/// Why the agent could not start serving (or stopped).
#[derive(Debug, Error)]
enum StartError {
    #[error("start the reaper: {0}")]
    Reaper(io::Error),
    /// PID 1's reaper thread (its own wording on the console).
    #[error("start reaper thread: {0}")]
    ReaperThread(io::Error),
    /// Listening on `on` (a vsock port or a socket path) failed.
    #[error("listen on {on}: {source}")]
    Listen { on: String, source: io::Error },
    #[error("serving {on}: {source}")]
    Serve { on: String, source: io::Error },
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Cmd, ArgsError> {
    let mut args = args.into_iter();
    let mut target = None;
    let mut debug = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(Cmd::Help),
            "-V" | "--version" => return Ok(Cmd::Version),
            "--debug" => debug = true,
            "--listen-unix" | "--vsock-port" => {
                if target.is_some() {
                    return Err(ArgsError::TwoTargets);
                }
                let v = args
                    .next()
                    .ok_or_else(|| ArgsError::NeedsValue(a.clone()))?;
                target = Some(if a == "--listen-unix" {
                    Target::Unix(PathBuf::from(v))
                } else {
                    Target::Vsock(v.parse().map_err(|_| ArgsError::BadPort(v))?)
                });
            }
            other => return Err(ArgsError::Unknown(other.into())),
        }
    }
    match target {
        Some(target) => Ok(Cmd::Serve { target, debug }),
        None => Err(ArgsError::NoTarget),
    }
}

fn serve_local(target: Target) -> Result<(), StartError> {
    // Before any thread: containers need their exits delivered.
    init::block_sigchld();
    reaper::start().map_err(StartError::Reaper)?;
    match target {
        Target::Unix(path) => {
            // Replace a stale socket from an earlier run, never any other file.
            if let Ok(m) = std::fs::symlink_metadata(&path) {
                if m.file_type().is_socket() {
                    let _ = std::fs::remove_file(&path);
                }
            }
            let l = UnixListener::bind(&path).map_err(|source| StartError::Listen {
                on: format!("unix socket {}", path.display()),
                source,
            })?;
            info!(
                "husk-agent {VERSION} listening on unix socket {}",
                path.display()
            );
            let res = server::run(Listener::Unix(l), OnShutdown::Stop, Arc::default());
            let _ = std::fs::remove_file(&path);
            res.map_err(|source| StartError::Serve {
                on: path.display().to_string(),
                source,
            })
        }
        Target::Vsock(port) => {
            let l = vsock::VsockListener::bind(port).map_err(|source| StartError::Listen {
                on: format!("vsock port {port}"),
                source,
            })?;
            info!("husk-agent {VERSION} listening on vsock port {port}");
            server::run(Listener::Vsock(l), OnShutdown::Stop, Arc::default()).map_err(|source| {
                StartError::Serve {
                    on: format!("vsock port {port}"),
                    source,
                }
            })
        }
    }
}

/// PID 1: never returns; any failure ends in a logged reset of the VM.
fn pid1_main() -> ! {
    std::panic::set_hook(Box::new(|p| info!("panic: {p}")));
    let res = std::panic::catch_unwind(pid1_run);
    match res {
        Ok(Err(e)) => info!("fatal: {e}"),
        Ok(Ok(())) => info!("fatal: server stopped"),
        Err(_) => info!("fatal: panic in main thread"),
    }
    init::poweroff()
}

fn pid1_run() -> Result<(), StartError> {
    // Before any thread exists: every thread inherits the blocked SIGCHLD.
    init::block_sigchld();
    let cmdline = init::early_setup();
    reaper::start().map_err(StartError::ReaperThread)?;
    let port = cmdline.agent_port.unwrap_or(AGENT_PORT);
    let listener = bind_vsock_retry(port)?;
    announce_ready();
    let rt = Arc::new(Runtime::default());
    if let Some(tag) = cmdline.share {
        rt.premount_share(tag);
    }
    rt.prepare_spare();
    info!("husk-agent {VERSION} listening on vsock port {port}");
    server::run(Listener::Vsock(listener), OnShutdown::Reboot, rt).map_err(|source| {
        StartError::Serve {
            on: format!("vsock port {port}"),
            source,
        }
    })
}

/// Tells a host that waits on [`READY_PORT`] that the agent listens: one
/// connection, closed at once. A host that does not wait that way refuses
/// it; either way nothing waits for it here (its own short-lived thread).
fn announce_ready() {
    let spawned = std::thread::Builder::new()
        .name("ready".into())
        .stack_size(64 << 10)
        .spawn(|| {
            if let Err(e) = vsock::VsockStream::connect(libc::VMADDR_CID_HOST, READY_PORT) {
                debug!("ready signal to host port {READY_PORT}: {e}");
            }
        });
    if let Err(e) = spawned {
        info!("ready signal: cannot start a thread: {e}");
    }
}

/// The virtio-vsock transport is normally registered before init runs; give
/// it up to ~1 s in case the device probes late.
fn bind_vsock_retry(port: u32) -> Result<vsock::VsockListener, StartError> {
    let mut last = io::Error::other("not tried");
    for _ in 0..100 {
        match vsock::VsockListener::bind(port) {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(StartError::Listen {
        on: format!("vsock port {port}"),
        source: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Cmd, ArgsError> {
        parse_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments() {
        assert_eq!(args(&["--help"]), Ok(Cmd::Help));
        assert_eq!(args(&["--version"]), Ok(Cmd::Version));
        assert_eq!(
            args(&["--debug", "--listen-unix", "/x"]),
            Ok(Cmd::Serve {
                target: Target::Unix("/x".into()),
                debug: true
            })
        );
        assert_eq!(
            args(&["--vsock-port", "5"]),
            Ok(Cmd::Serve {
                target: Target::Vsock(5),
                debug: false
            })
        );
        let msg = |a: &[&str]| args(a).unwrap_err().to_string();
        assert!(msg(&[]).contains("not PID 1"));
        assert_eq!(msg(&["--vsock-port"]), "--vsock-port needs a value");
        assert_eq!(
            msg(&["--vsock-port", "x"]),
            "--vsock-port: \"x\" is not a port number"
        );
        assert_eq!(
            args(&["--listen-unix", "/a", "--vsock-port", "1"]),
            Err(ArgsError::TwoTargets)
        );
        assert_eq!(msg(&["--bogus"]), "unknown argument \"--bogus\"");
    }
}
