//! virtio-vsock: a hostile guest's TX packets (44-byte header + payload,
//! over any descriptor layout) into the device and its connection muxer,
//! with RX buffers posted so replies (RST, RESPONSE, credit updates) flow
//! back. Guest connects to host ports reach `<uds>_<port>`, which does not
//! exist except for one port whose listener the target keeps open, so a
//! connection can get established and carry data.
#![no_main]

use std::os::unix::net::UnixListener;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use husk_fuzz::{guest_memory, scratch_path, Guest, QueueInput};
use husk_vmm::devices::virtio::Vsock;
use libfuzzer_sys::fuzz_target;

/// The host port with a listener (`<uds>_1234`).
const OPEN_PORT: u32 = 1234;

#[derive(Arbitrary, Debug)]
struct Input {
    size_log2: [u8; 3],
    buffers: Vec<u8>,
    /// (queue: 0 rx, 1 tx, 2 event; what goes on it).
    rounds: Vec<(u8, QueueInput)>,
}

fn uds() -> &'static std::path::Path {
    static UDS: OnceLock<(std::path::PathBuf, UnixListener)> = OnceLock::new();
    let (p, _) = UDS.get_or_init(|| {
        let p = scratch_path("vsock.sock");
        let port = std::path::PathBuf::from(format!("{}_{OPEN_PORT}", p.display()));
        let _ = std::fs::remove_file(&port);
        let l = UnixListener::bind(&port).expect("port listener");
        l.set_nonblocking(true).expect("non-blocking listener");
        (p, l)
    });
    p
}

fuzz_target!(|input: Input| {
    let dev = Vsock::new(3, uds()).expect("vsock device");
    let mut g = Guest::new(guest_memory(), Box::new(dev));
    if !g.bring_up(0, &input.size_log2) {
        return;
    }
    g.fill_buffers(&input.buffers);
    for (q, r) in input.rounds.iter().take(6) {
        let q = u32::from(*q % 3);
        g.post(q as usize, r);
        g.kick(q, 4);
    }
});
