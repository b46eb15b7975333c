//! The runtime's errors. Each module has its own enum for what can go wrong
//! there ([`crate::bundle::BundleError`], [`crate::state::StateError`],
//! ...); [`Error`] is what the container operations and the monitor return:
//! those, plus what the life cycle itself refuses. Every message is one line
//! naming the container, the path or the field at fault.

use std::io;
use std::path::{Path, PathBuf};

use husk_protocol::client::ClientError;

use crate::bundle::BundleError;
use crate::hooks::HookError;
use crate::host_config::HostConfigError;
use crate::session::SessionError;
use crate::spawn::SpawnError;
use crate::state::{StateError, Status};
use crate::sys::SysError;

/// An I/O error on a path: `PATH: error`, or `OP PATH: error`.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{}: {source}", path.display())]
    Path { path: PathBuf, source: io::Error },
    #[error("{op} {}: {source}", path.display())]
    Op {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// Names the path of an I/O error.
pub trait IoContext<T> {
    /// `PATH: error`.
    fn at(self, path: &Path) -> Result<T, IoError>;
    /// `OP PATH: error` (`write /x: ...`).
    fn during(self, op: &'static str, path: &Path) -> Result<T, IoError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, IoError> {
        self.map_err(|source| IoError::Path {
            path: path.to_path_buf(),
            source,
        })
    }

    fn during(self, op: &'static str, path: &Path) -> Result<T, IoError> {
        self.map_err(|source| IoError::Op {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// What a container operation or the monitor failed at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Id(#[from] husk_protocol::id::IdError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    HostConfig(#[from] HostConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    HostCgroup(#[from] crate::host_cgroup::CgroupError),
    /// The microVM's configuration could not be handed to husk-vmm.
    #[error(transparent)]
    VmConfig(#[from] husk_vm_config::ConfigError),

    // What the container's status does not allow (runc's words, which
    // daemons match on).
    #[error("container not running")]
    NotRunning { id: String },
    /// `update` with a cpuset beyond the microVM's vCPUs (fixed at create).
    #[error(
        "update container {id}: linux.resources.cpu.cpus {cpus:?}: CPU {highest} is not in the \
         microVM, which has {vcpus} vCPUs (fixed when the container was created)"
    )]
    CpusetBeyondVm {
        id: String,
        cpus: String,
        highest: u32,
        vcpus: u32,
    },
    #[error("container not paused")]
    NotPaused { id: String },
    #[error("cannot start a container that has stopped")]
    StartStopped { id: String },
    #[error("container {id} is still being created")]
    StillCreating { id: String },
    #[error("cannot start an already {status} container")]
    AlreadyStarted { id: String, status: Status },
    #[error("cannot delete container {id} that is not stopped: {status}")]
    NotStopped { id: String, status: Status },
    #[error("cannot exec in a paused container (use --ignore-paused)")]
    ExecPaused { id: String },
    #[error("cannot exec in a stopped container")]
    ExecStopped { id: String },
    #[error("cannot exec in a {status} container")]
    ExecStatus { id: String, status: Status },

    // What the request lacks.
    #[error("process.terminal is true: --console-socket is required to hand over the terminal")]
    ConsoleSocketRequired { id: String },
    #[error("cannot allocate a tty for a detached exec without --console-socket")]
    DetachedTtyWithoutConsole { id: String },
    #[error("--console-socket {}: {source}", path.display())]
    ConsoleSocket { path: PathBuf, source: io::Error },
    #[error("--pid-file: {0}")]
    PidFile(IoError),
    #[error("{}: {source}", path.display())]
    ProcessFile {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("encode process: {0}")]
    EncodeProcess(serde_json::Error),

    // The agent and the helpers.
    /// `OP container ID: why` (`start container c1: ...`).
    #[error("{op} container {id}: {source}")]
    Agent {
        op: &'static str,
        id: String,
        source: SessionError,
    },
    /// A start that failed: the container was stopped with `status`.
    #[error("start container {id}: {source}; the container is stopped (exit status {status})")]
    StartFailed {
        id: String,
        status: i32,
        source: SessionError,
    },
    /// The helper that was to stand for the container did not come up.
    #[error("{op} container {id}: {source}")]
    Launch {
        op: &'static str,
        id: String,
        source: Box<Error>,
    },
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// The network namespace already has another husk container's taps.
    #[error(
        "linux.namespaces: network namespace {} belongs to another husk container \
         (--network container:...): its interfaces are in that container's microVM; \
         only containers of one pod can share a network",
        path.display()
    )]
    SharedNetns { path: PathBuf },
    /// The network namespace to join is the host's own (Docker's
    /// `--network host` names it rather than leaving the namespace out).
    #[error(
        "linux.namespaces: network namespace {} is the host's: the container would use the \
         host's network stack (--network host), which a microVM cannot share; give it a \
         network namespace of its own (--network none for loopback only)",
        path.display()
    )]
    HostNetns { path: PathBuf },
    #[error("the DNS relay's socket {}: {source}", path.display())]
    DnsSocket { path: PathBuf, source: io::Error },
    #[error("configure the network of container {id} in the microVM: {source}")]
    ConfigureNetwork { id: String, source: ClientError },
    #[error("create container {id} in the microVM: {source}")]
    CreateInVm { id: String, source: ClientError },
    #[error("events: {0}")]
    Events(ClientError),
    #[error("the agent's ready socket: {0}")]
    ReadySocket(io::Error),
    #[error("start {name} ({}): {source}", program.display())]
    StartHelper {
        name: &'static str,
        program: PathBuf,
        source: io::Error,
    },
    /// husk-vmm or virtiofsd died while the VM booted: the last lines of
    /// its log say why.
    #[error("{name} (pid {pid}) exited while the microVM booted{also}: {log_tail}")]
    HelperExited {
        name: &'static str,
        pid: i32,
        also: String,
        log_tail: String,
    },
    #[error(
        "the microVM's agent did not answer within {secs} s ({last}); console: {console_tail}"
    )]
    BootTimeout {
        secs: u64,
        last: String,
        console_tail: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_ones_daemons_and_tests_read() {
        let id = || "c1".to_string();
        let cases: Vec<(Error, &str)> = vec![
            (Error::NotRunning { id: id() }, "container not running"),
            (
                StateError::Exists { id: id() }.into(),
                "container with id c1 already exists",
            ),
            (
                StateError::NotFound { id: id() }.into(),
                "container c1 does not exist",
            ),
            (
                Error::NotStopped {
                    id: id(),
                    status: Status::Running,
                },
                "cannot delete container c1 that is not stopped: running",
            ),
            (
                Error::AlreadyStarted {
                    id: id(),
                    status: Status::Paused,
                },
                "cannot start an already paused container",
            ),
            (
                Error::Launch {
                    op: "create",
                    id: id(),
                    source: Box::new(SpawnError::Reported("boom".into()).into()),
                },
                "create container c1: boom",
            ),
            (
                Error::HelperExited {
                    name: "husk-vmm",
                    pid: 7,
                    also: String::new(),
                    log_tail: "husk-vmm: gives up".into(),
                },
                "husk-vmm (pid 7) exited while the microVM booted: husk-vmm: gives up",
            ),
            (
                Error::PidFile(IoError::Op {
                    op: "write",
                    path: "/x".into(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                }),
                "--pid-file: write /x: entity not found",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn what_the_guest_says_reaches_the_terminal_escaped_and_bounded() {
        use husk_protocol::{ErrorCode, ErrorInfo};
        let hostile = "no such file\x1b[2J\x1b]0;pwned\x07\nfake: all good\u{202e}";
        let info = ErrorInfo {
            code: ErrorCode::NotFound,
            message: format!("{hostile}{}", "\x1b".repeat(100_000)),
        };
        let e = Error::Agent {
            op: "start",
            id: "c1".into(),
            source: ClientError::Agent(info).into(),
        }
        .to_string();
        assert!(
            e.starts_with(
                "start container c1: agent error: not_found: no such file\\x1b[2J\\x1b]0;pwned\\x07\\nfake: all good\\u{202e}\\x1b"
            ),
            "{e}"
        );
        assert!(!e.chars().any(char::is_control), "{e:?}");
        assert!(e.len() < 1024, "{} bytes", e.len());

        // A log's tail (the console, a helper's log) the same way.
        let p = std::env::temp_dir().join(format!("husk-tail-{}", std::process::id()));
        std::fs::write(
            &p,
            format!("boot\n{hostile}\n{}\n", "\x1b[1m".repeat(1_000)),
        )
        .unwrap();
        let t = crate::session::tail(&p, 3);
        std::fs::remove_file(&p).unwrap();
        assert!(t.contains("no such file\\x1b[2J"), "{t}");
        assert!(!t.chars().any(char::is_control), "{t:?}");
        assert!(t.len() < 2048, "{} bytes", t.len());
    }
}
