//! The request server: an accept loop and one OS thread per connection.
//!
//! Each connection carries request/response frames strictly in turn (one
//! response per request, same id). Threads keep v0 small and its start-up
//! fast (no async runtime in the initramfs).
//!
//! Issue 4 will need more than this: container stdio wants separate
//! connections (or ports) per stream, and exits/OOMs want an event stream the
//! agent pushes unprompted; both fit as extra connection kinds announced by a
//! first request, keeping this one-request-one-response loop for control.
//!
//! Error policy (the host is a peer we do not trust to send sane bytes):
//! * framing error (length 0 or > MAX_FRAME): `Error(bad_request)` with id 0,
//!   then the connection is closed (the stream cannot be resynchronized);
//! * body that is not a JSON envelope `{version, id, ...}`: `Error(bad_request)`
//!   with id 0, then close;
//! * `version != PROTOCOL_VERSION`: `Error(unsupported_version)` with the
//!   frame's id; the connection stays usable;
//! * valid envelope, unknown request type: `Error(unknown_request)`, stays usable;
//! * valid envelope, malformed request fields: `Error(bad_request)`, stays usable;
//! * truncated frame / I/O error: the connection is closed without a reply.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use husk_protocol::{
    decode_body, read_frame_body, write_frame, ErrorCode, ErrorInfo, FrameError, FrameHeader,
    Request, RequestFrame, Response, ResponseFrame, PROTOCOL_VERSION,
};

use crate::log::{debug, info};
use crate::runtime::StreamJob;
use husk_protocol::vsock::{VsockListener, VsockStream};

/// Most connections served at once; more are answered `busy` and closed.
pub const MAX_CONNS: usize = 64;
/// Stack of a connection thread (serde_json bounds JSON nesting at 128).
const CONN_STACK: usize = 512 * 1024;
/// A host that stops reading our responses cannot pin a thread forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// After answering Shutdown as PID 1, how long to wait for the host to hang up
/// (proof that it has read the reply) before resetting the VM.
const SHUTDOWN_LINGER: Duration = Duration::from_millis(250);

/// A connected byte stream (vsock in the guest, Unix socket in tests).
pub trait Conn: Read + Write + Send {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn shutdown_write(&self) -> io::Result<()>;
    fn shutdown_read(&self) -> io::Result<()>;
    /// A second handle on the same connection (for two-way stdio relays).
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>>;
}

impl Conn for UnixStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, t)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
    fn shutdown_read(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Read)
    }
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
}

impl Conn for VsockStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        VsockStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        VsockStream::set_write_timeout(self, t)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        VsockStream::shutdown_write(self)
    }
    fn shutdown_read(&self) -> io::Result<()> {
        VsockStream::shutdown_read(self)
    }
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
}

/// Where the agent listens.
pub enum Listener {
    Vsock(VsockListener),
    Unix(UnixListener),
}

impl Listener {
    fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Vsock(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }

    fn accept(&self) -> io::Result<Box<dyn Conn>> {
        Ok(match self {
            Listener::Vsock(l) => Box::new(l.accept()?),
            Listener::Unix(l) => Box::new(l.accept()?.0),
        })
    }
}

/// What a `Shutdown` request does once answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnShutdown {
    /// PID 1: sync and reset the VM.
    Reboot,
    /// Not PID 1: make [`run`] return.
    Stop,
}

/// How a connection ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Closed,
    Shutdown,
    /// The connection became a stdio or event stream (request id).
    Stream(StreamJob, u64),
}

/// What to do after sending a reply.
#[derive(Debug, PartialEq)]
pub enum Then {
    Continue,
    Close,
    Shutdown,
    Stream(StreamJob),
}

/// The answer to one frame body.
#[derive(Debug, PartialEq)]
pub struct Reply {
    pub id: u64,
    pub response: Response,
    pub then: Then,
}

fn error(id: u64, code: ErrorCode, message: impl Into<String>, then: Then) -> Reply {
    Reply {
        id,
        response: Response::Error(ErrorInfo::new(code, message)),
        then,
    }
}

/// Decides the reply to one frame body. Never panics on any input.
pub fn handle_body(body: &[u8]) -> Reply {
    let header: FrameHeader = match decode_body(body) {
        Ok(h) => h,
        Err(e) => return error(0, ErrorCode::BadRequest, e.to_string(), Then::Close),
    };
    if header.version != PROTOCOL_VERSION {
        return error(
            header.id,
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} not supported; this agent speaks {PROTOCOL_VERSION}",
                header.version
            ),
            Then::Continue,
        );
    }
    let frame: RequestFrame = match decode_body(body) {
        Ok(f) => f,
        Err(FrameError::Json(e)) if is_unknown_type(body, &e.to_string()) => {
            return error(
                header.id,
                ErrorCode::UnknownRequest,
                format!("invalid request: {e}"),
                Then::Continue,
            );
        }
        Err(e) => {
            // The JSON error alone: it names the bad field.
            let msg = match e {
                FrameError::Json(j) => j.to_string(),
                e => e.to_string(),
            };
            return error(header.id, ErrorCode::BadRequest, msg, Then::Continue);
        }
    };
    let id = frame.id;
    debug!("request {id}: {}", frame.request.name());
    match frame.request {
        Request::Ping => Reply {
            id,
            response: Response::Pong(crate::sysinfo::ping_info()),
            then: Then::Continue,
        },
        Request::Shutdown => Reply {
            id,
            response: Response::Ok,
            then: Then::Shutdown,
        },
        req @ (Request::Events | Request::AttachStdio { .. }) => {
            let rt = crate::runtime::get();
            let job = match req {
                Request::AttachStdio {
                    id: cid,
                    exec_id,
                    stream,
                } => rt.claim(&cid, exec_id.as_deref(), stream),
                _ => Ok(rt.subscribe()),
            };
            match job {
                Ok(job) => Reply {
                    id,
                    response: Response::Ok,
                    then: Then::Stream(job),
                },
                Err(e) => Reply {
                    id,
                    response: Response::Error(e),
                    then: Then::Continue,
                },
            }
        }
        req => match container_request(req) {
            Some(Ok(response)) => Reply {
                id,
                response,
                then: Then::Continue,
            },
            Some(Err(e)) => Reply {
                id,
                response: Response::Error(e),
                then: Then::Continue,
            },
            None => error(
                id,
                ErrorCode::UnknownRequest,
                "request is not implemented by this agent",
                Then::Continue,
            ),
        },
    }
}

/// Carries out a container request (blocking: `Wait` returns at the exit).
fn container_request(req: Request) -> Option<Result<Response, ErrorInfo>> {
    let rt = crate::runtime::get();
    let ok = |r: Result<(), ErrorInfo>| r.map(|()| Response::Ok);
    Some(match req {
        Request::CreateContainer {
            id,
            spec,
            rootfs,
            stdio,
        } => rt
            .create(&id, &spec, &rootfs, stdio)
            .map(|(pid, warnings)| Response::Created { pid, warnings }),
        Request::StartContainer { id } => ok(rt.start(&id)),
        Request::Exec {
            id,
            exec_id,
            process,
            stdio,
        } => rt
            .exec(&id, &exec_id, &process, stdio)
            .map(|(pid, warnings)| Response::Created { pid, warnings }),
        Request::Signal {
            id,
            exec_id,
            signal,
            all,
        } => ok(rt.signal(&id, exec_id.as_deref(), signal, all)),
        Request::Wait { id, exec_id } => rt.wait(&id, exec_id.as_deref()).map(Response::Exited),
        Request::ResizePty {
            id,
            exec_id,
            rows,
            cols,
        } => ok(rt.resize(&id, exec_id.as_deref(), rows, cols)),
        Request::CloseStdin { id, exec_id } => ok(rt.close_stdin(&id, exec_id.as_deref())),
        Request::State { id } => rt.state(&id).map(Response::State),
        Request::Stats { id } => rt.stats(&id).map(Response::Stats),
        Request::Pause { id } => ok(rt.pause(&id, true)),
        Request::Resume { id } => ok(rt.pause(&id, false)),
        Request::UpdateResources { id, resources } => ok(rt.update(&id, &resources)),
        Request::Remove { id, force } => ok(rt.remove(&id, force)),
        _ => return None,
    })
}

/// Whether a decode error is about the request `type` itself (and not an
/// unknown variant deeper down, such as a bad namespace type).
fn is_unknown_type(body: &[u8], msg: &str) -> bool {
    let ty = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("request")?.get("type")?.as_str().map(str::to_owned));
    match ty {
        Some(t) => msg.starts_with(&format!("unknown variant `{t}`")),
        None => false,
    }
}

/// Serves requests on one connection until it closes, breaks, or a
/// `Shutdown` has been answered.
pub fn serve_conn<C: Read + Write + ?Sized>(conn: &mut C) -> Outcome {
    loop {
        let reply = match read_frame_body(conn) {
            Ok(body) => handle_body(&body),
            Err(FrameError::Closed) => return Outcome::Closed,
            Err(e @ (FrameError::Empty | FrameError::TooLarge { .. })) => {
                debug!("closing connection: {e}");
                error(0, ErrorCode::BadRequest, e.to_string(), Then::Close)
            }
            Err(e) => {
                debug!("closing connection: {e}");
                return Outcome::Closed;
            }
        };
        if let Err(e) = write_frame(conn, &ResponseFrame::new(reply.id, reply.response)) {
            debug!("closing connection: cannot reply: {e}");
            if let Then::Stream(job) = reply.then {
                job.release();
            }
            return Outcome::Closed;
        }
        match reply.then {
            Then::Continue => {}
            Then::Close => return Outcome::Closed,
            Then::Shutdown => return Outcome::Shutdown,
            Then::Stream(job) => return Outcome::Stream(job, reply.id),
        }
    }
}

/// Shared by the accept loop and the connection threads.
struct Shared {
    on_shutdown: OnShutdown,
    conns: AtomicUsize,
    stop_rd: OwnedFd,
    stop_wr: OwnedFd,
}

impl Shared {
    fn stop(&self) {
        let b = [1u8];
        // SAFETY: writes one byte from a valid buffer to a pipe we own. A full
        // pipe (EAGAIN) already means "stop" is pending.
        unsafe { libc::write(self.stop_wr.as_raw_fd(), b.as_ptr().cast(), 1) };
    }
}

/// Decrements the connection count when a connection thread ends (even by panic).
struct ConnSlot(Arc<Shared>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.conns.fetch_sub(1, Ordering::SeqCst);
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl F_GETFL/F_SETFL on a descriptor owned by the caller.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Accepts and serves connections. Returns `Ok(())` after a `Shutdown` in
/// [`OnShutdown::Stop`] mode; in [`OnShutdown::Reboot`] mode it only returns
/// on a setup error. Accept errors are logged and survived.
pub fn run(listener: Listener, on_shutdown: OnShutdown) -> io::Result<()> {
    set_nonblocking(listener.raw_fd())?;
    let (stop_rd, stop_wr) = pipe()?;
    let shared = Arc::new(Shared {
        on_shutdown,
        conns: AtomicUsize::new(0),
        stop_rd,
        stop_wr,
    });
    let mut last_err: Option<io::ErrorKind> = None;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: shared.stop_rd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of 2 pollfd for the call's duration.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents != 0 {
            return Ok(());
        }
        if fds[0].revents == 0 {
            continue;
        }
        match listener.accept() {
            Ok(conn) => {
                last_err = None;
                spawn_conn(conn, &shared);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                // EMFILE, ENOMEM, ...: log once per kind, back off, keep going.
                if last_err != Some(e.kind()) {
                    info!("accept failed: {e}");
                    last_err = Some(e.kind());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn spawn_conn(mut conn: Box<dyn Conn>, shared: &Arc<Shared>) {
    let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
    if shared.conns.fetch_add(1, Ordering::SeqCst) >= MAX_CONNS {
        shared.conns.fetch_sub(1, Ordering::SeqCst);
        debug!("connection refused: {MAX_CONNS} connections open");
        let _ = conn.set_write_timeout(Some(Duration::from_millis(100)));
        let busy = ResponseFrame::new(
            0,
            Response::Error(ErrorInfo::new(
                ErrorCode::Busy,
                format!("agent serves at most {MAX_CONNS} connections"),
            )),
        );
        let _ = write_frame(&mut conn, &busy);
        return;
    }
    let slot = ConnSlot(Arc::clone(shared));
    let spawned = std::thread::Builder::new()
        .name("conn".into())
        .stack_size(CONN_STACK)
        .spawn(move || {
            let slot = slot;
            match serve_conn(&mut conn) {
                Outcome::Shutdown => match slot.0.on_shutdown {
                    OnShutdown::Stop => slot.0.stop(),
                    OnShutdown::Reboot => {
                        linger(&mut *conn);
                        crate::init::poweroff();
                    }
                },
                Outcome::Stream(job, id) => job.run(conn, id),
                Outcome::Closed => {}
            }
        });
    if let Err(e) = spawned {
        // The closure (with the slot and the connection) was dropped.
        info!("cannot start a connection thread: {e}");
    }
}

/// Waits (bounded) for the host to close the connection after our last reply,
/// so that the reply is out of the guest before the VM goes away.
fn linger(conn: &mut dyn Conn) {
    let deadline = Instant::now() + SHUTDOWN_LINGER;
    let _ = conn.shutdown_write();
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_protocol::{encode_frame, read_frame, MAX_FRAME};

    fn body(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn code(r: &Reply) -> ErrorCode {
        match &r.response {
            Response::Error(e) => e.code,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn ping_and_shutdown() {
        let r = handle_body(&body(r#"{"version":1,"id":42,"request":{"type":"ping"}}"#));
        assert_eq!(r.id, 42);
        assert_eq!(r.then, Then::Continue);
        match r.response {
            Response::Pong(p) => {
                assert_eq!(p.protocol_version, PROTOCOL_VERSION);
                assert!(p.vcpus >= 1);
            }
            other => panic!("{other:?}"),
        }
        let r = handle_body(&body(
            r#"{"version":1,"id":43,"request":{"type":"shutdown"}}"#,
        ));
        assert_eq!(
            (r.id, r.response, r.then),
            (43, Response::Ok, Then::Shutdown)
        );
    }

    #[test]
    fn error_classes() {
        let r = handle_body(&body(r#"{"version":2,"id":5,"request":{"type":"ping"}}"#));
        assert_eq!(
            (r.id, code(&r), r.then),
            (5, ErrorCode::UnsupportedVersion, Then::Continue)
        );
        // A future version's request shape does not matter.
        let r = handle_body(&body(r#"{"version":0,"id":6,"request":17}"#));
        assert_eq!((r.id, code(&r)), (6, ErrorCode::UnsupportedVersion));

        let r = handle_body(&body(
            r#"{"version":1,"id":7,"request":{"type":"teleport"}}"#,
        ));
        assert_eq!(
            (r.id, code(&r), r.then),
            (7, ErrorCode::UnknownRequest, Then::Continue)
        );

        let r = handle_body(&body(r#"{"version":1,"id":8,"request":{}}"#));
        assert_eq!(
            (r.id, code(&r), r.then),
            (8, ErrorCode::BadRequest, Then::Continue)
        );

        for bad in [
            &b"{"[..],
            b"[]",
            b"\xff\xff",
            b"{\"id\":1}",
            b"{\"version\":1,\"id\":\"x\"}",
        ] {
            let r = handle_body(bad);
            assert_eq!(
                (r.id, code(&r), r.then),
                (0, ErrorCode::BadRequest, Then::Close),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_fields_of_container_requests_are_named() {
        let r = handle_body(&body(
            r#"{"version":1,"id":3,"request":{"type":"create_container","id":"c",
            "rootfs":{"kind":"path","path":"/r"},
            "spec":{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"bogus"}]}}}}"#,
        ));
        match &r.response {
            Response::Error(e) => {
                assert_eq!(e.code, ErrorCode::BadRequest);
                assert!(
                    e.message.starts_with("spec.linux.namespaces[0].type:"),
                    "{}",
                    e.message
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.then, Then::Continue);
        let r = handle_body(&body(
            r#"{"version":1,"id":4,"request":{"type":"create_container","id":"c",
            "rootfs":{"kind":"floppy"},"spec":{"ociVersion":"1.0.2"}}}"#,
        ));
        assert_eq!(code(&r), ErrorCode::BadRequest);
        let r = handle_body(&body(
            r#"{"version":1,"id":5,"request":{"type":"exec","id":"c","exec_id":"e",
            "process":{"cwd":"/","user":{"uid":"x"}}}}"#,
        ));
        match &r.response {
            Response::Error(e) => {
                assert!(e.message.starts_with("process.user.uid:"), "{}", e.message)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_unknown_type_name_is_not_echoed_in_full() {
        let name = "x".repeat(500_000);
        let r = handle_body(
            format!(r#"{{"version":1,"id":1,"request":{{"type":"{name}"}}}}"#).as_bytes(),
        );
        match r.response {
            Response::Error(e) => {
                assert_eq!(e.code, ErrorCode::UnknownRequest);
                assert!(e.message.len() <= husk_protocol::MAX_ERROR_MESSAGE);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Runs serve_conn on one end of a socketpair, returns the other end.
    fn serve_pair() -> (UnixStream, std::thread::JoinHandle<Outcome>) {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let h = std::thread::spawn(move || serve_conn(&mut b));
        (a, h)
    }

    #[test]
    fn conn_serves_until_shutdown() {
        let (mut a, h) = serve_pair();
        for id in 1..4 {
            write_frame(&mut a, &RequestFrame::new(id, Request::Ping)).unwrap();
            let r: ResponseFrame = read_frame(&mut a).unwrap();
            assert_eq!(r.id, id);
            assert!(matches!(r.response, Response::Pong(_)));
        }
        write_frame(&mut a, &RequestFrame::new(9, Request::Shutdown)).unwrap();
        let r: ResponseFrame = read_frame(&mut a).unwrap();
        assert_eq!((r.id, r.response), (9, Response::Ok));
        assert_eq!(h.join().unwrap(), Outcome::Shutdown);
    }

    #[test]
    fn conn_closes_after_oversized_frame() {
        let (mut a, h) = serve_pair();
        a.write_all(&((MAX_FRAME + 1) as u32).to_be_bytes())
            .unwrap();
        let r: ResponseFrame = read_frame(&mut a).unwrap();
        assert_eq!(r.id, 0);
        assert!(matches!(
            r.response,
            Response::Error(ErrorInfo {
                code: ErrorCode::BadRequest,
                ..
            })
        ));
        assert!(matches!(
            read_frame::<_, ResponseFrame>(&mut a),
            Err(FrameError::Closed)
        ));
        assert_eq!(h.join().unwrap(), Outcome::Closed);
    }

    #[test]
    fn conn_keeps_going_after_wrong_version() {
        let (mut a, h) = serve_pair();
        let mut f = RequestFrame::new(3, Request::Ping);
        f.version = 99;
        write_frame(&mut a, &f).unwrap();
        let r: ResponseFrame = read_frame(&mut a).unwrap();
        assert_eq!(r.version, PROTOCOL_VERSION);
        assert_eq!(r.id, 3);
        assert!(matches!(
            r.response,
            Response::Error(ErrorInfo {
                code: ErrorCode::UnsupportedVersion,
                ..
            })
        ));
        a.write_all(&encode_frame(&RequestFrame::new(4, Request::Ping)).unwrap())
            .unwrap();
        let r: ResponseFrame = read_frame(&mut a).unwrap();
        assert_eq!(r.id, 4);
        drop(a);
        assert_eq!(h.join().unwrap(), Outcome::Closed);
    }

    #[test]
    fn conn_survives_truncated_frame() {
        let (mut a, h) = serve_pair();
        a.write_all(&[0, 0, 1, 0, b'{']).unwrap();
        drop(a);
        assert_eq!(h.join().unwrap(), Outcome::Closed);
    }
}
