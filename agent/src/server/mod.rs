//! The request server: an accept loop and one OS thread per connection.
//!
//! Each connection carries request/response frames strictly in turn (one
//! response per request, same id). Threads keep v0 small and its start-up
//! fast (no async runtime in the initramfs).
//!
//! A connection whose request is `AttachStdio` or `Events` becomes, after
//! the `Ok`, a stdio relay or an event stream ([`StreamJob`]); every other
//! connection stays in this one-request-one-response loop.
//!
//! Parts: [`conn`] (the connection and listener kinds), [`dispatch`] (the
//! reply to one frame body, carried out on the [`Runtime`]), and here the
//! accept loop and the per-connection serve loop.
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

pub mod conn;
pub mod dispatch;
#[cfg(test)]
mod tests;

use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use husk_protocol::{
    read_frame_body, write_frame, ErrorCode, ErrorInfo, FrameError, Response, ResponseFrame,
};

pub use self::conn::{Conn, Listener};
use self::dispatch::error;
pub use self::dispatch::handle_body;
use crate::log::{debug, info};
use crate::runtime::{Runtime, StreamJob};

/// Most connections served at once; more are answered `busy` and closed.
pub const MAX_CONNS: usize = 64;
/// Stack of a connection thread (serde_json bounds JSON nesting at 128).
const CONN_STACK: usize = 512 * 1024;
/// A host that stops reading our responses cannot pin a thread forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// After answering Shutdown as PID 1, how long to wait for the host to hang up
/// (proof that it has read the reply) before resetting the VM.
const SHUTDOWN_LINGER: Duration = Duration::from_millis(250);

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

/// Serves requests on one connection until it closes, breaks, or a
/// `Shutdown` has been answered.
pub fn serve_conn<C: Read + Write + ?Sized>(conn: &mut C, rt: &Runtime) -> Outcome {
    loop {
        let reply = match read_frame_body(conn) {
            Ok(body) => handle_body(&body, rt),
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
    rt: Arc<Runtime>,
    on_shutdown: OnShutdown,
    conns: AtomicUsize,
    stop_rd: PipeReader,
    stop_wr: PipeWriter,
}

impl Shared {
    fn stop(&self) {
        // A full pipe (EAGAIN) already means "stop" is pending.
        let _ = (&self.stop_wr).write(&[1]);
    }
}

/// Decrements the connection count when a connection thread ends (even by panic).
struct ConnSlot(Arc<Shared>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.conns.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts and serves connections. Returns `Ok(())` after a `Shutdown` in
/// [`OnShutdown::Stop`] mode; in [`OnShutdown::Reboot`] mode it only returns
/// on a setup error. Accept errors are logged and survived. Every
/// connection's requests are carried out on `rt`.
pub fn run(listener: Listener, on_shutdown: OnShutdown, rt: Arc<Runtime>) -> io::Result<()> {
    listener.set_nonblocking()?;
    let (stop_rd, stop_wr) = io::pipe()?;
    husk_sys::set_nonblocking(&stop_rd, true)?;
    husk_sys::set_nonblocking(&stop_wr, true)?;
    let shared = Arc::new(Shared {
        rt,
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
            match serve_conn(&mut conn, &slot.0.rt) {
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
