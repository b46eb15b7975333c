//! Guest physical address map.
//!
//! ```text
//! 0x0000_0500  GDT (4 entries), then a null IDT at 0x520
//! 0x0000_6000  PVH hvm_start_info, modlist at 0x6040
//! 0x0000_7000  PVH memory map
//! 0x0002_0000  kernel command line (2 KiB)
//! 0x0009_fc00  MP table (EBDA, reserved in the memory map)
//! 0x0010_0000  high memory: the kernel (ELF p_paddr, usually 16 MiB) ... initrd at the top
//! 0xc000_0000  MMIO gap up to 4 GiB: virtio-mmio at 0xd000_0000, IOAPIC, LAPIC, KVM TSS
//! 0x1_0000_0000 RAM above 3 GiB continues here
//! ```

use vm_memory::GuestAddress;

use crate::cast::usize_from;

pub const GDT_ADDR: u64 = 0x500;
pub const IDT_ADDR: u64 = 0x520;
pub const PVH_INFO_ADDR: u64 = 0x6000;
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
pub const PVH_MEMMAP_ADDR: u64 = 0x7000;
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// x86 `COMMAND_LINE_SIZE`, including the terminating NUL.
pub const CMDLINE_MAX: usize = 2048;
/// Start of the (fake) extended BIOS data area; the MP table lives here, where
/// Linux's `smp_scan_config` looks for it (the last KiB of base memory).
pub const EBDA_START: u64 = 0x9_fc00;
pub const MPTABLE_ADDR: u64 = EBDA_START;
/// End of base memory (start of the legacy VGA/BIOS hole).
pub const BASE_MEM_END: u64 = 0xa_0000;
pub const HIMEM_START: u64 = 0x10_0000;
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 1 << 32;
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
pub const VIRTIO_GSI_BASE: u32 = 5;
/// Number of IOAPIC pins (GSIs 0..=23) in KVM's in-kernel IOAPIC.
pub const IOAPIC_PINS: u32 = 24;
/// virtio devices get GSIs 5..=23.
pub const MAX_VIRTIO_DEVICES: usize = (IOAPIC_PINS - VIRTIO_GSI_BASE) as usize;
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
pub const APIC_ADDR: u32 = 0xfee0_0000;
/// Three pages KVM needs for the real-mode TSS on Intel (VMX), in the MMIO gap.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// One page for KVM's identity map (VMX, unrestricted guest off), just below the TSS.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

pub const SERIAL_PORT: u16 = 0x3f8;
pub const SERIAL_PORT_LEN: u64 = 8;
pub const SERIAL_GSI: u32 = 4;
pub const I8042_PORT: u16 = 0x60;
/// 0x60 (data) to 0x64 (command/status).
pub const I8042_PORT_LEN: u64 = 5;
/// The i8042 keyboard interrupt (IRQ 1).
pub const I8042_KBD_GSI: u32 = 1;

pub const MIB: u64 = 1 << 20;

/// Base address of the `index`th virtio-mmio device and its GSI. The
/// configuration allows at most [`MAX_VIRTIO_DEVICES`].
pub fn virtio_slot(index: usize) -> (u64, u32) {
    assert!(
        index < MAX_VIRTIO_DEVICES,
        "virtio slot {index} out of range"
    );
    let i = u32::try_from(index).expect("below MAX_VIRTIO_DEVICES");
    (
        VIRTIO_MMIO_BASE + u64::from(i) * VIRTIO_MMIO_SIZE,
        VIRTIO_GSI_BASE + i,
    )
}

/// Guest RAM ranges for `mem_bytes` of memory: one range below the MMIO gap,
/// and the remainder above 4 GiB.
pub fn ram_ranges(mem_bytes: u64) -> Vec<(GuestAddress, usize)> {
    if mem_bytes <= MMIO_GAP_START {
        vec![(GuestAddress(0), usize_from(mem_bytes))]
    } else {
        vec![
            (GuestAddress(0), usize_from(MMIO_GAP_START)),
            (
                GuestAddress(MMIO_GAP_END),
                usize_from(mem_bytes - MMIO_GAP_START),
            ),
        ]
    }
}

/// End of the RAM range that starts at 0 (the kernel, initrd and all boot
/// structures live below it).
pub fn low_ram_end(mem_bytes: u64) -> u64 {
    mem_bytes.min(MMIO_GAP_START)
}

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The memory map handed to the guest: base memory, the EBDA (reserved, it
/// holds the MP table), high memory below the MMIO gap, and RAM above 4 GiB.
pub fn e820_map(mem_bytes: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: BASE_MEM_END - EBDA_START,
            kind: E820_RESERVED,
        },
        E820Entry {
            addr: HIMEM_START,
            size: low_ram_end(mem_bytes) - HIMEM_START,
            kind: E820_RAM,
        },
    ];
    if mem_bytes > MMIO_GAP_START {
        map.push(E820Entry {
            addr: MMIO_GAP_END,
            size: mem_bytes - MMIO_GAP_START,
            kind: E820_RAM,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range() {
        assert_eq!(
            ram_ranges(128 * MIB),
            vec![(GuestAddress(0), usize_from(128 * MIB))]
        );
        assert_eq!(low_ram_end(128 * MIB), 128 * MIB);
    }

    #[test]
    fn large_memory_skips_the_mmio_gap() {
        let mem = 4096 * MIB;
        let r = ram_ranges(mem);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (GuestAddress(0), 0xc000_0000));
        assert_eq!(r[1], (GuestAddress(1 << 32), 1 << 30));
        let total: usize = r.iter().map(|r| r.1).sum();
        assert_eq!(total as u64, mem);
        assert_eq!(low_ram_end(mem), MMIO_GAP_START);
        // The gap holds every MMIO address we hand out.
        let (last, _) = virtio_slot(MAX_VIRTIO_DEVICES - 1);
        assert!(last >= MMIO_GAP_START && last + VIRTIO_MMIO_SIZE <= IOAPIC_ADDR as u64);
        assert!(KVM_IDENTITY_MAP_ADDR > APIC_ADDR as u64);
    }

    #[test]
    fn e820_small() {
        let m = e820_map(128 * MIB);
        assert_eq!(
            m,
            vec![
                E820Entry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: 0x9fc00,
                    size: 0x400,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: 0x100000,
                    size: 128 * MIB - 0x100000,
                    kind: E820_RAM
                },
            ]
        );
    }

    #[test]
    fn e820_large_is_sorted_and_disjoint() {
        let mem = 6144 * MIB;
        let m = e820_map(mem);
        assert_eq!(m.len(), 4);
        for w in m.windows(2) {
            assert!(w[0].addr + w[0].size <= w[1].addr);
        }
        assert_eq!(m[2].addr + m[2].size, MMIO_GAP_START);
        assert_eq!(
            m[3],
            E820Entry {
                addr: 1 << 32,
                size: mem - MMIO_GAP_START,
                kind: E820_RAM
            }
        );
        let ram: u64 = m
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        // Everything except the EBDA and the 0xa0000..1M hole is usable RAM.
        assert_eq!(ram, mem - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn virtio_slots() {
        assert_eq!(virtio_slot(0), (0xd000_0000, 5));
        assert_eq!(virtio_slot(2), (0xd000_2000, 7));
        assert_eq!(virtio_slot(MAX_VIRTIO_DEVICES - 1).1, 23);
    }
}
