//! Kernel and initrd: validation (before /dev/kvm is opened, so bad paths
//! fail fast and are testable anywhere) and loading into guest memory.
//!
//! * [`elf`]: reading a vmlinux's ELF headers and PVH note without loading
//!   it ([`inspect_kernel`]), for the checks and the memory layout that
//!   come before guest RAM exists.
//! * [`load`]: putting the kernel (linux-loader's ELF loader) and the initrd
//!   (read straight into guest RAM) in place.

mod elf;
mod load;
#[cfg(test)]
pub(crate) mod tests;

use std::fmt;
use std::path::PathBuf;

use crate::config::io_msg;
pub use elf::{inspect_kernel, KernelInfo, Segment};
pub use load::{inspect_initrd, load_initrd, load_kernel, PlaceError};

const PAGE: u64 = 4096;

/// A kernel, initrd or memory size problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kernel: {}: {kind}", path.display())]
    Kernel { path: PathBuf, kind: KernelError },
    #[error("initrd: {}: {kind}", path.display())]
    Initrd { path: PathBuf, kind: InitrdError },
    #[error("memory: {0}")]
    Memory(#[from] FitError),
}

/// Where in a vmlinux a read ran past the end of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfPart {
    ElfHeader,
    ProgramHeaders,
    Notes,
    Segment(usize),
}

impl fmt::Display for ElfPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfPart::ElfHeader => f.write_str("ELF header"),
            ElfPart::ProgramHeaders => f.write_str("program headers"),
            ElfPart::Notes => f.write_str("notes"),
            ElfPart::Segment(i) => write!(f, "segment {i}"),
        }
    }
}

/// What is wrong with a kernel image.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{}", io_msg(.0))]
    Io(std::io::Error),
    #[error("not a regular file")]
    NotRegularFile,
    #[error("not an ELF file ({0} bytes)")]
    TooSmall(u64),
    #[error("a bzImage, not an ELF vmlinux; husk boots the uncompressed vmlinux")]
    BzImage,
    #[error("not an ELF file (bad magic); husk boots an uncompressed vmlinux")]
    BadMagic,
    #[error("not a 64-bit little-endian x86_64 ELF file")]
    NotX86_64,
    #[error("truncated ELF file ({0} past the end)")]
    Truncated(ElfPart),
    #[error("corrupt ELF header (phentsize {phentsize}, phnum {phnum})")]
    ProgramHeaderTable { phentsize: u16, phnum: u16 },
    #[error("corrupt ELF file (segment {index} at {paddr:#x}+{memsz:#x})")]
    Segment {
        index: usize,
        paddr: u64,
        memsz: u64,
    },
    #[error("corrupt ELF file (no loadable segments)")]
    NoLoadableSegments,
    #[error(
        "no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY note); build the kernel with CONFIG_PVH=y"
    )]
    NoPvhEntry,
    #[error("loading segment {index} at {paddr:#x}: {source}")]
    Place {
        index: usize,
        paddr: u64,
        source: PlaceError,
    },
    #[error("loading: {0}")]
    Load(linux_loader::loader::Error),
}

/// What is wrong with an initrd.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    #[error("{}", io_msg(.0))]
    Io(std::io::Error),
    #[error("not a regular file")]
    NotRegularFile,
    #[error("empty file")]
    Empty,
    #[error("changed size while starting ({was} -> {now} bytes)")]
    SizeChanged { was: u64, now: u64 },
    #[error("loading into guest memory: {0}")]
    Place(PlaceError),
}

/// Kernel and initrd do not fit in the VM's low RAM.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FitError {
    #[error("the kernel needs {kernel_mib} MiB of RAM, only {ram_mib} MiB configured")]
    KernelTooBig { kernel_mib: u64, ram_mib: u64 },
    #[error("kernel ({kernel_mib} MiB) and initrd ({initrd_mib} MiB) do not fit in {ram_mib} MiB")]
    NoRoom {
        kernel_mib: u64,
        initrd_mib: u64,
        ram_mib: u64,
    },
}

/// Where the initrd goes: page-aligned, as high as possible below
/// `low_ram_end`, above the kernel. The page below `low_ram_end` stays free.
pub fn initrd_addr(kernel_end: u64, low_ram_end: u64, size: u64) -> Option<u64> {
    let top = low_ram_end.checked_sub(PAGE)?;
    let addr = top.checked_sub(size)? & !(PAGE - 1);
    let kernel_end = kernel_end.checked_add(PAGE - 1)? & !(PAGE - 1);
    (addr >= kernel_end).then_some(addr)
}

/// Checks that kernel and initrd fit in `low_ram_end` bytes of low RAM.
pub fn check_fit(kernel: &KernelInfo, initrd_size: u64, low_ram_end: u64) -> Result<u64, Error> {
    let kernel_mib = kernel.end.div_ceil(1 << 20);
    let ram_mib = low_ram_end >> 20;
    if kernel.end > low_ram_end {
        return Err(FitError::KernelTooBig {
            kernel_mib,
            ram_mib,
        }
        .into());
    }
    initrd_addr(kernel.end, low_ram_end, initrd_size).ok_or_else(|| {
        FitError::NoRoom {
            kernel_mib,
            initrd_mib: initrd_size.div_ceil(1 << 20),
            ram_mib,
        }
        .into()
    })
}
