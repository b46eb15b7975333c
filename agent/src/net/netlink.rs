//! A small synchronous rtnetlink client: one request at a time, each
//! acknowledged (or refused with an errno) by the kernel, or a bounded
//! dump. Kept generic (no knowledge of the guest's network) so that it can
//! become a module shared with the host side.
//!
//! Every receive has a timeout ([`RECV_TIMEOUT`]) and a dump is bounded
//! ([`MAX_DUMP_MESSAGES`]): a stuck or flooding kernel cannot stall us.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable, Parseable, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK,
    NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Longest wait for one answer datagram.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Most messages one dump may return.
pub const MAX_DUMP_MESSAGES: usize = 16 * 1024;
/// Receive buffer: the kernel's dump datagrams are at most 32 KiB unless
/// the reader offers more; a larger one is an error (never truncated).
const RECV_BUF: usize = 64 * 1024;

/// An rtnetlink socket, bound to the network namespace of the thread that
/// opened it (for good: it may then be used from any thread).
///
/// Generic over the message types: `netlink_packet_route::RouteNetlinkMessage`
/// works for all of rtnetlink; a caller that needs only a few messages
/// may pass types of its own, so that the parsers and emitters of every
/// other rtnetlink message are not linked in.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// What one datagram held, for the request with our sequence number.
enum Step {
    More,
    Done,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Netlink {
    /// Opens a NETLINK_ROUTE socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        set_recv_timeout(&sock, RECV_TIMEOUT)?;
        Ok(Netlink {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Sends `msg` and waits for the kernel's acknowledgement; a refusal is
    /// its errno. `RTM_NEW*` messages (a link, an address, a route) create
    /// and must not replace: `NLM_F_CREATE | NLM_F_EXCL`.
    pub fn request<M: NetlinkSerializable>(&mut self, msg: M) -> io::Result<()> {
        let creates = matches!(
            msg.message_type(),
            libc::RTM_NEWLINK | libc::RTM_NEWADDR | libc::RTM_NEWROUTE
        );
        let create = if creates {
            NLM_F_CREATE | NLM_F_EXCL
        } else {
            0
        };
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK | create)?;
        loop {
            if let Step::Done = self.recv(seq, &mut |_, _| Ok(()))? {
                return Ok(());
            }
        }
    }

    /// Sends `msg` (a `RTM_GET*` message) as a dump request and returns
    /// every message of the answer (at most [`MAX_DUMP_MESSAGES`]).
    pub fn dump<M: NetlinkSerializable, R: NetlinkDeserializable>(
        &mut self,
        msg: M,
    ) -> io::Result<Vec<R>> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut out = Vec::new();
        loop {
            let step = self.recv(seq, &mut |header, payload| {
                if out.len() >= MAX_DUMP_MESSAGES {
                    return Err(invalid(format!(
                        "netlink dump of more than {MAX_DUMP_MESSAGES} messages"
                    )));
                }
                let m = R::deserialize(header, payload)
                    .map_err(|e| invalid(format!("netlink: bad message: {e}")))?;
                out.push(m);
                Ok(())
            })?;
            if let Step::Done = step {
                return Ok(out);
            }
        }
    }

    fn send<M: NetlinkSerializable>(&mut self, msg: M, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut bytes = vec![0; nl.buffer_len()];
        nl.serialize(&mut bytes);
        let n = self.sock.send(&bytes, 0)?;
        if n != bytes.len() {
            return Err(invalid(format!(
                "netlink: sent {n} of {} bytes",
                bytes.len()
            )));
        }
        Ok(self.seq)
    }

    /// Receives one datagram and hands each message answering `seq` to
    /// `each` (others, stale answers, are skipped). An error message ends
    /// the request: its errno, or the acknowledgement.
    fn recv(
        &mut self,
        seq: u32,
        each: &mut dyn FnMut(&NetlinkHeader, &[u8]) -> io::Result<()>,
    ) -> io::Result<Step> {
        self.buf.clear();
        let n = match self.sock.recv(&mut self.buf, libc::MSG_TRUNC) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("netlink: no answer in {} s", RECV_TIMEOUT.as_secs()),
                ))
            }
            Err(e) => return Err(e),
        };
        if n > self.buf.len() {
            return Err(invalid(format!(
                "netlink: a {n}-byte datagram does not fit {RECV_BUF} bytes"
            )));
        }
        let mut data = &self.buf[..n];
        let mut step = Step::More;
        while !data.is_empty() {
            let nb = NetlinkBuffer::new_checked(data)
                .map_err(|e| invalid(format!("netlink: bad message: {e}")))?;
            let header = NetlinkHeader::parse(&nb)
                .map_err(|e| invalid(format!("netlink: bad message: {e}")))?;
            let payload = nb.payload();
            // Messages are 4-byte aligned within a datagram.
            let len = usize::try_from(header.length).unwrap_or(usize::MAX);
            data = data.get(len.next_multiple_of(4)..).unwrap_or(&[]);
            if header.sequence_number != seq {
                continue;
            }
            match header.message_type {
                NLMSG_DONE => step = Step::Done,
                NLMSG_ERROR => {
                    let e = ErrorBuffer::new_checked(&payload)
                        .map_err(|e| invalid(format!("netlink: bad error message: {e}")))?;
                    match e.code() {
                        None => step = Step::Done,
                        Some(code) => {
                            return Err(io::Error::from_raw_os_error(code.get().saturating_abs()))
                        }
                    }
                }
                t if t < 16 => {} // NOOP, OVERRUN and other control messages
                _ => each(&header, payload)?,
            }
        }
        Ok(step)
    }
}

/// SO_RCVTIMEO on the socket.
fn set_recv_timeout(sock: &Socket, t: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(t.subsec_micros()),
    };
    #[allow(clippy::cast_possible_truncation)] // a timeval is 16 bytes
    let len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `tv` is a valid timeval of `len` bytes for the call; the
    // descriptor is the socket we own.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&tv).cast::<libc::c_void>(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
