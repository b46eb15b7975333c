//! PVH boot: the `hvm_start_info` structure, its memory map and module list.
//!
//! PVH starts the kernel's 32-bit `pvh_start_xen` entry with paging off, so
//! the VMM needs no page tables and no zero page, only this small structure
//! (<https://xenbits.xen.org/docs/unstable/misc/pvh.html>).

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::layout::{e820_map, CMDLINE_ADDR, PVH_INFO_ADDR, PVH_MEMMAP_ADDR, PVH_MODLIST_ADDR};

pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Where the initrd landed in guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Initrd {
    pub addr: u64,
    pub size: u64,
}

/// The start info, memory map and module list for `mem_bytes` of RAM.
pub fn start_info(
    mem_bytes: u64,
    initrd: Option<Initrd>,
) -> (
    hvm_start_info,
    Vec<hvm_memmap_table_entry>,
    Vec<hvm_modlist_entry>,
) {
    let memmap: Vec<_> = e820_map(mem_bytes)
        .into_iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let modules: Vec<_> = initrd
        .into_iter()
        .map(|i| hvm_modlist_entry {
            paddr: i.addr,
            size: i.size,
            cmdline_paddr: 0,
            reserved: 0,
        })
        .collect();
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        flags: 0,
        nr_modules: u32::from(initrd.is_some()),
        modlist_paddr: if modules.is_empty() {
            0
        } else {
            PVH_MODLIST_ADDR
        },
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: 0,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: u32::try_from(memmap.len()).expect("a handful of e820 entries"),
        reserved: 0,
    };
    (info, memmap, modules)
}

/// Writes the start info, memory map and module list to guest memory.
pub fn write(
    mem: &GuestMemoryMmap,
    mem_bytes: u64,
    initrd: Option<Initrd>,
) -> Result<(), linux_loader::configurator::Error> {
    let (info, memmap, modules) = start_info(mem_bytes, initrd);
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_ADDR));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_ADDR));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(PVH_MODLIST_ADDR));
    }
    PvhBootConfigurator::write_bootparams(&params, mem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::layout::MIB;
    use crate::cast::usize_from;
    use std::mem::size_of;
    use vm_memory::Bytes;

    #[test]
    fn structures_fit_their_slots() {
        assert!(PVH_INFO_ADDR + size_of::<hvm_start_info>() as u64 <= PVH_MODLIST_ADDR);
        assert!(PVH_MODLIST_ADDR + size_of::<hvm_modlist_entry>() as u64 <= PVH_MEMMAP_ADDR);
    }

    #[test]
    fn written_to_guest_memory() {
        let mem_bytes = 64 * MIB;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), usize_from(mem_bytes))])
            .unwrap();
        let initrd = Initrd {
            addr: 0x3f0_0000,
            size: 0x1234,
        };
        write(&mem, mem_bytes, Some(initrd)).unwrap();

        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.version, 1);
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.cmdline_paddr, CMDLINE_ADDR);
        assert_eq!(info.memmap_entries, 3);
        let m: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((m.paddr, m.size), (0x3f0_0000, 0x1234));
        let last: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(
                info.memmap_paddr + 2 * size_of::<hvm_memmap_table_entry>() as u64,
            ))
            .unwrap();
        assert_eq!(
            (last.addr, last.addr + last.size, last.type_),
            (0x10_0000, mem_bytes, 1)
        );
    }

    #[test]
    fn no_initrd_no_modules() {
        let (info, _, modules) = start_info(128 * MIB, None);
        assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
        assert!(modules.is_empty());
    }
}
