//! Address-range dispatch of guest PIO / MMIO accesses to [`BusDevice`]s.
//!
//! The bus is built before the vCPUs start and is immutable afterwards, so
//! vCPU threads share it through an `Arc` and only take the lock of the one
//! device they hit.

use std::sync::{Arc, Mutex};

use crate::devices::BusDevice;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("bus range {base:#x}+{len:#x} is empty or wraps around")]
    BadRange { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} overlaps another device")]
    Overlap { base: u64, len: u64 },
}

struct Entry {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

#[derive(Default)]
pub struct Bus {
    /// Sorted by `base`, non-overlapping.
    entries: Vec<Entry>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `device` at `[base, base + len)`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), Error> {
        if len == 0 || base.checked_add(len).is_none() {
            return Err(Error::BadRange { base, len });
        }
        let pos = self.entries.partition_point(|e| e.base < base);
        let overlaps_prev = pos > 0 && {
            let p = &self.entries[pos - 1];
            p.base + p.len > base
        };
        let overlaps_next = pos < self.entries.len() && self.entries[pos].base < base + len;
        if overlaps_prev || overlaps_next {
            return Err(Error::Overlap { base, len });
        }
        self.entries.insert(pos, Entry { base, len, device });
        Ok(())
    }

    /// The device whose range holds all of `[addr, addr + size)`, with the
    /// offset of `addr` in it. Accesses straddling a range end match nothing.
    fn find(&self, addr: u64, size: usize) -> Option<(&Entry, u64)> {
        let pos = self.entries.partition_point(|e| e.base <= addr);
        let e = self.entries.get(pos.checked_sub(1)?)?;
        let offset = addr - e.base;
        let end = offset.checked_add(size as u64)?;
        (end <= e.len).then_some((e, offset))
    }

    /// Dispatches a read; returns false (leaving `data` alone) if no device
    /// covers the access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, offset)) => {
                lock(&e.device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; returns false if no device covers the access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, offset)) => {
                lock(&e.device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, ignoring poisoning: a device that panicked mid-access is
/// still in a memory-safe state, and one bad access must not take down every
/// other vCPU.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records accesses; reads return the low byte of the offset.
    #[derive(Default)]
    struct Probe {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill((offset & 0xff) as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    fn probe() -> Arc<Mutex<Probe>> {
        Arc::new(Mutex::new(Probe::default()))
    }

    #[test]
    fn dispatch_by_range_with_offsets() {
        let mut bus = Bus::new();
        let a = probe();
        let b = probe();
        bus.insert(0x3f8, 8, a.clone()).unwrap();
        bus.insert(0x60, 5, b.clone()).unwrap();

        let mut d = [0u8; 1];
        assert!(bus.read(0x3fd, &mut d));
        assert_eq!(d, [5]);
        assert!(bus.write(0x64, &[0xfe]));
        assert!(bus.write(0x3f8, b"x"));
        assert_eq!(a.lock().unwrap().writes, vec![(0, vec![b'x'])]);
        assert_eq!(b.lock().unwrap().writes, vec![(4, vec![0xfe])]);
    }

    #[test]
    fn misses_and_straddles() {
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x100, probe()).unwrap();
        let mut d = [0xaau8; 4];
        assert!(!bus.read(0xfff, &mut d), "below");
        assert!(!bus.read(0x1100, &mut d), "just past the end");
        assert!(!bus.read(0x10fe, &mut d), "straddles the end");
        assert_eq!(d, [0xaa; 4], "untouched on a miss");
        assert!(bus.read(0x10fc, &mut d), "last four bytes");
        assert!(!bus.write(u64::MAX, &[1, 2]), "wrapping access");
        assert!(!Bus::new().read(0, &mut d), "empty bus");
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let mut bus = Bus::new();
        bus.insert(0x100, 0x10, probe()).unwrap();
        bus.insert(0x120, 0x10, probe()).unwrap();
        assert_eq!(
            bus.insert(0x10f, 1, probe()),
            Err(Error::Overlap {
                base: 0x10f,
                len: 1
            })
        );
        assert_eq!(
            bus.insert(0xf0, 0x11, probe()),
            Err(Error::Overlap {
                base: 0xf0,
                len: 0x11
            })
        );
        assert_eq!(
            bus.insert(0x100, 0x100, probe()),
            Err(Error::Overlap {
                base: 0x100,
                len: 0x100
            })
        );
        bus.insert(0x110, 0x10, probe()).unwrap(); // exactly fills the hole
        assert_eq!(
            bus.insert(0x200, 0, probe()),
            Err(Error::BadRange {
                base: 0x200,
                len: 0
            })
        );
        assert_eq!(
            bus.insert(u64::MAX, 2, probe()),
            Err(Error::BadRange {
                base: u64::MAX,
                len: 2
            })
        );
    }

    #[test]
    fn poisoned_device_still_dispatches() {
        struct Panicky;
        impl BusDevice for Panicky {
            fn read(&mut self, _: u64, data: &mut [u8]) {
                data.fill(7);
            }
            fn write(&mut self, _: u64, _: &[u8]) {
                panic!("device bug");
            }
        }
        let dev: Arc<Mutex<dyn BusDevice>> = Arc::new(Mutex::new(Panicky));
        let mut bus = Bus::new();
        bus.insert(0, 1, dev).unwrap();
        let bus = Arc::new(bus);
        let b2 = bus.clone();
        assert!(std::thread::spawn(move || b2.write(0, &[1]))
            .join()
            .is_err());
        let mut d = [0u8];
        assert!(bus.read(0, &mut d));
        assert_eq!(d, [7]);
    }
}
