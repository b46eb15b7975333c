//! container-init: the agent re-executed as `husk-agent __container-init`
//! (a fresh, single-threaded process, so fork and namespace calls are safe).
//!
//! Stage 1 (fd 3 = socket A to the agent) reads the [`InitConfig`], joins
//! namespaces given by path, creates a user namespace (the agent writes the
//! id maps), unshares the other new namespaces and forks. Stage 2 (the child,
//! PID 1 of a new pid namespace; socket B) sets up the root file system,
//! hostname, sysctls and the console (`setup.rs`), reports `Ready`, waits for
//! `Start`, then drops to the process's user, capabilities and seccomp
//! filter and execs (`exec.rs`). Socket B is close-on-exec: EOF tells the
//! agent the exec happened. A failure is sent to the agent as
//! [`Sync::Error`], the text of an [`InitError`].

mod exec;
mod setup;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use husk_protocol::{read_frame, write_frame, FrameError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::config::{InitConfig, NsKind};
use super::rootfs::MountError;

/// `argv[1]` of container-init.
pub const ARG: &str = "__container-init";
/// Environment variable with the two socket fds ("A,B").
pub const FDS_ENV: &str = "_HUSK_INIT_FDS";

/// Messages between the agent and container-init.
#[derive(Debug, Serialize, Deserialize)]
pub enum Sync {
    /// First message: followed by three bytes, each carrying one of the
    /// process's stdin, stdout and stderr (SCM_RIGHTS).
    Stdio,
    Config(Box<InitConfig>),
    NeedIdMap,
    IdMapDone,
    Pid(i32),
    PidAck,
    Ready,
    /// Followed by one byte that carries the pty master (SCM_RIGHTS).
    PtyMaster,
    Start,
    Error(String),
}

/// Why container-init failed; its text goes to the agent.
#[derive(Debug, Error)]
pub enum InitError {
    /// A step (named by its spec field where there is one) failed.
    #[error("{what}: {source}")]
    Sys { what: String, source: io::Error },
    #[error("waiting for {want} from the agent: {source}")]
    Recv {
        want: &'static str,
        source: FrameError,
    },
    #[error("waiting for Start: {0}")]
    WaitStart(FrameError),
    #[error("expected {want}, got {got}")]
    Unexpected { want: &'static str, got: String },
    /// A message to the agent could not be sent.
    #[error("{0}")]
    Send(FrameError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("process.args[0]: {prog:?} not found in PATH {path:?}")]
    NotFound { prog: String, path: String },
    #[error("process.args[0]: exec {}: {source}", exe.display())]
    Exec { exe: PathBuf, source: io::Error },
    #[error("NUL in {0}")]
    Nul(&'static str),
}

impl InitError {
    /// An error of `what` from errno.
    fn errno(what: impl Into<String>) -> InitError {
        InitError::Sys {
            what: what.into(),
            source: io::Error::last_os_error(),
        }
    }

    /// Wraps an I/O error of `what`.
    fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> InitError {
        let what = what.into();
        move |source| InitError::Sys { what, source }
    }

    /// container-init's exit status for the error: 127 (program not
    /// found), 126 (found but not executable), else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            InitError::NotFound { .. } => 127,
            InitError::Exec { source, .. } if source.kind() == io::ErrorKind::NotFound => 127,
            InitError::Exec { .. } => 126,
            _ => 1,
        }
    }
}

/// `rc` of a libc call: < 0 is an error of `what` from errno.
fn cvt(rc: libc::c_int, what: &str) -> Result<(), InitError> {
    if rc < 0 {
        Err(InitError::errno(what))
    } else {
        Ok(())
    }
}

/// Entry point; never returns.
pub fn main() -> ! {
    // Not dumpable: processes of the container cannot open /proc/PID/exe
    // (the agent binary) or ptrace us while we are in their namespaces.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let fds: Vec<RawFd> = std::env::var(FDS_ENV)
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    if fds.len() != 2 || fds.iter().any(|&fd| fd < 3) {
        eprintln!("husk-agent: {ARG} is internal to husk-agent");
        std::process::exit(2);
    }
    for &fd in &fds {
        // SAFETY: F_SETFD on an integer descriptor only changes its flags
        // (and fails if it is not open).
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            std::process::exit(2);
        }
    }
    // SAFETY: the agent passed this descriptor to us (open, as checked
    // above); we take sole ownership.
    let mut a = unsafe { UnixStream::from_raw_fd(fds[0]) };
    // SAFETY: as above, for the second one.
    let b = unsafe { UnixStream::from_raw_fd(fds[1]) };
    let code = match stage1(&mut a, b) {
        Ok(()) => 0,
        Err(e) => {
            let _ = write_frame(&mut a, &Sync::Error(e.to_string()));
            1
        }
    };
    std::process::exit(code)
}

fn expect(s: &mut UnixStream, want: &'static str) -> Result<Sync, InitError> {
    read_frame(s).map_err(|source| InitError::Recv { want, source })
}

fn unexpected(want: &'static str, got: &Sync) -> InitError {
    InitError::Unexpected {
        want,
        got: format!("{got:?}"),
    }
}

fn send(s: &mut UnixStream, m: &Sync) -> Result<(), InitError> {
    write_frame(s, m).map_err(InitError::Send)
}

fn setns_fd(f: &std::fs::File, path: &str, kind: NsKind) -> Result<(), InitError> {
    // SAFETY: setns on a descriptor we own.
    let rc = unsafe { libc::setns(f.as_raw_fd(), kind.flag()) };
    cvt(rc, &format!("join {} namespace {path}", kind.proc_name()))
}

/// Makes the three descriptors that follow a [`Sync::Stdio`] on `a` our
/// fds 0, 1 and 2 (inherited by everything we start; not close-on-exec).
fn take_stdio(a: &mut UnixStream) -> Result<(), InitError> {
    match expect(a, "the stdio")? {
        Sync::Stdio => {}
        other => return Err(unexpected("the stdio", &other)),
    }
    for target in 0..3 {
        let fd = husk_sys::recv_fd(a)
            .map_err(InitError::io(format!("receive stdio descriptor {target}")))?;
        // SAFETY: dup2 onto a standard descriptor; `fd` stays owned by us
        // and is closed when it drops.
        let rc = unsafe { libc::dup2(fd.as_raw_fd(), target) };
        cvt(rc, &format!("dup2 onto fd {target}"))?;
    }
    Ok(())
}

/// Joins the namespaces given by path (user first: it owns the others).
fn join_namespaces(cfg: &InitConfig) -> Result<(), InitError> {
    // Open them all first: after joining a mount namespace, /proc is
    // another one.
    let mut joins = Vec::new();
    for ns in &cfg.namespaces {
        if let Some(p) = &ns.path {
            let f = std::fs::File::open(p).map_err(InitError::io(format!("open namespace {p}")))?;
            joins.push((f, p, ns.kind));
        }
    }
    for (f, p, kind) in &joins {
        setns_fd(f, p, *kind)?;
    }
    Ok(())
}

/// Makes a new user namespace; the agent writes its id maps.
fn new_user_namespace(a: &mut UnixStream) -> Result<(), InitError> {
    // SAFETY: unshare with a constant flag.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    cvt(rc, "unshare user namespace")?;
    send(a, &Sync::NeedIdMap)?;
    match expect(a, "the id maps")? {
        Sync::IdMapDone => {}
        other => return Err(unexpected("IdMapDone", &other)),
    }
    // SAFETY: a plain syscall with integer arguments.
    let rc = unsafe { libc::setresgid(0, 0, 0) };
    cvt(rc, "setresgid 0 in the user namespace")?;
    // SAFETY: as above.
    let rc = unsafe { libc::setresuid(0, 0, 0) };
    cvt(rc, "setresuid 0 in the user namespace")
}

fn stage1(a: &mut UnixStream, b: UnixStream) -> Result<(), InitError> {
    take_stdio(a)?;
    let cfg = match expect(a, "the configuration")? {
        Sync::Config(c) => c,
        other => return Err(unexpected("the configuration", &other)),
    };
    join_namespaces(&cfg)?;
    if cfg.new_ns(NsKind::User) {
        new_user_namespace(a)?;
    }
    let flags = cfg
        .namespaces
        .iter()
        .filter(|n| n.path.is_none() && n.kind != NsKind::User)
        .fold(0, |f, n| f | n.kind.flag());
    if flags != 0 {
        // SAFETY: unshare with namespace flags only.
        let rc = unsafe { libc::unshare(flags) };
        cvt(rc, "unshare namespaces")?;
    }
    if !cfg.time_offsets.is_empty() {
        let text: String = cfg
            .time_offsets
            .iter()
            .map(|(clock, s, ns)| format!("{clock} {s} {ns}\n"))
            .collect();
        std::fs::write("/proc/self/timens_offsets", text)
            .map_err(InitError::io("linux.timeOffsets"))?;
    }
    // SAFETY: this process is single-threaded, so the child may run any code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(InitError::errno("fork"));
    }
    if pid == 0 {
        let mut b = b;
        let code = match stage2(&cfg, &mut b) {
            Ok(never) => match never {},
            Err(e) => {
                let _ = write_frame(&mut b, &Sync::Error(e.to_string()));
                e.exit_code()
            }
        };
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    drop(b);
    send(a, &Sync::Pid(pid))?;
    match expect(a, "the pid acknowledgement")? {
        Sync::PidAck => Ok(()),
        other => Err(unexpected("PidAck", &other)),
    }
}

/// A value that cannot exist: what a successful exec "returns".
enum Never {}

/// Stage 2; returns only on failure.
fn stage2(cfg: &InitConfig, b: &mut UnixStream) -> Result<Never, InitError> {
    let pty = setup::setup(cfg, b)?;
    send(b, &Sync::Ready)?;
    match read_frame::<_, Sync>(b) {
        Ok(Sync::Start) => {}
        Ok(other) => return Err(unexpected("Start", &other)),
        Err(e) => return Err(InitError::WaitStart(e)),
    }
    exec::exec(cfg, pty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_exit_codes() {
        let nf = InitError::NotFound {
            prog: "x".into(),
            path: "/bin".into(),
        };
        assert_eq!(
            nf.to_string(),
            "process.args[0]: \"x\" not found in PATH \"/bin\""
        );
        assert_eq!(nf.exit_code(), 127);
        let ex = |kind| InitError::Exec {
            exe: "/bin/x".into(),
            source: io::Error::from(kind),
        };
        assert_eq!(ex(io::ErrorKind::NotFound).exit_code(), 127);
        assert_eq!(ex(io::ErrorKind::PermissionDenied).exit_code(), 126);
        assert!(ex(io::ErrorKind::PermissionDenied)
            .to_string()
            .starts_with("process.args[0]: exec /bin/x: "));
        assert_eq!(
            unexpected("PidAck", &Sync::Ready).to_string(),
            "expected PidAck, got Ready"
        );
        let e = InitError::io("process.oomScoreAdj")(io::Error::from_raw_os_error(libc::EINVAL));
        assert!(e.to_string().starts_with("process.oomScoreAdj: "));
        assert_eq!(e.exit_code(), 1);
    }
}
