//! Intel MultiProcessor Specification 1.4 tables, so the guest finds every
//! vCPU, the IOAPIC and the ISA interrupt routing without ACPI.
//!
//! Layout written at [`MPTABLE_ADDR`](super::layout::MPTABLE_ADDR): the
//! 16-byte floating pointer structure, directly followed by the configuration
//! table (44-byte header, then processor, bus, IOAPIC, I/O interrupt and local
//! interrupt entries). Both structures carry a byte checksum making their byte
//! sum zero.

use super::layout::{APIC_ADDR, BASE_MEM_END, IOAPIC_ADDR, IOAPIC_PINS};

pub const MPF_SIZE: usize = 16;
pub const HEADER_SIZE: usize = 44;
pub const PROCESSOR_SIZE: usize = 20;
pub const SMALL_ENTRY_SIZE: usize = 8;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IOINT: u8 = 3;
const ENTRY_LINT: u8 = 4;

const CPU_ENABLED: u8 = 1;
const CPU_BOOT_PROCESSOR: u8 = 2;
/// Integrated local APIC version (what KVM's LAPIC reports).
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const IOAPIC_ENABLED: u8 = 1;
/// Family 6, as the MP spec wants a CPU signature; Linux ignores it.
const CPU_SIGNATURE: u32 = 0x600;
/// FPU and on-chip APIC present.
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

/// [`IOAPIC_PINS`] as the u16 the table's entry count is.
const IOAPIC_PINS_U16: u16 = 24;
const _: () = assert!(IOAPIC_PINS_U16 as u32 == IOAPIC_PINS);

/// Highest number of CPUs the tables can describe: APIC IDs are one byte and
/// the IOAPIC takes the ID after the last CPU.
pub const MAX_CPUS: u8 = 254;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("MP table: {0} vCPUs is outside 1..={MAX_CPUS}")]
    CpuCount(u8),
    #[error("MP table: {0} bytes do not fit below 0xa0000")]
    TooLarge(usize),
}

/// Total size of the tables for `num_cpus` CPUs.
pub fn size(num_cpus: u8) -> usize {
    MPF_SIZE + HEADER_SIZE + table_entries_size(num_cpus)
}

fn table_entries_size(num_cpus: u8) -> usize {
    num_cpus as usize * PROCESSOR_SIZE
        + SMALL_ENTRY_SIZE // bus
        + SMALL_ENTRY_SIZE // IOAPIC
        + IOAPIC_PINS as usize * SMALL_ENTRY_SIZE
        + 2 * SMALL_ENTRY_SIZE // LINT0, LINT1
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the MP tables for `num_cpus` CPUs (APIC IDs 0..num_cpus, CPU 0 is
/// the boot processor), to be placed at guest physical address `addr`.
pub fn build(num_cpus: u8, addr: u64) -> Result<Vec<u8>, Error> {
    if num_cpus == 0 || num_cpus > MAX_CPUS {
        return Err(Error::CpuCount(num_cpus));
    }
    let total = size(num_cpus);
    if addr + total as u64 > BASE_MEM_END {
        return Err(Error::TooLarge(total));
    }
    let ioapic_id = num_cpus;
    let table_addr = addr + MPF_SIZE as u64;

    let mut t = Vec::with_capacity(total);
    // Floating pointer structure.
    t.extend_from_slice(b"_MP_");
    let table_addr = u32::try_from(table_addr).map_err(|_| Error::TooLarge(total))?;
    t.extend_from_slice(&table_addr.to_le_bytes());
    t.push(1); // length in 16-byte paragraphs
    t.push(4); // spec revision 1.4
    t.push(0); // checksum, below
    t.extend_from_slice(&[0; 5]); // feature bytes: a configuration table is present
    t[10] = checksum(&t[..MPF_SIZE]);

    // Configuration table header.
    // CPUs, bus, IOAPIC, its interrupts, LINT0 and LINT1.
    let entry_count = u16::from(num_cpus) + 2 + IOAPIC_PINS_U16 + 2;
    let base_len = u16::try_from(HEADER_SIZE + table_entries_size(num_cpus))
        .map_err(|_| Error::TooLarge(total))?;
    let h = t.len();
    t.extend_from_slice(b"PCMP");
    t.extend_from_slice(&base_len.to_le_bytes());
    t.push(4); // spec revision
    t.push(0); // checksum, below
    t.extend_from_slice(b"HUSK    "); // OEM id
    t.extend_from_slice(b"HUSK-VMM    "); // product id
    t.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    t.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    t.extend_from_slice(&entry_count.to_le_bytes());
    t.extend_from_slice(&APIC_ADDR.to_le_bytes());
    t.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    t.push(0); // extended table checksum
    t.push(0); // reserved
    debug_assert_eq!(t.len() - h, HEADER_SIZE);

    for id in 0..num_cpus {
        t.push(ENTRY_PROCESSOR);
        t.push(id); // local APIC id (= KVM vCPU id)
        t.push(APIC_VERSION);
        t.push(CPU_ENABLED | if id == 0 { CPU_BOOT_PROCESSOR } else { 0 });
        t.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        t.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        t.extend_from_slice(&[0; 8]);
    }
    t.extend_from_slice(&[ENTRY_BUS, 0]);
    t.extend_from_slice(b"ISA   ");
    t.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, IOAPIC_ENABLED]);
    t.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    // ISA IRQ n -> IOAPIC pin n, matching KVM's default GSI routing;
    // flags 0 = conforms to the bus (edge, active high).
    for irq in (0..=u8::MAX).take(IOAPIC_PINS as usize) {
        t.extend_from_slice(&[ENTRY_IOINT, INT_TYPE_INT, 0, 0, 0, irq, ioapic_id, irq]);
    }
    // LINT0 = ExtINT (the 8259 PIC), LINT1 = NMI, on every local APIC.
    t.extend_from_slice(&[ENTRY_LINT, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    t.extend_from_slice(&[ENTRY_LINT, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    debug_assert_eq!(t.len(), total);

    t[h + 7] = checksum(&t[h..]);
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::layout::MPTABLE_ADDR;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes([b[o], b[o + 1]])
    }

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }

    #[test]
    fn checksums_are_zero() {
        for n in [1u8, 2, 7, 32, MAX_CPUS] {
            let t = build(n, 0x1000).unwrap();
            assert_eq!(t.len(), size(n));
            assert_eq!(sum(&t[..MPF_SIZE]), 0, "MPF checksum, {n} cpus");
            assert_eq!(sum(&t[MPF_SIZE..]), 0, "table checksum, {n} cpus");
        }
    }

    #[test]
    fn layout_and_entries() {
        let n = 4;
        let t = build(n, MPTABLE_ADDR).unwrap();
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(u32_at(&t, 4) as u64, MPTABLE_ADDR + 16);
        assert_eq!(t[8], 1);
        assert_eq!(t[9], 4);
        let c = &t[MPF_SIZE..];
        assert_eq!(&c[0..4], b"PCMP");
        assert_eq!(u16_at(c, 4) as usize, c.len());
        let count = u16_at(c, 34) as usize;
        assert_eq!(count, n as usize + 1 + 1 + 24 + 2);
        assert_eq!(u32_at(c, 36), 0xfee0_0000);

        // Walk the entries like a guest would.
        let mut off = HEADER_SIZE;
        let mut cpus = vec![];
        let mut ioapic = None;
        let mut ioints = 0;
        let mut lints = vec![];
        for _ in 0..count {
            match c[off] {
                0 => {
                    cpus.push((c[off + 1], c[off + 3]));
                    off += PROCESSOR_SIZE;
                }
                1 => {
                    assert_eq!(&c[off + 2..off + 8], b"ISA   ");
                    off += 8;
                }
                2 => {
                    ioapic = Some((c[off + 1], u32_at(c, off + 4)));
                    off += 8;
                }
                3 => {
                    assert_eq!(c[off + 5], c[off + 7], "ISA irq maps to the same pin");
                    assert_eq!(c[off + 6], n, "routed to the IOAPIC");
                    ioints += 1;
                    off += 8;
                }
                4 => {
                    lints.push((c[off + 1], c[off + 7]));
                    off += 8;
                }
                t => panic!("unknown entry type {t}"),
            }
        }
        assert_eq!(off, c.len());
        assert_eq!(cpus, vec![(0, 3), (1, 1), (2, 1), (3, 1)]);
        assert_eq!(ioapic, Some((n, 0xfec0_0000)));
        assert_eq!(ioints, 24);
        assert_eq!(lints, vec![(3, 0), (1, 1)]);
    }

    #[test]
    fn fits_in_the_ebda_for_32_cpus() {
        assert!(build(32, MPTABLE_ADDR).is_ok());
        assert!(MPTABLE_ADDR + size(32) as u64 <= BASE_MEM_END);
    }

    #[test]
    fn rejects_bad_counts_and_overflow() {
        assert_eq!(build(0, 0x1000), Err(Error::CpuCount(0)));
        assert_eq!(build(255, 0x1000), Err(Error::CpuCount(255)));
        assert!(matches!(build(200, MPTABLE_ADDR), Err(Error::TooLarge(_))));
    }
}
