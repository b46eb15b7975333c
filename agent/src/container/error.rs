//! The container layer's errors. [`SpecError`]: why an OCI spec (or an
//! exec's process, or resources of an update) is not acceptable; every
//! message is one line that starts with the spec field (`mounts[2].type:
//! ...`), which the host shows as it is. [`ContainerError`]: why creating,
//! starting, signalling or destroying a container failed.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use super::cgroup::CgroupError;
use super::launch::LaunchError;
use super::rootfs::MountError;

/// Why an operation on a container or one of its processes failed.
#[derive(Debug, Error)]
pub enum ContainerError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Mount(#[from] MountError),
    /// `start` of a process that was started before.
    #[error("already started")]
    AlreadyStarted,
    /// A signal for a process that was reaped (its pid may be reused).
    #[error("process {pid} has exited")]
    Exited { pid: i32 },
    #[error("kill {pid}: {source}")]
    Kill { pid: i32, source: io::Error },
    #[error("container {id}: init did not die within 10 s")]
    InitStuck { id: String },
    #[error("unmount {}: {source}", path.display())]
    Unmount { path: PathBuf, source: io::Error },
}

/// A spec field that is not acceptable, named by its path in the spec.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("{field}: missing")]
    Missing { field: String },
    #[error("{field}: {value:?} must be an absolute path")]
    NotAbsolute { field: String, value: String },
    #[error("{field}: contains a NUL byte")]
    Nul { field: String },
    #[error("{field}: not UTF-8")]
    NotUtf8 { field: String },
    #[error("{field}: {value} is negative (only -1, unlimited, is allowed)")]
    Negative { field: String, value: i64 },
    /// `range` is the allowed range as shown (`2..262144`, `1000..1000000 us`).
    #[error("{field}: {value} is outside {range}")]
    OutOfRange {
        field: String,
        value: i128,
        range: &'static str,
    },
    /// `what` was given more than once (a namespace type, an rlimit).
    #[error("{field}: {what} given twice")]
    Twice { field: String, what: String },
    /// The setting needs a new namespace of kind `ns` (`uts`, `time`, ...).
    #[error("{field}: needs a new {ns} namespace")]
    NeedsNamespace { field: String, ns: &'static str },
    #[error(
        "{field}: {shown:?} is not a valid id ([A-Za-z0-9][A-Za-z0-9_.-]*, at most {max} bytes)"
    )]
    BadId {
        field: String,
        shown: String,
        max: usize,
    },
    /// Any other problem with the field.
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    /// The spec document is larger than the agent accepts.
    #[error("spec larger than {max} bytes")]
    TooLarge { max: usize },
    /// The spec is not JSON.
    #[error("spec: {0}")]
    Json(String),
    /// The spec does not decode as an OCI spec; the message names the
    /// JSON path of the bad field (the protocol's tracked decoder).
    #[error("{0}")]
    Decode(String),
}

impl SpecError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> SpecError {
        SpecError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    pub fn out_of_range(
        field: impl Into<String>,
        value: impl Into<i128>,
        range: &'static str,
    ) -> SpecError {
        SpecError::OutOfRange {
            field: field.into(),
            value: value.into(),
            range,
        }
    }

    pub fn negative(field: impl Into<String>, value: i64) -> SpecError {
        SpecError::Negative {
            field: field.into(),
            value,
        }
    }

    pub fn missing(field: impl Into<String>) -> SpecError {
        SpecError::Missing {
            field: field.into(),
        }
    }

    pub fn nul(field: impl Into<String>) -> SpecError {
        SpecError::Nul {
            field: field.into(),
        }
    }

    /// The field the error is about (empty for whole-document errors).
    pub fn field(&self) -> &str {
        match self {
            SpecError::Missing { field }
            | SpecError::NotAbsolute { field, .. }
            | SpecError::Nul { field }
            | SpecError::NotUtf8 { field }
            | SpecError::Negative { field, .. }
            | SpecError::OutOfRange { field, .. }
            | SpecError::Twice { field, .. }
            | SpecError::NeedsNamespace { field, .. }
            | SpecError::BadId { field, .. }
            | SpecError::Invalid { field, .. } => field,
            SpecError::TooLarge { .. } | SpecError::Json(_) | SpecError::Decode(_) => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_start_with_the_field() {
        let cases = [
            (SpecError::missing("process"), "process: missing"),
            (
                SpecError::NotAbsolute {
                    field: "process.cwd".into(),
                    value: "tmp".into(),
                },
                "process.cwd: \"tmp\" must be an absolute path",
            ),
            (
                SpecError::negative("linux.resources.pids.limit", -3),
                "linux.resources.pids.limit: -3 is negative (only -1, unlimited, is allowed)",
            ),
            (
                SpecError::out_of_range("linux.resources.cpu.shares", 1u64, "2..262144"),
                "linux.resources.cpu.shares: 1 is outside 2..262144",
            ),
            (
                SpecError::NeedsNamespace {
                    field: "hostname".into(),
                    ns: "uts",
                },
                "hostname: needs a new uts namespace",
            ),
            (SpecError::invalid("x", "bad"), "x: bad"),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
            assert!(want.starts_with(e.field()));
        }
        assert_eq!(
            SpecError::TooLarge { max: 5 }.to_string(),
            "spec larger than 5 bytes"
        );
    }
}
