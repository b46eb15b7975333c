//! Guest RAM backing: anonymous memory mapped at 2 MiB-aligned host
//! addresses, with transparent huge pages requested.
//!
//! KVM maps a guest page with a 2 MiB stage-2 (EPT/NPT) entry only when the
//! host backs it with a huge page *and* the guest physical and host virtual
//! addresses agree modulo 2 MiB. A plain `mmap` returns a 4 KiB-aligned
//! address, so every guest page then costs its own stage-2 fault on first
//! touch (tens of thousands during boot: memmap init, the log buffer, the
//! initramfs unpacking into page cache). Aligning the mapping and asking for
//! THP (QEMU does the same for its RAM blocks) turns those into a few dozen
//! 2 MiB faults and fewer TLB misses afterwards. Memory is still
//! `MAP_NORESERVE` and never pre-faulted.

use std::ptr::null_mut;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

/// The huge page size KVM can map with one stage-2 entry.
pub const HUGE_PAGE: usize = 2 << 20;

const PROT: i32 = libc::PROT_READ | libc::PROT_WRITE;
const FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// One anonymous mapping. It is never unmapped implicitly: a guest memory
/// view (or a vCPU thread still in KVM_RUN) may outlive any owner we could
/// tie it to, so an unreleased mapping is simply kept until the process
/// exits, and only [`Mapping::unmap`] releases it.
#[derive(Debug)]
pub struct Mapping {
    addr: *mut u8,
    len: usize,
}

// SAFETY: `Mapping` is a plain address range; nothing in it is tied to the
// thread that created it.
unsafe impl Send for Mapping {}
// SAFETY: shared references give no access to the memory itself.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes (a multiple of the page size) of anonymous memory at
    /// a host address aligned to `align` (a power of two).
    pub fn anonymous_aligned(len: usize, align: usize) -> std::io::Result<Mapping> {
        assert!(align.is_power_of_two());
        let total = len
            .checked_add(align)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: a new anonymous mapping with no address hint cannot alias
        // anything that already exists.
        let p = unsafe { libc::mmap(null_mut(), total, PROT, FLAGS, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let start = p as usize;
        let aligned = (start + align - 1) & !(align - 1);
        let head = aligned - start;
        let tail = total - head - len;
        // SAFETY: both ranges lie inside the mapping just created, outside
        // [aligned, aligned + len), and nothing refers to them.
        unsafe {
            if head > 0 {
                libc::munmap(p, head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
        }
        Ok(Mapping {
            addr: aligned as *mut u8,
            len,
        })
    }

    /// Asks for transparent huge pages. Best effort: a kernel without THP
    /// (EINVAL) or with it disabled just keeps 4 KiB pages.
    pub fn advise_hugepages(&self) {
        // SAFETY: madvise on our own mapping changes no memory contents.
        unsafe {
            libc::madvise(
                self.addr as *mut libc::c_void,
                self.len,
                libc::MADV_HUGEPAGE,
            );
        }
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.addr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Releases the memory.
    ///
    /// # Safety
    /// No guest memory view built on this mapping may be used afterwards
    /// (every clone dropped), and no vCPU may be running on it.
    pub unsafe fn unmap(self) {
        // SAFETY: the range is this mapping; the caller guarantees that
        // nothing uses it any more.
        unsafe {
            libc::munmap(self.addr as *mut libc::c_void, self.len);
        }
    }
}

/// Guest RAM for `ranges`: the guest memory view plus the host mappings
/// behind it, which stay mapped until explicitly unmapped.
pub struct GuestRam {
    pub mem: GuestMemoryMmap,
    pub mappings: Vec<Mapping>,
}

pub fn create(ranges: &[(GuestAddress, usize)]) -> Result<GuestRam, String> {
    let mut mappings = Vec::with_capacity(ranges.len());
    let mut regions = Vec::with_capacity(ranges.len());
    for &(gpa, len) in ranges {
        // Guest ranges start 2 MiB-aligned, so an aligned host address makes
        // the two agree modulo the huge page size.
        debug_assert_eq!(gpa.0 % HUGE_PAGE as u64, 0);
        let m = Mapping::anonymous_aligned(len, HUGE_PAGE).map_err(|e| e.to_string())?;
        m.advise_hugepages();
        // SAFETY: [m.as_ptr(), + len) is a live mapping, and `Mapping` is
        // only unmapped by an explicit `unmap` once the view is gone.
        let region = unsafe {
            MmapRegionBuilder::new(len)
                .with_mmap_prot(PROT)
                .with_mmap_flags(FLAGS)
                .with_raw_mmap_pointer(m.as_ptr())
        }
        .build()
        .map_err(|e| e.to_string())?;
        mappings.push(m);
        regions.push(GuestRegionMmap::new(region, gpa).ok_or("guest region overflows")?);
    }
    let mem = GuestMemoryMmap::from_regions(regions).map_err(|e| e.to_string())?;
    Ok(GuestRam { mem, mappings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn mappings_are_huge_page_aligned() {
        for len in [HUGE_PAGE, 3 * HUGE_PAGE + 4096, 1 << 20] {
            let m = Mapping::anonymous_aligned(len, HUGE_PAGE).unwrap();
            assert_eq!(m.as_ptr() as usize % HUGE_PAGE, 0);
            assert_eq!(m.len(), len);
            // SAFETY: the mapping is readable and writable for `len` bytes.
            unsafe {
                *m.as_ptr() = 1;
                *m.as_ptr().add(len - 1) = 2;
            }
            // SAFETY: nothing refers to the mapping any more.
            unsafe { m.unmap() };
        }
    }

    #[test]
    fn guest_ram_matches_ranges() {
        let ranges = [(GuestAddress(0), 6 << 20), (GuestAddress(1 << 32), 2 << 20)];
        let ram = create(&ranges).unwrap();
        assert_eq!(ram.mappings.len(), 2);
        for (r, (gpa, len)) in ram.mem.iter().zip(ranges) {
            assert_eq!(r.start_addr(), gpa);
            assert_eq!(r.len(), len as u64);
            assert_eq!(r.as_ptr() as usize % HUGE_PAGE, 0);
        }
        ram.mem.write_obj(0x55aau16, GuestAddress(0x1234)).unwrap();
        ram.mem
            .write_obj(7u32, GuestAddress((1 << 32) + 100))
            .unwrap();
        assert_eq!(
            ram.mem.read_obj::<u16>(GuestAddress(0x1234)).unwrap(),
            0x55aa
        );
        assert_eq!(
            ram.mem
                .read_obj::<u32>(GuestAddress((1 << 32) + 100))
                .unwrap(),
            7
        );
    }
}
