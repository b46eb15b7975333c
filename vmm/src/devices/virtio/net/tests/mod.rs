//! Device tests: a test guest drives the device through its queues while
//! the tests play the tap through the other end of a `SOCK_SEQPACKET`
//! socket pair (one message per frame, each with its 12-byte header, as
//! on a tap with a vnet header). `tap` runs the device on a real tap in a
//! network namespace of its own.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_net::*;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::features::{bit, HDR_LEN, MAX_FRAME, NUM_BUFFERS_OFFSET};
use super::{Net, NetCounters, RX, TX};
use crate::cast::usize_from;
use crate::devices::virtio::test_utils::{guest_memory, low8, within, Driver, Rng};
use crate::devices::virtio::TYPE_NET;

mod functional;
mod hostile;
mod tap;
mod vhost;

const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
/// What a Linux guest acks with mergeable buffers and every offload.
const ALL: u64 = (1 << VIRTIO_NET_F_MAC)
    | (1 << VIRTIO_NET_F_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_GUEST_TSO6)
    | (1 << VIRTIO_NET_F_GUEST_ECN)
    | (1 << VIRTIO_NET_F_HOST_TSO4)
    | (1 << VIRTIO_NET_F_HOST_TSO6)
    | (1 << VIRTIO_NET_F_HOST_ECN)
    | (1 << VIRTIO_NET_F_MRG_RXBUF);
/// Size of the rx buffers a Linux guest posts with mergeable buffers.
const RX_BUF: u32 = 4096;

/// A `SOCK_SEQPACKET` pair: (the device's end, the host's end).
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
    host.set_nonblocking(true).unwrap();
    (dev, host)
}

/// A header with `flags` and `gso_type`, then `len` bytes of data made
/// from `seed` (an Ethernet frame's worth at least).
fn frame(flags: u8, gso: u8, len: usize, seed: u64) -> Vec<u8> {
    let mut f = vec![0u8; HDR_LEN];
    f[0] = flags;
    f[1] = gso;
    if gso != 0 {
        f[4..6].copy_from_slice(&1448u16.to_le_bytes()); // gso_size
    }
    f.extend((0..len as u64).map(|i| low8(i.wrapping_mul(31) ^ seed)));
    f
}

fn plain(len: usize, seed: u64) -> Vec<u8> {
    frame(0, 0, len, seed)
}

fn count(c: &AtomicU64) -> u64 {
    NetCounters::get(c)
}

/// Test guest: a virtio-net driver on top of the generic virtio driver,
/// and the host end of the "tap".
struct G<'a> {
    drv: Driver<'a>,
    host: UnixStream,
    stats: Arc<NetCounters>,
    /// Used rx entries seen and not yet taken.
    used: VecDeque<(u16, u32)>,
}

impl<'a> G<'a> {
    /// A device with `mtu`, brought up with `features`.
    fn with(mem: &'a GuestMemoryMmap, features: u64, mtu: Option<u16>) -> Self {
        let (dev, host) = socket_pair();
        let net = Net::with_socket(dev, super::MacAddr(MAC), mtu).unwrap();
        let stats = net.counters();
        let mut drv = Driver::new(mem, Box::new(net));
        assert_eq!(drv.read32(0x8), TYPE_NET);
        assert!(drv.activate(features));
        drv.poll(0);
        G {
            drv,
            host,
            stats,
            used: VecDeque::new(),
        }
    }

    fn new(mem: &'a GuestMemoryMmap, features: u64) -> Self {
        G::with(mem, features, None)
    }

    /// Posts `n` rx buffers of `size` bytes, one descriptor each; kicks.
    fn post_rx(&mut self, n: usize, size: u32) {
        for _ in 0..n {
            let a = self.drv.alloc(size);
            self.drv.add_chain(RX, &[(a, size, true)]);
        }
        self.drv.kick(RX);
    }

    /// The host writes one frame into the "tap".
    fn host_send(&mut self, f: &[u8]) {
        assert_eq!(self.host.write(f).unwrap(), f.len());
    }

    /// The next frame the device wrote to the "tap" (5 s at most).
    fn host_recv(&mut self) -> Vec<u8> {
        self.try_host_recv(Duration::from_secs(5))
            .expect("no frame reached the host")
    }

    fn try_host_recv(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; MAX_FRAME + 100];
        let end = Instant::now() + wait;
        loop {
            match self.host.read(&mut buf) {
                Ok(n) => return Some(buf[..n].to_vec()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("host read: {e}"),
            }
            if Instant::now() >= end {
                return None;
            }
            self.drv.poll(10);
        }
    }

    /// Puts `f` on the tx queue split into descriptors of at most `piece`
    /// bytes (the header in one of its own, as Linux does); kicks.
    fn guest_send(&mut self, f: &[u8], piece: usize) {
        let mut bufs = Vec::new();
        let (hdr, data) = f.split_at(HDR_LEN.min(f.len()));
        for part in std::iter::once(hdr).chain(data.chunks(piece.max(1))) {
            let len = u32::try_from(part.len()).unwrap();
            let a = self.drv.alloc(len.max(1));
            self.drv.write_mem(a, part);
            bufs.push((a, len, false));
        }
        self.drv.add_chain(TX, &bufs);
        self.drv.kick(TX);
    }

    /// The next `n` used rx entries (waiting up to 5 s for them).
    fn used_rx(&mut self, n: usize) -> Vec<(u16, u32)> {
        let used = &mut self.used;
        let ok = self.drv.run_until(5, |d| {
            used.extend(d.take_used(RX));
            used.len() >= n
        });
        assert!(ok, "{} of {n} rx buffers used", self.used.len());
        self.used.drain(..n).collect()
    }

    /// The bytes the device wrote into used rx entry (head, len).
    fn rx_bytes(&self, (head, len): (u16, u32)) -> Vec<u8> {
        let bufs = &self.drv.chains[&(RX, head)];
        let mut out = Vec::new();
        let mut left = len as usize;
        for &(addr, size, _) in bufs {
            let take = left.min(size as usize);
            out.extend(self.drv.read_mem(addr, take));
            left -= take;
        }
        out
    }

    /// The next frame the guest receives (a merged one joined up), and
    /// how many buffers it took; the buffers are posted again.
    fn guest_recv(&mut self) -> (Vec<u8>, usize) {
        let first = self.used_rx(1);
        let mut f = self.rx_bytes(first[0]);
        assert!(f.len() >= HDR_LEN, "short rx: {first:?}");
        let n = usize::from(u16::from_le_bytes([
            f[NUM_BUFFERS_OFFSET],
            f[NUM_BUFFERS_OFFSET + 1],
        ]));
        assert!(n >= 1, "num_buffers 0");
        let mut used = first;
        used.extend(self.used_rx(n - 1));
        for &u in &used[1..] {
            f.extend(self.rx_bytes(u));
        }
        self.repost(&used);
        (f, n)
    }

    /// Posts the buffers of used entries again.
    fn repost(&mut self, used: &[(u16, u32)]) {
        for &(head, _) in used {
            let bufs = self.drv.chains[&(RX, head)].clone();
            self.drv.add_chain(RX, &bufs);
        }
        self.drv.kick(RX);
    }
}

/// `f` as the guest should see it: `num_buffers` set to `n`.
fn with_num_buffers(f: &[u8], n: u16) -> Vec<u8> {
    let mut f = f.to_vec();
    f[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2].copy_from_slice(&n.to_le_bytes());
    f
}
