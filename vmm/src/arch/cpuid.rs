//! Per-vCPU adjustment of the CPUID table KVM supports.
//!
//! Every vCPU is modelled as one core of a single package with one thread per
//! core; its APIC ID equals its KVM vCPU id. The leaves that report topology
//! (1, 4, 0xB, 0x1F, and AMD's 0x8000_0008 / 0x8000_001E) are rewritten to
//! say exactly that, so Linux's topology code agrees with the MP table.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Intel,
    Amd,
    Other,
}

const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;

const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// The CPU vendor from leaf 0.
pub fn vendor(entries: &[kvm_cpuid_entry2]) -> Vendor {
    let Some(e) = entries.iter().find(|e| e.function == 0) else {
        return Vendor::Other;
    };
    let mut id = [0u8; 12];
    id[0..4].copy_from_slice(&e.ebx.to_le_bytes());
    id[4..8].copy_from_slice(&e.edx.to_le_bytes());
    id[8..12].copy_from_slice(&e.ecx.to_le_bytes());
    match &id {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

/// Number of bits needed to hold `count` distinct ids (ceil(log2(count))).
fn id_bits(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

fn topology_leaf(function: u32, apic_id: u32, cpu_count: u32) -> [kvm_cpuid_entry2; 3] {
    let entry = |index: u32, eax: u32, ebx: u32, ecx: u32| kvm_cpuid_entry2 {
        function,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx,
        edx: apic_id,
        padding: [0; 3],
    };
    [
        // SMT level: one thread per core, so no APIC ID bits.
        entry(0, 0, 1, LEVEL_TYPE_SMT << 8),
        // Core level: all vCPUs of the package.
        entry(1, id_bits(cpu_count), cpu_count, 1 | (LEVEL_TYPE_CORE << 8)),
        // Terminating invalid level.
        entry(2, 0, 0, 2),
    ]
}

/// Rewrites `entries` (from KVM_GET_SUPPORTED_CPUID) for the vCPU with APIC
/// id `cpu_id` out of `cpu_count`.
pub fn adjust(entries: &mut Vec<kvm_cpuid_entry2>, cpu_id: u8, cpu_count: u8, tsc_deadline: bool) {
    let vendor = vendor(entries);
    let apic_id = cpu_id as u32;
    let count = cpu_count.max(1) as u32;
    let max_basic = entries
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);

    for e in entries.iter_mut() {
        match e.function {
            1 => {
                // EBX: [31:24] initial APIC id, [23:16] logical processors per
                // package, [15:8] CLFLUSH line size in quadwords.
                e.ebx = (apic_id << 24) | (count << 16) | (8 << 8) | (e.ebx & 0xff);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                if tsc_deadline {
                    e.ecx |= LEAF1_ECX_TSC_DEADLINE;
                }
                if count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            4 if vendor == Vendor::Intel => {
                // Deterministic cache parameters: [31:26] cores per package
                // - 1, [25:14] logical processors sharing this cache - 1.
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | (sharing << 14) | ((count - 1) << 26);
            }
            0xa => {
                // No virtual PMU: keeps the guest from probing perf MSRs at boot.
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0x8000_0008 if vendor == Vendor::Amd => {
                // ECX [15:12] APIC id size, [7:0] number of cores - 1.
                e.ecx = (e.ecx & !0xf0ff) | (id_bits(count) << 12) | (count - 1);
            }
            0x8000_001e if vendor == Vendor::Amd => {
                e.eax = apic_id;
                // [15:8] threads per core - 1 = 0, [7:0] core id.
                e.ebx = apic_id & 0xff;
                // One node per package.
                e.ecx = 0;
                e.edx = 0;
            }
            _ => {}
        }
    }

    for leaf in [0xb, 0x1f] {
        let present = entries.iter().any(|e| e.function == leaf);
        if leaf <= max_basic && (present || leaf == 0xb) {
            entries.retain(|e| e.function != leaf);
            entries.extend_from_slice(&topology_leaf(leaf, apic_id, count));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags: 0,
            eax,
            ebx,
            ecx,
            edx,
            padding: [0; 3],
        }
    }

    fn vendor_leaf(max: u32, id: &[u8; 12]) -> kvm_cpuid_entry2 {
        let w = |i: usize| u32::from_le_bytes(id[i..i + 4].try_into().unwrap());
        e(0, 0, max, w(0), w(8), w(4))
    }

    fn intel_table() -> Vec<kvm_cpuid_entry2> {
        vec![
            vendor_leaf(0x1f, b"GenuineIntel"),
            e(1, 0, 0x906ea, 0xff_ff_08_00 | 0x55, 0, LEAF1_EDX_HTT),
            e(4, 0, 0x121, 0, 0, 0),
            e(4, 1, 0x122, 0, 0, 0),
            e(4, 2, 0x143, 0, 0, 0),
            e(4, 3, 0x163, 0, 0, 0),
            e(0xa, 0, 0x07300404, 1, 2, 3),
            e(0xb, 0, 1, 2, 0x100, 9),
            e(0xb, 1, 4, 12, 0x201, 9),
            e(0x1f, 0, 1, 2, 0x100, 9),
        ]
    }

    fn get(t: &[kvm_cpuid_entry2], f: u32, i: u32) -> kvm_cpuid_entry2 {
        *t.iter()
            .find(|x| x.function == f && x.index == i)
            .unwrap_or_else(|| panic!("leaf {f:#x}.{i}"))
    }

    #[test]
    fn vendors() {
        assert_eq!(vendor(&intel_table()), Vendor::Intel);
        assert_eq!(vendor(&[vendor_leaf(0xd, b"AuthenticAMD")]), Vendor::Amd);
        assert_eq!(vendor(&[vendor_leaf(0xd, b"HygonGenuine")]), Vendor::Amd);
        assert_eq!(vendor(&[vendor_leaf(0xd, b"SomethingNew")]), Vendor::Other);
        assert_eq!(vendor(&[]), Vendor::Other);
    }

    #[test]
    fn id_bits_is_ceil_log2() {
        assert_eq!(
            [1, 2, 3, 4, 5, 8, 9, 32].map(id_bits),
            [0, 1, 2, 2, 3, 3, 4, 5]
        );
    }

    #[test]
    fn leaf1_per_vcpu() {
        for (id, count) in [(0u8, 1u8), (3, 4), (31, 32)] {
            let mut t = intel_table();
            adjust(&mut t, id, count, true);
            let l1 = get(&t, 1, 0);
            assert_eq!(l1.ebx >> 24, id as u32, "APIC id");
            assert_eq!((l1.ebx >> 16) & 0xff, count as u32, "logical count");
            assert_eq!((l1.ebx >> 8) & 0xff, 8, "clflush");
            assert_eq!(l1.ebx & 0xff, 0x55, "brand index kept");
            assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
            assert_ne!(l1.ecx & LEAF1_ECX_TSC_DEADLINE, 0);
            assert_eq!(l1.edx & LEAF1_EDX_HTT != 0, count > 1);
        }
        let mut t = intel_table();
        adjust(&mut t, 0, 1, false);
        assert_eq!(get(&t, 1, 0).ecx & LEAF1_ECX_TSC_DEADLINE, 0);
    }

    #[test]
    fn extended_topology_is_consistent() {
        let mut t = intel_table();
        adjust(&mut t, 5, 6, false);
        for leaf in [0xb, 0x1f] {
            let smt = get(&t, leaf, 0);
            let core = get(&t, leaf, 1);
            let end = get(&t, leaf, 2);
            assert_eq!((smt.eax, smt.ebx, (smt.ecx >> 8) & 0xff), (0, 1, 1));
            assert_eq!((core.eax, core.ebx, (core.ecx >> 8) & 0xff), (3, 6, 2));
            assert_eq!(core.ecx & 0xff, 1);
            assert_eq!((end.ebx, (end.ecx >> 8) & 0xff), (0, 0));
            for x in [smt, core, end] {
                assert_eq!(x.edx, 5, "x2APIC id");
                assert_eq!(x.flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
            }
            assert_eq!(t.iter().filter(|x| x.function == leaf).count(), 3);
        }
        // Cache leaf: 6 cores; L1/L2 per core, L3 shared by all.
        assert_eq!(get(&t, 4, 0).eax >> 26, 5);
        assert_eq!((get(&t, 4, 1).eax >> 14) & 0xfff, 0);
        assert_eq!((get(&t, 4, 3).eax >> 14) & 0xfff, 5);
        assert_eq!(get(&t, 4, 3).eax & 0x3fff, 0x163);
        // PMU hidden.
        let pmu = get(&t, 0xa, 0);
        assert_eq!((pmu.eax, pmu.ebx, pmu.ecx, pmu.edx), (0, 0, 0, 0));
    }

    #[test]
    fn leaf_0xb_added_when_in_range_but_missing() {
        let mut t = vec![vendor_leaf(0xd, b"GenuineIntel"), e(1, 0, 0, 0, 0, 0)];
        adjust(&mut t, 1, 2, false);
        assert_eq!(get(&t, 0xb, 1).ebx, 2);
        assert!(
            !t.iter().any(|x| x.function == 0x1f),
            "0x1f is above the max leaf"
        );

        let mut t = vec![vendor_leaf(0x7, b"GenuineIntel"), e(1, 0, 0, 0, 0, 0)];
        adjust(&mut t, 1, 2, false);
        assert!(
            !t.iter().any(|x| x.function == 0xb),
            "0xb is above the max leaf"
        );
    }

    #[test]
    fn amd_topology() {
        let mut t = vec![
            vendor_leaf(0x10, b"AuthenticAMD"),
            e(1, 0, 0, 0, 0, 0),
            e(4, 0, 0x121, 0, 0, 0),
            e(0x8000_0008, 0, 0x3030, 0, 0x1_7007, 0),
            e(0x8000_001e, 0, 9, 9, 9, 9),
        ];
        adjust(&mut t, 2, 3, false);
        let l = get(&t, 0x8000_0008, 0);
        assert_eq!(l.ecx & 0xff, 2);
        assert_eq!((l.ecx >> 12) & 0xf, 2);
        assert_eq!(l.ecx & !0xf0ff, 0x1_0000, "other ECX bits untouched");
        let x = get(&t, 0x8000_001e, 0);
        assert_eq!((x.eax, x.ebx, x.ecx), (2, 2, 0));
        // Leaf 4 is Intel-only.
        assert_eq!(get(&t, 4, 0).eax, 0x121);
    }
}
