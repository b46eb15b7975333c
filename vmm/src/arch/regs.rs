//! Initial vCPU state for the PVH boot protocol: 32-bit protected mode with
//! paging off, flat segments from a small GDT, EBX = hvm_start_info.

use kvm_bindings::{
    kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs,
};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{GDT_ADDR, IDT_ADDR, PVH_INFO_ADDR};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("vCPU setup: {0}: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    #[error("vCPU setup: KVM rejected boot MSR {0:#x}")]
    Msr(u32),
    #[error("vCPU setup: cannot build the MSR list")]
    MsrList,
    #[error("vCPU setup: writing the GDT to guest memory: {0}")]
    Gdt(vm_memory::GuestMemoryError),
}

/// Flat 4 GiB 32-bit code, flat data, and a 32-bit busy TSS.
pub const GDT: [u64; 4] = [
    0,
    gdt_entry(0xc09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x008b, 0, 0x67),
];
/// The GDT's limit: its size in bytes, minus one.
const GDT_LIMIT: u16 = 4 * 8 - 1;
const _: () = assert!(GDT.len() * 8 - 1 == GDT_LIMIT as usize);
const CODE_INDEX: u8 = 1;
const DATA_INDEX: u8 = 2;
const TSS_INDEX: u8 = 3;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;

/// Encodes a segment descriptor. `flags` holds the access byte in bits 0..8
/// and the G/DB/L/AVL nibble in bits 12..16.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (flags as u64, base as u64, limit as u64);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// The KVM segment register (with its hidden cache) that loading selector
/// `index * 8` from a GDT holding `entry` produces.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let g = bit(55);
    let raw_limit = (entry & 0xffff) as u32 | ((entry >> 32) & 0xf_0000) as u32;
    let present = bit(47);
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index as u16 * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g,
        avl: bit(52),
        unusable: if present == 1 { 0 } else { 1 },
        padding: 0,
    }
}

/// Writes the GDT and an empty IDT to guest memory.
pub fn write_gdt(mem: &GuestMemoryMmap) -> Result<(), Error> {
    for (i, e) in GDT.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + i as u64 * 8))
            .map_err(Error::Gdt)?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(Error::Gdt)
}

/// Fills the segment, descriptor-table and control registers for PVH entry.
pub fn pvh_sregs(sregs: &mut kvm_sregs) {
    let code = segment_from_gdt(GDT[CODE_INDEX as usize], CODE_INDEX);
    let data = segment_from_gdt(GDT[DATA_INDEX as usize], DATA_INDEX);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(GDT[TSS_INDEX as usize], TSS_INDEX);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = GDT_LIMIT;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    // Protected mode, paging and caches as the kernel expects them: CD/NW
    // clear so guest memory is cacheable from the first instruction.
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
}

/// Sets up the boot vCPU's registers to enter the kernel at `entry`.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, entry: u64) -> Result<(), Error> {
    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rbx: PVH_INFO_ADDR,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| Error::Kvm("KVM_SET_REGS", e))?;

    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| Error::Kvm("KVM_GET_SREGS", e))?;
    pvh_sregs(&mut sregs);
    vcpu.set_sregs(&sregs)
        .map_err(|e| Error::Kvm("KVM_SET_SREGS", e))?;

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|e| Error::Kvm("KVM_SET_FPU", e))
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// MTRRs enabled, default memory type write-back.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

/// The MSR values every vCPU starts with.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), Error> {
    let entries = boot_msrs();
    let msrs = Msrs::from_entries(&entries).map_err(|_| Error::MsrList)?;
    let n = vcpu
        .set_msrs(&msrs)
        .map_err(|e| Error::Kvm("KVM_SET_MSRS", e))?;
    // KVM_SET_MSRS stops at the first MSR it rejects.
    if let Some(bad) = entries.get(n) {
        return Err(Error::Msr(bad.index));
    }
    Ok(())
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn lapic_reg(l: &kvm_lapic_state, off: usize) -> u32 {
    let b = |i: usize| l.regs[off + i].to_ne_bytes()[0];
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set_lapic_reg(l: &mut kvm_lapic_state, off: usize, v: u32) {
    for (i, b) in v.to_le_bytes().iter().enumerate() {
        l.regs[off + i] = i8::from_ne_bytes([*b]);
    }
}

fn set_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// LINT0 = ExtINT (the PIC), LINT1 = NMI, as the MP table says.
pub fn lapic_lints(l: &mut kvm_lapic_state) {
    let v0 = lapic_reg(l, APIC_LVT0);
    set_lapic_reg(l, APIC_LVT0, set_delivery_mode(v0, APIC_MODE_EXTINT));
    let v1 = lapic_reg(l, APIC_LVT1);
    set_lapic_reg(l, APIC_LVT1, set_delivery_mode(v1, APIC_MODE_NMI));
}

pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), Error> {
    let mut l = vcpu
        .get_lapic()
        .map_err(|e| Error::Kvm("KVM_GET_LAPIC", e))?;
    lapic_lints(&mut l);
    vcpu.set_lapic(&l)
        .map_err(|e| Error::Kvm("KVM_SET_LAPIC", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_encoding() {
        // Well-known descriptor values.
        assert_eq!(GDT[1], 0x00cf_9b00_0000_ffff);
        assert_eq!(GDT[2], 0x00cf_9300_0000_ffff);
        assert_eq!(GDT[3], 0x0000_8b00_0000_0067);
        assert_eq!(
            gdt_entry(0xa09b, 0x1234_5678, 0xfffff),
            0x12af_9b34_5678_ffff
        );
    }

    #[test]
    fn segments_from_gdt() {
        let cs = segment_from_gdt(GDT[1], 1);
        assert_eq!((cs.base, cs.limit, cs.selector), (0, 0xffff_ffff, 8));
        assert_eq!(
            (cs.type_, cs.present, cs.dpl, cs.db, cs.s, cs.l, cs.g),
            (0xb, 1, 0, 1, 1, 0, 1)
        );
        assert_eq!(cs.unusable, 0);
        let tr = segment_from_gdt(GDT[3], 3);
        assert_eq!(
            (tr.limit, tr.selector, tr.type_, tr.s, tr.g),
            (0x67, 24, 0xb, 0, 0)
        );
        let null = segment_from_gdt(0, 0);
        assert_eq!(null.unusable, 1);
        let odd = segment_from_gdt(gdt_entry(0xa09b, 0x1234_5678, 0xfffff), 1);
        assert_eq!((odd.base, odd.l, odd.db), (0x1234_5678, 1, 0));
    }

    #[test]
    fn pvh_entry_state() {
        let mut s = kvm_sregs {
            cr0: 0x6000_0010,
            cr4: 0x20,
            efer: 0x500,
            ..Default::default()
        };
        pvh_sregs(&mut s);
        assert_eq!(s.cr0 & 1, 1, "protected mode");
        assert_eq!(s.cr0 & (1 << 31), 0, "paging off");
        assert_eq!(s.cr0 & (3 << 29), 0, "caches enabled");
        assert_eq!((s.cr4, s.efer), (0, 0));
        assert_eq!(s.ss.selector, 16);
        assert_eq!(s.gdt.limit, 31);
    }

    #[test]
    fn lapic_lint_modes() {
        let mut l = kvm_lapic_state { regs: [0; 1024] };
        set_lapic_reg(&mut l, APIC_LVT0, 0x1_0700);
        set_lapic_reg(&mut l, APIC_LVT1, 0x1_0000);
        lapic_lints(&mut l);
        assert_eq!(lapic_reg(&l, APIC_LVT0), 0x1_0700);
        assert_eq!(lapic_reg(&l, APIC_LVT1), 0x1_0400);
    }

    #[test]
    fn msrs_enable_mtrrs() {
        let m = boot_msrs();
        let def = m.iter().find(|e| e.index == MSR_MTRR_DEF_TYPE).unwrap();
        assert_eq!(def.data, 0x806);
    }
}
