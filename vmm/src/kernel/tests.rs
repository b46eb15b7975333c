use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use linux_loader::elf::{EM_X86_64, PT_LOAD, PT_NOTE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::elf::{find_pvh_note, EHDR_SIZE, PHDR_SIZE, XEN_ELFNOTE_PHYS32_ENTRY};
use super::*;
use crate::arch::layout::{self, MIB};
use crate::arch::pvh::Initrd;
use crate::arch::ram::{self, Backing};
use crate::cast::usize_from;

/// A minimal vmlinux-like ELF: one PT_LOAD at 16 MiB with `code`, and a
/// PT_NOTE with an unrelated note followed by the PVH entry note.
pub(crate) fn tiny_elf(entry: u32, code: &[u8], with_pvh: bool) -> Vec<u8> {
    let mut notes = vec![];
    let mut note = |name: &[u8], ntype: u32, desc: &[u8]| {
        notes.extend_from_slice(&u32::try_from(name.len()).unwrap().to_le_bytes());
        notes.extend_from_slice(&u32::try_from(desc.len()).unwrap().to_le_bytes());
        notes.extend_from_slice(&ntype.to_le_bytes());
        notes.extend_from_slice(name);
        notes.resize(notes.len().div_ceil(4) * 4, 0);
        notes.extend_from_slice(desc);
        notes.resize(notes.len().div_ceil(4) * 4, 0);
    };
    note(b"GNU\0", 3, &[1, 2, 3, 4, 5]);
    if with_pvh {
        note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &entry.to_le_bytes());
    }
    let phoff = EHDR_SIZE as u64;
    let notes_off = phoff + 2 * PHDR_SIZE as u64;
    let code_off = 0x1000u64;
    let mut f = vec![0u8; usize_from(code_off)];
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2;
    f[5] = 1;
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // e_entry
    f[32..40].copy_from_slice(&phoff.to_le_bytes());
    f[52..54].copy_from_slice(&u16::try_from(EHDR_SIZE).unwrap().to_le_bytes());
    f[54..56].copy_from_slice(&u16::try_from(PHDR_SIZE).unwrap().to_le_bytes());
    f[56..58].copy_from_slice(&2u16.to_le_bytes());
    let mut ph = |i: usize, t: u32, off: u64, addr: u64, filesz: u64, memsz: u64| {
        let o = usize_from(phoff) + i * PHDR_SIZE;
        f[o..o + 4].copy_from_slice(&t.to_le_bytes());
        f[o + 8..o + 16].copy_from_slice(&off.to_le_bytes());
        f[o + 16..o + 24].copy_from_slice(&(addr | 0xffff_ffff_8000_0000).to_le_bytes());
        f[o + 24..o + 32].copy_from_slice(&addr.to_le_bytes());
        f[o + 32..o + 40].copy_from_slice(&filesz.to_le_bytes());
        f[o + 40..o + 48].copy_from_slice(&memsz.to_le_bytes());
    };
    ph(
        0,
        PT_LOAD,
        code_off,
        0x100_0000,
        code.len() as u64,
        code.len() as u64 + 0x2000,
    );
    ph(
        1,
        PT_NOTE,
        notes_off,
        0,
        notes.len() as u64,
        notes.len() as u64,
    );
    f[usize_from(notes_off)..usize_from(notes_off) + notes.len()].copy_from_slice(&notes);
    f.extend_from_slice(code);
    f
}

pub(crate) fn write_tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("husk-kernel-test-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn valid_kernel() {
    let p = write_tmp("ok", &tiny_elf(0x100_0040, &[0x90; 100], true));
    let info = inspect_kernel(&p).unwrap();
    assert_eq!(
        info,
        KernelInfo {
            pvh_entry: 0x100_0040,
            end: 0x100_0000 + 100 + 0x2000,
            segments: vec![Segment {
                offset: 0x1000,
                paddr: 0x100_0000,
                filesz: 100,
                memsz: 100 + 0x2000
            }]
        }
    );

    // The code lands at p_paddr, in private and in shared (memfd) RAM;
    // bss stays zero.
    for backing in [Backing::Anonymous, Backing::SharedMemfd] {
        let ram::GuestRam { mem, mappings } =
            ram::create(&[(GuestAddress(0), usize_from(64 * MIB))], backing).unwrap();
        assert_eq!(load_kernel(&mem, &p).unwrap(), 0x100_0040);
        let b: u8 = mem.read_obj(GuestAddress(0x100_0063)).unwrap();
        assert_eq!(b, 0x90, "{backing:?}");
        let b: u8 = mem.read_obj(GuestAddress(0x100_0064)).unwrap();
        assert_eq!(b, 0, "{backing:?}");
        drop(mem);
        for m in mappings {
            // SAFETY: the guest memory view was dropped above.
            unsafe { m.unmap() };
        }
    }
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn missing_kernel() {
    let p = Path::new("/nonexistent/husk/vmlinux");
    assert_eq!(
        inspect_kernel(p).unwrap_err().to_string(),
        "kernel: /nonexistent/husk/vmlinux: not found"
    );
    let dir = std::env::temp_dir();
    let e = inspect_kernel(&dir).unwrap_err().to_string();
    assert!(e.ends_with(": not a regular file"), "{e}");
}

#[test]
fn non_elf_and_corrupt_kernels() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "not an ELF file (0 bytes)"),
        ("bzimage", {
            let mut v = vec![0u8; 4096];
            v[0x202..0x206].copy_from_slice(b"HdrS");
            v
        }, "a bzImage, not an ELF vmlinux; husk boots the uncompressed vmlinux"),
        ("text", b"#!/bin/sh\necho hi\n".repeat(8), "not an ELF file (bad magic); husk boots an uncompressed vmlinux"),
        ("elf32", {
            let mut v = tiny_elf(0x100_0000, &[0; 16], true);
            v[4] = 1;
            v
        }, "not a 64-bit little-endian x86_64 ELF file"),
        ("truncated", {
            let v = tiny_elf(0x100_0000, &[0; 4096], true);
            v[..v.len() - 100].to_vec()
        }, "truncated ELF file (segment 0 past the end)"),
        ("phnum", {
            let mut v = tiny_elf(0x100_0000, &[0; 16], true);
            v[56..58].copy_from_slice(&0u16.to_le_bytes());
            v
        }, "corrupt ELF header (phentsize 56, phnum 0)"),
        ("phoff", {
            let mut v = tiny_elf(0x100_0000, &[0; 16], true);
            v[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
            v
        }, "truncated ELF file (program headers past the end)"),
        ("lowload", {
            let mut v = tiny_elf(0x100_0000, &[0; 16], true);
            let o = EHDR_SIZE + 24;
            v[o..o + 8].copy_from_slice(&0x1000u64.to_le_bytes());
            v
        }, "corrupt ELF file (segment 0 at 0x1000+0x2010)"),
        ("nopvh", tiny_elf(0, &[0; 16], false),
         "no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY note); build the kernel with CONFIG_PVH=y"),
    ];
    for (name, bytes, want) in cases {
        let p = write_tmp(name, &bytes);
        let e = inspect_kernel(&p).unwrap_err().to_string();
        assert_eq!(e, format!("kernel: {}: {want}", p.display()), "case {name}");
        std::fs::remove_file(&p).unwrap();
    }
}

#[test]
fn hostile_notes_do_not_panic() {
    assert_eq!(find_pvh_note(&[]), None);
    let mut n = vec![0xffu8; 12];
    n.extend_from_slice(&[0; 8]);
    assert_eq!(find_pvh_note(&n), None);
    let mut n = vec![];
    n.extend_from_slice(&4u32.to_le_bytes());
    n.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
    n.extend_from_slice(&18u32.to_le_bytes());
    n.extend_from_slice(b"Xen\0");
    assert_eq!(find_pvh_note(&n), None);
}

#[test]
fn initrd_checks() {
    let p = Path::new("/nonexistent/initramfs.img");
    assert_eq!(
        inspect_initrd(p).unwrap_err().to_string(),
        "initrd: /nonexistent/initramfs.img: not found"
    );
    let e = write_tmp("empty-initrd", b"");
    assert!(inspect_initrd(&e)
        .unwrap_err()
        .to_string()
        .ends_with(": empty file"));
    std::fs::remove_file(&e).unwrap();
}

#[test]
fn initrd_placement() {
    let mem = 128 * MIB;
    let a = initrd_addr(0x200_0000, mem, 5000).unwrap();
    assert_eq!(a % PAGE, 0);
    assert!(a + 5000 <= mem - PAGE);
    assert!(a + 5000 + PAGE > mem - PAGE, "as high as possible");
    assert_eq!(initrd_addr(0x200_0000, mem, mem), None);
    // Touching the kernel end is rejected; right above it is fine.
    let k = KernelInfo {
        pvh_entry: 0,
        end: 0x400_0000,
        segments: vec![],
    };
    let size = mem - PAGE - 0x400_0000;
    assert_eq!(check_fit(&k, size, mem).unwrap(), 0x400_0000);
    let e = check_fit(&k, size + 1, mem).unwrap_err().to_string();
    assert_eq!(
        e,
        "memory: kernel (64 MiB) and initrd (64 MiB) do not fit in 128 MiB"
    );
    let big = KernelInfo {
        pvh_entry: 0,
        end: 200 * MIB,
        segments: vec![],
    };
    assert!(check_fit(&big, 1, mem)
        .unwrap_err()
        .to_string()
        .starts_with("memory: the kernel needs 200 MiB"));
}

#[test]
fn initrd_loads_into_memory() {
    // Several pages and a partial one, so the shared case is checked
    // through the memfd (what a vhost-user backend sees) as well.
    let data: Vec<u8> = (0..3 * usize_from(PAGE) + 11)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    let p = write_tmp("initrd", &data);
    let size = inspect_initrd(&p).unwrap();
    for backing in [Backing::Anonymous, Backing::SharedMemfd] {
        let ram::GuestRam { mem, mappings } =
            ram::create(&[(GuestAddress(0), usize_from(64 * MIB))], backing).unwrap();
        let i = load_initrd(&mem, &p, 0x300_0000, size).unwrap();
        assert_eq!(
            i,
            Initrd {
                addr: 0x300_0000,
                size: data.len() as u64
            }
        );
        let mut buf = vec![0u8; data.len()];
        mem.read_slice(&mut buf, GuestAddress(0x300_0000)).unwrap();
        assert!(buf == data, "{backing:?}: guest view");
        if let Some(fo) = mem.find_region(GuestAddress(0)).unwrap().file_offset() {
            fo.file()
                .read_exact_at(&mut buf, fo.start() + 0x300_0000)
                .unwrap();
            assert!(buf == data, "memfd view");
        }
        // A range past the end of RAM is refused, not written.
        let e = load_initrd(&mem, &p, 64 * MIB - PAGE, size).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("runs past the end of a guest RAM range"),
            "{e}"
        );
        drop(mem);
        for m in mappings {
            // SAFETY: the guest memory view was dropped above.
            unsafe { m.unmap() };
        }
    }
    // A file that changed size since it was inspected is refused.
    let ram::GuestRam { mem, mappings } = ram::create(
        &[(GuestAddress(0), usize_from(64 * MIB))],
        Backing::Anonymous,
    )
    .unwrap();
    assert_eq!(
        load_initrd(&mem, &p, 0x300_0000, size + 1)
            .unwrap_err()
            .to_string(),
        format!(
            "initrd: {}: changed size while starting ({} -> {} bytes)",
            p.display(),
            size + 1,
            size
        )
    );
    drop(mem);
    for m in mappings {
        // SAFETY: the guest memory view was dropped above.
        unsafe { m.unmap() };
    }
    std::fs::remove_file(&p).unwrap();
}

/// How long loading a real vmlinux takes, into fresh guest RAM each time:
/// `HUSK_BENCH_VMLINUX=PATH [HUSK_BENCH_ROUNDS=N] cargo test --release -p
/// husk-vmm kernel_load_time -- --ignored --nocapture`.
#[test]
#[ignore]
fn kernel_load_time() {
    let Some(path) = std::env::var_os("HUSK_BENCH_VMLINUX") else {
        eprintln!("HUSK_BENCH_VMLINUX is not set");
        return;
    };
    let path = PathBuf::from(path);
    let want = inspect_kernel(&path).unwrap().pvh_entry;
    let rounds: usize = std::env::var("HUSK_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut us = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let ram::GuestRam { mem, mappings } =
            ram::create(&layout::ram_ranges(256 * MIB), Backing::Anonymous).unwrap();
        let t = Instant::now();
        assert_eq!(load_kernel(&mem, &path).unwrap(), want);
        us.push(t.elapsed().as_secs_f64() * 1e6);
        drop(mem);
        for m in mappings {
            // SAFETY: the guest memory view was dropped above.
            unsafe { m.unmap() };
        }
    }
    us.sort_by(f64::total_cmp);
    let n = us.len();
    eprintln!(
        "load_kernel: min {:.0} us, median {:.0} us, p90 {:.0} us ({n} loads)",
        us[0],
        us[n / 2],
        us[n * 9 / 10]
    );
}
