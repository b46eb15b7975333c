//! Starting a helper process that reports back: the monitor of a new
//! container, or of a detached exec. The helper gets the write end of a
//! pipe as fd 3 and writes one line on it, `ok` once it stands, or
//! `error: MESSAGE`; the caller waits for that line (bounded).

use std::io::{PipeReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A helper that did not come up: it could not be started, or said why
/// (its own message), or said nothing in time.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("pipe: {0}")]
    Pipe(std::io::Error),
    #[error("start the {what}: {source}")]
    Start {
        what: String,
        source: std::io::Error,
    },
    #[error("no answer from the monitor within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("poll: {0}")]
    Poll(std::io::Error),
    #[error("read the monitor's answer: {0}")]
    Read(std::io::Error),
    /// The helper's own `error: ...` line.
    #[error("{0}")]
    Reported(String),
    #[error("the monitor exited without an answer (see its log)")]
    NoAnswer,
}

type Result<T, E = SpawnError> = std::result::Result<T, E>;

/// The descriptor a helper finds its ready pipe on.
pub const READY_FD: RawFd = 3;

/// Starts `cmd` (the front end's monitor or exec monitor) as a detached
/// child (own session) with the write end of a ready pipe as its fd 3, and
/// waits for its "ok" or "error: ..." line (see [`report`]). Returns the
/// child's pid once it says ok.
///
/// With `console` the child gets /dev/null as stdio: its process's terminal
/// goes over the console socket, and a caller that reads our stdout and
/// stderr to EOF (go-runc does for a terminal create) must not wait for the
/// container's lifetime.
pub fn spawn_ready(mut cmd: Command, what: &str, limit: Duration, console: bool) -> Result<i32> {
    // Both ends close on exec; the child's pre_exec step reopens the write end.
    let (r, w) = std::io::pipe().map_err(SpawnError::Pipe)?;
    let wfd = w.as_raw_fd();
    if console {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
    // Between fork and exec: an own session, and the pipe's write end as
    // READY_FD, open across exec.
    let child_setup = move || {
        // SAFETY: setsid(2) is async-signal-safe.
        unsafe { libc::setsid() };
        if wfd == READY_FD {
            // SAFETY: fcntl(2) on the inherited descriptor; async-signal-safe.
            let fl = unsafe { libc::fcntl(READY_FD, libc::F_GETFD) };
            // SAFETY: as above.
            if fl < 0 || unsafe { libc::fcntl(READY_FD, libc::F_SETFD, fl & !libc::FD_CLOEXEC) } < 0
            {
                return Err(std::io::Error::last_os_error());
            }
        // SAFETY: dup2(2) is async-signal-safe; a dup is open across exec.
        } else if unsafe { libc::dup2(wfd, READY_FD) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: child_setup makes only async-signal-safe calls.
    unsafe { cmd.pre_exec(child_setup) };
    let mut child = cmd.spawn().map_err(|source| SpawnError::Start {
        what: what.to_string(),
        source,
    })?;
    drop(w);
    let pid = crate::util::pid(child.id());
    match read_ready(r, limit) {
        Ok(()) => Ok(pid),
        Err(e) => {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Reads the ready pipe: Ok on "ok", Err with the message otherwise.
fn read_ready(mut f: PipeReader, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SpawnError::Timeout(limit));
        }
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(SpawnError::Poll(e));
        }
        if n == 0 {
            continue;
        }
        let mut chunk = [0u8; 4096];
        let k = match f.read(&mut chunk) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SpawnError::Read(e)),
        };
        buf.extend_from_slice(&chunk[..k]);
        if k == 0 || buf.contains(&b'\n') || buf.len() > 64 * 1024 {
            break;
        }
    }
    let s = String::from_utf8_lossy(&buf);
    let line = s.lines().next().unwrap_or("").trim();
    if line == "ok" {
        Ok(())
    } else if let Some(e) = line.strip_prefix("error: ") {
        Err(SpawnError::Reported(e.to_string()))
    } else {
        Err(SpawnError::NoAnswer)
    }
}

/// Makes the ready pipe's write end (which the helper got open across
/// exec, as [`READY_FD`]) close-on-exec, so that what the helper starts in
/// turn (virtiofsd, husk-vmm, hooks) does not hold it: the caller must see
/// the pipe close when the helper exits, whatever outlives it.
pub fn close_on_exec(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl(2) on a descriptor we own.
    let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    // SAFETY: as above.
    if fl < 0 || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, fl | libc::FD_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The ready pipe a helper was started with: the write end its parent
/// ([`spawn_ready`]) dup2'd to `fd` (normally [`READY_FD`]); `None` for a
/// negative `fd` (no ready pipe).
pub fn inherited_ready_pipe(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: spawn_ready passes the ready pipe's write end as this
    // descriptor (dup2 before exec); nothing else in the helper owns it.
    (fd >= 0).then(|| unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// Writes `msg` on the ready pipe, once: `"ok\n"` or `"error: ...\n"`.
pub fn report(ready: &mut Option<OwnedFd>, msg: &str) {
    if let Some(fd) = ready.take() {
        let mut f = std::fs::File::from(fd);
        let _ = f.write_all(msg.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines() {
        let (r, mut w) = std::io::pipe().unwrap();
        w.write_all(b"ok\n").unwrap();
        assert!(read_ready(r, Duration::from_secs(5)).is_ok());
        let (r, mut w) = std::io::pipe().unwrap();
        w.write_all(b"error: bad thing\n").unwrap();
        assert_eq!(
            read_ready(r, Duration::from_secs(5))
                .unwrap_err()
                .to_string(),
            "bad thing"
        );
        let (r, w) = std::io::pipe().unwrap();
        drop(w);
        assert!(read_ready(r, Duration::from_secs(5))
            .unwrap_err()
            .to_string()
            .contains("without an answer"));
        let (r, _w) = std::io::pipe().unwrap();
        let t = Instant::now();
        assert!(read_ready(r, Duration::from_millis(200))
            .unwrap_err()
            .to_string()
            .contains("no answer"));
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
