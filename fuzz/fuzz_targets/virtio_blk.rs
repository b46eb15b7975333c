//! virtio-blk: a hostile guest's request queue. The fuzzer writes the
//! descriptor table (addresses, lengths, NEXT/WRITE/INDIRECT, next
//! indices), the avail ring and the buffer bytes (request headers, data);
//! the device parses, validates and serves every chain against a 64 KiB
//! image in /dev/shm.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use husk_fuzz::{guest_memory, scratch_path, Guest, QueueInput};
use husk_vmm::devices::virtio::Block;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    read_only: bool,
    features: u64,
    size_log2: u8,
    buffers: Vec<u8>,
    rounds: Vec<QueueInput>,
}

fn image() -> &'static std::path::Path {
    static IMAGE: OnceLock<std::path::PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let p = scratch_path("blk.img");
        std::fs::write(&p, vec![0x5a; 64 * 1024]).expect("disk image");
        p
    })
}

fuzz_target!(|input: Input| {
    let dev = Block::new(image(), input.read_only).expect("opening the image");
    let mut g = Guest::new(guest_memory(), Box::new(dev));
    if !g.bring_up(input.features, &[input.size_log2]) {
        return;
    }
    g.fill_buffers(&input.buffers);
    for r in input.rounds.iter().take(4) {
        g.post(0, r);
        g.kick(0, 4);
    }
});
