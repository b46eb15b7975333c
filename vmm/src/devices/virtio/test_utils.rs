//! A test "guest driver": programs a `VirtioMmioDevice` through its register
//! window, builds split virtqueues with virtio-queue's `MockSplitQueue`, and
//! runs a real `EventManager` the way the VMM does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK,
};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{VirtioDevice, VirtioMmioDevice};
use crate::devices::BusDevice;

pub const MEM_SIZE: usize = 32 << 20;
/// Guest buffers are carved from here up.
const BUF_BASE: u64 = 0x10_0000;
/// Queue `i`'s rings sit at `0x1_0000 * (i + 1)`: the descriptor table
/// and used ring where `MockSplitQueue` puts them, the avail ring here
/// past the table. (The mock puts its used ring `len` bytes after the
/// avail ring's entries instead of `2 * len`: on the mock's own layout,
/// used-ring writes land on avail slots `len / 2..`, which long tests
/// reach.)
const AVAIL_OFFSET: u64 = 0x8000;
/// The descriptor flags as the u16 a descriptor holds.
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const _: () =
    assert!(DESC_F_NEXT as u32 == VRING_DESC_F_NEXT && DESC_F_WRITE as u32 == VRING_DESC_F_WRITE);

pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// (address, length, device-writable)
pub type Buf = (GuestAddress, u32, bool);

pub type Em = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

pub struct Driver<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub dev: Arc<Mutex<VirtioMmioDevice>>,
    pub queues: Vec<MockSplitQueue<'a, GuestMemoryMmap>>,
    pub em: Em,
    next_desc: Vec<u16>,
    used_seen: Vec<u16>,
    next_buf: u64,
    /// Buffers of chains handed out, by (queue, head).
    pub chains: HashMap<(usize, u16), Vec<Buf>>,
}

impl<'a> Driver<'a> {
    pub fn new(mem: &'a GuestMemoryMmap, device: Box<dyn VirtioDevice>) -> Self {
        let sizes = device.queue_max_sizes().to_vec();
        let dev = Arc::new(Mutex::new(
            VirtioMmioDevice::new(mem.clone(), device).unwrap(),
        ));
        // Room for the descriptor table, the mock's rings and, at
        // AVAIL_OFFSET, the avail ring, within the 64 KiB of each queue.
        assert!(sizes.iter().all(|&n| n <= 1024), "test queues up to 1024");
        let queues = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| MockSplitQueue::create(mem, GuestAddress(0x1_0000 * (i as u64 + 1)), n))
            .collect();
        let mut em = Em::new().unwrap();
        em.add_subscriber(dev.clone());
        Driver {
            mem,
            dev,
            queues,
            em,
            next_desc: vec![0; sizes.len()],
            used_seen: vec![0; sizes.len()],
            next_buf: BUF_BASE,
            chains: HashMap::new(),
        }
    }

    /// Fresh, empty rings at the same addresses (for after a reset).
    pub fn reinit_queues(&mut self) {
        for q in self.queues.iter_mut() {
            let size = low16(q.desc_table().total_size() / 16);
            *q = MockSplitQueue::create(self.mem, q.desc_table_addr(), size);
            // Flags and index of a fresh avail ring.
            self.mem.write_obj(0u32, avail_of(q)).unwrap();
        }
        self.next_desc.iter_mut().for_each(|d| *d = 0);
        self.used_seen.iter_mut().for_each(|d| *d = 0);
        self.chains.clear();
    }

    pub fn read32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.lock().unwrap().read(off, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write32(&self, off: u64, v: u32) {
        self.dev.lock().unwrap().write(off, &v.to_le_bytes());
    }

    pub fn read_config(&self, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.dev.lock().unwrap().read(0x100 + off, &mut b);
        b
    }

    pub fn device_features(&self) -> u64 {
        self.write32(0x14, 0);
        let lo = self.read32(0x10);
        self.write32(0x14, 1);
        let hi = self.read32(0x10);
        (u64::from(hi) << 32) | u64::from(lo)
    }

    /// Negotiate `features` and program all queues, without DRIVER_OK.
    /// Returns whether FEATURES_OK stuck.
    pub fn setup_queues(&mut self, features: u64) -> bool {
        self.write32(0x70, 0);
        self.write32(0x70, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        self.write32(0x70, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        self.write32(0x24, 0);
        self.write32(0x20, low32(features));
        self.write32(0x24, 1);
        self.write32(0x20, (features >> 32) as u32);
        let s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
        self.write32(0x70, s);
        if self.read32(0x70) & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
            return false;
        }
        for (i, q) in self.queues.iter().enumerate() {
            self.write32(0x30, low32(i as u64));
            assert_eq!(self.read32(0x44), 0, "queue {i} ready before setup");
            let max = self.read32(0x34);
            assert!(max > 0);
            self.write32(0x38, max);
            let (d, a, u) = (q.desc_table_addr().0, avail_of(q).0, q.used_addr().0);
            self.write32(0x80, low32(d));
            self.write32(0x84, (d >> 32) as u32);
            self.write32(0x90, low32(a));
            self.write32(0x94, (a >> 32) as u32);
            self.write32(0xa0, low32(u));
            self.write32(0xa4, (u >> 32) as u32);
            self.write32(0x44, 1);
        }
        true
    }

    /// Full bring-up with VERSION_1 plus `extra` features. Returns whether
    /// the device is active.
    pub fn activate(&mut self, extra: u64) -> bool {
        let features = (1u64 << 32) | extra;
        assert!(self.setup_queues(features), "FEATURES_OK refused");
        let s = VIRTIO_CONFIG_S_ACKNOWLEDGE
            | VIRTIO_CONFIG_S_DRIVER
            | VIRTIO_CONFIG_S_FEATURES_OK
            | VIRTIO_CONFIG_S_DRIVER_OK;
        self.write32(0x70, s);
        self.dev.lock().unwrap().is_activated()
    }

    /// Carve `len` bytes of guest memory (16-byte aligned).
    pub fn alloc(&mut self, len: u32) -> GuestAddress {
        let a = self.next_buf;
        self.next_buf = (a + u64::from(len) + 15) & !15;
        assert!(
            self.next_buf < MEM_SIZE as u64,
            "test ran out of guest memory"
        );
        GuestAddress(a)
    }

    /// Put a chain of raw (addr, len, device-writable) buffers on queue `q`.
    pub fn add_chain(&mut self, q: usize, bufs: &[(GuestAddress, u32, bool)]) -> u16 {
        let size = low16(self.queues[q].desc_table().total_size() / 16);
        let n = low16(bufs.len() as u64);
        let mut start = self.next_desc[q];
        if start + n > size {
            start = 0;
        }
        self.next_desc[q] = (start + n) % size;
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, w))| {
                let mut flags = if w { DESC_F_WRITE } else { 0 };
                let last = i + 1 == bufs.len();
                if !last {
                    flags |= DESC_F_NEXT;
                }
                let next = if last { 0 } else { start + low16(i as u64) + 1 };
                RawDescriptor::from(Descriptor::new(addr.0, len, flags, next))
            })
            .collect();
        // Not MockSplitQueue::add_desc_chains: it indexes the avail ring
        // without wrapping, so more chains than the queue size overrun it.
        let queue = &self.queues[q];
        for (i, d) in descs.iter().enumerate() {
            queue
                .desc_table()
                .store(start + low16(i as u64), *d)
                .unwrap();
        }
        let avail = avail_of(queue);
        let idx = u16::from_le(self.mem.read_obj::<u16>(GuestAddress(avail.0 + 2)).unwrap());
        let slot = GuestAddress(avail.0 + 4 + (idx % size) as u64 * 2);
        self.mem.write_obj(start.to_le(), slot).unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1).to_le(), GuestAddress(avail.0 + 2))
            .unwrap();
        self.chains.insert((q, start), bufs.to_vec());
        start
    }

    /// Where queue `q`'s avail ring is (flags, idx, then the ring).
    pub fn avail_addr(&self, q: usize) -> GuestAddress {
        avail_of(&self.queues[q])
    }

    pub fn kick(&self, q: usize) {
        self.write32(0x50, low32(q as u64));
    }

    /// Used elements (head, len) that appeared since the last call.
    pub fn take_used(&mut self, q: usize) -> Vec<(u16, u32)> {
        let idx = u16::from_le(self.queues[q].used().idx().load());
        let size = low16(self.queues[q].desc_table().total_size() / 16);
        let mut out = Vec::new();
        while self.used_seen[q] != idx {
            let slot = self.used_seen[q] % size;
            let e = self.queues[q]
                .used()
                .ring()
                .ref_at(slot as usize)
                .unwrap()
                .load();
            out.push((low16(u64::from(e.id())), e.len()));
            self.used_seen[q] = self.used_seen[q].wrapping_add(1);
        }
        out
    }

    /// Run the event loop once (up to `ms`).
    pub fn poll(&mut self, ms: i32) {
        self.em.run_with_timeout(ms).unwrap();
    }

    /// Run the event loop until `cond` holds or `secs` pass.
    pub fn run_until(&mut self, secs: u64, mut cond: impl FnMut(&mut Self) -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            self.poll(10);
        }
    }

    pub fn write_mem(&self, addr: GuestAddress, data: &[u8]) {
        self.mem.write_slice(data, addr).unwrap();
    }

    pub fn read_mem(&self, addr: GuestAddress, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, addr).unwrap();
        v
    }
}

/// The avail ring of a test queue (see [`AVAIL_OFFSET`]).
fn avail_of(q: &MockSplitQueue<'_, GuestMemoryMmap>) -> GuestAddress {
    GuestAddress(q.desc_table_addr().0 + AVAIL_OFFSET)
}

/// The low 8 bits of `x` (what `as u8` keeps).
pub fn low8(x: u64) -> u8 {
    (x & 0xff) as u8
}

/// The low 16 bits of `x` (what `as u16` keeps).
pub fn low16(x: u64) -> u16 {
    (x & 0xffff) as u16
}

/// The low 32 bits of `x` (what `as u32` keeps).
pub fn low32(x: u64) -> u32 {
    (x & 0xffff_ffff) as u32
}

/// xorshift64*: reproducible "random" input for the hostile-guest tests
/// (the seed is in the test, so a failure replays exactly).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| low8(self.next())).collect()
    }
}

impl Driver<'_> {
    /// What a hostile guest can put on queue `q`: every descriptor random
    /// (addresses inside guest memory, at its end, far outside it, or on
    /// the rings themselves; lengths from 0 to 4 GiB; any of NEXT, WRITE
    /// and INDIRECT; any `next`, some past the table), then up to a ring's
    /// worth of avail entries naming random heads (some past the table), and
    /// the avail index moved by that much or, now and then, anywhere.
    pub fn scribble(&mut self, q: usize, rng: &mut Rng) {
        let queue = &self.queues[q];
        let size = low16(queue.desc_table().total_size() / 16);
        let rings = queue.desc_table_addr().0;
        for i in 0..size {
            let addr = match rng.below(5) {
                0 | 1 => BUF_BASE + rng.below(MEM_SIZE as u64 - BUF_BASE),
                2 => MEM_SIZE as u64 - rng.below(64),
                3 => rng.next(),
                _ => rings + rng.below(0x1_0000),
            };
            let len = match rng.below(4) {
                0 => low32(rng.below(64)),
                1 => low32(rng.below(1 << 16)),
                2 => low32(rng.next()),
                _ => 44,
            };
            let flags = (rng.next() & 7) as u16;
            let next = low16(rng.below(u64::from(size) + 4));
            let d = RawDescriptor::from(Descriptor::new(addr, len, flags, next));
            queue.desc_table().store(i, d).unwrap();
        }
        let avail = avail_of(queue);
        let idx = u16::from_le(self.mem.read_obj::<u16>(GuestAddress(avail.0 + 2)).unwrap());
        let n = low16(rng.below(u64::from(size))) + 1;
        for k in 0..n {
            let slot = GuestAddress(avail.0 + 4 + u64::from(idx.wrapping_add(k) % size) * 2);
            let head = low16(rng.below(u64::from(size) + 8));
            self.mem.write_obj(head.to_le(), slot).unwrap();
        }
        let new_idx = if rng.below(8) == 0 {
            low16(rng.next())
        } else {
            idx.wrapping_add(n)
        };
        self.mem
            .write_obj(new_idx.to_le(), GuestAddress(avail.0 + 2))
            .unwrap();
    }

    /// Device reset (status 0), fresh rings, and a clean bring-up.
    pub fn reset_and_activate(&mut self, extra: u64) -> bool {
        self.write32(0x70, 0);
        self.reinit_queues();
        self.activate(extra)
    }
}

/// Runs `f` on a thread of its own and fails the test if it has not
/// finished within `secs`: a device that loops or blocks on hostile input
/// fails the test instead of hanging it.
pub fn within(secs: u64, what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => t.join().unwrap(),
        // The closure panicked: re-raise its panic here.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(t.join().unwrap_err())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {secs} s (a stalled device)")
        }
    }
}
