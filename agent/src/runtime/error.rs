//! [`RuntimeError`]: why a container request failed, with the protocol's
//! error code for it. The server turns it into the `Error` response
//! ([`ErrorInfo`]) at the connection.

use std::io;

use husk_protocol::{ErrorCode, ErrorInfo, StdioStream};
use thiserror::Error;

use super::rootfs::RootfsError;
use crate::container::cgroup::CgroupError;
use crate::container::{ContainerError, SpecError};
use crate::net::NetError;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("no container {id:?}")]
    NoContainer { id: String },
    #[error("container {id:?} has no exec {exec_id:?}")]
    NoExec { id: String, exec_id: String },
    #[error("container {id:?} exists")]
    Exists { id: String },
    #[error("exec {exec_id:?} exists")]
    ExecExists { exec_id: String },
    #[error("container {id:?} is not running")]
    NotRunning { id: String },
    #[error("container {id:?} is paused")]
    Paused { id: String },
    #[error("container {id:?} is stopped")]
    Stopped { id: String },
    #[error("container {id:?} was started already")]
    StartedAlready { id: String },
    #[error("container {id:?} is running (remove with force)")]
    Running { id: String },
    #[error("exec is not running")]
    ExecNotRunning,
    #[error("the process has no terminal")]
    NoTerminal,
    #[error("{stream:?} of the process is not piped")]
    NotPiped { stream: StdioStream },
    #[error("{stream:?} is attached already")]
    Attached { stream: StdioStream },
    #[error("stdin is attached already")]
    StdinAttached,
    #[error("stdin of the process is not piped or closed")]
    StdinClosed,
    #[error("signal: {0} is not a signal number")]
    BadSignal(i32),
    /// A request field or spec field that is not acceptable.
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error("stdio pipes: {0}")]
    Pipes(io::Error),
    #[error("set the terminal size: {0}")]
    Winsize(io::Error),
    /// Creating the container failed (a bad spec, or what it asks for
    /// cannot be done).
    #[error(transparent)]
    Create(ContainerError),
    /// Starting a container's or an exec's process failed.
    #[error(transparent)]
    Start(ContainerError),
    /// A process could not be signalled (it exited).
    #[error(transparent)]
    Signal(ContainerError),
    /// Removing the container failed.
    #[error(transparent)]
    Destroy(ContainerError),
    /// Writing the resources of an update failed.
    #[error(transparent)]
    Update(CgroupError),
    /// Freezing or thawing the cgroup failed.
    #[error(transparent)]
    Freeze(CgroupError),
    /// Configuring the sandbox's network failed (or was refused).
    #[error(transparent)]
    Network(NetError),
}

impl RuntimeError {
    /// The protocol's code for the error.
    pub fn code(&self) -> ErrorCode {
        use RuntimeError as E;
        match self {
            E::NoContainer { .. } | E::NoExec { .. } => ErrorCode::NotFound,
            E::Exists { .. } | E::ExecExists { .. } => ErrorCode::AlreadyExists,
            E::NotRunning { .. }
            | E::Paused { .. }
            | E::Stopped { .. }
            | E::StartedAlready { .. }
            | E::Running { .. }
            | E::ExecNotRunning
            | E::NoTerminal
            | E::NotPiped { .. }
            | E::Attached { .. }
            | E::StdinAttached
            | E::StdinClosed
            | E::Signal(_) => ErrorCode::InvalidState,
            E::BadSignal(_) | E::Spec(_) | E::Create(_) | E::Update(_) => ErrorCode::BadRequest,
            E::Rootfs(e) => e.code(),
            E::Network(e) => e.code(),
            E::Pipes(_) | E::Winsize(_) | E::Start(_) | E::Destroy(_) | E::Freeze(_) => {
                ErrorCode::Internal
            }
        }
    }
}

impl From<RuntimeError> for ErrorInfo {
    fn from(e: RuntimeError) -> ErrorInfo {
        ErrorInfo::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let info = |e: RuntimeError| {
            let i = ErrorInfo::from(e);
            (i.code, i.message)
        };
        assert_eq!(
            info(RuntimeError::NoContainer { id: "c".into() }),
            (ErrorCode::NotFound, "no container \"c\"".into())
        );
        assert_eq!(
            info(RuntimeError::Running { id: "c".into() }),
            (
                ErrorCode::InvalidState,
                "container \"c\" is running (remove with force)".into()
            )
        );
        assert_eq!(
            info(RuntimeError::NotPiped {
                stream: StdioStream::Stderr
            }),
            (
                ErrorCode::InvalidState,
                "Stderr of the process is not piped".into()
            )
        );
        assert_eq!(
            info(RuntimeError::Create(ContainerError::Spec(
                SpecError::missing("process")
            ))),
            (ErrorCode::BadRequest, "process: missing".into())
        );
        assert_eq!(
            info(RuntimeError::Start(ContainerError::AlreadyStarted)).0,
            ErrorCode::Internal
        );
        assert_eq!(
            info(RuntimeError::Signal(ContainerError::Exited { pid: 5 })),
            (ErrorCode::InvalidState, "process 5 has exited".into())
        );
    }
}
