//! The shim's errors, and their ttrpc status codes (containerd turns
//! NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION and UNIMPLEMENTED into
//! its errdefs, which ctr and CRI act on).

use containerd_shim::protos::ttrpc::{self, Code};

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error(transparent)]
    Runtime(#[from] husk_runtime::Error),
    /// A request field with a value the shim cannot take.
    #[error("{field}: {why}")]
    BadField { field: &'static str, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    Exists(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    State(#[from] husk_runtime::state::StateError),
    #[error("start the helper: {0}")]
    Spawn(#[from] husk_runtime::spawn::SpawnError),
}

pub type Result<T, E = ShimError> = std::result::Result<T, E>;

impl ShimError {
    pub fn field(field: &'static str, why: impl ToString) -> ShimError {
        ShimError::BadField {
            field,
            why: why.to_string(),
        }
    }

    pub fn io(what: impl ToString) -> impl FnOnce(std::io::Error) -> ShimError {
        let what = what.to_string();
        move |source| ShimError::Io { what, source }
    }

    pub fn code(&self) -> Code {
        match self {
            ShimError::BadField { .. } => Code::INVALID_ARGUMENT,
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::Exists(_) => Code::ALREADY_EXISTS,
            ShimError::Precondition(_) => Code::FAILED_PRECONDITION,
            ShimError::Unsupported(_) => Code::UNIMPLEMENTED,
            ShimError::Runtime(husk_runtime::Error::State(
                husk_runtime::state::StateError::NotFound { .. },
            ))
            | ShimError::State(husk_runtime::state::StateError::NotFound { .. }) => Code::NOT_FOUND,
            _ => Code::UNKNOWN,
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> ttrpc::Error {
        containerd_shim::warn!("{e}");
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_one_line_messages() {
        let e = ShimError::field("stdout", "binary:// log URIs are not supported");
        assert_eq!(e.code(), Code::INVALID_ARGUMENT);
        assert_eq!(
            e.to_string(),
            "stdout: binary:// log URIs are not supported"
        );
        assert_eq!(ShimError::NotFound("exec x".into()).code(), Code::NOT_FOUND);
        let t: ttrpc::Error = ShimError::Exists("exec x".into()).into();
        match t {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), Code::ALREADY_EXISTS);
                assert_eq!(s.message(), "exec x: already exists");
            }
            other => panic!("{other:?}"),
        }
    }
}
