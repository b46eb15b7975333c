//! Feeds arbitrary bytes to the incremental FrameDecoder (in chunks whose
//! size the first input byte picks), to the blocking read_frame and to the
//! handshake parser. Checks: no panic, the decoder's buffer bound, and that
//! every decoded message re-encodes to a frame that decodes to itself.
#![no_main]

use husk_protocol::client::parse_handshake_reply;
use husk_protocol::frame::DECODER_CAPACITY;
use husk_protocol::{
    encode_frame, read_frame, FrameDecoder, FrameError, RequestFrame, ResponseFrame,
};
use libfuzzer_sys::fuzz_target;

fn roundtrip<T>(msg: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = encode_frame(msg).expect("a decoded message re-encodes");
    let back: T = read_frame(&mut &bytes[..]).expect("re-encoded frame decodes");
    assert_eq!(&back, msg);
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else {
        return;
    };
    let chunk = (first as usize % 64) + 1;

    let mut d = FrameDecoder::new();
    let mut rest = data;
    'outer: while !rest.is_empty() {
        let n = d.push(&rest[..chunk.min(rest.len())]);
        rest = &rest[n..];
        assert!(d.buffered() <= DECODER_CAPACITY);
        assert!(d.capacity() <= DECODER_CAPACITY);
        loop {
            match d.decode_next::<RequestFrame>() {
                Ok(Some(f)) => roundtrip(&f),
                Ok(None) => break,
                Err(e) if e.stream_in_sync() => {}
                Err(FrameError::Poisoned) => break 'outer,
                Err(_) => {}
            }
        }
    }
    let _ = d.finish();

    let mut r = data;
    loop {
        match read_frame::<_, ResponseFrame>(&mut r) {
            Ok(f) => roundtrip(&f),
            Err(e) if e.stream_in_sync() => {}
            Err(_) => break,
        }
    }

    let _ = parse_handshake_reply(data);
});
