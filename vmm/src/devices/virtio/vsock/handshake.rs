//! The host side's line protocol before a connection carries data: the
//! host writes `CONNECT <port>\n`; it reads `OK <host port>\n` (see
//! [`Conn::establish`](super::connection::Conn::establish)) or one
//! `ERR <reason>\n` line ([`Refusal`]) before the socket closes.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;

use log::debug;

use super::unix;

/// Longest `CONNECT <port>\n` line.
pub(super) const MAX_CONNECT_LINE: usize = 32;

/// Why a host connection was closed before its `OK` line: the `ERR` line
/// the host reads. The words are part of the host interface
/// (husk_protocol::client parses them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The guest answered the REQUEST with RST (no listener on the port, or
    /// its accept backlog is full).
    Reset,
    /// No RESPONSE from the guest within the response timeout.
    Timeout,
    /// The CONNECT line was malformed or did not come in time.
    BadConnect,
    /// The device holds [`MAX_CONNECTIONS`](super::muxer::MAX_CONNECTIONS)
    /// connections already.
    Limit,
    /// The guest reset its vsock device (a reboot, a driver reload).
    DeviceReset,
}

impl Refusal {
    fn line(self) -> &'static [u8] {
        match self {
            Refusal::Reset => b"ERR reset\n",
            Refusal::Timeout => b"ERR timeout\n",
            Refusal::BadConnect => b"ERR bad-connect\n",
            Refusal::Limit => b"ERR limit\n",
            Refusal::DeviceReset => b"ERR device-reset\n",
        }
    }

    /// Tells the host, best effort: nothing was written to the socket yet,
    /// so the short line fits its buffer; a host that left gets nothing.
    pub fn tell(self, stream: &UnixStream) {
        let _ = unix::send(stream, self.line());
    }
}

/// How far reading a host's `CONNECT` line got.
pub(super) enum LineRead {
    /// No complete line yet; wait for more bytes.
    Pending,
    /// The host closed the socket or it failed: drop the connection.
    Closed,
    /// The line is malformed or too long: refuse with
    /// [`Refusal::BadConnect`].
    Malformed,
    /// A well-formed line asking for this guest port.
    Port(u32),
}

/// Reads more of the `CONNECT` line from `stream` into `line`, consuming
/// the line only: bytes behind it stay in the socket as data for the guest.
pub(super) fn read_connect_line(stream: &UnixStream, line: &mut Vec<u8>) -> LineRead {
    let mut buf = [0u8; MAX_CONNECT_LINE];
    let room = MAX_CONNECT_LINE - line.len();
    let n = match unix::peek(stream, &mut buf[..room]) {
        Ok(0) => return LineRead::Closed,
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return LineRead::Pending,
        Err(_) => return LineRead::Closed,
    };
    // Consume the line only: what follows it is data for the guest.
    let newline = buf[..n].iter().position(|&b| b == b'\n');
    let take = newline.map_or(n, |i| i + 1);
    let mut reader = stream;
    match reader.read(&mut buf[..take]) {
        Ok(k) if k == take => {}
        _ => return LineRead::Closed,
    }
    line.extend_from_slice(&buf[..take]);
    if newline.is_none() {
        if line.len() >= MAX_CONNECT_LINE {
            debug!("vsock: CONNECT line too long");
            return LineRead::Malformed;
        }
        return LineRead::Pending;
    }
    match parse_connect_line(line) {
        Some(port) => LineRead::Port(port),
        None => {
            debug!("vsock: bad handshake {:?}", String::from_utf8_lossy(line));
            LineRead::Malformed
        }
    }
}

/// Parse `CONNECT <port>\n` (decimal port, nothing else).
pub(super) fn parse_connect_line(line: &[u8]) -> Option<u32> {
    let rest = line.strip_prefix(b"CONNECT ")?;
    let digits = rest.strip_suffix(b"\n")?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}
