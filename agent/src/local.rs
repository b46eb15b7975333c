//! `husk-agent container run --bundle DIR --id ID`: runs one container in
//! the foreground, runc-style, without a VM (for tests and debugging). The
//! container's stdio is ours; nothing else is printed on stdout; the exit
//! status is the container's (128 + N for a death by signal N); errors of
//! the runtime itself print one line on stderr and exit 125.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use thiserror::Error;

use crate::container::launch::StdioFds;
use crate::container::{spec, Container, ContainerError, Launch, SpecError};

pub const USAGE: &str = "\
usage: husk-agent container run --bundle DIR --id ID [--debug]

Runs the OCI bundle DIR (DIR/config.json, root.path relative to DIR) as
container ID in the foreground with this process's stdio, and exits with the
container's exit status (128+N if signal N killed it). SIGTERM, SIGINT,
SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded to the container.
Runtime errors: one line on stderr, exit status 125.
";

const FORWARDED: [libc::c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

#[derive(Debug, PartialEq, Eq)]
struct RunArgs {
    bundle: PathBuf,
    id: String,
    debug: bool,
}

/// A command line that is not the usage.
#[derive(Debug, PartialEq, Eq, Error)]
enum ArgsError {
    #[error("unknown container command {0:?}")]
    UnknownCommand(String),
    #[error("container: missing command (run)")]
    MissingCommand,
    #[error("{0} needs a value")]
    NeedsValue(&'static str),
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("{0} is required")]
    Required(&'static str),
}

/// Why the runtime (not the container) failed.
#[derive(Debug, Error)]
enum RunError {
    #[error("start the reaper: {0}")]
    Reaper(io::Error),
    /// A file or directory of the bundle could not be read.
    #[error("{}: {source}", path.display())]
    Bundle { path: PathBuf, source: io::Error },
    #[error("root.path: {}: {source}", path.display())]
    Rootfs { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("start the signal thread: {0}")]
    SignalThread(io::Error),
    #[error("lost the container's exit")]
    LostExit,
    #[error("relay the terminal: {0}")]
    Pty(io::Error),
}

fn parse(args: &[String]) -> Result<Option<RunArgs>, ArgsError> {
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("run") => {}
        Some("-h" | "--help") => return Ok(None),
        Some(other) => return Err(ArgsError::UnknownCommand(other.into())),
        None => return Err(ArgsError::MissingCommand),
    }
    let (mut bundle, mut id, mut debug) = (None, None, false);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bundle" => {
                let v = it.next().ok_or(ArgsError::NeedsValue("--bundle"))?;
                bundle = Some(PathBuf::from(v));
            }
            "--id" => id = Some(it.next().ok_or(ArgsError::NeedsValue("--id"))?.clone()),
            "--debug" => debug = true,
            "-h" | "--help" => return Ok(None),
            other => return Err(ArgsError::Unknown(other.into())),
        }
    }
    Ok(Some(RunArgs {
        bundle: bundle.ok_or(ArgsError::Required("--bundle"))?,
        id: id.ok_or(ArgsError::Required("--id"))?,
        debug,
    }))
}

pub fn main(args: &[String]) -> ExitCode {
    let a = match parse(args) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("husk-agent: {e} (see husk-agent container --help)");
            return ExitCode::from(2);
        }
    };
    crate::log::set_debug(a.debug);
    match run(&a) {
        Ok(status) => ExitCode::from(u8::try_from(status.clamp(0, 255)).unwrap_or(u8::MAX)),
        Err(e) => {
            eprintln!("husk-agent: {e}");
            ExitCode::from(125)
        }
    }
}

fn block_signals() {
    let mut signals = FORWARDED.to_vec();
    signals.push(libc::SIGCHLD);
    // Still the only thread: every later one inherits the mask.
    husk_sys::SignalSet::of(&signals).block();
}

/// Reads the bundle's config.json (at most [`crate::container::MAX_SPEC`]
/// bytes and one more, for the size check).
fn read_config(bundle: &Path) -> Result<Vec<u8>, RunError> {
    let path = bundle.join("config.json");
    let limit = u64::try_from(crate::container::MAX_SPEC).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(limit.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(|source| RunError::Bundle { path, source })?;
    Ok(bytes)
}

fn run(a: &RunArgs) -> Result<i32, RunError> {
    block_signals();
    crate::reaper::start().map_err(RunError::Reaper)?;
    let spec = crate::container::parse_spec(&read_config(&a.bundle)?)?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| SpecError::missing("root"))?
        .path()
        .clone();
    let rootfs = a.bundle.join(root);
    let rootfs = rootfs.canonicalize().map_err(|source| RunError::Rootfs {
        path: rootfs.clone(),
        source,
    })?;
    let bundle = a.bundle.canonicalize().map_err(|source| RunError::Bundle {
        path: a.bundle.clone(),
        source,
    })?;
    let env = spec::Env::from_system(Some(bundle));
    let phases = crate::log::Phases::start(format!("container {}: create", a.id));
    let how = Launch {
        stdio: StdioFds::Inherit,
        hook: None,
        phases: &phases,
        spare: None,
    };
    let c = Container::create(&a.id, &spec, rootfs, &env, how)?;
    for w in &c.warnings {
        eprintln!("husk-agent: warning: {w}");
    }
    let c = Arc::new(c);
    let pty = c
        .init
        .pty_master
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(m) = pty {
        relay_pty(m).map_err(RunError::Pty)?;
    }
    let fwd = Arc::clone(&c);
    let forwarded = husk_sys::SignalSet::of(&FORWARDED);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let sig = forwarded.wait();
            let _ = fwd.init.signal(sig);
        })
        .map_err(RunError::SignalThread)?;
    if let Err(e) = c.init.start() {
        let _ = c.destroy();
        return Err(e.into());
    }
    let exit = c.init.exit.wait(None).ok_or(RunError::LostExit)?;
    let ooms = c.oom_kills();
    if ooms > 0 {
        eprintln!(
            "husk-agent: container {}: {ooms} process(es) killed by the OOM killer",
            a.id
        );
    }
    c.destroy()?;
    Ok(exit.status())
}

/// Copies our stdin to the pty and the pty to our stdout.
fn relay_pty(master: OwnedFd) -> io::Result<()> {
    let mut out = std::fs::File::from(master.try_clone()?);
    let mut inp = std::fs::File::from(master);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut out);
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut stdout = std::io::stdout();
        while let Ok(n) = inp.read(&mut buf) {
            if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = stdout.flush();
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Result<Option<RunArgs>, ArgsError> {
        parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn arguments() {
        assert_eq!(
            p(&["run", "--bundle", "/b", "--id", "x"]).unwrap(),
            Some(RunArgs {
                bundle: "/b".into(),
                id: "x".into(),
                debug: false
            })
        );
        assert_eq!(p(&["--help"]).unwrap(), None);
        assert_eq!(
            p(&["run", "--id", "x"]).unwrap_err().to_string(),
            "--bundle is required"
        );
        assert_eq!(
            p(&["run", "--id"]).unwrap_err().to_string(),
            "--id needs a value"
        );
        assert!(p(&["stop"]).is_err());
        assert!(p(&[]).is_err());
    }
}
