//! Guest RAM backing: anonymous memory (or, when a vhost-user backend must
//! map it too, one memfd mapped shared) at 2 MiB-aligned host addresses, with
//! transparent huge pages requested.
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
//!
//! Shared RAM is a memfd (shmem): THP for it follows
//! `/sys/kernel/mm/transparent_hugepage/shmem_enabled`, which must be
//! `advise` (or `always`) for `MADV_HUGEPAGE` to take (a warning says when
//! it is not). Each range maps the memfd at a 2 MiB-aligned file offset, so
//! host address, file offset and guest address all agree modulo 2 MiB. The memfd is sealed against
//! shrinking and growing: a backend that truncated it would otherwise make
//! every VMM access to the lost pages a SIGBUS.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::ptr::null_mut;
use std::sync::Arc;

use vm_memory::mmap::{MmapRegionBuilder, MmapRegionError};
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionCollectionError, GuestRegionMmap,
};

/// The huge page size KVM can map with one stage-2 entry.
pub const HUGE_PAGE: usize = 2 << 20;

const PROT: i32 = libc::PROT_READ | libc::PROT_WRITE;
const FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
const SHARED_FLAGS: i32 = libc::MAP_SHARED | libc::MAP_NORESERVE;

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
        Self::aligned(len, align, PROT, FLAGS, None)
    }

    /// Maps `len` bytes of `file` from `offset` on, shared, at a host address
    /// aligned to `align` (a power of two).
    pub fn file_aligned(
        len: usize,
        align: usize,
        file: &File,
        offset: u64,
    ) -> std::io::Result<Mapping> {
        Self::aligned(len, align, PROT, SHARED_FLAGS, Some((file, offset)))
    }

    /// Reserves `len + align` bytes (anonymous, and inaccessible if a file
    /// is to be mapped), maps the file over the aligned part, and trims the
    /// rest.
    fn aligned(
        len: usize,
        align: usize,
        prot: i32,
        flags: i32,
        file: Option<(&File, u64)>,
    ) -> std::io::Result<Mapping> {
        assert!(align.is_power_of_two());
        let total = len
            .checked_add(align)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
        let reserve_prot = if file.is_some() {
            libc::PROT_NONE
        } else {
            prot
        };
        // SAFETY: a new anonymous mapping with no address hint cannot alias
        // anything that already exists.
        let p = unsafe { libc::mmap(null_mut(), total, reserve_prot, FLAGS, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let start = p as usize;
        let aligned = (start + align - 1) & !(align - 1);
        if let Some((f, offset)) = file {
            let offset = libc::off_t::try_from(offset)
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EOVERFLOW));
            // SAFETY: MAP_FIXED replaces [aligned, aligned + len), which lies
            // inside the reservation just made and is referred to by nothing.
            let q = offset.map(|off| unsafe {
                libc::mmap(
                    aligned as *mut libc::c_void,
                    len,
                    prot,
                    flags | libc::MAP_FIXED,
                    f.as_raw_fd(),
                    off,
                )
            });
            let q = match q {
                Ok(q) if q == libc::MAP_FAILED => Err(std::io::Error::last_os_error()),
                Ok(q) => Ok(q),
                Err(e) => Err(e),
            };
            if let Err(e) = q {
                // SAFETY: the whole reservation is ours and unused.
                unsafe { libc::munmap(p, total) };
                return Err(e);
            }
        }
        let head = aligned - start;
        let tail = total - head - len;
        if head > 0 {
            // SAFETY: [start, aligned) lies inside the mapping just created,
            // outside [aligned, aligned + len), and nothing refers to it.
            unsafe { libc::munmap(p, head) };
        }
        if tail > 0 {
            // SAFETY: [aligned + len, start + total) lies inside the mapping
            // just created, after the part kept, and nothing refers to it.
            unsafe { libc::munmap((aligned + len) as *mut libc::c_void, tail) };
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
                self.addr.cast::<libc::c_void>(),
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
            libc::munmap(self.addr.cast::<libc::c_void>(), self.len);
        }
    }
}

/// Mapping guest RAM failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("memfd: {0}")]
    Memfd(std::io::Error),
    #[error("{0}")]
    Map(std::io::Error),
    #[error("{0}")]
    Region(MmapRegionError),
    #[error("guest region overflows")]
    RegionOverflow,
    #[error("{0}")]
    Collection(GuestRegionCollectionError),
}

/// Guest RAM for `ranges`: the guest memory view plus the host mappings
/// behind it, which stay mapped until explicitly unmapped.
pub struct GuestRam {
    pub mem: GuestMemoryMmap,
    pub mappings: Vec<Mapping>,
}

/// How guest RAM is backed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Private anonymous memory: nothing outside the VMM can map it.
    Anonymous,
    /// One memfd, mapped shared, whose fd can be passed to a vhost-user
    /// backend (the regions carry it as their `FileOffset`).
    SharedMemfd,
}

/// A sealed memfd of `size` bytes.
fn memfd(size: u64) -> std::io::Result<File> {
    // SAFETY: the name is a NUL-terminated string; the call creates a new fd.
    let fd = unsafe {
        libc::memfd_create(
            c"husk-guest-ram".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new fd that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on our own memfd only restricts its later use.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Where the kernel says whether shmem (a memfd) may use huge pages.
const SHMEM_THP: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// The selected word of a sysfs THP setting: "always [advise] never" ->
/// "advise".
fn selected(setting: &str) -> Option<&str> {
    setting
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
}

/// A warning when shared RAM will get no huge pages.
fn shmem_thp_warning(setting: &str) -> Option<String> {
    match selected(setting)? {
        v @ ("never" | "deny") => Some(format!(
            "guest RAM shared with vhost-user backends is on 4 KiB pages: {SHMEM_THP} \
             is \"{v}\"; \"advise\" gives it huge pages (fewer stage-2 faults, faster boots)"
        )),
        _ => None,
    }
}

pub fn create(ranges: &[(GuestAddress, usize)], backing: Backing) -> Result<GuestRam, Error> {
    let file = match backing {
        Backing::Anonymous => None,
        Backing::SharedMemfd => {
            if let Some(w) = std::fs::read_to_string(SHMEM_THP)
                .ok()
                .and_then(|s| shmem_thp_warning(&s))
            {
                log::warn!("{w}");
            }
            let total = ranges.iter().fold(0u64, |end, &(_, len)| {
                end.next_multiple_of(HUGE_PAGE as u64) + len as u64
            });
            Some(Arc::new(memfd(total).map_err(Error::Memfd)?))
        }
    };
    let mut mappings = Vec::with_capacity(ranges.len());
    let mut regions = Vec::with_capacity(ranges.len());
    let mut offset = 0u64;
    for &(gpa, len) in ranges {
        // Guest ranges start 2 MiB-aligned, so an aligned host address makes
        // the two agree modulo the huge page size.
        debug_assert_eq!(gpa.0 % HUGE_PAGE as u64, 0);
        let (m, flags, file_offset) = match &file {
            None => (Mapping::anonymous_aligned(len, HUGE_PAGE), FLAGS, None),
            Some(f) => {
                // Keep each range's file offset 2 MiB-aligned too, so shmem
                // huge pages line up with the host and guest addresses.
                offset = offset.next_multiple_of(HUGE_PAGE as u64);
                let m = Mapping::file_aligned(len, HUGE_PAGE, f, offset);
                let fo = FileOffset::from_arc(f.clone(), offset);
                offset += len as u64;
                (m, SHARED_FLAGS, Some(fo))
            }
        };
        let m = m.map_err(Error::Map)?;
        m.advise_hugepages();
        let mut builder = MmapRegionBuilder::new(len)
            .with_mmap_prot(PROT)
            .with_mmap_flags(flags);
        if let Some(fo) = file_offset {
            builder = builder.with_file_offset(fo);
        }
        // SAFETY: [m.as_ptr(), + len) is a live mapping, and `Mapping` is
        // only unmapped by an explicit `unmap` once the view is gone.
        let region = unsafe { builder.with_raw_mmap_pointer(m.as_ptr()) }
            .build()
            .map_err(Error::Region)?;
        mappings.push(m);
        regions.push(GuestRegionMmap::new(region, gpa).ok_or(Error::RegionOverflow)?);
    }
    let mem = GuestMemoryMmap::from_regions(regions).map_err(Error::Collection)?;
    Ok(GuestRam { mem, mappings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn shmem_thp_setting_read_as_the_kernel_prints_it() {
        assert_eq!(
            selected("always within_size [advise] never deny force"),
            Some("advise")
        );
        assert_eq!(
            shmem_thp_warning("always within_size [advise] never deny force"),
            None
        );
        assert_eq!(shmem_thp_warning("[always] within_size advise never"), None);
        let w = shmem_thp_warning("always within_size advise [never] deny force").unwrap();
        assert!(w.contains("shmem_enabled is \"never\"; \"advise\""), "{w}");
        assert_eq!(shmem_thp_warning("garbage"), None);
    }

    #[test]
    fn mappings_are_huge_page_aligned() {
        for len in [HUGE_PAGE, 3 * HUGE_PAGE + 4096, 1 << 20] {
            let m = Mapping::anonymous_aligned(len, HUGE_PAGE).unwrap();
            assert_eq!(m.as_ptr() as usize % HUGE_PAGE, 0);
            assert_eq!(m.len(), len);
            // SAFETY: the mapping is readable and writable for `len` bytes.
            let last = unsafe { m.as_ptr().add(len - 1) };
            // SAFETY: the first byte of the writable mapping.
            unsafe { *m.as_ptr() = 1 };
            // SAFETY: `last` is the mapping's last byte.
            unsafe { *last = 2 };
            // SAFETY: nothing refers to the mapping any more.
            unsafe { m.unmap() };
        }
    }

    #[test]
    fn guest_ram_matches_ranges() {
        let ranges = [(GuestAddress(0), 6 << 20), (GuestAddress(1 << 32), 2 << 20)];
        let ram = create(&ranges, Backing::Anonymous).unwrap();
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

    #[test]
    fn shared_ram_is_one_sealed_memfd() {
        use std::os::unix::fs::FileExt;
        let ranges = [(GuestAddress(0), 5 << 20), (GuestAddress(1 << 32), 2 << 20)];
        let ram = create(&ranges, Backing::SharedMemfd).unwrap();
        let offsets: Vec<u64> = ram
            .mem
            .iter()
            .map(|r| {
                assert_eq!(r.as_ptr() as usize % HUGE_PAGE, 0);
                r.file_offset().expect("file-backed region").start()
            })
            .collect();
        // The second range starts at the next 2 MiB boundary of the file.
        assert_eq!(offsets, vec![0, 6 << 20]);
        let region = ram.mem.iter().nth(1).unwrap();
        let file = region.file_offset().unwrap().file();
        ram.mem
            .write_obj(0xfeed_u32, GuestAddress((1 << 32) + 8))
            .unwrap();
        let mut b = [0u8; 4];
        file.read_exact_at(&mut b, (6 << 20) + 8).unwrap();
        assert_eq!(u32::from_le_bytes(b), 0xfeed);
        // Sealed: a backend cannot shrink it under us.
        assert!(file.set_len(4096).is_err());
        assert_eq!(file.metadata().unwrap().len(), 8 << 20);
        let GuestRam { mem, mappings } = ram;
        drop(mem);
        for m in mappings {
            // SAFETY: the guest memory view was dropped above.
            unsafe { m.unmap() };
        }
    }
}
