//! A process's stdio: the paths containerd gives (FIFOs its client reads
//! and writes), wired to the helper that relays the process.
//!
//! Without a terminal the helper's stdout and stderr are the FIFOs
//! themselves (opened read-write, which never blocks; the reader sees EOF
//! once the helper and what it started are gone); its stdin is one end of
//! a socket pair that a thread fills from the stdin FIFO and shuts down at
//! the FIFO's EOF or on CloseIO. With a terminal the helper sends a pty
//! master to a console socket the shim listens on, and threads copy the
//! stdin FIFO into it and it into the stdout FIFO.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Result, ShimError};

/// What containerd asked for a process's stdio.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// How long the shim waits for a helper's pty master, and for the last
/// output of a terminal to be copied once the process exited.
const CONSOLE_WAIT: Duration = Duration::from_secs(10);
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// A path containerd may give for a stream: empty (none) or a FIFO or
/// file path; log URIs (`binary://`, `file://`) are not supported.
pub fn check_path(field: &'static str, p: &str) -> Result<Option<PathBuf>> {
    if p.is_empty() {
        return Ok(None);
    }
    if p.contains("://") {
        return Err(ShimError::field(
            field,
            format!("{p}: log URIs are not supported, only FIFO or file paths"),
        ));
    }
    if !p.starts_with('/') {
        return Err(ShimError::field(
            field,
            format!("{p}: not an absolute path"),
        ));
    }
    Ok(Some(PathBuf::from(p)))
}

impl IoPaths {
    pub fn check(&self) -> Result<()> {
        check_path("stdin", &self.stdin)?;
        check_path("stdout", &self.stdout)?;
        check_path("stderr", &self.stderr)?;
        Ok(())
    }
}

/// Opens an output stream for writing without waiting for its reader.
fn open_out(field: &'static str, p: &str) -> Result<Option<File>> {
    let Some(path) = check_path(field, p)? else {
        return Ok(None);
    };
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map(Some)
        .map_err(ShimError::io(format!("{field} {}", path.display())))
}

fn out_stdio(f: Option<File>) -> Stdio {
    f.map_or_else(Stdio::null, Stdio::from)
}

/// Opens the stdin FIFO for reading (blocks until containerd's side
/// opens it for writing) and copies it into `to` until EOF; then `done`.
fn feed_stdin(path: PathBuf, mut to: impl Write, done: impl FnOnce()) {
    if let Ok(mut f) = File::open(&path) {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    done();
}

/// Releases a thread blocked opening `path` (a FIFO) for reading: a
/// writer that opens and closes at once gives it EOF.
fn unblock_fifo_reader(path: &Path) {
    let _ = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Option<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f).ok()
}

/// The relay of one process's stdio, on the shim's side.
pub struct Relay {
    stdin_path: Option<PathBuf>,
    /// Our end of the helper's stdin (no terminal): shut down on CloseIO.
    stdin: Option<UnixStream>,
    /// The pty master (terminal): resized on ResizePty.
    console: Mutex<Option<File>>,
    /// The copy from the pty master to the stdout FIFO.
    output: Mutex<Option<mpsc::Receiver<()>>>,
}

/// Stdio for a helper to be started, and what the shim keeps.
pub struct Prepared {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    /// The console socket to give the helper (terminal).
    pub console_socket: Option<PathBuf>,
    listener: Option<(UnixListener, PathBuf)>,
    relay: Relay,
}

static CONSOLE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A short console socket path (sun_path is 108 bytes; ids are 64).
fn console_path(dir: &Path) -> PathBuf {
    let n = CONSOLE_SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("console-{}-{n}.sock", std::process::id()))
}

/// Opens what a process's helper needs; `sock_dir` is where a console
/// socket goes.
pub fn prepare(io: &IoPaths, sock_dir: &Path) -> Result<Prepared> {
    io.check()?;
    let stdin_path = check_path("stdin", &io.stdin)?;
    if io.terminal {
        let path = console_path(sock_dir);
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path)
            .map_err(ShimError::io(format!("console socket {}", path.display())))?;
        return Ok(Prepared {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
            console_socket: Some(path.clone()),
            listener: Some((l, path)),
            relay: Relay {
                stdin_path,
                stdin: None,
                console: Mutex::new(None),
                output: Mutex::new(None),
            },
        });
    }
    let stdout = out_stdio(open_out("stdout", &io.stdout)?);
    let stderr = out_stdio(open_out("stderr", &io.stderr)?);
    let (stdin, ours) = match &stdin_path {
        None => (Stdio::null(), None),
        Some(_) => {
            let (a, b) = UnixStream::pair().map_err(ShimError::io("stdin socket pair"))?;
            (Stdio::from(OwnedFd::from(a)), Some(b))
        }
    };
    Ok(Prepared {
        stdin,
        stdout,
        stderr,
        console_socket: None,
        listener: None,
        relay: Relay {
            stdin_path,
            stdin: ours,
            console: Mutex::new(None),
            output: Mutex::new(None),
        },
    })
}

/// Waits (bounded) for one connection on `l`.
fn accept_within(l: &UnixListener, limit: Duration) -> Result<UnixStream> {
    let deadline = Instant::now() + limit;
    l.set_nonblocking(true)
        .map_err(ShimError::io("console socket"))?;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)
                    .map_err(ShimError::io("console socket"))?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(ShimError::Precondition(format!(
                        "no pty master on the console socket within {} s",
                        limit.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(ShimError::io("console socket accept")(e)),
        }
    }
}

impl Prepared {
    /// Once the helper stands: starts the copies. `io` as in `prepare`.
    pub fn attach(mut self, io: &IoPaths) -> Result<Relay> {
        if let Some((l, path)) = self.listener.take() {
            let r = accept_within(&l, CONSOLE_WAIT).and_then(|s| {
                husk_sys::recv_fd(&s).map_err(ShimError::io("receive the pty master"))
            });
            let _ = std::fs::remove_file(&path);
            let master = File::from(r?);
            self.attach_console(master, io)?;
            return Ok(self.relay);
        }
        if let (Some(path), Some(sock)) = (&self.relay.stdin_path, &self.relay.stdin) {
            let (path, w) = (
                path.clone(),
                sock.try_clone().map_err(ShimError::io("stdin"))?,
            );
            let end = sock.try_clone().map_err(ShimError::io("stdin"))?;
            spawn("stdin", move || {
                feed_stdin(path, &w, move || {
                    let _ = end.shutdown(Shutdown::Write);
                })
            });
        }
        Ok(self.relay)
    }

    fn attach_console(&mut self, master: File, io: &IoPaths) -> Result<()> {
        if let Some(path) = self.relay.stdin_path.clone() {
            let w = master.try_clone().map_err(ShimError::io("pty master"))?;
            spawn("pty-in", move || feed_stdin(path, w, || {}));
        }
        let out = open_out("stdout", &io.stdout)?;
        let mut from = master.try_clone().map_err(ShimError::io("pty master"))?;
        let (tx, rx) = mpsc::channel();
        spawn("pty-out", move || {
            let mut out = out;
            let mut buf = vec![0u8; 32 * 1024];
            // EIO once the helper (the last holder of the slave) is gone.
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Some(o) = out.as_mut() {
                    if o.write_all(&buf[..n]).is_err() {
                        out = None;
                    }
                }
            }
            let _ = tx.send(());
        });
        *self.relay.output.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
        *self.relay.console.lock().unwrap_or_else(|e| e.into_inner()) = Some(master);
        Ok(())
    }

    /// The helper did not come up: nothing to relay.
    pub fn abandon(self) {
        if let Some((_, path)) = &self.listener {
            let _ = std::fs::remove_file(path);
        }
        if let Some(p) = &self.relay.stdin_path {
            unblock_fifo_reader(p);
        }
    }
}

impl Relay {
    /// CloseIO with stdin: the process reads EOF.
    pub fn close_stdin(&self) {
        if let Some(s) = &self.stdin {
            let _ = s.shutdown(Shutdown::Write);
        }
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let g = self.console.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = g.as_ref() else {
            return Ok(());
        };
        let ws = husk_sys::WindowSize {
            rows: u16::try_from(height).map_err(|_| ShimError::field("height", "too large"))?,
            cols: u16::try_from(width).map_err(|_| ShimError::field("width", "too large"))?,
        };
        husk_sys::set_window_size(m.as_raw_fd(), ws).map_err(ShimError::io("resize the pty"))
    }

    /// Once the process exited: waits (bounded) for its last terminal
    /// output to be copied, so that the exit event follows the output.
    pub fn drain(&self) {
        let rx = self.output.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(rx) = rx {
            let _ = rx.recv_timeout(DRAIN_WAIT);
        }
    }

    /// The process is gone for good: releases the stdin copy if
    /// containerd's side never opened the FIFO, and the pty.
    pub fn close(&self) {
        self.close_stdin();
        if let Some(p) = &self.stdin_path {
            unblock_fifo_reader(p);
        }
        self.console
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(check_path("stdin", "").unwrap(), None);
        assert_eq!(
            check_path("stdout", "/run/x/1-stdout").unwrap(),
            Some(PathBuf::from("/run/x/1-stdout"))
        );
        let e = check_path("stdout", "binary:///usr/bin/logger?x=1").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("stdout: binary:///usr/bin/logger"));
        let e = check_path("stderr", "rel/path").unwrap_err();
        assert_eq!(e.to_string(), "stderr: rel/path: not an absolute path");
    }

    #[test]
    fn stdin_fifo_to_socket_with_eof() {
        let dir = std::env::temp_dir().join(format!("husk-shim-stdio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("stdin");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (mut helper, ours) = UnixStream::pair().unwrap();
        let end = ours.try_clone().unwrap();
        let f = fifo.clone();
        let t = std::thread::spawn(move || {
            feed_stdin(f, &ours, move || {
                let _ = end.shutdown(Shutdown::Write);
            })
        });
        let mut w = OpenOptions::new().write(true).open(&fifo).unwrap();
        w.write_all(b"hi\n").unwrap();
        drop(w);
        let mut got = String::new();
        helper.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hi\n");
        t.join().unwrap();
        // A reader whose writer never comes is released.
        let f = fifo.clone();
        let t = std::thread::spawn(move || feed_stdin(f, std::io::sink(), || {}));
        std::thread::sleep(Duration::from_millis(50));
        unblock_fifo_reader(&fifo);
        t.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
