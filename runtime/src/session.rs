//! A process in the guest seen from the host: its standard streams relayed
//! to this process's descriptors (or a pty handed to the daemon over its
//! console socket), its exit awaited, the signals we get forwarded.

use std::io::{IsTerminal, Read, Write};
use std::mem::ManuallyDrop;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use husk_protocol::client::{Client, ClientError};
use husk_protocol::{ExitInfo, StdioConfig, StdioStream, AGENT_PORT};

use crate::sys::{self, SysError};

/// What a session with the agent failed at.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Connecting to the agent, or a request to it.
    #[error(transparent)]
    Agent(#[from] ClientError),
    #[error("attach {stream:?}: {source}")]
    Attach {
        stream: StdioStream,
        source: ClientError,
    },
    #[error("start {name} thread: {source}")]
    Thread {
        name: String,
        source: std::io::Error,
    },
    /// A second handle on a relayed stream.
    #[error("{0}")]
    Clone(std::io::Error),
    #[error(transparent)]
    Sys(#[from] SysError),
}

type Result<T, E = SessionError> = std::result::Result<T, E>;

/// How long a single control request to the agent may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One process in one VM.
#[derive(Debug, Clone)]
pub struct Target {
    /// husk-vmm's vsock Unix socket.
    pub vsock: PathBuf,
    pub guest_id: String,
    pub exec_id: Option<String>,
}

impl Target {
    /// A connection to the agent. A guest that refuses or does not answer
    /// for a moment (full accept backlog, a stall) is tried again within
    /// [`CALL_TIMEOUT`]; a VMM that is gone fails at once.
    pub fn connect(&self) -> Result<Client> {
        self.connect_within(CALL_TIMEOUT)
    }

    /// [`Target::connect`] with its own bound (also the call timeout).
    pub fn connect_within(&self, limit: Duration) -> Result<Client> {
        Client::connect_uds_within(&self.vsock, AGENT_PORT, limit).map_err(SessionError::Agent)
    }

    /// [`Target::connect`] by `deadline`: connecting, and each call on the
    /// connection, end by then whatever the guest does.
    pub fn connect_by(&self, deadline: Instant) -> Result<Client> {
        let left = || deadline.saturating_duration_since(Instant::now());
        let mut c = self.connect_within(left())?;
        c.set_timeout(left())?;
        Ok(c)
    }
}

/// Where a process's terminal goes.
#[derive(Debug, Clone)]
pub enum Terminal {
    /// No pty: stdin, stdout, stderr are relayed to fds 0, 1, 2.
    No,
    /// A host pty whose master is sent to the daemon's console socket.
    Console(PathBuf),
    /// The pty stream relayed to fds 0/1 (this terminal, put in raw mode).
    Inherit,
}

impl Terminal {
    pub fn stdio(&self) -> StdioConfig {
        StdioConfig {
            stdin: true,
            stdout: true,
            stderr: true,
        }
    }
}

/// The relays of one process.
pub struct Attached {
    outputs: Vec<JoinHandle<()>>,
    /// The terminal we read window sizes from (pty slave or fd 0).
    tty: Option<RawFd>,
    _slave: Option<OwnedFd>,
    raw: Option<(RawFd, libc::termios)>,
}

/// The window size of terminal `fd`, if it has one set (0x0 is unknown).
fn tty_size(fd: RawFd) -> Option<husk_sys::WindowSize> {
    husk_sys::window_size(fd).ok().filter(|w| !w.is_unset())
}

fn fd_file(fd: RawFd) -> ManuallyDrop<std::fs::File> {
    // SAFETY: fds 0/1/2 (or a pty we own) outlive the relay threads, and
    // ManuallyDrop never closes them.
    ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Copies `from` into `to` until EOF. Errors writing `to` (a daemon that
/// went away) do not stop the copy: the process must not block on output
/// nobody reads.
fn pump(mut from: impl Read, mut to: impl Write) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sink_ok = true;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if sink_ok && to.write_all(&buf[..n]).and_then(|_| to.flush()).is_err() {
            sink_ok = false;
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|source| SessionError::Thread {
            name: name.into(),
            source,
        })
}

/// Attaches the process's streams and starts relaying them.
pub fn attach(t: &Target, term: &Terminal) -> Result<Attached> {
    let open = |s: StdioStream| -> Result<UnixStream> {
        t.connect()?
            .attach_stdio(&t.guest_id, t.exec_id.as_deref(), s)
            .map_err(|source| SessionError::Attach { stream: s, source })
    };
    let mut a = Attached {
        outputs: vec![],
        tty: None,
        _slave: None,
        raw: None,
    };
    match term {
        Terminal::No => {
            let out = open(StdioStream::Stdout)?;
            a.outputs
                .push(spawn("stdout", move || pump(out, &*fd_file(1)))?);
            let err = open(StdioStream::Stderr)?;
            a.outputs
                .push(spawn("stderr", move || pump(err, &*fd_file(2)))?);
            let inp = open(StdioStream::Stdin)?;
            spawn("stdin", move || {
                pump(&*fd_file(0), &inp);
                let _ = inp.shutdown(Shutdown::Write);
            })?;
        }
        Terminal::Console(sock) => {
            let pty = open(StdioStream::Pty)?;
            let (master, slave, name) = sys::openpty()?;
            // The daemon's side sees exactly the guest's bytes: the guest
            // pty does the line discipline.
            sys::make_raw(slave.as_raw_fd());
            sys::send_console(sock, &master, &name)?;
            drop(master);
            sys::set_ctty(slave.as_raw_fd());
            let (sfd, pty2) = (
                slave.as_raw_fd(),
                pty.try_clone().map_err(SessionError::Clone)?,
            );
            a.outputs
                .push(spawn("pty-out", move || pump(pty, &*fd_file(sfd)))?);
            spawn("pty-in", move || pump(&*fd_file(sfd), &pty2))?;
            a.tty = Some(sfd);
            a._slave = Some(slave);
        }
        Terminal::Inherit => {
            let pty = open(StdioStream::Pty)?;
            if std::io::stdin().is_terminal() {
                a.raw = sys::make_raw(0).map(|t| (0, t));
                a.tty = Some(0);
            }
            let pty2 = pty.try_clone().map_err(SessionError::Clone)?;
            a.outputs
                .push(spawn("pty-out", move || pump(pty, &*fd_file(1)))?);
            spawn("pty-in", move || {
                pump(&*fd_file(0), &pty2);
            })?;
        }
    }
    Ok(a)
}

impl Attached {
    /// Tells the guest the host terminal's size, if there is one.
    pub fn resize(&self, t: &Target) {
        if let Some(size) = self.tty.and_then(tty_size) {
            if let Ok(mut c) = t.connect() {
                let _ = c.resize_pty(&t.guest_id, t.exec_id.as_deref(), size.rows, size.cols);
            }
        }
    }

    /// Waits (at most `limit`) for the output relays to reach EOF.
    pub fn finish(self, limit: Duration) {
        let (tx, rx) = mpsc::channel();
        let n = self.outputs.len();
        for h in self.outputs {
            let tx = tx.clone();
            let _ = std::thread::Builder::new().spawn(move || {
                let _ = h.join();
                let _ = tx.send(());
            });
        }
        let deadline = std::time::Instant::now() + limit;
        for _ in 0..n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if rx.recv_timeout(left).is_err() {
                break;
            }
        }
        if let Some((fd, t)) = &self.raw {
            sys::restore_term(*fd, t);
        }
    }
}

/// Waits for the process to exit (no timeout: a container may run for
/// years); `Err` when the agent connection breaks.
pub fn wait(t: &Target) -> Result<ExitInfo> {
    let mut c = t.connect()?;
    c.clear_timeout()?;
    Ok(c.wait(&t.guest_id, t.exec_id.as_deref())?)
}

/// Relays the signals this process gets to the guest process, in a thread:
/// SIGWINCH resizes the terminal, SIGCHLD is ours. The caller blocked the
/// set before starting any thread.
pub fn forward_signals(t: Target, tty: Option<RawFd>) -> Result<()> {
    let set = sys::relay_sigset();
    spawn("signals", move || loop {
        let sig = set.wait();
        match sig {
            libc::SIGCHLD | libc::SIGPIPE | libc::SIGURG => {}
            libc::SIGWINCH => {
                if let Some(size) = tty.and_then(tty_size) {
                    if let Ok(mut c) = t.connect() {
                        let _ =
                            c.resize_pty(&t.guest_id, t.exec_id.as_deref(), size.rows, size.cols);
                    }
                }
            }
            _ => {
                crate::debug!("forwarding signal {sig} to {}", t.guest_id);
                if let Ok(mut c) = t.connect() {
                    let _ = c.signal(&t.guest_id, t.exec_id.as_deref(), sig, false);
                }
            }
        }
    })?;
    Ok(())
}

impl Attached {
    pub fn tty(&self) -> Option<RawFd> {
        self.tty
    }
}

/// The exit status a shell would show: the code, or 128+N for signal N.
pub fn status_of(e: &ExitInfo) -> i32 {
    e.status
}

/// Longest line of a log [`tail`] shows.
const TAIL_LINE_MAX: usize = 400;

/// Reads the last `n` lines of a log file, joined with " | ", for errors.
/// What the guest wrote there (its console, what it made a helper print)
/// is shown, never obeyed: see [`husk_protocol::printable`].
pub fn tail(path: &Path, n: usize) -> String {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(_) => return String::new(),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut s = Vec::new();
    let _ = std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(len.saturating_sub(8192)));
    let _ = f.take(8192).read_to_end(&mut s);
    let s = String::from_utf8_lossy(&s);
    let lines: Vec<String> = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| husk_protocol::printable(l, TAIL_LINE_MAX))
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
