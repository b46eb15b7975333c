//! The host side of the vsock `CONNECT` handshake: the reply line
//! (`OK <hostport>` or `ERR <reason>`) and why a connection was refused.

use std::io::{self, Read};
/// Longest handshake reply accepted, newline included.
pub const MAX_HANDSHAKE_LINE: usize = 64;

/// Why the VMM closed a connection before its `OK` line (`ERR <reason>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `ERR reset`: the guest answered with RST.
    #[error(
        "the guest refused the connection (nothing listening on the port, or its backlog is full)"
    )]
    Reset,
    /// `ERR timeout`: the guest did not answer the VMM's request in time.
    #[error(
        "the guest did not answer the connection request in time (guest stalled or overloaded)"
    )]
    Timeout,
    /// `ERR bad-connect`: the VMM did not accept our CONNECT line.
    #[error("the VMM rejected the CONNECT line")]
    BadConnect,
    /// `ERR limit`: the VMM holds as many connections as it allows.
    #[error("the VMM's vsock connection limit is reached")]
    Limit,
    /// `ERR device-reset`: the guest reset its vsock device (reboot).
    #[error("the guest reset its vsock device")]
    DeviceReset,
}

impl Refusal {
    fn parse(word: &[u8]) -> Option<Refusal> {
        Some(match word {
            b"reset" => Refusal::Reset,
            b"timeout" => Refusal::Timeout,
            b"bad-connect" => Refusal::BadConnect,
            b"limit" => Refusal::Limit,
            b"device-reset" => Refusal::DeviceReset,
            _ => return None,
        })
    }

    /// May go away if the connection is tried again shortly.
    pub fn is_transient(self) -> bool {
        !matches!(self, Refusal::BadConnect)
    }
}

/// Why the vsock `CONNECT` handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The VMM closed the connection before replying, without a reason:
    /// usually nothing listens on the port in the guest (yet).
    #[error("connection closed before the handshake reply (is the guest listening?)")]
    Closed,
    /// The VMM closed the connection after saying why.
    #[error("{0}")]
    Refused(Refusal),
    /// No newline within [`MAX_HANDSHAKE_LINE`] bytes.
    #[error("handshake reply longer than {MAX_HANDSHAKE_LINE} bytes without a newline")]
    TooLong,
    /// A complete line that is not `OK <port>\n`.
    #[error("unexpected handshake reply {0:?}, expected \"OK <port>\"")]
    Rejected(String),
    #[error("handshake I/O: {0}")]
    Io(#[from] io::Error),
}

/// Parses a complete handshake reply line (`OK <hostport>\n`) and returns the
/// host port.
pub fn parse_handshake_reply(line: &[u8]) -> Result<u32, HandshakeError> {
    let rejected = || HandshakeError::Rejected(String::from_utf8_lossy(line).into_owned());
    if line.len() > MAX_HANDSHAKE_LINE {
        return Err(HandshakeError::TooLong);
    }
    let text = line.strip_suffix(b"\n").ok_or_else(rejected)?;
    if let Some(word) = text.strip_prefix(b"ERR ") {
        return Err(Refusal::parse(word).map_or_else(rejected, HandshakeError::Refused));
    }
    let digits = text.strip_prefix(b"OK ").ok_or_else(rejected)?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(rejected());
    }
    // Only ASCII digits: valid UTF-8; at most 10 digits: may still overflow u32.
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(rejected)
}

/// Reads the handshake reply one byte at a time (so that no byte of the agent
/// stream behind it is consumed) up to and including the newline.
pub fn read_handshake_reply<R: Read + ?Sized>(r: &mut R) -> Result<u32, HandshakeError> {
    let mut line = Vec::with_capacity(16);
    loop {
        if line.len() >= MAX_HANDSHAKE_LINE {
            return Err(HandshakeError::TooLong);
        }
        let mut b = [0u8; 1];
        match r.read(&mut b) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(_) => {
                line.push(b[0]);
                if b[0] == b'\n' {
                    return parse_handshake_reply(&line);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HandshakeError::Io(e)),
        }
    }
}
