//! The host <-> agent framing, from either side's peer: any byte stream,
//! cut into any chunks, through the incremental decoder (bounded buffer,
//! poisoning on a bad length), the blocking reader, and the typed
//! decoding of request and response bodies; the decoder's bounds are
//! checked as it goes.
#![no_main]

use husk_protocol::frame::{decode_body, read_frame_body, FrameDecoder, DECODER_CAPACITY};
use husk_protocol::{FrameHeader, RequestFrame, ResponseFrame};
use libfuzzer_sys::fuzz_target;

/// Input: one byte of settings (bit 0: decode bodies as responses, the
/// host's side, else as requests, the agent's; bits 1..: the chunk size
/// the stream arrives in, 1..=128 bytes), then the stream.
fn split(data: &[u8]) -> Option<(bool, usize, &[u8])> {
    let (&s, stream) = data.split_first()?;
    Some((s & 1 == 1, usize::from(s >> 1) + 1, stream))
}

fn decode(body: &[u8], responses: bool) {
    let _ = decode_body::<FrameHeader>(body);
    if responses {
        let _ = decode_body::<ResponseFrame>(body);
    } else {
        let _ = decode_body::<RequestFrame>(body);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((responses, chunk, stream)) = split(data) else {
        return;
    };
    let mut d = FrameDecoder::new();
    let mut frames = Vec::new();
    for chunk in stream.chunks(chunk) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let took = d.push(rest);
            assert!(d.buffered() <= DECODER_CAPACITY);
            assert!(d.capacity() <= DECODER_CAPACITY);
            rest = &rest[took..];
            let mut popped = false;
            while let Ok(Some(body)) = d.next_frame() {
                decode(body, responses);
                frames.push(body.to_vec());
                popped = true;
            }
            // A full buffer always holds a frame or a bad prefix.
            if took == 0 && !popped && d.next_frame().is_ok() {
                panic!("decoder full without a frame");
            }
        }
    }
    let _ = d.finish();
    // The blocking reader sees the same frames in the same stream.
    let mut r = stream;
    for f in &frames {
        assert_eq!(
            &read_frame_body(&mut r).expect("a frame the decoder saw"),
            f
        );
    }
    let _ = read_frame_body(&mut r);
});
