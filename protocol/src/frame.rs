//! Length-prefixed JSON framing.
//!
//! A frame is a 4-byte big-endian length `N` followed by `N` bytes of UTF-8
//! JSON, with `1 <= N <= MAX_FRAME`. The length is validated before anything
//! is allocated for the body, and the body buffer only grows as bytes arrive,
//! so a peer that declares 1 MiB and sends 3 bytes costs 64 KiB at most.
//!
//! Two readers are provided:
//! * [`read_frame`] / [`read_frame_body`]: blocking, on any [`Read`];
//! * [`FrameDecoder`]: incremental (push bytes, pop frames), for event loops and
//!   fuzzing; its buffer never holds more than `MAX_FRAME + 4` bytes.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{LEN_PREFIX, MAX_FRAME};

/// Body bytes allocated ahead of arrival by [`read_frame_body`].
const READ_CHUNK: usize = 64 * 1024;

/// Largest amount of bytes a [`FrameDecoder`] buffers.
pub const DECODER_CAPACITY: usize = MAX_FRAME + LEN_PREFIX;

/// Errors of framing, encoding and decoding.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the stream cleanly, between two frames.
    #[error("connection closed by peer")]
    Closed,
    /// The stream ended inside the 4-byte length prefix.
    #[error("truncated frame: stream ended after {got} of 4 length-prefix bytes")]
    TruncatedHeader { got: usize },
    /// The stream ended inside a frame body.
    #[error("truncated frame: stream ended after {got} of {expected} body bytes")]
    TruncatedBody { expected: usize, got: usize },
    /// The length prefix is 0.
    #[error("invalid frame: length prefix is 0")]
    Empty,
    /// The length prefix (or an encoded message) exceeds [`MAX_FRAME`].
    #[error("invalid frame: length {len} exceeds the maximum of {max} bytes")]
    TooLarge { len: u64, max: usize },
    /// The frame body is not UTF-8.
    #[error("invalid frame body: not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    /// The frame body is not the JSON of the expected message.
    #[error("invalid frame body: {0}")]
    Json(#[source] serde_json::Error),
    /// A message could not be serialized.
    #[error("cannot encode message: {0}")]
    Encode(#[source] serde_json::Error),
    /// The [`FrameDecoder`] hit a framing error before and cannot resynchronize.
    #[error("frame decoder failed earlier: stream is out of sync")]
    Poisoned,
    /// Reading or writing the stream failed.
    #[error("frame I/O: {0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// True if the stream is still at a frame boundary after this error, i.e.
    /// a whole frame was consumed but its body was not understood. After any
    /// other error the stream cannot be used for further frames.
    pub fn stream_in_sync(&self) -> bool {
        matches!(self, FrameError::NotUtf8 { .. } | FrameError::Json(_))
    }

    /// True for a read/write timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO` expiry).
    pub fn is_timeout(&self) -> bool {
        match self {
            FrameError::Io(e) => {
                matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                )
            }
            _ => false,
        }
    }
}

/// Checks a length prefix.
fn check_len(prefix: [u8; LEN_PREFIX]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len as u64 > MAX_FRAME as u64 {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: MAX_FRAME,
        });
    }
    Ok(len as usize)
}

/// Serializes `msg` into a complete frame (length prefix included).
pub fn encode_frame<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; LEN_PREFIX];
    serde_json::to_writer(&mut buf, msg).map_err(FrameError::Encode)?;
    let len = buf.len() - LEN_PREFIX;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: MAX_FRAME,
        });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let len = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len: len as u64,
        max: MAX_FRAME,
    })?;
    buf[..LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Writes `msg` as one frame and flushes `w`. Nothing is written if the
/// message cannot be encoded or is larger than [`MAX_FRAME`].
pub fn write_frame<W: Write + ?Sized, T: Serialize + ?Sized>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let buf = encode_frame(msg)?;
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Parses a frame body (without its length prefix) as a `T`.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let text = std::str::from_utf8(body).map_err(|e| FrameError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    serde_json::from_str(text).map_err(FrameError::Json)
}

/// Reads one frame and returns its body (without the length prefix).
///
/// Returns [`FrameError::Closed`] if the stream ends exactly at a frame
/// boundary, [`FrameError::TruncatedHeader`]/[`FrameError::TruncatedBody`] if
/// it ends inside a frame. The body buffer grows with the bytes received (at
/// most 64 KiB or twice the received amount ahead), never past the declared
/// length.
pub fn read_frame_body<R: Read + ?Sized>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; LEN_PREFIX];
    let mut got = 0;
    while got < LEN_PREFIX {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::TruncatedHeader { got }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = check_len(prefix)?;

    let mut buf: Vec<u8> = Vec::new();
    let mut filled = 0;
    while filled < len {
        if filled == buf.len() {
            let target = len.min(READ_CHUNK.max(buf.len() * 2));
            buf.resize(target, 0);
        }
        match r.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(FrameError::TruncatedBody {
                    expected: len,
                    got: filled,
                })
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    debug_assert_eq!(buf.len(), len);
    Ok(buf)
}

/// Reads one frame and parses it as a `T`. See [`read_frame_body`].
pub fn read_frame<R: Read + ?Sized, T: DeserializeOwned>(r: &mut R) -> Result<T, FrameError> {
    let body = read_frame_body(r)?;
    decode_body(&body)
}

/// Incremental frame decoder: [`push`](Self::push) bytes as they arrive, then
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`.
///
/// It never buffers more than [`DECODER_CAPACITY`] (`MAX_FRAME + 4`) bytes:
/// `push` takes only what fits and returns how many bytes it took. A full
/// buffer always holds a complete frame (or an invalid prefix), so popping
/// frames always makes room. After a framing error (length 0 or too large)
/// the decoder is poisoned: `next_frame` returns [`FrameError::Poisoned`] and
/// `push` discards its input.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
    poisoned: bool,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Buffers as much of `data` as fits and returns the number of bytes taken
    /// (all of them when poisoned: they are dropped).
    pub fn push(&mut self, data: &[u8]) -> usize {
        if self.poisoned {
            return data.len();
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let take = data.len().min(DECODER_CAPACITY - self.buf.len());
        let need = self.buf.len() + take;
        if need > self.buf.capacity() {
            let cap = need.max(self.buf.capacity() * 2).min(DECODER_CAPACITY);
            self.buf.reserve_exact(cap - self.buf.len());
        }
        self.buf.extend_from_slice(&data[..take]);
        take
    }

    /// Pops the next complete frame's body. `Ok(None)`: more bytes needed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if self.poisoned {
            return Err(FrameError::Poisoned);
        }
        let live = &self.buf[self.start..];
        if live.len() < LEN_PREFIX {
            return Ok(None);
        }
        let mut prefix = [0u8; LEN_PREFIX];
        prefix.copy_from_slice(&live[..LEN_PREFIX]);
        let len = match check_len(prefix) {
            Ok(len) => len,
            Err(e) => {
                self.poisoned = true;
                self.buf = Vec::new();
                self.start = 0;
                return Err(e);
            }
        };
        if live.len() < LEN_PREFIX + len {
            return Ok(None);
        }
        let body_start = self.start + LEN_PREFIX;
        self.start = body_start + len;
        Ok(Some(&self.buf[body_start..body_start + len]))
    }

    /// Pops and parses the next complete frame. A body that does not parse is
    /// consumed (the decoder stays in sync, see [`FrameError::stream_in_sync`]).
    pub fn decode_next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.next_frame()? {
            None => Ok(None),
            Some(body) => decode_body(body).map(Some),
        }
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes currently allocated for the buffer.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Call at end of stream, after popping all frames: `Ok(())` if the stream
    /// ended at a frame boundary, else the matching truncation error.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.poisoned {
            return Err(FrameError::Poisoned);
        }
        let live = &self.buf[self.start..];
        match live.len() {
            0 => Ok(()),
            got if got < LEN_PREFIX => Err(FrameError::TruncatedHeader { got }),
            got => {
                let mut prefix = [0u8; LEN_PREFIX];
                prefix.copy_from_slice(&live[..LEN_PREFIX]);
                let expected = check_len(prefix)?;
                Err(FrameError::TruncatedBody {
                    expected,
                    got: got - LEN_PREFIX,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, ErrorInfo, Request, RequestFrame, Response, ResponseFrame};

    /// A length prefix for `n` bytes.
    fn prefix(n: usize) -> [u8; 4] {
        u32::try_from(n).unwrap().to_be_bytes()
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = prefix(body.len()).to_vec();
        v.extend_from_slice(body);
        v
    }

    fn read_req(bytes: &[u8]) -> Result<RequestFrame, FrameError> {
        read_frame(&mut &bytes[..])
    }

    /// A reader that counts bytes read and the largest buffer it was offered,
    /// to check that reads are not sized by the declared length.
    struct Spy<'a> {
        data: &'a [u8],
        biggest_buf: usize,
    }
    impl Read for Spy<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.biggest_buf = self.biggest_buf.max(buf.len());
            let n = buf.len().min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Returns one byte per read, with EINTR in between.
    struct Trickle<'a> {
        data: &'a [u8],
        interrupt: bool,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.data.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.data[0];
            self.data = &self.data[1..];
            Ok(1)
        }
    }

    #[test]
    fn clean_eof_is_closed() {
        assert!(matches!(read_req(&[]), Err(FrameError::Closed)));
    }

    #[test]
    fn truncated_length_prefix() {
        for n in 1..4 {
            let e = read_req(&[0u8; 4][..n]).unwrap_err();
            assert!(
                matches!(e, FrameError::TruncatedHeader { got } if got == n),
                "{e}"
            );
        }
    }

    #[test]
    fn truncated_body() {
        let mut bytes = encode_frame(&RequestFrame::new(1, Request::Ping)).unwrap();
        let full = bytes.len() - 4;
        bytes.truncate(bytes.len() - 3);
        let e = read_req(&bytes).unwrap_err();
        assert!(
            matches!(e, FrameError::TruncatedBody { expected, got } if expected == full && got == full - 3),
            "{e}"
        );
        assert!(e.to_string().contains("truncated frame"));
    }

    #[test]
    fn zero_length_is_error() {
        let e = read_req(&[0, 0, 0, 0]).unwrap_err();
        assert!(matches!(e, FrameError::Empty), "{e}");
        assert_eq!(e.to_string(), "invalid frame: length prefix is 0");
    }

    #[test]
    fn max_frame_plus_one_is_error_before_reading_body() {
        let mut bytes = prefix(MAX_FRAME + 1).to_vec();
        bytes.extend_from_slice(b"{}");
        let mut spy = Spy {
            data: &bytes,
            biggest_buf: 0,
        };
        let e = read_frame::<_, RequestFrame>(&mut spy).unwrap_err();
        assert!(
            matches!(e, FrameError::TooLarge { len, max } if len == MAX_FRAME as u64 + 1 && max == MAX_FRAME),
            "{e}"
        );
        assert_eq!(spy.data, b"{}", "body must not be read");
        let e = read_req(&[0xff; 8]).unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { len, .. } if len == u32::MAX as u64));
    }

    #[test]
    fn huge_declared_length_with_few_bytes_does_not_overallocate() {
        let mut bytes = prefix(MAX_FRAME).to_vec();
        bytes.extend_from_slice(b"abc");
        let mut spy = Spy {
            data: &bytes,
            biggest_buf: 0,
        };
        let e = read_frame_body(&mut spy).unwrap_err();
        assert!(
            matches!(e, FrameError::TruncatedBody { expected, got: 3 } if expected == MAX_FRAME),
            "{e}"
        );
        assert!(
            spy.biggest_buf <= READ_CHUNK,
            "read buffer {}",
            spy.biggest_buf
        );
    }

    #[test]
    fn exactly_max_frame_is_accepted() {
        // A JSON string of MAX_FRAME bytes, quotes included.
        let body = format!("\"{}\"", "a".repeat(MAX_FRAME - 2));
        let bytes = frame(body.as_bytes());
        let s: String = read_frame(&mut &bytes[..]).unwrap();
        assert_eq!(s.len(), MAX_FRAME - 2);
        // ...and encode refuses one more byte.
        let e = encode_frame(&"a".repeat(MAX_FRAME - 1)).unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { .. }), "{e}");
        let ok = encode_frame(&"a".repeat(MAX_FRAME - 2)).unwrap();
        assert_eq!(ok, bytes);
    }

    #[test]
    fn write_frame_writes_nothing_when_too_large() {
        let mut out = Vec::new();
        assert!(write_frame(&mut out, &"a".repeat(MAX_FRAME)).is_err());
        assert!(out.is_empty());
        write_frame(&mut out, &RequestFrame::new(1, Request::Ping)).unwrap();
        assert_eq!(
            &out[4..],
            br#"{"version":1,"id":1,"request":{"type":"ping"}}"#
        );
        assert_eq!(
            u32::from_be_bytes(out[..4].try_into().unwrap()) as usize,
            out.len() - 4
        );
    }

    #[test]
    fn bad_json() {
        for body in [
            &b"{"[..],
            b"null",
            b"[]",
            b"{\"version\":1}",
            b"not json",
            b"{}{}",
        ] {
            let e = read_req(&frame(body)).unwrap_err();
            assert!(matches!(e, FrameError::Json(_)), "{body:?}: {e}");
            assert!(e.stream_in_sync());
        }
    }

    #[test]
    fn non_utf8() {
        let e = read_req(&frame(b"{\"version\":1,\xff}")).unwrap_err();
        assert!(matches!(e, FrameError::NotUtf8 { offset: 13 }), "{e}");
        // Invalid UTF-8 inside a JSON string too.
        let e = read_req(&frame(b"\"\xc3\x28\"")).unwrap_err();
        assert!(matches!(e, FrameError::NotUtf8 { offset: 1 }), "{e}");
    }

    #[test]
    fn unknown_request_type() {
        let e = read_req(&frame(
            br#"{"version":1,"id":1,"request":{"type":"teleport"}}"#,
        ))
        .unwrap_err();
        assert!(matches!(e, FrameError::Json(_)), "{e}");
        assert!(e.to_string().contains("unknown variant `teleport`"), "{e}");
        let e = read_req(&frame(br#"{"version":1,"id":1,"request":"ping"}"#)).unwrap_err();
        assert!(matches!(e, FrameError::Json(_)), "{e}");
        let e = read_req(&frame(br#"{"version":1,"id":1,"request":{}}"#)).unwrap_err();
        assert!(e.to_string().contains("missing field `type`"), "{e}");
    }

    #[test]
    fn wrong_field_types() {
        for body in [
            &br#"{"version":"1","id":1,"request":{"type":"ping"}}"#[..],
            br#"{"version":1,"id":-1,"request":{"type":"ping"}}"#,
            br#"{"version":1,"id":1.5,"request":{"type":"ping"}}"#,
            br#"{"version":4294967296,"id":1,"request":{"type":"ping"}}"#,
            br#"{"version":1,"id":1,"request":{"type":7}}"#,
            br#"{"version":1,"id":null,"request":{"type":"ping"}}"#,
        ] {
            let e = read_req(&frame(body)).unwrap_err();
            assert!(matches!(e, FrameError::Json(_)), "{e}");
        }
        let e =
            read_frame::<_, ResponseFrame>(
                &mut &frame(
                    br#"{"version":1,"id":1,"response":{"type":"pong","agent_version":1}}"#,
                )[..],
            )
            .unwrap_err();
        assert!(matches!(e, FrameError::Json(_)), "{e}");
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let body = format!(
            r#"{{"version":1,"id":1,"request":{{"type":"ping","x":{}{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = read_req(&frame(body.as_bytes())).unwrap_err();
        assert!(matches!(e, FrameError::Json(_)), "{e}");
    }

    #[test]
    fn several_frames_back_to_back_and_trickled() {
        let mut bytes = Vec::new();
        for id in 0..5 {
            bytes.extend(encode_frame(&RequestFrame::new(id, Request::Shutdown)).unwrap());
        }
        let mut r = Trickle {
            data: &bytes,
            interrupt: false,
        };
        for id in 0..5 {
            let f: RequestFrame = read_frame(&mut r).unwrap();
            assert_eq!(f.id, id);
        }
        assert!(matches!(
            read_frame::<_, RequestFrame>(&mut r),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn timeout_errors_are_recognised() {
        let e = FrameError::Io(io::ErrorKind::WouldBlock.into());
        assert!(e.is_timeout());
        assert!(!FrameError::Closed.is_timeout());
    }

    // ---- FrameDecoder ----

    #[test]
    fn decoder_pops_frames_pushed_byte_by_byte() {
        let mut bytes = Vec::new();
        let msgs: Vec<ResponseFrame> = (0..4)
            .map(|i| {
                ResponseFrame::new(
                    i,
                    Response::Error(ErrorInfo::new(
                        ErrorCode::Internal,
                        "x".repeat(usize::try_from(i).unwrap()),
                    )),
                )
            })
            .collect();
        for m in &msgs {
            bytes.extend(encode_frame(m).unwrap());
        }
        let mut d = FrameDecoder::new();
        let mut out = Vec::new();
        for b in &bytes {
            assert_eq!(d.push(std::slice::from_ref(b)), 1);
            while let Some(m) = d.decode_next::<ResponseFrame>().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, msgs);
        assert_eq!(d.buffered(), 0);
        d.finish().unwrap();
    }

    #[test]
    fn decoder_truncation_at_eof() {
        let mut d = FrameDecoder::new();
        d.push(&[0, 0]);
        assert!(d.next_frame().unwrap().is_none());
        assert!(matches!(
            d.finish(),
            Err(FrameError::TruncatedHeader { got: 2 })
        ));
        d.push(&[0, 5, b'{']);
        assert!(d.next_frame().unwrap().is_none());
        assert!(matches!(
            d.finish(),
            Err(FrameError::TruncatedBody {
                expected: 5,
                got: 1
            })
        ));
    }

    #[test]
    fn decoder_rejects_zero_and_oversized_and_stays_poisoned() {
        for prefix in [[0u8; 4], prefix(MAX_FRAME + 1), [0xff; 4]] {
            let mut d = FrameDecoder::new();
            d.push(&prefix);
            let e = d.next_frame().unwrap_err();
            assert!(
                matches!(e, FrameError::Empty | FrameError::TooLarge { .. }),
                "{e}"
            );
            assert_eq!(d.push(&[1, 2, 3]), 3);
            assert_eq!(d.buffered(), 0);
            assert!(matches!(d.next_frame(), Err(FrameError::Poisoned)));
            assert!(matches!(d.finish(), Err(FrameError::Poisoned)));
        }
    }

    #[test]
    fn decoder_bad_body_keeps_sync() {
        let mut bytes = frame(b"\xff\xfe");
        bytes.extend(frame(b"{oops"));
        bytes.extend(encode_frame(&RequestFrame::new(9, Request::Ping)).unwrap());
        let mut d = FrameDecoder::new();
        assert_eq!(d.push(&bytes), bytes.len());
        assert!(matches!(
            d.decode_next::<RequestFrame>(),
            Err(FrameError::NotUtf8 { .. })
        ));
        assert!(matches!(
            d.decode_next::<RequestFrame>(),
            Err(FrameError::Json(_))
        ));
        assert_eq!(
            d.decode_next::<RequestFrame>().unwrap(),
            Some(RequestFrame::new(9, Request::Ping))
        );
    }

    #[test]
    fn decoder_buffer_is_bounded() {
        // Two maximal frames pushed in one go: only one fits at a time.
        let body = vec![b' '; MAX_FRAME];
        let mut bytes = frame(&body);
        bytes.extend(frame(&body));
        let mut d = FrameDecoder::new();
        let mut rest = &bytes[..];
        let mut frames = 0;
        while !rest.is_empty() {
            let n = d.push(rest);
            rest = &rest[n..];
            assert!(d.buffered() <= DECODER_CAPACITY);
            assert!(
                d.capacity() <= DECODER_CAPACITY,
                "capacity {}",
                d.capacity()
            );
            while let Some(f) = d.next_frame().unwrap() {
                assert_eq!(f.len(), MAX_FRAME);
                frames += 1;
            }
        }
        assert_eq!(frames, 2);
        // A declared-huge frame with few bytes allocates only what was pushed.
        let mut d = FrameDecoder::new();
        d.push(&prefix(MAX_FRAME));
        d.push(b"abc");
        assert!(d.next_frame().unwrap().is_none());
        assert!(d.capacity() < 4096, "capacity {}", d.capacity());
    }

    // ---- pseudo-random byte soup ----

    /// xorshift64*: deterministic, dependency-free.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
        }
        fn byte(&mut self) -> u8 {
            self.next().to_le_bytes()[0]
        }
        fn word(&mut self) -> [u8; 4] {
            let b = self.next().to_le_bytes();
            [b[0], b[1], b[2], b[3]]
        }
    }

    /// Builds inputs that are mostly-valid frames with random damage, plus raw
    /// noise, so that both the framing and the JSON paths get exercised.
    fn soup(rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        let pieces = 1 + rng.below(6);
        for _ in 0..pieces {
            match rng.below(5) {
                0 => {
                    let n = rng.below(64);
                    out.extend((0..n).map(|_| rng.byte()));
                }
                1 => {
                    // Valid frame of a random message.
                    let m = match rng.below(3) {
                        0 => encode_frame(&RequestFrame::new(rng.next(), Request::Ping)),
                        1 => encode_frame(&RequestFrame::new(rng.next(), Request::Shutdown)),
                        _ => encode_frame(&ResponseFrame::new(rng.next(), Response::Ok)),
                    };
                    out.extend(m.unwrap());
                }
                2 => {
                    // Valid frame with flipped bytes.
                    let mut m = encode_frame(&ResponseFrame::new(
                        rng.next(),
                        Response::Error(ErrorInfo::new(ErrorCode::BadRequest, "m")),
                    ))
                    .unwrap();
                    for _ in 0..1 + rng.below(3) {
                        let i = rng.below(m.len());
                        m[i] ^= 1 << rng.below(8);
                    }
                    out.extend(m);
                }
                3 => {
                    // Plausible length prefix with random JSON-ish body.
                    let alphabet = br#"{}[]":,0123456789.-eE truefalsnul\u"#;
                    let n = rng.below(48);
                    let body: Vec<u8> = (0..n)
                        .map(|_| alphabet[rng.below(alphabet.len())])
                        .collect();
                    out.extend(prefix(n + rng.below(3)));
                    out.extend(body);
                }
                _ => {
                    // A random length prefix (often huge) and a few bytes.
                    out.extend(rng.word());
                    out.extend((0..rng.below(8)).map(|_| rng.byte()));
                }
            }
        }
        out
    }

    #[test]
    fn byte_soup_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut ok_frames = 0usize;
        for _ in 0..20_000 {
            let input = soup(&mut rng);

            // Blocking reader: keep reading until an error.
            let mut r = &input[..];
            for _ in 0..input.len() + 1 {
                match read_frame::<_, RequestFrame>(&mut r) {
                    Ok(_) => ok_frames += 1,
                    Err(e) if e.stream_in_sync() => {}
                    Err(_) => break,
                }
            }
            let mut r = &input[..];
            let _ = read_frame::<_, ResponseFrame>(&mut r);

            // Incremental decoder, fed in random-sized chunks.
            let mut d = FrameDecoder::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let chunk = 1 + rng.below(rest.len().min(16));
                let n = d.push(&rest[..chunk]);
                assert!(n <= chunk);
                rest = &rest[n..];
                assert!(d.buffered() <= DECODER_CAPACITY);
                loop {
                    match d.decode_next::<RequestFrame>() {
                        Ok(Some(_)) => ok_frames += 1,
                        Ok(None) => break,
                        Err(e) if e.stream_in_sync() => {}
                        Err(_) => break,
                    }
                }
            }
            let _ = d.finish();
        }
        // The generator must actually produce decodable frames.
        assert!(ok_frames > 1000, "only {ok_frames} frames decoded");
    }
}
