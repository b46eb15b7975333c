//! Blocking host-side client of the agent.
//!
//! The VMM exposes the guest's virtio-vsock device as a Unix socket
//! (Firecracker convention). To reach guest port `P` the host connects to that
//! socket, writes `CONNECT P\n` and reads one line `OK <hostport>\n`; from then
//! on the stream carries the agent protocol. A connection the VMM cannot set
//! up is closed after one line `ERR <reason>\n` ([`Refusal`]): the guest
//! refused it (nothing listens on `P` yet, or its backlog is full), did not
//! answer in time, or the VMM's connection limit is reached. A VMM without
//! reasons (Firecracker) just closes. [`Client::connect_uds_retry`] retries
//! with a short backoff while the guest boots; [`Client::connect_uds_within`]
//! retries what a running guest may refuse for a moment.
//!
//! The guest is not trusted to keep time: every call has a deadline (the
//! client's timeout, counted from the call's start) that holds however the
//! agent's bytes trickle in, and so does the handshake. Only what is meant
//! to block for as long as a process lives (a [`Client::wait`] after
//! [`Client::clear_timeout`], an [`Events`] stream, a stdio stream) is left
//! unbounded; it ends when the agent or the VM goes.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use husk_sys::deadline::{read_by, write_by};

use crate::frame::{read_frame, write_frame, FrameError};
pub use crate::handshake::{
    parse_handshake_reply, read_handshake_reply, HandshakeError, Refusal, MAX_HANDSHAKE_LINE,
};
use crate::{
    oci, ContainerState, ContainerStats, ErrorInfo, Event, ExitInfo, PingInfo, Request,
    RequestFrame, Response, ResponseFrame, RootfsSource, StdioConfig, StdioStream,
    PROTOCOL_VERSION,
};

/// First and largest pause between attempts of [`Client::connect_uds_retry`].
const RETRY_BACKOFF_START: Duration = Duration::from_millis(1);
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(20);

/// Smallest timeout applied to a socket (a zero timeout is invalid for it).
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// Errors of [`Client`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to vsock socket {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("vsock handshake on {} for port {port}: {source}", path.display())]
    Handshake {
        path: PathBuf,
        port: u32,
        #[source]
        source: HandshakeError,
    },
    #[error("agent not reachable on {} port {port} within {} ms ({attempts} attempts): {last}", path.display(), waited.as_millis())]
    RetryTimeout {
        path: PathBuf,
        port: u32,
        waited: Duration,
        attempts: u32,
        last: Box<ClientError>,
    },
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("response id {got} does not match request id {expected}")]
    IdMismatch { expected: u64, got: u64 },
    #[error("response has protocol version {got}, expected {PROTOCOL_VERSION}")]
    VersionMismatch { got: u32 },
    /// The agent answered with [`Response::Error`] (from the typed helpers).
    #[error("agent error: {0}")]
    Agent(ErrorInfo),
    /// The agent answered with a response of the wrong kind (typed helpers).
    #[error("unexpected response to {request}: {}", crate::printable(&format!("{response:?}"), crate::MAX_ERROR_MESSAGE))]
    UnexpectedResponse {
        request: &'static str,
        response: Box<Response>,
    },
    #[error("cannot set socket timeout: {0}")]
    Timeout(#[source] io::Error),
    /// The call's deadline passed before the agent's whole answer came (a
    /// stalled agent, or one that trickles its bytes); the connection is
    /// unusable afterwards.
    #[error("no answer to {request} within {} ms (the agent is stalled or sends too slowly)", limit.as_millis())]
    Deadline {
        request: &'static str,
        limit: Duration,
    },
    /// An earlier I/O or framing error left the stream out of sync.
    #[error("connection unusable after an earlier error")]
    Broken,
}

impl ClientError {
    /// Worth retrying while the guest boots: the socket is not there yet, the
    /// VMM refused or closed the connection (guest not listening yet).
    fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::Interrupted
            ),
            ClientError::Handshake { source, .. } => match source {
                HandshakeError::Closed => true,
                HandshakeError::Refused(r) => r.is_transient(),
                HandshakeError::Io(e) => matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::Interrupted
                ),
                HandshakeError::TooLong | HandshakeError::Rejected(_) => false,
            },
            _ => false,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A blocking connection to the agent. Requests are sent one at a time; each
/// gets a fresh id, and the response must carry the same id and version.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    next_id: u64,
    broken: bool,
    /// How long one call may take in all; `None`: unbounded.
    limit: Option<Duration>,
}

/// A stream read and written by a deadline (`None`: plain blocking I/O).
struct By<'a> {
    stream: &'a UnixStream,
    deadline: Option<Instant>,
}

impl Read for By<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.deadline {
            None => self.stream.read(buf),
            Some(d) => read_by(&mut self.stream, buf, d, |s, t| s.set_read_timeout(Some(t))),
        }
    }
}

impl Write for By<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.deadline {
            None => self.stream.write(buf),
            Some(d) => write_by(&mut self.stream, buf, d, |s, t| {
                s.set_write_timeout(Some(t))
            }),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Client {
    /// Connects to the VMM's vsock Unix socket at `uds_path` and does the
    /// `CONNECT port` handshake. `timeout` bounds the whole handshake and
    /// becomes the deadline of each later call (see [`Client::set_timeout`]).
    pub fn connect_uds(uds_path: impl AsRef<Path>, port: u32, timeout: Duration) -> Result<Client> {
        let path = uds_path.as_ref();
        let deadline = Instant::now() + timeout.max(MIN_TIMEOUT);
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
        })?;
        let mut client = Client::from_stream(stream);
        client.set_timeout(timeout)?;
        let hs = |source| ClientError::Handshake {
            path: path.to_owned(),
            port,
            source,
        };
        let mut io = By {
            stream: &client.stream,
            deadline: Some(deadline),
        };
        io.write_all(format!("CONNECT {port}\n").as_bytes())
            .map_err(|e| hs(HandshakeError::Io(e)))?;
        read_handshake_reply(&mut io).map_err(hs)?;
        Ok(client)
    }

    /// Like [`Client::connect_uds`], but retries connection and handshake
    /// (backoff from 1 ms doubling to 20 ms) while the socket is missing or the
    /// VMM closes the connection because the agent does not listen yet, until
    /// `total_timeout` has passed. `total_timeout` also becomes the call timeout.
    pub fn connect_uds_retry(
        uds_path: impl AsRef<Path>,
        port: u32,
        total_timeout: Duration,
    ) -> Result<Client> {
        Client::retry(uds_path.as_ref(), port, total_timeout, |e| e.is_transient())
    }

    /// Connects to a guest that is up: like [`Client::connect_uds`], but a
    /// connection the guest refuses or does not answer for a moment (a full
    /// accept backlog, a stalled guest) is tried again, and so is a VMM
    /// socket whose backlog is full, until `total_timeout` has passed. A
    /// socket that is missing or refused (the VMM is gone) fails at once.
    /// The final error names the attempts and the last reason.
    /// `total_timeout` also becomes the call timeout.
    pub fn connect_uds_within(
        uds_path: impl AsRef<Path>,
        port: u32,
        total_timeout: Duration,
    ) -> Result<Client> {
        Client::retry(uds_path.as_ref(), port, total_timeout, |e| {
            let gone = matches!(e, ClientError::Connect { source, .. }
                if matches!(source.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused));
            !gone && e.is_transient()
        })
    }

    fn retry(
        path: &Path,
        port: u32,
        total_timeout: Duration,
        again: impl Fn(&ClientError) -> bool,
    ) -> Result<Client> {
        let start = Instant::now();
        let deadline = start + total_timeout;
        let mut backoff = RETRY_BACKOFF_START;
        let mut attempts = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            attempts += 1;
            let err = match Client::connect_uds(path, port, remaining.max(MIN_TIMEOUT)) {
                Ok(mut c) => {
                    c.set_timeout(total_timeout)?;
                    return Ok(c);
                }
                Err(e) if again(&e) => e,
                Err(e) => return Err(e),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::RetryTimeout {
                    path: path.to_owned(),
                    port,
                    waited: now - start,
                    attempts,
                    last: Box::new(err),
                });
            }
            std::thread::sleep(backoff.min(deadline - now));
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }

    /// Wraps an already connected stream (no handshake), e.g. a Unix socket
    /// served by `husk-agent --listen-unix`. No timeout is set: calls are
    /// unbounded until [`Client::set_timeout`].
    pub fn from_stream(stream: UnixStream) -> Client {
        Client {
            stream,
            next_id: 1,
            broken: false,
            limit: None,
        }
    }

    /// Bounds each later call as a whole (at least 1 ms): a call gives up
    /// with [`ClientError::Deadline`] `timeout` after it began, however
    /// slowly the agent sends. Also the stream's read and write timeout.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.limit = Some(timeout.max(MIN_TIMEOUT));
        let t = self.limit;
        self.stream
            .set_read_timeout(t)
            .map_err(ClientError::Timeout)?;
        self.stream
            .set_write_timeout(t)
            .map_err(ClientError::Timeout)?;
        Ok(())
    }

    /// The underlying stream.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends `request` and waits for its response, by the call's deadline
    /// if there is one ([`Client::set_timeout`]). After an I/O error, a
    /// missed deadline or a response with the wrong id the connection is
    /// marked broken and later calls fail with [`ClientError::Broken`].
    pub fn call(&mut self, request: Request) -> Result<Response> {
        if self.broken {
            return Err(ClientError::Broken);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let name = request.name();
        let limit = self.limit;
        let late = |e: FrameError| match limit {
            Some(limit) if e.is_timeout() => ClientError::Deadline {
                request: name,
                limit,
            },
            _ => e.into(),
        };
        let mut io = By {
            stream: &self.stream,
            deadline: limit.map(|l| Instant::now() + l),
        };
        if let Err(e) = write_frame(&mut io, &RequestFrame::new(id, request)) {
            self.broken = true;
            return Err(late(e));
        }
        let frame: ResponseFrame = match read_frame(&mut io) {
            Ok(f) => f,
            Err(e) => {
                self.broken = !e.stream_in_sync();
                return Err(late(e));
            }
        };
        if frame.version != PROTOCOL_VERSION {
            return Err(ClientError::VersionMismatch { got: frame.version });
        }
        if frame.id != id {
            self.broken = true;
            return Err(ClientError::IdMismatch {
                expected: id,
                got: frame.id,
            });
        }
        Ok(frame.response)
    }

    /// Removes the calls' deadline and the stream's timeouts (for calls
    /// that block until a process exits, such as [`Client::wait`]): such a
    /// call ends when the agent answers or the connection goes.
    pub fn clear_timeout(&mut self) -> Result<()> {
        self.limit = None;
        self.stream
            .set_read_timeout(None)
            .map_err(ClientError::Timeout)?;
        self.stream
            .set_write_timeout(None)
            .map_err(ClientError::Timeout)
    }

    fn typed<T>(
        &mut self,
        request: Request,
        pick: impl FnOnce(Response) -> std::result::Result<T, Box<Response>>,
    ) -> Result<T> {
        let name = request.name();
        match self.call(request)? {
            Response::Error(e) => Err(ClientError::Agent(e)),
            other => pick(other).map_err(|response| ClientError::UnexpectedResponse {
                request: name,
                response,
            }),
        }
    }

    fn ok(&mut self, request: Request) -> Result<()> {
        self.typed(request, |r| match r {
            Response::Ok => Ok(()),
            other => Err(Box::new(other)),
        })
    }

    /// [`Request::CreateContainer`]: returns the init's guest pid and the
    /// spec fields the agent ignored.
    pub fn create_container(
        &mut self,
        id: &str,
        spec: oci::Spec,
        rootfs: RootfsSource,
        stdio: StdioConfig,
    ) -> Result<(i32, Vec<String>)> {
        self.typed(
            Request::CreateContainer {
                id: id.into(),
                spec: Box::new(spec),
                rootfs,
                stdio,
            },
            |r| match r {
                Response::Created { pid, warnings } => Ok((pid, warnings)),
                other => Err(Box::new(other)),
            },
        )
    }

    /// [`Request::ConfigureNetwork`].
    pub fn configure_network(&mut self, network: crate::net::Network) -> Result<()> {
        self.ok(Request::ConfigureNetwork { network })
    }

    /// [`Request::StartContainer`].
    pub fn start_container(&mut self, id: &str) -> Result<()> {
        self.ok(Request::StartContainer { id: id.into() })
    }

    /// [`Request::Exec`]: returns the new process's guest pid.
    pub fn exec(
        &mut self,
        id: &str,
        exec_id: &str,
        process: oci::Process,
        stdio: StdioConfig,
    ) -> Result<i32> {
        self.typed(
            Request::Exec {
                id: id.into(),
                exec_id: exec_id.into(),
                process: Box::new(process),
                stdio,
            },
            |r| match r {
                Response::Created { pid, .. } => Ok(pid),
                other => Err(Box::new(other)),
            },
        )
    }

    /// [`Request::Signal`].
    pub fn signal(
        &mut self,
        id: &str,
        exec_id: Option<&str>,
        signal: i32,
        all: bool,
    ) -> Result<()> {
        self.ok(Request::Signal {
            id: id.into(),
            exec_id: exec_id.map(Into::into),
            signal,
            all,
        })
    }

    /// [`Request::Wait`]: blocks until the process exited and its output was
    /// delivered (mind the call timeout; see [`Client::clear_timeout`]).
    pub fn wait(&mut self, id: &str, exec_id: Option<&str>) -> Result<ExitInfo> {
        self.typed(
            Request::Wait {
                id: id.into(),
                exec_id: exec_id.map(Into::into),
            },
            |r| match r {
                Response::Exited(e) => Ok(e),
                other => Err(Box::new(other)),
            },
        )
    }

    /// [`Request::ResizePty`].
    pub fn resize_pty(
        &mut self,
        id: &str,
        exec_id: Option<&str>,
        rows: u16,
        cols: u16,
    ) -> Result<()> {
        self.ok(Request::ResizePty {
            id: id.into(),
            exec_id: exec_id.map(Into::into),
            rows,
            cols,
        })
    }

    /// [`Request::CloseStdin`].
    pub fn close_stdin(&mut self, id: &str, exec_id: Option<&str>) -> Result<()> {
        self.ok(Request::CloseStdin {
            id: id.into(),
            exec_id: exec_id.map(Into::into),
        })
    }

    /// [`Request::State`].
    pub fn state(&mut self, id: &str) -> Result<ContainerState> {
        self.typed(Request::State { id: id.into() }, |r| match r {
            Response::State(s) => Ok(s),
            other => Err(Box::new(other)),
        })
    }

    /// [`Request::Stats`].
    pub fn stats(&mut self, id: &str) -> Result<ContainerStats> {
        self.typed(Request::Stats { id: id.into() }, |r| match r {
            Response::Stats(s) => Ok(s),
            other => Err(Box::new(other)),
        })
    }

    /// [`Request::Pause`].
    pub fn pause(&mut self, id: &str) -> Result<()> {
        self.ok(Request::Pause { id: id.into() })
    }

    /// [`Request::Resume`].
    pub fn resume(&mut self, id: &str) -> Result<()> {
        self.ok(Request::Resume { id: id.into() })
    }

    /// [`Request::UpdateResources`].
    pub fn update_resources(&mut self, id: &str, resources: oci::LinuxResources) -> Result<()> {
        self.ok(Request::UpdateResources {
            id: id.into(),
            resources: Box::new(resources),
        })
    }

    /// [`Request::Remove`].
    pub fn remove(&mut self, id: &str, force: bool) -> Result<()> {
        self.ok(Request::Remove {
            id: id.into(),
            force,
        })
    }

    /// [`Request::AttachStdio`]: consumes the connection and returns it as
    /// the raw byte stream of `stream` (timeouts cleared).
    pub fn attach_stdio(
        mut self,
        id: &str,
        exec_id: Option<&str>,
        stream: StdioStream,
    ) -> Result<UnixStream> {
        self.ok(Request::AttachStdio {
            id: id.into(),
            exec_id: exec_id.map(Into::into),
            stream,
        })?;
        self.clear_timeout()?;
        Ok(self.stream)
    }

    /// [`Request::Events`]: consumes the connection and returns the stream
    /// of events (timeouts cleared).
    pub fn events(mut self) -> Result<Events> {
        let id = self.next_id;
        self.ok(Request::Events)?;
        self.clear_timeout()?;
        Ok(Events {
            stream: self.stream,
            id,
        })
    }

    /// [`Request::Ping`], typed.
    pub fn ping(&mut self) -> Result<PingInfo> {
        match self.call(Request::Ping)? {
            Response::Pong(info) => Ok(info),
            Response::Error(e) => Err(ClientError::Agent(e)),
            other => Err(ClientError::UnexpectedResponse {
                request: "ping",
                response: Box::new(other),
            }),
        }
    }

    /// [`Request::Shutdown`], typed. Closes the connection afterwards, which
    /// lets the agent reboot without waiting for the host to hang up.
    pub fn shutdown(mut self) -> Result<()> {
        match self.call(Request::Shutdown)? {
            Response::Ok => Ok(()),
            Response::Error(e) => Err(ClientError::Agent(e)),
            other => Err(ClientError::UnexpectedResponse {
                request: "shutdown",
                response: Box::new(other),
            }),
        }
    }
}

/// An events connection (see [`Client::events`]).
#[derive(Debug)]
pub struct Events {
    stream: UnixStream,
    id: u64,
}

impl Events {
    /// The next event; blocks. `Err(Frame(Closed))` when the agent hangs up.
    pub fn next_event(&mut self) -> Result<Event> {
        let f: ResponseFrame = read_frame(&mut self.stream)?;
        if f.id != self.id {
            return Err(ClientError::IdMismatch {
                expected: self.id,
                got: f.id,
            });
        }
        match f.response {
            Response::Event { event } => Ok(event),
            Response::Error(e) => Err(ClientError::Agent(e)),
            other => Err(ClientError::UnexpectedResponse {
                request: "events",
                response: Box::new(other),
            }),
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }
}

/// The host end of the agent's ready signal ([`crate::READY_PORT`]): a Unix
/// socket at `<uds>_1025`, which husk-vmm connects to when the guest
/// connects to host port 1025. Bind it before starting the VMM; dropping it
/// removes the socket file.
#[derive(Debug)]
pub struct ReadyListener {
    listener: UnixListener,
    path: PathBuf,
}

impl ReadyListener {
    /// Listens at `<uds>_1025` (a stale socket file there is replaced).
    pub fn bind(uds: &Path) -> io::Result<ReadyListener> {
        let mut path = uds.as_os_str().to_owned();
        path.push(format!("_{}", crate::READY_PORT));
        let path = PathBuf::from(path);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        Ok(ReadyListener { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `timeout` for the agent's signal: true once it came (the
    /// connection is accepted and closed), false if the time ran out.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            crate::vsock::wait_readable(self.listener.as_raw_fd(), left)?;
        }
    }
}

impl Drop for ReadyListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::read_frame;
    use std::io::Read;
    use std::thread;

    #[test]
    fn ready_listener_sees_the_signal_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("husk-ready-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        // A stale socket from an earlier run is replaced.
        drop(UnixListener::bind(dir.join("v.sock_1025")).unwrap());
        let r = ReadyListener::bind(&uds).unwrap();
        assert_eq!(r.path(), dir.join("v.sock_1025"));
        let t = Instant::now();
        assert!(!r.wait(Duration::from_millis(50)).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(50));
        let p = r.path().to_owned();
        let h = thread::spawn(move || {
            thread::sleep(Duration::from_millis(30));
            drop(UnixStream::connect(p).unwrap());
        });
        assert!(r.wait(Duration::from_secs(10)).unwrap());
        h.join().unwrap();
        drop(r);
        assert!(!dir.join("v.sock_1025").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn handshake_ok() {
        assert_eq!(parse_handshake_reply(b"OK 123\n").unwrap(), 123);
        assert_eq!(parse_handshake_reply(b"OK 4294967295\n").unwrap(), u32::MAX);
        assert_eq!(
            read_handshake_reply(&mut &b"OK 1073741824\nrest"[..]).unwrap(),
            1 << 30
        );
    }

    #[test]
    fn handshake_rejects() {
        for bad in [
            &b"OK\n"[..],
            b"NOPE\n",
            b"OK \n",
            b"OK 12a\n",
            b"OK -1\n",
            b"OK 4294967296\n",
            b"OK 99999999999\n",
            b"ok 1\n",
            b"OK  1\n",
            b"OK 1 \n",
            b"OK 1\r\n",
        ] {
            let e = read_handshake_reply(&mut &bad[..]).unwrap_err();
            assert!(matches!(e, HandshakeError::Rejected(_)), "{bad:?}: {e}");
        }
        assert!(matches!(
            parse_handshake_reply(b"OK 1"),
            Err(HandshakeError::Rejected(_))
        ));
    }

    #[test]
    fn handshake_refusals_name_the_reason() {
        for (line, want) in [
            (&b"ERR reset\n"[..], Refusal::Reset),
            (b"ERR timeout\n", Refusal::Timeout),
            (b"ERR bad-connect\n", Refusal::BadConnect),
            (b"ERR limit\n", Refusal::Limit),
            (b"ERR device-reset\n", Refusal::DeviceReset),
        ] {
            match read_handshake_reply(&mut &line[..]) {
                Err(HandshakeError::Refused(r)) => assert_eq!(r, want),
                other => panic!("{line:?}: {other:?}"),
            }
        }
        // Unknown reasons are a rejected reply, not a refusal.
        assert!(matches!(
            parse_handshake_reply(b"ERR \x1b[2Jboom\n"),
            Err(HandshakeError::Rejected(_))
        ));
        let e = ClientError::Handshake {
            path: "/v".into(),
            port: 1024,
            source: HandshakeError::Refused(Refusal::Timeout),
        };
        assert!(e.is_transient());
        assert!(e.to_string().contains("did not answer"), "{e}");
    }

    #[test]
    fn handshake_too_long_or_closed() {
        let long = [b'7'; 100];
        let mut r = &long[..];
        assert!(matches!(
            read_handshake_reply(&mut r),
            Err(HandshakeError::TooLong)
        ));
        assert_eq!(
            r.len(),
            100 - MAX_HANDSHAKE_LINE,
            "must stop reading at the bound"
        );
        assert!(matches!(
            read_handshake_reply(&mut &b"OK 12"[..]),
            Err(HandshakeError::Closed)
        ));
        assert!(matches!(
            read_handshake_reply(&mut &b""[..]),
            Err(HandshakeError::Closed)
        ));
    }

    /// A socket path in a directory of its own, removed with it on drop.
    struct TmpSock(PathBuf);

    impl std::ops::Deref for TmpSock {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for TmpSock {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TmpSock {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn tmp_sock(name: &str) -> TmpSock {
        let dir =
            std::env::temp_dir().join(format!("husk-protocol-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TmpSock(dir.join(name))
    }

    /// A fake VMM vsock muxer: closes the first `refuse` connections after the
    /// CONNECT line (guest not listening), then answers OK and echoes pings.
    fn fake_vmm(path: &Path, refuse: usize, reply_id_offset: u64) -> thread::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        thread::spawn(move || {
            for (i, conn) in listener.incoming().enumerate() {
                let mut s = conn.unwrap();
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
                    line.push(b[0]);
                }
                assert_eq!(line, b"CONNECT 1024");
                if i < refuse {
                    // Alternately closed silently and with a reason.
                    if i % 2 == 1 {
                        let _ = s.write_all(b"ERR reset\n");
                    }
                    continue;
                }
                s.write_all(b"OK 77\n").unwrap();
                loop {
                    let req: RequestFrame = match read_frame(&mut s) {
                        Ok(r) => r,
                        Err(_) => return,
                    };
                    let resp = match req.request {
                        Request::Ping => Response::Pong(PingInfo {
                            agent_version: "t".into(),
                            protocol_version: PROTOCOL_VERSION,
                            uptime_ms: 1,
                            vcpus: 1,
                            mem_total_kib: 1,
                        }),
                        _ => Response::Ok,
                    };
                    write_frame(&mut s, &ResponseFrame::new(req.id + reply_id_offset, resp))
                        .unwrap();
                }
            }
        })
    }

    #[test]
    fn retry_until_guest_listens() {
        let p = tmp_sock("retry.sock");
        let h = fake_vmm(&p, 3, 0);
        let mut c =
            Client::connect_uds_retry(&p, crate::AGENT_PORT, Duration::from_secs(5)).unwrap();
        assert_eq!(c.ping().unwrap().agent_version, "t");
        assert_eq!(
            c.call(Request::Ping).unwrap(),
            c.call(Request::Ping).unwrap()
        );
        c.shutdown().unwrap();
        h.join().unwrap();
    }

    #[test]
    fn retry_waits_for_socket_to_appear() {
        let p = tmp_sock("late.sock");
        let p2 = p.to_path_buf();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            fake_vmm(&p2, 0, 0).join().unwrap();
        });
        let mut c =
            Client::connect_uds_retry(&p, crate::AGENT_PORT, Duration::from_secs(5)).unwrap();
        c.ping().unwrap();
        drop(c);
        t.join().unwrap();
    }

    #[test]
    fn connect_within_retries_refusals_but_not_a_missing_vmm() {
        let p = tmp_sock("within.sock");
        let h = fake_vmm(&p, 4, 0);
        let mut c =
            Client::connect_uds_within(&p, crate::AGENT_PORT, Duration::from_secs(5)).unwrap();
        c.ping().unwrap();
        c.shutdown().unwrap();
        h.join().unwrap();
        // No socket: the VMM is gone, nothing to wait for.
        let gone = tmp_sock("gone.sock");
        let start = Instant::now();
        let e = Client::connect_uds_within(&gone, crate::AGENT_PORT, Duration::from_secs(5))
            .unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }), "{e}");
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn retry_gives_up_at_deadline_naming_attempts_and_reason() {
        let p = tmp_sock("refusing.sock");
        let listener = UnixListener::bind(&*p).unwrap();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let mut s = conn.unwrap();
                let mut b = [0u8; 64];
                let _ = s.read(&mut b);
                let _ = s.write_all(b"ERR timeout\n");
            }
        });
        // Long enough for a second attempt on a loaded machine (each
        // attempt waits for the fake's answer; the backoff is <= 20 ms).
        let e =
            Client::connect_uds_within(&p, crate::AGENT_PORT, Duration::from_secs(2)).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, ClientError::RetryTimeout { attempts, .. } if attempts > 1),
            "{e}"
        );
        assert!(
            text.contains("attempts") && text.contains("did not answer"),
            "{text}"
        );
    }

    #[test]
    fn retry_gives_up_at_deadline() {
        let p = tmp_sock("never.sock");
        let start = Instant::now();
        let e = Client::connect_uds_retry(&p, crate::AGENT_PORT, Duration::from_millis(60))
            .unwrap_err();
        let took = start.elapsed();
        assert!(matches!(e, ClientError::RetryTimeout { .. }), "{e}");
        assert!(
            took >= Duration::from_millis(60) && took < Duration::from_millis(500),
            "{took:?}"
        );
        assert!(e.to_string().contains("never.sock"), "{e}");
    }

    #[test]
    fn id_mismatch_breaks_connection() {
        let p = tmp_sock("badid.sock");
        let _h = fake_vmm(&p, 0, 1);
        let mut c = Client::connect_uds(&p, crate::AGENT_PORT, Duration::from_secs(5)).unwrap();
        let e = c.call(Request::Ping).unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::IdMismatch {
                    expected: 1,
                    got: 2
                }
            ),
            "{e}"
        );
        assert!(matches!(c.call(Request::Ping), Err(ClientError::Broken)));
    }

    #[test]
    fn call_times_out() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut c = Client::from_stream(a);
        c.set_timeout(Duration::from_millis(30)).unwrap();
        let e = c.call(Request::Ping).unwrap_err();
        assert!(
            matches!(e, ClientError::Deadline { request: "ping", limit } if limit.as_millis() == 30),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "no answer to ping within 30 ms (the agent is stalled or sends too slowly)"
        );
        assert!(matches!(c.call(Request::Ping), Err(ClientError::Broken)));
    }

    #[test]
    fn wrong_version_reply() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || {
            let req: RequestFrame = read_frame(&mut b).unwrap();
            let mut f = ResponseFrame::new(req.id, Response::Ok);
            f.version = 2;
            write_frame(&mut b, &f).unwrap();
        });
        let mut c = Client::from_stream(a);
        let e = c.call(Request::Shutdown).unwrap_err();
        assert!(matches!(e, ClientError::VersionMismatch { got: 2 }), "{e}");
        t.join().unwrap();
    }

    /// A hostile agent: reads one request, then sends a plausible answer
    /// one byte per `every` for as long as anyone listens.
    fn trickle_answer(mut s: UnixStream, every: Duration) {
        let _ = read_frame::<_, RequestFrame>(&mut s);
        let mut bytes = 1000u32.to_be_bytes().to_vec();
        bytes.resize(1004, b' ');
        for b in bytes {
            if s.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(every);
        }
    }

    /// Runs `f` in a thread and waits at most `limit` for its result, so
    /// that a call that never ends fails the test instead of hanging it.
    fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(limit)
            .expect("the call did not end by its deadline")
    }

    #[test]
    fn a_trickling_agent_cannot_hold_a_call_past_its_deadline() {
        let (a, b) = UnixStream::pair().unwrap();
        thread::spawn(move || trickle_answer(b, Duration::from_secs(1)));
        let start = Instant::now();
        let (e, mut c) = within(Duration::from_secs(10), move || {
            let mut c = Client::from_stream(a);
            c.set_timeout(Duration::from_secs(2)).unwrap();
            (c.call(Request::Ping).unwrap_err(), c)
        });
        let took = start.elapsed();
        assert!(
            matches!(
                e,
                ClientError::Deadline {
                    request: "ping",
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert!(matches!(c.call(Request::Ping), Err(ClientError::Broken)));
    }

    #[test]
    fn a_cleared_timeout_leaves_a_call_unbounded() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || {
            let req: RequestFrame = read_frame(&mut b).unwrap();
            thread::sleep(Duration::from_millis(300));
            write_frame(&mut b, &ResponseFrame::new(req.id, Response::Ok)).unwrap();
        });
        let mut c = Client::from_stream(a);
        c.set_timeout(Duration::from_millis(100)).unwrap();
        c.clear_timeout().unwrap();
        assert_eq!(c.call(Request::Shutdown).unwrap(), Response::Ok);
        t.join().unwrap();
    }

    #[test]
    fn a_trickled_handshake_gives_up_at_the_deadline() {
        let p = tmp_sock("trickle-hs.sock");
        let listener = UnixListener::bind(&*p).unwrap();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.read(&mut [0u8; 64]);
            for b in b"OK 1234567890123456789012345678901234567890" {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(300));
            }
        });
        let start = Instant::now();
        let e = within(Duration::from_secs(10), move || {
            Client::connect_uds(&p, crate::AGENT_PORT, Duration::from_secs(1)).unwrap_err()
        });
        let took = start.elapsed();
        assert!(
            matches!(&e, ClientError::Handshake { source: HandshakeError::Io(io), .. }
                if io.kind() == io::ErrorKind::TimedOut),
            "{e}"
        );
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }
}
