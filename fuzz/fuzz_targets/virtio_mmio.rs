//! The virtio-mmio transport: any sequence of guest register reads and
//! writes (any offset and size, status changes in any order, queue sizes
//! and ring addresses anywhere, including outside guest memory, queue
//! notifications) on a virtio-blk or a virtio-vsock device, with the event
//! loop run in between; the rings' and buffers' bytes are the fuzzer's.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use husk_fuzz::{guest_memory, scratch_path, Guest, MmioOp};
use husk_vmm::devices::virtio::{Block, VirtioDevice, Vsock};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    vsock: bool,
    memory: Vec<u8>,
    ops: Vec<MmioOp>,
}

fn image() -> &'static std::path::Path {
    static IMAGE: OnceLock<std::path::PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let p = scratch_path("mmio.img");
        std::fs::write(&p, vec![0; 16 * 1024]).expect("disk image");
        p
    })
}

fuzz_target!(|input: Input| {
    let dev: Box<dyn VirtioDevice> = if input.vsock {
        Box::new(Vsock::new(7, &scratch_path("mmio-vsock.sock")).expect("vsock device"))
    } else {
        Box::new(Block::new(image(), false).expect("block device"))
    };
    let g = &mut Guest::new(guest_memory(), dev);
    // The rings and buffers: anything, from address 0x10000 up.
    let n = input.memory.len().min(0x3_0000);
    vm_memory::Bytes::write_slice(
        &g.mem,
        &input.memory[..n],
        vm_memory::GuestAddress(husk_fuzz::QUEUE_BASE),
    )
    .expect("guest memory");
    g.run_ops(&input.ops);
});
