//! The standard streams of a container process, agent side: the pipes (or
//! the pty master) the agent holds, which connection is attached to which
//! stream, and the relays that copy between a stream and its connection.
//! A process's exit is reported only once its output was relayed
//! ([`Output::drained`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use husk_protocol::{StdioConfig, StdioStream};

use super::error::RuntimeError;
use super::{lock, Res};
use crate::container::launch::StdioFds;
use crate::server::Conn;

/// After a process exits, an output stream that is empty but still has a
/// writer (a daemonized child) no longer holds back the exit report after this.
pub const GRACE: Duration = Duration::from_millis(1000);

/// One output stream (stdout, stderr, or the pty master).
#[derive(Default)]
pub struct Output {
    /// Our read end; unset when the stream is not piped.
    pub fd: OnceLock<Arc<File>>,
    attached: AtomicBool,
    done: AtomicBool,
    in_read: AtomicBool,
}

impl Output {
    /// Whether the exit may be reported as far as this stream is concerned.
    pub fn drained(&self, since_exit: Duration) -> bool {
        let Some(f) = self.fd.get() else { return true };
        if self.done.load(Ordering::SeqCst) {
            return true;
        }
        let now = husk_sys::pipe_state(&**f);
        if self.attached.load(Ordering::SeqCst) {
            self.in_read.load(Ordering::SeqCst) && now.available == 0 && since_exit > GRACE
        } else {
            now.available == 0 && (now.hung_up || since_exit > GRACE)
        }
    }

    /// Claims the stream for one connection.
    fn claim(&self, stream: StdioStream) -> Res<()> {
        if self.fd.get().is_none() {
            return Err(RuntimeError::NotPiped { stream });
        }
        if self.attached.swap(true, Ordering::SeqCst) {
            return Err(RuntimeError::Attached { stream });
        }
        Ok(())
    }

    /// Copies the stream to `conn` until EOF (or EIO: a pty whose slave is
    /// closed), then closes the connection's write side.
    fn relay(&self, mut conn: Box<dyn Conn>) {
        let Some(f) = self.fd.get().cloned() else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            self.in_read.store(true, Ordering::SeqCst);
            let n = (&*f).read(&mut buf);
            self.in_read.store(false, Ordering::SeqCst);
            match n {
                Ok(0) => break,
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = conn.shutdown_write();
        self.done.store(true, Ordering::SeqCst);
    }
}

/// The standard streams of one process, agent side.
#[derive(Default)]
pub struct Stdio {
    stdin: Mutex<Option<File>>,
    stdin_conn: Mutex<Option<Box<dyn Conn>>>,
    stdin_attached: AtomicBool,
    pub stdout: Output,
    pub stderr: Output,
    pub pty: Output,
}

/// /dev/null, opened for reading or for writing.
fn devnull(write: bool) -> io::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")?
        .into())
}

impl Stdio {
    /// Pipes for the streams `cfg` asks for (none with a terminal: the pty
    /// master, set later, carries everything); returns the process's ends
    /// (/dev/null for the others) and ours.
    pub fn pipes(cfg: StdioConfig, terminal: bool) -> io::Result<(StdioFds, Stdio)> {
        let mut st = Stdio::default();
        let cfg = if terminal {
            StdioConfig::default()
        } else {
            cfg
        };
        let stdin = if cfg.stdin {
            let (r, w) = io::pipe()?;
            *lock(&st.stdin) = Some(File::from(OwnedFd::from(w)));
            r.into()
        } else {
            devnull(false)?
        };
        let out = |on: bool, o: &mut Output| -> io::Result<OwnedFd> {
            if on {
                let (r, w) = io::pipe()?;
                let _ = o.fd.set(Arc::new(File::from(OwnedFd::from(r))));
                Ok(w.into())
            } else {
                devnull(true)
            }
        };
        let stdout = out(cfg.stdout, &mut st.stdout)?;
        let stderr = out(cfg.stderr, &mut st.stderr)?;
        Ok((StdioFds::Fds([stdin, stdout, stderr]), st))
    }

    /// Sets the pty master (a process with a terminal).
    pub fn set_pty(&self, master: File) {
        let _ = self.pty.fd.set(Arc::new(master));
    }

    /// The output streams, for the exit report to wait on.
    pub fn outputs(&self) -> [&Output; 3] {
        [&self.stdout, &self.stderr, &self.pty]
    }

    /// Validates an attach and claims the stream for one connection.
    pub fn claim(&self, stream: StdioStream) -> Res<()> {
        match stream {
            StdioStream::Stdout => self.stdout.claim(stream),
            StdioStream::Stderr => self.stderr.claim(stream),
            StdioStream::Pty => self.pty.claim(stream),
            StdioStream::Stdin => {
                if self.stdin_attached.swap(true, Ordering::SeqCst) {
                    return Err(RuntimeError::StdinAttached);
                }
                if lock(&self.stdin).is_none() {
                    return Err(RuntimeError::StdinClosed);
                }
                Ok(())
            }
        }
    }

    /// Undoes a [`Stdio::claim`] whose relay will never run.
    pub fn release(&self, stream: StdioStream) {
        let flag = match stream {
            StdioStream::Stdout => &self.stdout.attached,
            StdioStream::Stderr => &self.stderr.attached,
            StdioStream::Pty => &self.pty.attached,
            StdioStream::Stdin => &self.stdin_attached,
        };
        flag.store(false, Ordering::SeqCst);
    }

    /// Closes the process's stdin (and ends a relay that feeds it).
    pub fn close_stdin(&self) {
        lock(&self.stdin).take();
        if let Some(c) = lock(&self.stdin_conn).take() {
            let _ = c.shutdown_read();
        }
    }

    /// Relays `stream` and `conn` until the stream ends (on the
    /// connection's thread).
    pub fn relay(&self, stream: StdioStream, conn: Box<dyn Conn>) {
        match stream {
            StdioStream::Stdout => self.stdout.relay(conn),
            StdioStream::Stderr => self.stderr.relay(conn),
            StdioStream::Stdin => self.relay_stdin(conn),
            StdioStream::Pty => self.relay_pty(conn),
        }
    }

    fn relay_stdin(&self, mut conn: Box<dyn Conn>) {
        let Some(mut pipe) = lock(&self.stdin).take() else {
            return;
        };
        if let Ok(c) = conn.try_clone_conn() {
            *lock(&self.stdin_conn) = Some(c);
        }
        let _ = io::copy(&mut conn, &mut pipe);
        drop(pipe); // EOF for the process
        lock(&self.stdin_conn).take();
    }

    fn relay_pty(&self, conn: Box<dyn Conn>) {
        let Some(master) = self.pty.fd.get().cloned() else {
            return;
        };
        let (Ok(mut w), Ok(mut r)) = (master.try_clone(), conn.try_clone_conn()) else {
            return;
        };
        let _ = std::thread::Builder::new()
            .name("pty-in".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = io::copy(&mut r, &mut w);
            });
        self.pty.relay(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_protocol::{ErrorCode, ErrorInfo};
    use std::os::unix::net::UnixStream;

    fn info(r: Res<()>) -> ErrorInfo {
        ErrorInfo::from(r.unwrap_err())
    }

    fn all() -> StdioConfig {
        StdioConfig {
            stdin: true,
            stdout: true,
            stderr: true,
        }
    }

    fn ends(fds: StdioFds) -> [File; 3] {
        match fds {
            StdioFds::Fds(f) => f.map(File::from),
            StdioFds::Inherit => panic!("no descriptors"),
        }
    }

    #[test]
    fn claims_are_exclusive_until_released() {
        let (_fds, st) = Stdio::pipes(all(), false).unwrap();
        st.claim(StdioStream::Stdout).unwrap();
        let e = info(st.claim(StdioStream::Stdout));
        assert_eq!(e.code, ErrorCode::InvalidState);
        assert_eq!(e.message, "Stdout is attached already");
        st.release(StdioStream::Stdout);
        st.claim(StdioStream::Stdout).unwrap();
        st.claim(StdioStream::Stdin).unwrap();
        assert_eq!(
            info(st.claim(StdioStream::Stdin)).message,
            "stdin is attached already"
        );
        let e = info(st.claim(StdioStream::Pty));
        assert_eq!(e.message, "Pty of the process is not piped");
    }

    #[test]
    fn unpiped_streams_cannot_be_claimed() {
        let none = StdioConfig {
            stdin: false,
            stdout: false,
            stderr: true,
        };
        let (_fds, st) = Stdio::pipes(none, false).unwrap();
        assert!(st.claim(StdioStream::Stdout).is_err());
        assert!(st.claim(StdioStream::Stderr).is_ok());
        assert_eq!(
            info(st.claim(StdioStream::Stdin)).message,
            "stdin of the process is not piped or closed"
        );
        // A terminal pipes nothing: the pty carries it all.
        let (_fds, st) = Stdio::pipes(all(), true).unwrap();
        assert!(st.stdout.fd.get().is_none() && st.stderr.fd.get().is_none());
    }

    #[test]
    fn output_is_relayed_to_the_connection_and_then_drained() {
        let (fds, st) = Stdio::pipes(all(), false).unwrap();
        let [_stdin, mut out, _err] = ends(fds);
        assert!(!st.stdout.drained(Duration::ZERO), "writer still open");
        assert!(
            st.stderr.drained(GRACE * 2),
            "writer open but past the grace"
        );
        out.write_all(b"hello").unwrap();
        drop(out);
        st.claim(StdioStream::Stdout).unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        st.relay(StdioStream::Stdout, Box::new(ours));
        let mut got = String::new();
        theirs.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello");
        assert!(st.stdout.drained(Duration::ZERO));
    }

    #[test]
    fn stdin_is_relayed_and_closes() {
        let (fds, st) = Stdio::pipes(all(), false).unwrap();
        let [mut stdin, _out, _err] = ends(fds);
        st.claim(StdioStream::Stdin).unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(b"input").unwrap();
        theirs.shutdown(std::net::Shutdown::Write).unwrap();
        st.relay(StdioStream::Stdin, Box::new(ours));
        let mut got = String::new();
        stdin.read_to_string(&mut got).unwrap();
        assert_eq!(got, "input", "and EOF after it");
        st.close_stdin();
    }
}
