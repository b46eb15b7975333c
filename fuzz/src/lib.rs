//! Shared pieces of husk's fuzz targets: a hostile guest driver for the
//! virtio-mmio devices (register accesses, split virtqueues whose every
//! byte the fuzzer chooses) and the event loop that serves them, as the
//! VMM runs it.
//!
//! Each device target builds a fresh device per input (so an input replays
//! the same way), brings it up through the MMIO registers, writes the
//! fuzzer's descriptors, avail entries and buffer bytes into guest memory,
//! kicks and runs the event loop.

use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use husk_vmm::devices::virtio::{VirtioDevice, VirtioMmioDevice};
use husk_vmm::devices::BusDevice;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub mod fake_vhost;

/// Guest RAM of the fuzzed devices: small, so that random addresses land
/// inside it often, and cheap to map per input.
pub const MEM_SIZE: u64 = 0x4_0000;
/// Queue `i`'s rings: descriptor table at `QUEUE_BASE + i * QUEUE_STRIDE`,
/// avail ring 0x1000 and used ring 0x2000 past it (room for 256 entries).
pub const QUEUE_BASE: u64 = 0x1_0000;
pub const QUEUE_STRIDE: u64 = 0x4000;
/// Buffers: the fuzzer's bytes are copied here, descriptors point in here.
pub const BUF_BASE: u64 = 0x2_0000;
pub const BUF_SIZE: u64 = MEM_SIZE - BUF_BASE;

/// MMIO registers (virtio 1.2 §4.2.2).
pub mod reg {
    pub const DEVICE_FEATURES: u64 = 0x10;
    pub const DEVICE_FEATURES_SEL: u64 = 0x14;
    pub const DRIVER_FEATURES: u64 = 0x20;
    pub const DRIVER_FEATURES_SEL: u64 = 0x24;
    pub const QUEUE_SEL: u64 = 0x30;
    pub const QUEUE_NUM_MAX: u64 = 0x34;
    pub const QUEUE_NUM: u64 = 0x38;
    pub const QUEUE_READY: u64 = 0x44;
    pub const QUEUE_NOTIFY: u64 = 0x50;
    pub const INTERRUPT_ACK: u64 = 0x64;
    pub const STATUS: u64 = 0x70;
    pub const QUEUE_DESC: u64 = 0x80;
    pub const QUEUE_DRIVER: u64 = 0x90;
    pub const QUEUE_DEVICE: u64 = 0xa0;
    pub const CONFIG: u64 = 0x100;
}

/// Status bits: ACKNOWLEDGE | DRIVER, then FEATURES_OK, then DRIVER_OK.
pub const S_DRIVER: u32 = 1 | 2;
pub const S_FEATURES_OK: u32 = 8;
pub const S_DRIVER_OK: u32 = 4;

pub type Em = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// A device behind its MMIO transport, in an event loop, over `mem`.
pub struct Guest {
    pub mem: GuestMemoryMmap,
    pub dev: Arc<Mutex<VirtioMmioDevice>>,
    pub em: Em,
    /// Queue sizes the driver programmed.
    pub sizes: Vec<u16>,
}

/// Private anonymous guest RAM of [`MEM_SIZE`] bytes.
pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)])
        .expect("mapping guest memory")
}

impl Guest {
    pub fn new(mem: GuestMemoryMmap, device: Box<dyn VirtioDevice>) -> Guest {
        let dev = Arc::new(Mutex::new(
            VirtioMmioDevice::new(mem.clone(), device).expect("virtio-mmio transport"),
        ));
        let mut em = Em::new().expect("event manager");
        em.add_subscriber(dev.clone());
        Guest {
            mem,
            dev,
            em,
            sizes: Vec::new(),
        }
    }

    pub fn read32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.lock().unwrap().read(off, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write32(&self, off: u64, v: u32) {
        self.dev.lock().unwrap().write(off, &v.to_le_bytes());
    }

    /// An access of any size at any offset, as a vCPU exit hands it over.
    pub fn access(&self, off: u64, data: &mut [u8], write: bool) {
        let mut d = self.dev.lock().unwrap();
        if write {
            d.write(off, data);
        } else {
            d.read(off, data);
        }
    }

    /// The 64 device feature bits.
    pub fn device_features(&self) -> u64 {
        self.write32(reg::DEVICE_FEATURES_SEL, 0);
        let lo = self.read32(reg::DEVICE_FEATURES);
        self.write32(reg::DEVICE_FEATURES_SEL, 1);
        let hi = self.read32(reg::DEVICE_FEATURES);
        (u64::from(hi) << 32) | u64::from(lo)
    }

    fn write64(&self, off: u64, v: u64) {
        self.write32(off, (v & 0xffff_ffff) as u32);
        self.write32(off + 4, (v >> 32) as u32);
    }

    /// Negotiates VERSION_1 plus the offered bits of `extra`, programs
    /// every queue with 2^`size_log2[i]` entries (clamped to the maximum)
    /// at the ring addresses above, and sets DRIVER_OK. Returns whether the
    /// device is active.
    pub fn bring_up(&mut self, extra: u64, size_log2: &[u8]) -> bool {
        self.write32(reg::STATUS, 0);
        self.write32(reg::STATUS, S_DRIVER);
        let features = (1u64 << 32) | (extra & self.device_features());
        self.write32(reg::DRIVER_FEATURES_SEL, 0);
        self.write32(reg::DRIVER_FEATURES, (features & 0xffff_ffff) as u32);
        self.write32(reg::DRIVER_FEATURES_SEL, 1);
        self.write32(reg::DRIVER_FEATURES, (features >> 32) as u32);
        self.write32(reg::STATUS, S_DRIVER | S_FEATURES_OK);
        self.sizes.clear();
        for i in 0u32.. {
            self.write32(reg::QUEUE_SEL, i);
            let max = self.read32(reg::QUEUE_NUM_MAX);
            if max == 0 {
                break;
            }
            let want = 1u32 << size_log2.get(i as usize).copied().unwrap_or(4).min(8);
            let size = want.min(max);
            self.write32(reg::QUEUE_NUM, size);
            let base = queue_base(i as usize);
            self.write64(reg::QUEUE_DESC, base);
            self.write64(reg::QUEUE_DRIVER, base + 0x1000);
            self.write64(reg::QUEUE_DEVICE, base + 0x2000);
            self.write32(reg::QUEUE_READY, 1);
            self.sizes.push(size as u16);
        }
        self.write32(reg::STATUS, S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
        self.dev.lock().unwrap().is_activated()
    }

    /// Copies `bytes` (at most [`BUF_SIZE`]) to the start of the buffer
    /// area.
    pub fn fill_buffers(&self, bytes: &[u8]) {
        let n = bytes.len().min(BUF_SIZE as usize);
        self.mem
            .write_slice(&bytes[..n], GuestAddress(BUF_BASE))
            .expect("buffer area is in guest memory");
    }

    /// Writes `q`'s descriptors (from index 0) and appends `heads` to its
    /// avail ring; `avail_idx` (if set) then overrides the avail index.
    pub fn post(&self, q: usize, input: &QueueInput) {
        let Some(&size) = self.sizes.get(q) else {
            return;
        };
        let base = queue_base(q);
        for (i, d) in input.descs.iter().take(usize::from(size)).enumerate() {
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&d.addr.resolve().to_le_bytes());
            raw[8..12].copy_from_slice(&d.len.resolve().to_le_bytes());
            raw[12..14].copy_from_slice(&u16::from(d.flags & 7).to_le_bytes());
            raw[14..16].copy_from_slice(&u16::from(d.next).to_le_bytes());
            let at = GuestAddress(base + 16 * i as u64);
            self.mem.write_slice(&raw, at).expect("descriptor table");
        }
        let avail = base + 0x1000;
        let mut idx: u16 = self.mem.read_obj(GuestAddress(avail + 2)).expect("avail");
        for &h in input.heads.iter().take(usize::from(size)) {
            let slot = GuestAddress(avail + 4 + 2 * u64::from(idx % size));
            self.mem.write_obj(u16::from(h), slot).expect("avail ring");
            idx = idx.wrapping_add(1);
        }
        let idx = input.avail_idx.unwrap_or(idx);
        self.mem
            .write_obj(idx, GuestAddress(avail + 2))
            .expect("avail index");
    }

    /// Notifies queue `q` (through the register, the slow path) and runs
    /// the event loop until it has nothing ready (at most `rounds` times).
    pub fn kick(&mut self, q: u32, rounds: usize) {
        self.write32(reg::QUEUE_NOTIFY, q);
        self.poll(rounds);
    }

    /// Runs the event loop without waiting until nothing is ready (at most
    /// `rounds` times).
    pub fn poll(&mut self, rounds: usize) {
        for _ in 0..rounds {
            if self.em.run_with_timeout(0).expect("event loop") == 0 {
                break;
            }
        }
    }
}

/// Where queue `i`'s descriptor table is.
pub fn queue_base(i: usize) -> u64 {
    QUEUE_BASE + QUEUE_STRIDE * i as u64
}

/// A descriptor's guest address as the fuzzer picks it: mostly inside the
/// buffer area, sometimes anywhere (rings, past the end, wrapping).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Addr {
    Buf(u16),
    Raw(u64),
}

impl Addr {
    pub fn resolve(self) -> u64 {
        match self {
            Addr::Buf(off) => BUF_BASE + u64::from(off) % BUF_SIZE,
            Addr::Raw(a) => a,
        }
    }
}

/// A descriptor length: mostly small, sometimes any u32.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Len {
    Small(u16),
    Raw(u32),
}

impl Len {
    pub fn resolve(self) -> u32 {
        match self {
            Len::Small(n) => u32::from(n),
            Len::Raw(n) => n,
        }
    }
}

/// One split-ring descriptor; `flags` keeps NEXT, WRITE and INDIRECT.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Desc {
    pub addr: Addr,
    pub len: Len,
    pub flags: u8,
    pub next: u8,
}

/// What the guest puts on one queue before a kick.
#[derive(Arbitrary, Debug, Clone)]
pub struct QueueInput {
    pub descs: Vec<Desc>,
    pub heads: Vec<u8>,
    pub avail_idx: Option<u16>,
}

/// A temp path unique to this process: in `$HUSK_FUZZ_SCRATCH` if set
/// (scripts/fuzz-short removes it afterwards), else in /dev/shm when there
/// is one (no disk I/O for files the targets write and sync).
pub fn scratch_path(name: &str) -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if let Some(d) = std::env::var_os("HUSK_FUZZ_SCRATCH") {
        std::path::PathBuf::from(d)
    } else if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("husk-fuzz-{}-{name}", std::process::id()))
}

/// The registers a driver programs, for [`MmioOp::Reg`] (any offset is
/// still reachable through [`MmioOp::Read`] and [`MmioOp::Write`]).
const REGS: [u64; 24] = [
    0x00, 0x04, 0x08, 0x0c, 0x10, 0x14, 0x20, 0x24, 0x30, 0x34, 0x38, 0x44, 0x50, 0x60, 0x64, 0x70,
    0x80, 0x84, 0x90, 0x94, 0xa0, 0xa4, 0xac, 0xfc,
];

/// One guest action on a device's MMIO window.
#[derive(Arbitrary, Debug, Clone)]
pub enum MmioOp {
    /// A 32-bit write of `value` to one of the driver's registers.
    Reg { which: u8, value: u32 },
    /// A 32-bit write of a status value built from the usual bits.
    Status { bits: u8 },
    /// A read of any size (up to 16 bytes) at any offset.
    Read { offset: u16, len: u8 },
    /// A write of any bytes (up to 16) at any offset.
    Write { offset: u16, data: Vec<u8> },
    /// A queue's ring address registers, low and high halves at once.
    QueueAddr { which: u8, addr: u64 },
    /// Run the event loop.
    Poll,
}

impl Guest {
    /// Carries out `ops` (at most 64) in order.
    pub fn run_ops(&mut self, ops: &[MmioOp]) {
        for op in ops.iter().take(64) {
            match op {
                MmioOp::Reg { which, value } => {
                    self.write32(REGS[usize::from(*which) % REGS.len()], *value)
                }
                MmioOp::Status { bits } => {
                    let s = [0u32, 1, 2, 4, 8, 0x40, 0x80]
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| bits & (1 << i) != 0)
                        .fold(0, |a, (_, b)| a | b);
                    self.write32(reg::STATUS, s);
                }
                MmioOp::Read { offset, len } => {
                    let mut b = vec![0u8; usize::from(*len % 17)];
                    self.access(u64::from(*offset), &mut b, false);
                }
                MmioOp::Write { offset, data } => {
                    let mut d = data.iter().take(16).copied().collect::<Vec<_>>();
                    self.access(u64::from(*offset), &mut d, true);
                }
                MmioOp::QueueAddr { which, addr } => {
                    let r = [reg::QUEUE_DESC, reg::QUEUE_DRIVER, reg::QUEUE_DEVICE]
                        [usize::from(*which) % 3];
                    self.write64(r, *addr);
                }
                MmioOp::Poll => self.poll(4),
            }
        }
    }
}
