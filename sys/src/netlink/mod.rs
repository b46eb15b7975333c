//! A small synchronous netlink client over a `netlink_sys::Socket`: one
//! request answered by an acknowledgement (with any replies before it), or
//! one dump; each with a deadline and a bound on the number of messages
//! collected, so that a stuck or flooding kernel cannot stall the caller or
//! grow its memory. The agent in the guest and the runtime on the host both
//! configure links, addresses, routes and tc with it.
//!
//! Generic over the protocol's messages: nothing here knows what they
//! mean. For rtnetlink, `netlink_packet_route::RouteNetlinkMessage` serves
//! as both the request and the reply type; a caller that needs only a few
//! messages may pass types of its own (any `NetlinkSerializable` request,
//! any `NetlinkDeserializable` reply), so that the parsers and emitters of
//! every other message are not linked in. Request flags beyond
//! `NLM_F_REQUEST | NLM_F_ACK` (`NLM_F_CREATE | NLM_F_EXCL` to create and
//! never replace, ...) are the caller's.
//!
//! A socket acts in the network namespace of the thread that opened it,
//! for good: it may then be used from any thread.

#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    DoneBuffer, ErrorBuffer, NetlinkBuffer, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable, NlasIterator, Parseable, NLMSG_DONE, NLMSG_ERROR,
    NLMSG_OVERRUN, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// How long an exchange waits for its answer by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The receive buffer: the kernel sends dumps in datagrams of at most
/// 32 KiB unless the reader offers more; a larger one is an error (never
/// truncated).
const RECV_BUF: usize = 64 * 1024;
/// How often a dump interrupted by a concurrent change is started again.
const DUMP_ATTEMPTS: u32 = 3;
/// Message types below this are netlink's own (`NLMSG_NOOP`, `_ERROR`,
/// `_DONE`, `_OVERRUN`, reserved ones); the protocol's start here.
const NLMSG_MIN_TYPE: u16 = 0x10;
/// The length of `struct nlmsghdr`: what a capped error echoes of the
/// request.
const NLMSG_HDRLEN: usize = 16;
/// `NLMSGERR_ATTR_MSG`: the kernel's text explaining an error.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Longest extended-ack message kept.
const MAX_EXT_MSG: usize = 256;

/// What a netlink exchange failed at.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket itself (open, bind, send, receive).
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel refused the request: its errno, and its own explanation
    /// (extended ack) when it gave one.
    #[error("{errno}{}", message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel {
        errno: io::Error,
        message: Option<String>,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answer not understood: {0}")]
    Decode(String),
    #[error("more than {0} messages in the answer")]
    TooMany(usize),
    #[error("a {0}-byte message is over the {RECV_BUF}-byte receive buffer")]
    Truncated(usize),
    #[error("dump interrupted by concurrent changes {DUMP_ATTEMPTS} times")]
    Interrupted,
    #[error("the kernel reported an overrun")]
    Overrun,
}

impl NetlinkError {
    /// The errno the kernel refused the request with (`EEXIST`, `ENODEV`,
    /// ...), if that is what failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => errno.raw_os_error(),
            _ => None,
        }
    }
}

/// How an exchange ends: an ack (`NLMSG_ERROR` with code 0) or `NLMSG_DONE`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Ack,
    Done,
}

/// What an exchange hands each reply to: its header and payload.
type Each<'a> = &'a mut dyn FnMut(&NetlinkHeader, &[u8]) -> Result<(), NetlinkError>;

/// A netlink socket connected to the kernel, for one protocol.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    timeout: Duration,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a socket for `protocol` (`netlink_sys::protocols::*`) in the
    /// calling thread's network namespace; each exchange waits at most
    /// `timeout`. Asks for extended acks, capped echoes and strict dump
    /// filtering where the kernel has them (older kernels just lack them).
    pub fn open(protocol: isize, timeout: Duration) -> Result<Netlink, NetlinkError> {
        let mut sock = Socket::new(protocol).map_err(NetlinkError::Socket)?;
        sock.bind_auto().map_err(NetlinkError::Socket)?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_netlink_get_strict_chk(true);
        Ok(Netlink {
            sock,
            seq: 0,
            timeout,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// An rtnetlink (`NETLINK_ROUTE`) socket in the calling thread's
    /// network namespace, with [`DEFAULT_TIMEOUT`].
    pub fn route() -> Result<Netlink, NetlinkError> {
        Netlink::open(NETLINK_ROUTE, DEFAULT_TIMEOUT)
    }

    /// Sends `msg` with `NLM_F_REQUEST | NLM_F_ACK | flags` and waits for
    /// the acknowledgement; a refusal is [`NetlinkError::Kernel`]. A reply
    /// before the ack is an error ([`NetlinkError::TooMany`] of 0): use
    /// [`Netlink::request_replies`] for requests that have them.
    pub fn request<M: NetlinkSerializable>(
        &mut self,
        msg: M,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        let mut packet = encode(msg, NLM_F_REQUEST | NLM_F_ACK | flags);
        self.exchange(&mut packet, End::Ack, 0, &mut |_, _| Ok(()))
    }

    /// Sends `msg` with `NLM_F_REQUEST | NLM_F_ACK | flags` and waits for
    /// the acknowledgement; returns the replies that came before it (a
    /// `GET` request's answer), at most `max`.
    pub fn request_replies<M, R>(
        &mut self,
        msg: M,
        flags: u16,
        max: usize,
    ) -> Result<Vec<R>, NetlinkError>
    where
        M: NetlinkSerializable,
        R: NetlinkDeserializable,
    {
        let mut packet = encode(msg, NLM_F_REQUEST | NLM_F_ACK | flags);
        let mut got = Vec::new();
        self.exchange(&mut packet, End::Ack, max, &mut |h, p| {
            got.push(decode(h, p)?);
            Ok(())
        })?;
        Ok(got)
    }

    /// Runs a dump of `msg` (`NLM_F_REQUEST | NLM_F_DUMP`, a `GET`
    /// message) and collects its messages, at most `max`. A dump the
    /// kernel marks as interrupted by a concurrent change is started
    /// again, a few times.
    pub fn dump<M, R>(&mut self, msg: M, max: usize) -> Result<Vec<R>, NetlinkError>
    where
        M: NetlinkSerializable,
        R: NetlinkDeserializable,
    {
        let mut packet = encode(msg, NLM_F_REQUEST | NLM_F_DUMP);
        let mut got = Vec::new();
        for _ in 0..DUMP_ATTEMPTS {
            got.clear();
            let r = self.exchange(&mut packet, End::Done, max, &mut |h, p| {
                got.push(decode(h, p)?);
                Ok(())
            });
            match r {
                Err(NetlinkError::Interrupted) => {}
                Err(e) => return Err(e),
                Ok(()) => return Ok(got),
            }
        }
        Err(NetlinkError::Interrupted)
    }

    /// Sends `packet` under the next sequence number and hands each reply
    /// to it to `each` (at most `max`) until `end`. Not generic: one copy
    /// of the loop whatever the message types.
    fn exchange(
        &mut self,
        packet: &mut [u8],
        end: End,
        max: usize,
        each: Each<'_>,
    ) -> Result<(), NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        NetlinkBuffer::new(&mut *packet).set_sequence_number(seq);
        let n = self.sock.send(packet, 0).map_err(NetlinkError::Socket)?;
        if n != packet.len() {
            return Err(NetlinkError::Socket(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {n} of {} bytes", packet.len()),
            )));
        }
        let deadline = Instant::now() + self.timeout;
        let mut count = 0;
        let mut interrupted = false;
        loop {
            let len = self.recv(deadline)?;
            let mut off = 0;
            while off < len {
                let nb = NetlinkBuffer::new_checked(&self.buf[off..len]).map_err(|e| {
                    NetlinkError::Decode(format!("message at byte {off} of {len}: {e}"))
                })?;
                let header =
                    NetlinkHeader::parse(&nb).map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let payload = nb.payload();
                let mlen = usize::try_from(header.length).unwrap_or(usize::MAX);
                off = off.saturating_add(mlen.next_multiple_of(4));
                if header.sequence_number != seq {
                    continue; // an answer to an earlier request that gave up
                }
                match header.message_type {
                    NLMSG_ERROR => {
                        let e = ErrorBuffer::new_checked(payload)
                            .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                        match e.code() {
                            None if end == End::Ack => return Ok(()),
                            None => {}
                            Some(code) => {
                                return Err(kernel_error(
                                    code.get(),
                                    error_ext_ack(header.flags, e.payload()),
                                ))
                            }
                        }
                    }
                    NLMSG_DONE => {
                        // An old kernel's DONE may lack the code.
                        if let Ok(d) = DoneBuffer::new_checked(payload) {
                            if d.code() != 0 {
                                let ack = (header.flags & NLM_F_ACK_TLVS != 0)
                                    .then(|| ext_ack_text(d.extended_ack()));
                                return Err(kernel_error(d.code(), ack.flatten()));
                            }
                        }
                        if interrupted {
                            return Err(NetlinkError::Interrupted);
                        }
                        return Ok(());
                    }
                    NLMSG_OVERRUN => return Err(NetlinkError::Overrun),
                    t if t < NLMSG_MIN_TYPE => {} // NOOP and reserved ones
                    _ => {
                        interrupted |= header.flags & NLM_F_DUMP_INTR != 0;
                        if count >= max {
                            return Err(NetlinkError::TooMany(max));
                        }
                        count += 1;
                        each(&header, payload)?;
                    }
                }
            }
        }
    }

    /// Receives one datagram into `self.buf` by `deadline`; its length.
    fn recv(&mut self, deadline: Instant) -> Result<usize, NetlinkError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NetlinkError::Timeout(self.timeout));
            }
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            let mut pfd = libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one pollfd that lives across the call.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NetlinkError::Socket(e));
            }
            if r == 0 {
                continue;
            }
            self.buf.clear();
            match self
                .sock
                .recv(&mut self.buf, libc::MSG_DONTWAIT | libc::MSG_TRUNC)
            {
                Ok(n) if n > self.buf.len() => return Err(NetlinkError::Truncated(n)),
                Ok(n) => return Ok(n),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(NetlinkError::Socket(e)),
            }
        }
    }
}

/// `msg` as a netlink message with `flags` (its sequence number is set
/// when it is sent).
fn encode<M: NetlinkSerializable>(msg: M, flags: u16) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    packet.finalize();
    let mut out = vec![0; packet.buffer_len()];
    packet.serialize(&mut out);
    out
}

fn decode<R: NetlinkDeserializable>(h: &NetlinkHeader, p: &[u8]) -> Result<R, NetlinkError> {
    R::deserialize(h, p).map_err(|e| NetlinkError::Decode(e.to_string()))
}

/// The kernel's refusal: `code` is its negative errno.
fn kernel_error(code: i32, message: Option<String>) -> NetlinkError {
    NetlinkError::Kernel {
        errno: io::Error::from_raw_os_error(code.saturating_abs()),
        message,
    }
}

/// The kernel's explanation in an error message's extended-ack attributes
/// (`payload` is what follows the error code: the echoed request, whole or
/// capped to its header, then the attributes).
fn error_ext_ack(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < NLMSG_HDRLEN {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len = u32::from_ne_bytes(payload[..4].try_into().ok()?);
        usize::try_from(len).ok()?.next_multiple_of(4)
    };
    ext_ack_text(payload.get(echoed..)?)
}

/// The text (`NLMSGERR_ATTR_MSG`) among extended-ack attributes, at most
/// [`MAX_EXT_MSG`] bytes of it.
fn ext_ack_text(attrs: &[u8]) -> Option<String> {
    for nla in NlasIterator::new(attrs) {
        let nla = nla.ok()?;
        if nla.kind() == NLMSGERR_ATTR_MSG {
            let v = nla.value();
            let v = &v[..v.iter().position(|&b| b == 0).unwrap_or(v.len())];
            let s = String::from_utf8_lossy(&v[..v.len().min(MAX_EXT_MSG)]);
            return Some(s.trim().to_string()).filter(|s| !s.is_empty());
        }
    }
    None
}
