//! The DNS relay: the guest's DNS forwarder connects to host vsock port
//! [`husk_protocol::net::DNS_PORT`], which husk-vmm hands to the Unix socket `<vsock uds>_53`
//! as a plain stream connection. Each connection carries one query framed
//! as DNS over TCP (a 2-byte big-endian length, then the message); the
//! relay sends it over UDP to the namespace's resolver (Docker's embedded
//! one at 127.0.0.11, which only the container's network namespace on the
//! host reaches), writes the answer back the same way and closes.
//!
//! The guest is hostile: connections are bounded in number, every read,
//! write and wait has a deadline, sizes are checked before anything is
//! allocated, and an answer whose id is not the query's is ignored.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use husk_protocol::net::MAX_DNS_MESSAGE;

/// A DNS header's size: anything shorter is no DNS message.
const DNS_HEADER: usize = 12;
/// How often [`DnsRelay::serve`] looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);
/// A worker's stack: its buffers are on the heap.
const WORKER_STACK: usize = 128 * 1024;

/// The relay's bounds. [`DnsRelay::new`] gives the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsRelay {
    /// Where queries go (UDP).
    pub resolver: SocketAddr,
    /// Most queries in flight; a connection over it is closed at once.
    pub max_concurrent: usize,
    /// Longest query accepted. A stub resolver's query is a question and
    /// an EDNS record, a few hundred bytes; the bound keeps a connection's
    /// memory small.
    pub max_query: usize,
    /// The whole query must have arrived by then from the connection's
    /// start (a client that sends nothing, or a byte at a time, is dropped).
    pub read_timeout: Duration,
    /// How long the resolver has to answer, retries included.
    pub reply_timeout: Duration,
    /// When the query is sent again (once) if no answer came.
    pub retry_after: Duration,
    /// How long writing the answer back may take.
    pub write_timeout: Duration,
}

impl DnsRelay {
    pub fn new(resolver: SocketAddr) -> Self {
        DnsRelay {
            resolver,
            max_concurrent: 32,
            max_query: 4096,
            read_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
        }
    }

    /// Accepts connections on `listener` until `stop` is set (looked at
    /// every 200 ms), each served on a thread of its own. Run it on a
    /// thread inside the container's network namespace: the workers, and
    /// their UDP sockets, inherit it. Workers still running when it
    /// returns end by their own deadlines.
    pub fn serve(&self, listener: UnixListener, stop: &AtomicBool) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let active = Arc::new(AtomicUsize::new(0));
        while !stop.load(Ordering::Relaxed) {
            if !readable(&listener, STOP_POLL)? {
                continue;
            }
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN | libc::EINTR | libc::ECONNABORTED) => continue,
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    _ => return Err(e),
                },
            };
            if active.fetch_add(1, Ordering::AcqRel) >= self.max_concurrent {
                active.fetch_sub(1, Ordering::AcqRel);
                continue; // refused: dropping the stream closes it
            }
            let slot = Slot(Arc::clone(&active));
            let relay = *self;
            let spawned = thread::Builder::new()
                .name("husk-dns".into())
                .stack_size(WORKER_STACK)
                .spawn(move || {
                    let _slot = slot;
                    let _ = relay.relay_one(stream);
                });
            // On a spawn failure the closure, stream and slot are dropped.
            drop(spawned);
        }
        Ok(())
    }

    /// Serves one connection: reads the query, asks the resolver, writes
    /// the answer back. Any failure closes the connection.
    fn relay_one(&self, mut stream: UnixStream) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        let deadline = Instant::now() + self.read_timeout;
        let mut len = [0u8; 2];
        read_exact_by(&mut stream, &mut len, deadline)?;
        let n = usize::from(u16::from_be_bytes(len));
        if !(DNS_HEADER..=self.max_query.min(MAX_DNS_MESSAGE)).contains(&n) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a {n}-byte query, not {DNS_HEADER}..={}", self.max_query),
            ));
        }
        let mut query = vec![0; n];
        read_exact_by(&mut stream, &mut query, deadline)?;
        let answer = self.ask(&query)?;
        let alen = u16::try_from(answer.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "answer over 64 KiB"))?;
        let mut out = Vec::with_capacity(2 + answer.len());
        out.extend_from_slice(&alen.to_be_bytes());
        out.extend_from_slice(&answer);
        stream.set_write_timeout(Some(self.write_timeout))?;
        stream.write_all(&out)
    }

    /// Sends `query` to the resolver from a fresh socket (a random source
    /// port), once more after [`DnsRelay::retry_after`]; the first answer
    /// with the query's id, by [`DnsRelay::reply_timeout`].
    fn ask(&self, query: &[u8]) -> io::Result<Vec<u8>> {
        let any = match self.resolver.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let sock = UdpSocket::bind(SocketAddr::new(any, 0))?;
        sock.connect(self.resolver)?;
        sock.send(query)?;
        let start = Instant::now();
        let deadline = start + self.reply_timeout;
        let retry_at = start + self.retry_after;
        let mut retried = false;
        let mut buf = vec![0; MAX_DNS_MESSAGE];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no answer from {} in {:?}",
                        self.resolver, self.reply_timeout
                    ),
                ));
            }
            if !retried && now >= retry_at {
                sock.send(query)?;
                retried = true;
            }
            let until = if retried {
                deadline
            } else {
                retry_at.min(deadline)
            };
            let wait = until
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            sock.set_read_timeout(Some(wait))?;
            match sock.recv(&mut buf) {
                // An answer (QR set) to this query (same id).
                Ok(n) if n >= DNS_HEADER && buf[..2] == query[..2] && buf[2] & 0x80 != 0 => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Ok(_) => {}
                Err(e) if husk_sys::deadline::is_wait_over(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Runs a [`DnsRelay`] with the default bounds, forwarding to `resolver`
/// (guest connections to vsock port 53 arrive on `listener`).
pub fn serve_dns(
    listener: UnixListener,
    resolver: SocketAddr,
    stop: &AtomicBool,
) -> io::Result<()> {
    DnsRelay::new(resolver).serve(listener, stop)
}

/// The address the guest should answer DNS at, and the relay forward to:
/// the first `nameserver` of `resolv_conf` that is a loopback address
/// (Docker's 127.0.0.11, or 127.0.0.53, ::1), which only the container's
/// network namespace on the host reaches. `None` when every nameserver is
/// reachable from the guest as it is.
pub fn dns_forward_address(resolv_conf: &str) -> Option<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let addr = words.next()?;
            let addr = addr.split('%').next().unwrap_or(addr);
            addr.parse::<IpAddr>().ok()
        })
        .find(IpAddr::is_loopback)
}

/// A place among the relay's concurrent queries, given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether `listener` has a connection waiting within `wait`.
fn readable(listener: &UnixListener, wait: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: poll(2) on one pollfd that lives across the call.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(r > 0)
}

/// Fills `buf` from `stream` by `deadline`.
fn read_exact_by(stream: &mut UnixStream, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    husk_sys::deadline::read_exact_by(stream, buf, deadline, |s, t| s.set_read_timeout(Some(t)))
}

#[cfg(test)]
#[path = "dns_tests.rs"]
mod tests;
