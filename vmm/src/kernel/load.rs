//! Putting the kernel and the initrd into guest RAM.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{Elf, KernelLoader};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

use super::elf::inspect_open;
use super::{Error, InitrdError, KernelError};
use crate::arch::layout::HIMEM_START;
use crate::arch::pvh::Initrd;

/// A range of a file could not be put into guest RAM.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("not in guest RAM")]
    NotInRam,
    #[error("runs past the end of a guest RAM range")]
    PastEnd,
    #[error("{0}")]
    Seek(std::io::Error),
    #[error("{0}")]
    Read(vm_memory::GuestMemoryError),
}

/// Puts the vmlinux's PT_LOAD segments into guest memory with
/// linux-loader's ELF loader and returns the PVH entry point. Guest RAM must
/// be untouched: bss is left as the zero it already is.
///
/// The file is opened and its headers checked again here (not trusted from
/// [`super::inspect_kernel`]): every segment of this open file must lie in
/// guest RAM before anything is written.
///
/// linux-loader's loader and our own (which read each segment straight into
/// guest RAM the same way) took the same time on the guest kernel's 7.7 MB
/// vmlinux (about 1.0 to 1.3 ms into fresh 2 MiB-backed RAM), so the
/// maintained one is used.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<u64, Error> {
    let bad = |kind| Error::Kernel {
        path: path.to_path_buf(),
        kind,
    };
    let mut file = File::open(path).map_err(|e| bad(KernelError::Io(e)))?;
    let info = inspect_open(&file).map_err(bad)?;
    for (index, s) in info.segments.iter().enumerate() {
        check_in_ram(mem, s.paddr, s.filesz).map_err(|source| {
            bad(KernelError::Place {
                index,
                paddr: s.paddr,
                source,
            })
        })?;
    }
    let loaded = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
        .map_err(|e| bad(KernelError::Load(e)))?;
    match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => Ok(entry.raw_value()),
        _ => Err(bad(KernelError::NoPvhEntry)),
    }
}

/// Size of the initrd at `path` (must be a non-empty regular file).
pub fn inspect_initrd(path: &Path) -> Result<u64, Error> {
    let bad = |kind| Error::Initrd {
        path: path.to_path_buf(),
        kind,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(InitrdError::Io(e)))?;
    if !meta.is_file() {
        return Err(bad(InitrdError::NotRegularFile));
    }
    if meta.len() == 0 {
        return Err(bad(InitrdError::Empty));
    }
    // Opening now catches permission problems before /dev/kvm is touched.
    File::open(path).map_err(|e| bad(InitrdError::Io(e)))?;
    Ok(meta.len())
}

/// Puts the initrd into guest memory at `addr` (see [`place`]).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    addr: u64,
    size: u64,
) -> Result<Initrd, Error> {
    let bad = |kind| Error::Initrd {
        path: path.to_path_buf(),
        kind,
    };
    let file = File::open(path).map_err(|e| bad(InitrdError::Io(e)))?;
    let now = file.metadata().map_err(|e| bad(InitrdError::Io(e)))?.len();
    if now != size {
        return Err(bad(InitrdError::SizeChanged { was: size, now }));
    }
    place(mem, &file, addr, size).map_err(|e| bad(InitrdError::Place(e)))?;
    Ok(Initrd { addr, size })
}

/// `[gpa, gpa + len)` lies inside one guest RAM range.
fn check_in_ram(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> Result<(), PlaceError> {
    let region = mem
        .find_region(GuestAddress(gpa))
        .ok_or(PlaceError::NotInRam)?;
    let in_region = gpa - region.start_addr().raw_value();
    if in_region.checked_add(len).is_none_or(|e| e > region.len()) {
        return Err(PlaceError::PastEnd);
    }
    Ok(())
}

/// Puts the first `len` bytes of `file` at guest physical `gpa`: read
/// straight into guest memory, through its mapping, in private and shared
/// (memfd) RAM alike. linux-loader loads the kernel's segments the same way.
///
/// * Not by mapping the file's page-cache pages copy-on-write over guest RAM
///   (no copy): those are 4 KiB pages, and every one costs the guest its own
///   stage-2 fault (and a write a copy-on-write fault) where huge-page
///   backed RAM needs one per 2 MiB. Nested lab: exec to first KVM_RUN
///   180 -> 111 ms, but boot-to-agent 953 -> 1335 ms.
/// * Not by `sendfile` into a memfd either: the kernel allocates shmem
///   pages written through the file without a VMA, so without
///   `MADV_HUGEPAGE`, and under `shmem_enabled=advise` they are 4 KiB pages
///   (a 256 MiB VM had 14 MiB huge-mapped instead of 28 MiB). Faults through
///   the mapping get huge pages. Nested lab, VM with a virtio-fs device, 5
///   boots each: spawn to agent connection median 1374 -> 974 ms, the same
///   as a VM without one (1067 ms).
fn place(mem: &GuestMemoryMmap, file: &File, gpa: u64, len: u64) -> Result<(), PlaceError> {
    if len == 0 {
        return Ok(());
    }
    check_in_ram(mem, gpa, len)?;
    let len = usize::try_from(len).map_err(|_| PlaceError::PastEnd)?;
    let mut f = file;
    f.seek(SeekFrom::Start(0)).map_err(PlaceError::Seek)?;
    mem.read_exact_volatile_from(GuestAddress(gpa), &mut f, len)
        .map_err(PlaceError::Read)
}
