//! The sandbox's DNS forwarder: queries sent over UDP to the forwarding
//! address (port 53, in the sandbox network namespace) are relayed to the
//! host over vsock (CID 2, port [`DNS_PORT`]), one connection per query,
//! framed as DNS over TCP (a 2-byte big-endian length, then the message);
//! the host's answer goes back to the client in one datagram.
//!
//! Bounded: at most [`MAX_IN_FLIGHT`] queries are relayed at once (more
//! are dropped: DNS clients retry), each has [`REPLY_DEADLINE`] for its
//! answer, and an answer is at most what one datagram carries. The
//! transport is a [`Connect`] function, so the relay is tested without a
//! VM. Only UDP is served: a client that gets a truncated answer and
//! retries over TCP finds nothing on TCP port 53.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use husk_protocol::net::{DNS_PORT, MAX_DNS_MESSAGE};
use husk_protocol::vsock::VsockStream;
use thiserror::Error;

use crate::log::debug;

/// Most queries relayed at once.
pub const MAX_IN_FLIGHT: usize = 32;
/// Longest wait for the host's answer to one query (from the connect on).
pub const REPLY_DEADLINE: Duration = Duration::from_secs(5);
/// Largest answer relayed: what one UDP datagram carries over IPv4.
pub const MAX_REPLY: usize = 65507;
/// A DNS message's header: anything shorter is not one.
const DNS_HEADER: usize = 12;
/// Stack of a query's relay thread (its buffers are on the heap).
const RELAY_STACK: usize = 128 * 1024;

/// A connection to the host's DNS service.
pub trait HostStream: Read + Write + Send {
    /// Makes reads and writes give up after `t`.
    fn set_timeouts(&self, t: Duration) -> io::Result<()>;
}

impl HostStream for VsockStream {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

impl HostStream for UnixStream {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

/// Opens a connection to the host's DNS service.
pub type Connect = Arc<dyn Fn() -> io::Result<Box<dyn HostStream>> + Send + Sync>;

/// Why one query got no answer.
#[derive(Debug, Error)]
pub enum RelayError {
    #[error("connect to the host: {0}")]
    Connect(io::Error),
    #[error("send the query: {0}")]
    Send(io::Error),
    #[error("read the answer: {0}")]
    Recv(io::Error),
    #[error("no answer within {0:?}")]
    Deadline(Duration),
    #[error("an answer of {0} bytes is over {MAX_REPLY}")]
    TooLarge(usize),
    #[error("an answer of {0} bytes is not a DNS message")]
    Short(usize),
    #[error("the answer's id is not the query's")]
    Id,
}

/// Relays queries to the host, at most `max_in_flight` at once.
#[derive(Clone)]
pub struct Relay {
    connect: Connect,
    deadline: Duration,
    max_in_flight: usize,
    in_flight: Arc<AtomicUsize>,
}

/// Counts a query in flight until dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Relay {
    /// A relay over `connect` with the default bounds.
    pub fn new(connect: Connect) -> Relay {
        Relay {
            connect,
            deadline: REPLY_DEADLINE,
            max_in_flight: MAX_IN_FLIGHT,
            in_flight: Arc::default(),
        }
    }

    /// The relay to the host: vsock CID 2, port [`DNS_PORT`].
    pub fn vsock() -> Relay {
        Relay::new(Arc::new(|| {
            let s = VsockStream::connect(libc::VMADDR_CID_HOST, DNS_PORT)?;
            Ok(Box::new(s) as Box<dyn HostStream>)
        }))
    }

    /// Other bounds (tests).
    pub fn with_bounds(mut self, deadline: Duration, max_in_flight: usize) -> Relay {
        self.deadline = deadline;
        self.max_in_flight = max_in_flight;
        self
    }

    /// Queries being relayed now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Relays one query and returns the host's answer.
    pub fn exchange(&self, query: &[u8]) -> Result<Vec<u8>, RelayError> {
        let deadline = Instant::now() + self.deadline;
        let mut conn = (self.connect)().map_err(RelayError::Connect)?;
        let len = u16::try_from(query.len()).map_err(|_| {
            RelayError::Send(io::Error::new(
                io::ErrorKind::InvalidInput,
                "query over 65535 bytes",
            ))
        })?;
        let mut framed = Vec::with_capacity(2 + query.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query);
        conn.set_timeouts(left(deadline, self.deadline)?)
            .map_err(RelayError::Send)?;
        conn.write_all(&framed).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                RelayError::Deadline(self.deadline)
            }
            _ => RelayError::Send(e),
        })?;
        let mut len = [0u8; 2];
        read_by(&mut *conn, &mut len, deadline, self.deadline)?;
        let len = usize::from(u16::from_be_bytes(len));
        if len > MAX_REPLY {
            return Err(RelayError::TooLarge(len));
        }
        if len < DNS_HEADER {
            return Err(RelayError::Short(len));
        }
        let mut reply = vec![0; len];
        read_by(&mut *conn, &mut reply, deadline, self.deadline)?;
        if reply[..2] != query[..2.min(query.len())] {
            return Err(RelayError::Id);
        }
        Ok(reply)
    }

    /// Relays `query` on a thread of its own and hands the outcome to
    /// `done`; false (the query dropped) when `max_in_flight` queries are
    /// being relayed already or no thread could be started.
    pub fn spawn(
        &self,
        query: Vec<u8>,
        done: impl FnOnce(Result<Vec<u8>, RelayError>) + Send + 'static,
    ) -> bool {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        let guard = InFlight(Arc::clone(&self.in_flight));
        let relay = self.clone();
        std::thread::Builder::new()
            .name("husk-dns".into())
            .stack_size(RELAY_STACK)
            .spawn(move || {
                let _guard = guard;
                done(relay.exchange(&query));
            })
            .is_ok()
    }
}

/// Time left until `deadline`, or the deadline error.
fn left(deadline: Instant, total: Duration) -> Result<Duration, RelayError> {
    let t = deadline.saturating_duration_since(Instant::now());
    if t.is_zero() {
        return Err(RelayError::Deadline(total));
    }
    Ok(t)
}

/// Fills `buf` from `conn` before `deadline` (`total` after the start).
fn read_by(
    conn: &mut dyn HostStream,
    buf: &mut [u8],
    deadline: Instant,
    total: Duration,
) -> Result<(), RelayError> {
    husk_sys::deadline::read_exact_by(conn, buf, deadline, |c, t| c.set_timeouts(t)).map_err(|e| {
        match e.kind() {
            io::ErrorKind::TimedOut => RelayError::Deadline(total),
            _ => RelayError::Recv(e),
        }
    })
}

/// The forwarder's receive loop, on a thread of its own.
pub struct Forwarder {
    sock: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Forwarder {
    /// Serves queries arriving on `sock` (bound) through `relay`.
    pub fn start(sock: UdpSocket, relay: Relay) -> io::Result<Forwarder> {
        let sock = Arc::new(sock);
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&sock), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("husk-dns-forwarder".into())
            .spawn(move || serve(&s, &relay, &st))?;
        Ok(Forwarder { sock, stop, thread })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Stops the receive loop (an empty datagram to itself wakes it) and
    /// waits for it; relays in flight finish on their own.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(a) = self.sock.local_addr() {
            let _ = self.sock.send_to(&[], a);
        }
        let _ = self.thread.join();
    }
}

fn serve(sock: &Arc<UdpSocket>, relay: &Relay, stop: &AtomicBool) {
    let mut buf = vec![0u8; MAX_DNS_MESSAGE];
    loop {
        let got = sock.recv_from(&mut buf);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (n, peer) = match got {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                debug!("dns forwarder: receive: {e}");
                // Never spin on a lasting error.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if n < DNS_HEADER {
            continue;
        }
        let out = Arc::clone(sock);
        let sent = relay.spawn(buf[..n].to_vec(), move |r| match r {
            Ok(reply) => {
                if let Err(e) = out.send_to(&reply, peer) {
                    debug!("dns forwarder: answer {peer}: {e}");
                }
            }
            Err(e) => debug!("dns forwarder: query from {peer}: {e}"),
        });
        if !sent {
            debug!("dns forwarder: busy, dropped a query from {peer}");
        }
    }
}

#[cfg(test)]
#[path = "dns_tests.rs"]
mod tests;
