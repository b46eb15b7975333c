//! OCI hooks, run on the host as runc runs them: the container's state
//! JSON on stdin, the hook's own args and env, its timeout.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

use husk_protocol::oci::Hook;

/// A hook that failed: `KIND hook #N (PATH): why`.
#[derive(Debug, thiserror::Error)]
#[error("{kind} hook #{index} ({}): {failure}", path.display())]
pub struct HookError {
    pub kind: String,
    pub index: usize,
    pub path: PathBuf,
    pub failure: HookFailure,
}

#[derive(Debug, thiserror::Error)]
pub enum HookFailure {
    /// It could not be started or waited for.
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("timed out after {0} s")]
    TimedOut(u64),
    /// It failed: its status and the first line of its stderr.
    #[error("{status}: {stderr}")]
    Failed { status: ExitStatus, stderr: String },
}

/// No hook may hold a command forever, even without a timeout of its own.
const MAX_HOOK_TIME: Duration = Duration::from_secs(600);

/// Runs `hooks` in order; the first failure ends the run with one line
/// naming the hook (`prestart hook #0 (/usr/bin/x): exit status 1: ...`).
/// For the hooks whose failure must stop the operation: prestart,
/// createRuntime, createContainer, startContainer.
pub fn run(kind: &str, hooks: &[Hook], state_json: &str) -> Result<(), HookError> {
    for (i, h) in hooks.iter().enumerate() {
        run_one(kind, i, h, state_json)?;
    }
    Ok(())
}

/// Runs every one of `hooks` in order, whatever the others do, and logs a
/// warning for each that fails: the runtime spec's rule for poststart and
/// poststop, whose failures leave the lifecycle (and the container's exit
/// status) as it is. Returns the failures, in order.
pub fn run_all(kind: &str, hooks: &[Hook], state_json: &str) -> Vec<HookError> {
    let mut failed = Vec::new();
    for (i, h) in hooks.iter().enumerate() {
        if let Err(e) = run_one(kind, i, h, state_json) {
            crate::warn!("{e}");
            failed.push(e);
        }
    }
    failed
}

/// Runs hook `h`, #`i` of its `kind`.
fn run_one(kind: &str, i: usize, h: &Hook, state_json: &str) -> Result<(), HookError> {
    let path = h.path();
    let what = |failure: HookFailure| HookError {
        kind: kind.to_string(),
        index: i,
        path: path.clone(),
        failure,
    };
    let mut cmd = Command::new(path);
    if let Some(args) = h.args() {
        if let Some((a0, rest)) = args.split_first() {
            use std::os::unix::process::CommandExt;
            cmd.arg0(a0).args(rest);
        }
    }
    if let Some(env) = h.env() {
        cmd.env_clear();
        for kv in env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| what(e.into()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(state_json.as_bytes());
    }
    let limit = h
        .timeout()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs)
        .unwrap_or(MAX_HOOK_TIME)
        .min(MAX_HOOK_TIME);
    let status = match crate::util::wait_by(&mut child, limit) {
        Ok(Some(s)) => s,
        Ok(None) => return Err(what(HookFailure::TimedOut(limit.as_secs()))),
        Err(e) => return Err(what(e.into())),
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = (&mut e).take(4096).read_to_string(&mut err);
        }
        let first = err.lines().next().unwrap_or("").trim();
        return Err(what(HookFailure::Failed {
            status,
            stderr: first.to_string(),
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(v: serde_json::Value) -> Hook {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn state_on_stdin_and_failures() {
        let dir = std::env::temp_dir().join(format!("husk-hooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let ok = hook(serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat >{}; echo $X >>{}", out.display(), out.display())],
            "env": ["X=from-env"]
        }));
        run("prestart", &[ok], "{\"id\":\"c\"}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"c\"}from-env\n"
        );
        let bad = hook(
            serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", "echo boom >&2; exit 3"]}),
        );
        let e = run("poststop", &[bad], "{}").unwrap_err().to_string();
        assert_eq!(e, "poststop hook #0 (/bin/sh): exit status: 3: boom");
        let slow =
            hook(serde_json::json!({"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}));
        assert!(run("prestart", &[slow], "{}")
            .unwrap_err()
            .to_string()
            .contains("timed out"));
        let missing = hook(serde_json::json!({"path": "/no/such/hook"}));
        assert!(run("createRuntime", &[missing], "{}")
            .unwrap_err()
            .to_string()
            .starts_with("createRuntime hook #0 (/no/such/hook): "));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A failing poststart (or poststop) hook does not keep the ones after
    /// it from running; each failure is a warning in the log.
    #[test]
    fn run_all_goes_on_past_a_failure_and_warns() {
        let dir = std::env::temp_dir().join(format!("husk-hooks-all-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("husk.log");
        // The log target is set once per process; no other test sets it.
        crate::log::init_log(Some(log.clone()), false, false);
        let marker = dir.join("second-ran");
        let failing = hook(
            serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", "echo first-fails >&2; exit 4"]}),
        );
        let second = hook(serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat >{}", marker.display())]
        }));
        let failed = run_all("poststart", &[failing, second], "{\"id\":\"c\"}");
        assert_eq!(
            std::fs::read_to_string(&marker).unwrap(),
            "{\"id\":\"c\"}",
            "the second hook ran, with the state on stdin"
        );
        let texts: Vec<String> = failed.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            ["poststart hook #0 (/bin/sh): exit status: 4: first-fails"]
        );
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(
            logged.contains(
                "level=warning msg=\"poststart hook #0 (/bin/sh): exit status: 4: first-fails\""
            ),
            "{logged}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
