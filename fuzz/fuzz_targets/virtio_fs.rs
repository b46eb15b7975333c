//! The virtio-fs (vhost-user) frontend's guest-facing part: any sequence
//! of guest register accesses on the device (its config space, feature
//! negotiation, queue setup with any sizes and ring addresses, DRIVER_OK,
//! resets), as the VMM handles them before anything reaches the backend.
//! The backend is a fake (fuzz/src/fake_vhost.rs) that answers what the
//! frontend asks; the device and its worker thread live across inputs
//! (connecting is a round trip), and each input starts with a reset.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use husk_fuzz::{fake_vhost, scratch_path, Guest, MmioOp};
use husk_vmm::arch::ram;
use husk_vmm::devices::virtio::Fs;
use husk_vmm::vcpu::ExitState;
use libfuzzer_sys::fuzz_target;
use vm_memory::GuestAddress;

#[derive(Arbitrary, Debug)]
struct Input {
    ops: Vec<MmioOp>,
}

fn guest() -> &'static Mutex<Guest> {
    /// The device, and the guest RAM's mappings (kept, not leaked: they
    /// live as long as the device, and LeakSanitizer sees them).
    static GUEST: OnceLock<(Mutex<Guest>, Vec<ram::Mapping>)> = OnceLock::new();
    let (g, _) = GUEST.get_or_init(|| {
        let sock = scratch_path("fs.sock");
        fake_vhost::spawn(&sock).expect("fake vhost-user backend");
        let exit = Arc::new(ExitState::new().expect("exit state"));
        let fs = Fs::new("fuzzfs", &sock, 256, exit, Duration::from_secs(10))
            .expect("connecting to the fake backend");
        // Shared memfd RAM, as the VMM uses with a vhost-user device.
        let r = ram::create(
            &[(GuestAddress(0), husk_fuzz::MEM_SIZE as usize)],
            ram::Backing::SharedMemfd,
        )
        .expect("guest memory");
        (Mutex::new(Guest::new(r.mem, Box::new(fs))), r.mappings)
    });
    g
}

fuzz_target!(|input: Input| {
    let mut g = guest().lock().unwrap();
    g.write32(husk_fuzz::reg::STATUS, 0);
    g.poll(4);
    g.run_ops(&input.ops);
});
