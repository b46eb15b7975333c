//! Synchronous netlink requests over a `netlink_sys::Socket`: one request
//! answered by an acknowledgement (with any replies before it), or one dump,
//! each with a deadline and a bound on the number of messages collected.
//!
//! Generic over the protocol's message type (`RouteNetlinkMessage` for
//! rtnetlink); nothing here knows what the messages mean. The socket acts
//! in the network namespace of the thread that opened it.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, NlasIterator, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_sys::{Socket, SocketAddr};

/// How long a request waits for its answer by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The receive buffer: the kernel sends dumps in datagrams of at most 32 KiB.
const RECV_BUF: usize = 64 * 1024;
/// How often a dump interrupted by a concurrent change is started again.
const DUMP_ATTEMPTS: u32 = 3;
/// `NLM_F_CAPPED` and `NLM_F_ACK_TLVS` on an error message: the request is
/// echoed as its header only; extended-ack attributes follow it.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
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
    /// The errno the kernel answered with, if that is what failed.
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

/// A netlink socket bound to the kernel, for one protocol.
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
    pub fn open(protocol: isize, timeout: Duration) -> Result<Self, NetlinkError> {
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

    /// Sends `msg` with `NLM_F_REQUEST | NLM_F_ACK | flags` and waits for
    /// the acknowledgement; returns the replies that came before it (a
    /// `GET` request's answer), at most `max`.
    pub fn request<I>(&mut self, msg: I, flags: u16, max: usize) -> Result<Vec<I>, NetlinkError>
    where
        I: NetlinkSerializable + NetlinkDeserializable,
    {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK | flags, max, End::Ack)
    }

    /// Runs a dump of `msg` (`NLM_F_REQUEST | NLM_F_DUMP`) and collects its
    /// messages, at most `max`. A dump the kernel marks as interrupted by a
    /// concurrent change is started again, a few times.
    pub fn dump<I>(&mut self, msg: I, max: usize) -> Result<Vec<I>, NetlinkError>
    where
        I: NetlinkSerializable + NetlinkDeserializable + Clone,
    {
        for _ in 0..DUMP_ATTEMPTS {
            match self.exchange(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP, max, End::Done) {
                Err(NetlinkError::Interrupted) => continue,
                r => return r,
            }
        }
        Err(NetlinkError::Interrupted)
    }

    fn exchange<I>(
        &mut self,
        msg: I,
        flags: u16,
        max: usize,
        end: End,
    ) -> Result<Vec<I>, NetlinkError>
    where
        I: NetlinkSerializable + NetlinkDeserializable,
    {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.sock.send(&out, 0).map_err(NetlinkError::Socket)?;

        let deadline = Instant::now() + self.timeout;
        let mut got = Vec::new();
        let mut interrupted = false;
        loop {
            let len = self.recv(deadline)?;
            let mut off = 0;
            while off < len {
                let Ok(nb) = NetlinkBuffer::new_checked(&self.buf[off..len]) else {
                    return Err(NetlinkError::Decode(format!(
                        "a bad message header at byte {off} of {len}"
                    )));
                };
                let mlen = usize::try_from(nb.length()).unwrap_or(usize::MAX);
                let (mseq, mflags) = (nb.sequence_number(), nb.flags());
                let this = &self.buf[off..off + mlen];
                off += mlen.next_multiple_of(4);
                if mseq != seq {
                    continue; // an answer to an earlier request that gave up
                }
                let m = NetlinkMessage::<I>::deserialize(this)
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => {
                        interrupted |= mflags & NLM_F_DUMP_INTR != 0;
                        if got.len() >= max {
                            return Err(NetlinkError::TooMany(max));
                        }
                        got.push(inner);
                    }
                    NetlinkPayload::Error(e) => match e.code {
                        None if end == End::Ack => return Ok(got),
                        None => {}
                        Some(code) => {
                            return Err(NetlinkError::Kernel {
                                errno: io::Error::from_raw_os_error(code.get().saturating_abs()),
                                message: ext_ack_message(mflags, &e.header),
                            })
                        }
                    },
                    NetlinkPayload::Done(d) => {
                        if d.code != 0 {
                            return Err(NetlinkError::Kernel {
                                errno: io::Error::from_raw_os_error(d.code.saturating_abs()),
                                message: None,
                            });
                        }
                        if interrupted {
                            return Err(NetlinkError::Interrupted);
                        }
                        return Ok(got);
                    }
                    NetlinkPayload::Overrun(_) => return Err(NetlinkError::Overrun),
                    _ => {}
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

/// The kernel's explanation in an error message's extended-ack attributes
/// (`payload` is what follows the error code: the echoed request, whole or
/// capped to its header, then the attributes).
fn ext_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < 16 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        let len = u32::from_ne_bytes(payload[..4].try_into().ok()?);
        usize::try_from(len).ok()?.next_multiple_of(4)
    };
    let attrs = payload.get(echoed..)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_text_is_found_after_a_capped_echo() {
        let mut p = vec![0u8; 16];
        let text = b"Exclusivity flag on, cannot modify\0";
        let len = u16::try_from(4 + text.len()).unwrap();
        p.extend_from_slice(&len.to_ne_bytes());
        p.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        p.extend_from_slice(text);
        while !p.len().is_multiple_of(4) {
            p.push(0);
        }
        assert_eq!(
            ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p).as_deref(),
            Some("Exclusivity flag on, cannot modify")
        );
        assert_eq!(ext_ack_message(NLM_F_CAPPED, &p), None);
        assert_eq!(ext_ack_message(NLM_F_ACK_TLVS, &p[..8]), None);
    }

    #[test]
    fn kernel_errors_print_errno_and_explanation() {
        let e = NetlinkError::Kernel {
            errno: io::Error::from_raw_os_error(libc::EEXIST),
            message: Some("Exclusivity flag on".into()),
        };
        assert!(e.to_string().starts_with("File exists"), "{e}");
        assert!(e.to_string().ends_with("(Exclusivity flag on)"), "{e}");
        assert_eq!(e.errno(), Some(libc::EEXIST));
    }
}
