//! OCI hooks, run on the host as runc runs them: the container's state
//! JSON on stdin, the hook's own args and env, its timeout.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
pub fn run(kind: &str, hooks: &[Hook], state_json: &str) -> Result<(), HookError> {
    for (i, h) in hooks.iter().enumerate() {
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
        let deadline = Instant::now() + limit;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(what(HookFailure::TimedOut(limit.as_secs())));
                }
                Err(e) => return Err(what(e.into())),
            }
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
}
