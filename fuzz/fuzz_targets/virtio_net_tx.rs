//! virtio-net, guest to host: a hostile guest's TX chains (12-byte
//! virtio-net header with any offload fields + frame) through the
//! device's chain validation, header checks and the write to the "tap"
//! (a SOCK_SEQPACKET socket whose peer end the target drains), under any
//! negotiated feature set.
#![no_main]

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use arbitrary::Arbitrary;
use husk_fuzz::{guest_memory, Guest, QueueInput};
use husk_protocol::net::MacAddr;
use husk_vmm::devices::virtio::Net;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    features: u64,
    mtu: Option<u16>,
    size_log2: [u8; 2],
    buffers: Vec<u8>,
    /// (queue: 0 rx, 1 tx; what goes on it).
    rounds: Vec<(bool, QueueInput)>,
}

/// A SOCK_SEQPACKET pair: (the device's end, the host's end).
fn socket_pair() -> (OwnedFd, UnixStream) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the 2-int array.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nobody.
    let dev = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let host = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fds[1]) });
    (dev, host)
}

fuzz_target!(|input: Input| {
    let (dev, mut host) = socket_pair();
    host.set_nonblocking(true).expect("non-blocking host end");
    let mac = MacAddr([0x02, 0, 0, 0, 0, 1]);
    let net = Net::with_socket(dev, mac, input.mtu).expect("net device");
    let mut g = Guest::new(guest_memory(), Box::new(net));
    if !g.bring_up(input.features, &input.size_log2) {
        return;
    }
    g.fill_buffers(&input.buffers);
    let mut frame = vec![0u8; 70_000];
    for (tx, r) in input.rounds.iter().take(4) {
        let q = u32::from(*tx);
        g.post(q as usize, r);
        g.kick(q, 4);
        while host.read(&mut frame).is_ok_and(|n| n > 0) {}
    }
});
