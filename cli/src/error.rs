//! What a command fails at: the runtime's errors, and what the command
//! line itself gets wrong. `main` prints it as one line.

use std::io;
use std::path::PathBuf;

use crate::parse::ValueError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] husk_runtime::Error),
    #[error(transparent)]
    Value(#[from] ValueError),
    /// A flag whose value cannot be used: `--env X: not KEY=VALUE`.
    #[error("{flag}: {msg}")]
    Flag { flag: String, msg: String },
    /// A flag's file that cannot be read.
    #[error("{flag}: {source}")]
    FlagFile { flag: String, source: io::Error },
    #[error("{flag}: invalid JSON: {source}")]
    FlagJson {
        flag: String,
        source: serde_json::Error,
    },
    /// JSON that does not decode into what it should be; the message names
    /// the field (`resources.memory.limit: invalid type ...`).
    #[error("{0}")]
    Decode(String),
    /// `exec` without a process to run.
    #[error("exec: {0}")]
    Exec(&'static str),
    /// An I/O error on something the command needs: `WHAT: error`.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
    #[error("ps: no PID column in its output")]
    PsOutput,
    #[error("{}: exists; remove it first", .0.display())]
    SpecExists(PathBuf),
    #[error("encode spec: {0}")]
    EncodeSpec(serde_json::Error),
    #[error("{}: {source}", path.display())]
    WriteSpec { path: PathBuf, source: io::Error },
    /// A command a microVM cannot do; the message says why.
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("run {}: {source} (install husk-bench next to husk or on PATH)", program.display())]
    Bench { program: PathBuf, source: io::Error },
}

impl Error {
    pub fn flag(flag: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::Flag {
            flag: flag.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
