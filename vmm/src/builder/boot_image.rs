//! The boot image: kernel, initrd, command line, PVH start info, MP table
//! and GDT, written into guest RAM by a thread of its own while KVM is set
//! up (on a small host, copying megabytes of kernel and initrd into freshly
//! zeroed pages takes as long as all of KVM's set-up, and the two do not
//! depend on each other).

use std::path::PathBuf;
use std::thread::JoinHandle;

use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::Prepared;
use crate::arch::layout::{CMDLINE_ADDR, MPTABLE_ADDR};
use crate::arch::{mptable, pvh, regs};
use crate::{kernel, timing};

/// Writing the boot image into guest RAM failed.
#[derive(Debug, thiserror::Error)]
pub enum BootImageError {
    #[error(transparent)]
    Load(#[from] kernel::Error),
    #[error("kernel: {0}: PVH entry point changed while loading")]
    EntryChanged(PathBuf),
    #[error("memory: writing the command line: {0}")]
    Cmdline(linux_loader::loader::Error),
    #[error("memory: writing the PVH start info: {0}")]
    StartInfo(linux_loader::configurator::Error),
    #[error(transparent)]
    MpTable(#[from] mptable::Error),
    #[error("memory: writing the MP table: {0}")]
    MpTableWrite(vm_memory::GuestMemoryError),
    #[error(transparent)]
    Gdt(#[from] regs::Error),
    #[error("spawning the boot image thread: {0}")]
    Spawn(std::io::Error),
    #[error("memory: writing the boot image panicked")]
    Panicked,
}

/// The thread that writes the boot image. Dropping it waits for the thread,
/// so an early error return never leaves it writing.
pub struct BootImageLoader(Option<JoinHandle<Result<u64, BootImageError>>>);

impl BootImageLoader {
    /// Starts writing `p`'s boot image into `mem`.
    pub fn spawn(p: &Prepared, mem: &GuestMemoryMmap) -> Result<Self, BootImageError> {
        let image = BootImage {
            mem: mem.clone(),
            kernel: p.config.kernel.clone(),
            want_entry: p.kernel.pvh_entry,
            initrd: p.config.initrd.clone(),
            initrd_addr: p.initrd_addr,
            initrd_size: p.initrd_size,
            cmdline: p.cmdline.clone(),
            mem_bytes: p.config.memory_bytes(),
            vcpus: p.config.vcpus,
        };
        std::thread::Builder::new()
            .name("boot-image".into())
            .spawn(move || image.write())
            .map(|h| BootImageLoader(Some(h)))
            .map_err(BootImageError::Spawn)
    }

    /// Waits for the boot image; returns the kernel's PVH entry point.
    pub fn join(mut self) -> Result<u64, BootImageError> {
        let h = self.0.take().expect("joined once");
        h.join().unwrap_or(Err(BootImageError::Panicked))
    }
}

impl Drop for BootImageLoader {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

/// Everything the boot image thread writes, owned by it.
struct BootImage {
    mem: GuestMemoryMmap,
    kernel: PathBuf,
    /// The PVH entry point `prepare` found.
    want_entry: u64,
    initrd: PathBuf,
    initrd_addr: u64,
    initrd_size: u64,
    cmdline: linux_loader::cmdline::Cmdline,
    mem_bytes: u64,
    vcpus: u8,
}

impl BootImage {
    fn write(self) -> Result<u64, BootImageError> {
        let mem = &self.mem;
        let entry = kernel::load_kernel(mem, &self.kernel)?;
        if entry != self.want_entry {
            return Err(BootImageError::EntryChanged(self.kernel));
        }
        timing::mark("kernel loaded");
        let initrd = kernel::load_initrd(mem, &self.initrd, self.initrd_addr, self.initrd_size)?;
        timing::mark("initrd loaded");
        linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &self.cmdline)
            .map_err(BootImageError::Cmdline)?;
        pvh::write(mem, self.mem_bytes, Some(initrd)).map_err(BootImageError::StartInfo)?;
        let mpt = mptable::build(self.vcpus, MPTABLE_ADDR)?;
        vm_memory::Bytes::write_slice(mem, &mpt, GuestAddress(MPTABLE_ADDR))
            .map_err(BootImageError::MpTableWrite)?;
        regs::write_gdt(mem)?;
        Ok(entry)
    }
}
