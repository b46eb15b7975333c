//! The runc-style log: `--log FILE` (stderr without it), `text` or `json`
//! lines, debug lines only with `--debug`. Daemons read it back for error
//! messages; a monitor writes its own lines there (its stderr is the
//! container's).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;

use crate::util::rfc3339;

struct LogTarget {
    path: Option<PathBuf>,
    json: bool,
    debug: bool,
}

static LOG: OnceLock<LogTarget> = OnceLock::new();

/// Sets where [`log`] writes: `--log FILE` (appended; stderr without it)
/// in `text` or `json` (`{"level","msg","time"}` lines, which containerd's
/// and Podman's runc wrappers read back for error messages).
pub fn init_log(path: Option<PathBuf>, json: bool, debug: bool) {
    let _ = LOG.set(LogTarget { path, json, debug });
}

/// Whether `--debug` was given (debug lines are written).
pub fn debug_enabled() -> bool {
    LOG.get().is_some_and(|t| t.debug)
}

/// Writes one log line at `level` ("debug", "info", "warning", "error").
/// Debug lines only with `--debug`. Without `--log`, lines go to stderr.
pub fn log(level: &str, msg: &str) {
    let Some(t) = LOG.get() else {
        // Messages may quote the guest: shown, never obeyed.
        eprintln!("husk: {}", husk_protocol::printable(msg, 4096));
        return;
    };
    if level == "debug" && !t.debug {
        return;
    }
    let line = if t.json {
        let v = serde_json::json!({"level": level, "msg": msg, "time": rfc3339(SystemTime::now())});
        format!("{v}\n")
    } else {
        format!(
            "time=\"{}\" level={level} msg={:?}\n",
            rfc3339(SystemTime::now()),
            msg
        )
    };
    match &t.path {
        Some(p) => {
            if let Ok(mut f) = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(crate::util::PRIVATE_FILE_MODE)
                .open(p)
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

#[macro_export]
macro_rules! debug {
    ($($a:tt)*) => { $crate::log::log("debug", &format!($($a)*)) };
}
#[macro_export]
macro_rules! warn {
    ($($a:tt)*) => { $crate::log::log("warning", &format!($($a)*)) };
}
