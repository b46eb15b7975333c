//! The virtio-vsock packet header (`struct virtio_vsock_hdr`, spec §5.10.6)
//! and its validation.

/// Size of the header on the wire.
pub const HDR_SIZE: usize = 44;
/// [`HDR_SIZE`] as a used-ring length.
pub const HDR_SIZE_U32: u32 = 44;
const _: () = assert!(HDR_SIZE_U32 as usize == HDR_SIZE);
/// Largest payload we accept from or send to the guest (Linux's
/// VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PAYLOAD: u32 = 64 * 1024;

/// The host's CID.
pub const HOST_CID: u64 = 2;

pub const TYPE_STREAM: u16 = 1;

pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// A decoded header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

fn u16_at(b: &[u8; HDR_SIZE], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8; HDR_SIZE], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8; HDR_SIZE], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl Header {
    pub fn from_bytes(b: &[u8; HDR_SIZE]) -> Header {
        Header {
            src_cid: u64_at(b, 0),
            dst_cid: u64_at(b, 8),
            src_port: u32_at(b, 16),
            dst_port: u32_at(b, 20),
            len: u32_at(b, 24),
            type_: u16_at(b, 28),
            op: u16_at(b, 30),
            flags: u32_at(b, 32),
            buf_alloc: u32_at(b, 36),
            fwd_cnt: u32_at(b, 40),
        }
    }

    pub fn to_bytes(self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Why a packet from the guest was rejected.
#[derive(Debug, PartialEq, Eq)]
pub enum PacketError {
    /// Fewer than 44 readable bytes.
    TooShort(usize),
    /// `len` above [`MAX_PAYLOAD`].
    PayloadTooLarge(u32),
    /// `len` larger than the readable bytes after the header.
    PayloadTruncated { len: u32, available: u64 },
    /// A control packet with a payload.
    UnexpectedPayload { op: u16, len: u32 },
    /// Not a stream packet.
    BadType(u16),
    /// Unknown operation.
    BadOp(u16),
    /// `src_cid` is not the guest's CID.
    BadSrcCid(u64),
    /// `dst_cid` is not the host's CID.
    BadDstCid(u64),
}

impl std::fmt::Display for PacketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PacketError::TooShort(n) => write!(f, "packet of {n} bytes is shorter than a header"),
            PacketError::PayloadTooLarge(n) => write!(f, "payload of {n} bytes is too large"),
            PacketError::PayloadTruncated { len, available } => {
                write!(f, "payload of {len} bytes but only {available} present")
            }
            PacketError::UnexpectedPayload { op, len } => {
                write!(f, "op {op} with a {len}-byte payload")
            }
            PacketError::BadType(t) => write!(f, "socket type {t} is not supported"),
            PacketError::BadOp(op) => write!(f, "unknown op {op}"),
            PacketError::BadSrcCid(c) => write!(f, "source CID {c} is not the guest's"),
            PacketError::BadDstCid(c) => write!(f, "destination CID {c} is not the host's"),
        }
    }
}

/// Validate a packet the guest put on its tx queue. `bytes` is the start of
/// the device-readable part of the chain (at most [`HDR_SIZE`] bytes are
/// looked at), `total_len` the length of the whole readable part. Pure and
/// bounded.
pub fn parse_tx(bytes: &[u8], total_len: u64, guest_cid: u64) -> Result<Header, PacketError> {
    let Some(raw) = bytes.get(..HDR_SIZE) else {
        return Err(PacketError::TooShort(bytes.len()));
    };
    if total_len < HDR_SIZE as u64 {
        return Err(PacketError::TooShort(crate::cast::usize_from(total_len)));
    }
    let raw: &[u8; HDR_SIZE] = raw.try_into().expect("slice of HDR_SIZE bytes");
    let hdr = Header::from_bytes(raw);
    if hdr.len > MAX_PAYLOAD {
        return Err(PacketError::PayloadTooLarge(hdr.len));
    }
    let available = total_len - HDR_SIZE as u64;
    if u64::from(hdr.len) > available {
        return Err(PacketError::PayloadTruncated {
            len: hdr.len,
            available,
        });
    }
    if hdr.src_cid != guest_cid {
        return Err(PacketError::BadSrcCid(hdr.src_cid));
    }
    if hdr.dst_cid != HOST_CID {
        return Err(PacketError::BadDstCid(hdr.dst_cid));
    }
    if hdr.type_ != TYPE_STREAM {
        return Err(PacketError::BadType(hdr.type_));
    }
    match hdr.op {
        OP_RW => {}
        OP_REQUEST | OP_RESPONSE | OP_RST | OP_SHUTDOWN | OP_CREDIT_UPDATE | OP_CREDIT_REQUEST => {
            if hdr.len != 0 {
                return Err(PacketError::UnexpectedPayload {
                    op: hdr.op,
                    len: hdr.len,
                });
            }
        }
        op => return Err(PacketError::BadOp(op)),
    }
    Ok(hdr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: u64 = 3;

    fn hdr() -> Header {
        Header {
            src_cid: GUEST,
            dst_cid: HOST_CID,
            src_port: 1024,
            dst_port: 5000,
            len: 0,
            type_: TYPE_STREAM,
            op: OP_REQUEST,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 0,
        }
    }

    #[test]
    fn round_trip() {
        let h = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 0xdead_beef,
            dst_port: 7,
            len: 9,
            type_: 1,
            op: 5,
            flags: 3,
            buf_alloc: 0x1000,
            fwd_cnt: 0xffff_ffff,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&b[24..28], &9u32.to_le_bytes());
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn accepts_valid_packets() {
        let h = hdr();
        assert_eq!(parse_tx(&h.to_bytes(), 44, GUEST), Ok(h));
        let rw = Header {
            op: OP_RW,
            len: 100,
            ..hdr()
        };
        assert_eq!(parse_tx(&rw.to_bytes(), 144, GUEST), Ok(rw));
        // Extra readable bytes beyond the payload are tolerated.
        assert_eq!(parse_tx(&rw.to_bytes(), 4096, GUEST), Ok(rw));
    }

    #[test]
    fn rejects_malformed_packets() {
        let b = hdr().to_bytes();
        assert_eq!(
            parse_tx(&b[..43], 43, GUEST),
            Err(PacketError::TooShort(43))
        );
        assert_eq!(parse_tx(&[], 0, GUEST), Err(PacketError::TooShort(0)));
        assert_eq!(parse_tx(&b, 10, GUEST), Err(PacketError::TooShort(10)));

        let big = Header {
            op: OP_RW,
            len: MAX_PAYLOAD + 1,
            ..hdr()
        };
        assert_eq!(
            parse_tx(&big.to_bytes(), u64::MAX, GUEST),
            Err(PacketError::PayloadTooLarge(MAX_PAYLOAD + 1))
        );
        let huge = Header {
            op: OP_RW,
            len: u32::MAX,
            ..hdr()
        };
        assert!(parse_tx(&huge.to_bytes(), u64::MAX, GUEST).is_err());

        let trunc = Header {
            op: OP_RW,
            len: 100,
            ..hdr()
        };
        assert_eq!(
            parse_tx(&trunc.to_bytes(), 100, GUEST),
            Err(PacketError::PayloadTruncated {
                len: 100,
                available: 56
            })
        );

        let h = Header {
            src_cid: 4,
            ..hdr()
        };
        assert_eq!(
            parse_tx(&h.to_bytes(), 44, GUEST),
            Err(PacketError::BadSrcCid(4))
        );
        let h = Header {
            dst_cid: 3,
            ..hdr()
        };
        assert_eq!(
            parse_tx(&h.to_bytes(), 44, GUEST),
            Err(PacketError::BadDstCid(3))
        );
        let h = Header { type_: 2, ..hdr() };
        assert_eq!(
            parse_tx(&h.to_bytes(), 44, GUEST),
            Err(PacketError::BadType(2))
        );
        let h = Header { op: 0, ..hdr() };
        assert_eq!(
            parse_tx(&h.to_bytes(), 44, GUEST),
            Err(PacketError::BadOp(0))
        );
        let h = Header { op: 8, ..hdr() };
        assert_eq!(
            parse_tx(&h.to_bytes(), 44, GUEST),
            Err(PacketError::BadOp(8))
        );
        let h = Header { len: 4, ..hdr() };
        assert_eq!(
            parse_tx(&h.to_bytes(), 48, GUEST),
            Err(PacketError::UnexpectedPayload {
                op: OP_REQUEST,
                len: 4
            })
        );
    }

    #[test]
    fn never_panics_on_garbage() {
        // A cheap deterministic fuzz: xorshift bytes, every total length.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000u64 {
            let mut b = [0u8; 64];
            for byte in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x.to_le_bytes()[0];
            }
            let n = crate::cast::usize_from(i % 65);
            let total = match i % 3 {
                0 => n as u64,
                1 => x,
                _ => u64::MAX,
            };
            let _ = parse_tx(&b[..n], total, GUEST);
        }
    }
}
