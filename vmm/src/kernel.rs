//! Kernel and initrd: validation (before /dev/kvm is opened, so bad paths
//! fail fast and are testable anywhere) and loading into guest memory.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::layout::HIMEM_START;
use crate::arch::pvh::Initrd;
use crate::config::io_msg;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const EM_X86_64: u16 = 62;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const MAX_PHDRS: u16 = 64;
const PAGE: u64 = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("kernel: {0}: {1}")]
    Kernel(PathBuf, String),
    #[error("initrd: {0}: {1}")]
    Initrd(PathBuf, String),
    #[error("memory: {0}")]
    Memory(String),
}

/// What the VMM needs to know about a vmlinux before loading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    /// 32-bit PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY).
    pub pvh_entry: u64,
    /// End of the highest loaded segment (including bss).
    pub end: u64,
    /// The PT_LOAD segments, in file order.
    pub segments: Vec<Segment>,
}

/// One PT_LOAD segment: `filesz` bytes from `offset` in the file go to guest
/// physical `paddr`; the rest up to `memsz` is zero (bss).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Validates that `path` is an x86_64 ELF vmlinux with a PVH entry note and
/// segments that lie inside the file. Reads only the headers and notes.
pub fn inspect_kernel(path: &Path) -> Result<KernelInfo, Error> {
    let file = File::open(path).map_err(|e| Error::Kernel(path.to_path_buf(), io_msg(&e)))?;
    inspect_open(&file, path)
}

fn inspect_open(file: &File, path: &Path) -> Result<KernelInfo, Error> {
    let bad = |msg: String| Error::Kernel(path.to_path_buf(), msg);
    let meta = file.metadata().map_err(|e| bad(io_msg(&e)))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let size = meta.len();
    let read = |off: u64, len: usize, what: &str| -> Result<Vec<u8>, Error> {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, off)
            .map_err(|_| bad(format!("truncated ELF file ({what} past the end)")))?;
        Ok(buf)
    };

    if size < EHDR_SIZE as u64 {
        return Err(bad(format!("not an ELF file ({size} bytes)")));
    }
    let eh = read(0, EHDR_SIZE, "ELF header")?;
    if &eh[0..4] != b"\x7fELF" {
        let mut hdrs = [0u8; 4];
        if file.read_exact_at(&mut hdrs, 0x202).is_ok() && &hdrs == b"HdrS" {
            return Err(bad(
                "a bzImage, not an ELF vmlinux; husk boots the uncompressed vmlinux".into(),
            ));
        }
        return Err(bad(
            "not an ELF file (bad magic); husk boots an uncompressed vmlinux".into(),
        ));
    }
    if eh[4] != 2 || eh[5] != 1 || le16(&eh, 18) != EM_X86_64 {
        return Err(bad("not a 64-bit little-endian x86_64 ELF file".into()));
    }
    let phoff = le64(&eh, 32);
    let phentsize = le16(&eh, 54);
    let phnum = le16(&eh, 56);
    if phentsize as usize != PHDR_SIZE || phnum == 0 || phnum > MAX_PHDRS {
        return Err(bad(format!(
            "corrupt ELF header (phentsize {phentsize}, phnum {phnum})"
        )));
    }
    let ph = read(phoff, PHDR_SIZE * phnum as usize, "program headers")?;

    let mut end = 0u64;
    let mut segments = Vec::new();
    let mut pvh_entry = None;
    for i in 0..phnum as usize {
        let p = &ph[i * PHDR_SIZE..(i + 1) * PHDR_SIZE];
        let (p_type, offset, paddr, filesz, memsz) = (
            le32(p, 0),
            le64(p, 8),
            le64(p, 24),
            le64(p, 32),
            le64(p, 40),
        );
        let in_file = offset.checked_add(filesz).is_some_and(|e| e <= size);
        match p_type {
            PT_LOAD => {
                if !in_file {
                    return Err(bad(format!(
                        "truncated ELF file (segment {i} past the end)"
                    )));
                }
                let seg_end = paddr.checked_add(memsz).filter(|_| filesz <= memsz);
                let Some(seg_end) = seg_end.filter(|_| paddr >= HIMEM_START) else {
                    return Err(bad(format!(
                        "corrupt ELF file (segment {i} at {paddr:#x}+{memsz:#x})"
                    )));
                };
                end = end.max(seg_end);
                segments.push(Segment {
                    offset,
                    paddr,
                    filesz,
                    memsz,
                });
            }
            PT_NOTE if in_file && filesz <= 1 << 20 && pvh_entry.is_none() => {
                pvh_entry = find_pvh_note(&read(offset, filesz as usize, "notes")?);
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(bad("corrupt ELF file (no loadable segments)".into()));
    }
    let Some(pvh_entry) = pvh_entry else {
        return Err(bad(
            "no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY note); build the kernel with CONFIG_PVH=y"
                .into(),
        ));
    };
    Ok(KernelInfo {
        pvh_entry,
        end,
        segments,
    })
}

/// Finds the Xen PHYS32_ENTRY note in a PT_NOTE segment.
fn find_pvh_note(notes: &[u8]) -> Option<u64> {
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    let mut off = 0usize;
    while off + 12 <= notes.len() {
        let namesz = le32(notes, off) as usize;
        let descsz = le32(notes, off + 4) as usize;
        let ntype = le32(notes, off + 8);
        let name_off = off + 12;
        let desc_off = name_off.checked_add(align4(namesz)?)?;
        let next = desc_off.checked_add(align4(descsz)?)?;
        if desc_off.checked_add(descsz)? > notes.len() {
            return None;
        }
        if ntype == XEN_ELFNOTE_PHYS32_ENTRY
            && notes.get(name_off..name_off + namesz) == Some(b"Xen\0")
            && descsz >= 4
        {
            return Some(le32(notes, desc_off) as u64);
        }
        off = next;
    }
    None
}

/// Size of the initrd at `path` (must be a non-empty regular file).
pub fn inspect_initrd(path: &Path) -> Result<u64, Error> {
    let bad = |msg: String| Error::Initrd(path.to_path_buf(), msg);
    let meta = std::fs::metadata(path).map_err(|e| bad(io_msg(&e)))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.len() == 0 {
        return Err(bad("empty file".into()));
    }
    // Opening now catches permission problems before /dev/kvm is touched.
    File::open(path).map_err(|e| bad(io_msg(&e)))?;
    Ok(meta.len())
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
    if kernel.end > low_ram_end {
        return Err(Error::Memory(format!(
            "the kernel needs {} MiB of RAM, only {} MiB configured",
            kernel.end.div_ceil(1 << 20),
            low_ram_end >> 20
        )));
    }
    initrd_addr(kernel.end, low_ram_end, initrd_size).ok_or_else(|| {
        Error::Memory(format!(
            "kernel ({} MiB) and initrd ({} MiB) do not fit in {} MiB",
            kernel.end.div_ceil(1 << 20),
            initrd_size.div_ceil(1 << 20),
            low_ram_end >> 20
        ))
    })
}

/// Puts the vmlinux's PT_LOAD segments into guest memory (see [`place`])
/// and returns the PVH entry point. Guest RAM must be untouched: bss is
/// left as the zero it already is.
///
/// The file is opened and its headers read again here (not trusted from
/// [`inspect_kernel`]): what is placed is what this open file says.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<u64, Error> {
    let bad = |msg: String| Error::Kernel(path.to_path_buf(), msg);
    let file = File::open(path).map_err(|e| bad(io_msg(&e)))?;
    let info = inspect_open(&file, path)?;
    for (i, s) in info.segments.iter().enumerate() {
        place(mem, &file, s.offset, s.paddr, s.filesz)
            .map_err(|e| bad(format!("loading segment {i} at {:#x}: {e}", s.paddr)))?;
    }
    Ok(info.pvh_entry)
}

/// Puts the initrd into guest memory at `addr` (see [`place`]).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    addr: u64,
    size: u64,
) -> Result<Initrd, Error> {
    let bad = |msg: String| Error::Initrd(path.to_path_buf(), msg);
    let file = File::open(path).map_err(|e| bad(io_msg(&e)))?;
    let now = file.metadata().map_err(|e| bad(io_msg(&e)))?.len();
    if now != size {
        return Err(bad(format!(
            "changed size while starting ({size} -> {now} bytes)"
        )));
    }
    place(mem, &file, 0, addr, size).map_err(|e| bad(format!("loading into guest memory: {e}")))?;
    Ok(Initrd { addr, size })
}

/// Puts `len` bytes of `file` from `offset` at guest physical `gpa`: read
/// straight into guest memory, through its mapping, in private and shared
/// (memfd) RAM alike.
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
fn place(mem: &GuestMemoryMmap, file: &File, offset: u64, gpa: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let inval = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
    let region = mem
        .find_region(GuestAddress(gpa))
        .ok_or_else(|| inval("not in guest RAM"))?;
    let in_region = gpa - region.start_addr().0;
    if in_region.checked_add(len).is_none_or(|e| e > region.len()) {
        return Err(inval("runs past the end of a guest RAM range"));
    }
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    mem.read_exact_volatile_from(GuestAddress(gpa), &mut f, len as usize)
        .map_err(|e| io::Error::other(e.to_string()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::arch::layout::MIB;
    use crate::arch::ram::{self, Backing};

    /// A minimal vmlinux-like ELF: one PT_LOAD at 16 MiB with `code`, and a
    /// PT_NOTE with an unrelated note followed by the PVH entry note.
    pub(crate) fn tiny_elf(entry: u32, code: &[u8], with_pvh: bool) -> Vec<u8> {
        let mut notes = vec![];
        let mut note = |name: &[u8], ntype: u32, desc: &[u8]| {
            notes.extend_from_slice(&(name.len() as u32).to_le_bytes());
            notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
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
        let mut f = vec![0u8; code_off as usize];
        f[0..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // e_entry
        f[32..40].copy_from_slice(&phoff.to_le_bytes());
        f[52..54].copy_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
        f[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        let mut ph = |i: usize, t: u32, off: u64, addr: u64, filesz: u64, memsz: u64| {
            let o = phoff as usize + i * PHDR_SIZE;
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
        f[notes_off as usize..notes_off as usize + notes.len()].copy_from_slice(&notes);
        f.extend_from_slice(code);
        f
    }

    pub(crate) fn write_tmp(name: &str, bytes: &[u8]) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("husk-kernel-test-{}-{name}", std::process::id()));
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
                ram::create(&[(GuestAddress(0), (64 * MIB) as usize)], backing).unwrap();
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
        assert_eq!(check_fit(&k, size, mem), Ok(0x400_0000));
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
        let data: Vec<u8> = (0..3 * PAGE as usize + 11)
            .map(|i| (i % 251) as u8)
            .collect();
        let p = write_tmp("initrd", &data);
        let size = inspect_initrd(&p).unwrap();
        for backing in [Backing::Anonymous, Backing::SharedMemfd] {
            let ram::GuestRam { mem, mappings } =
                ram::create(&[(GuestAddress(0), (64 * MIB) as usize)], backing).unwrap();
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
            &[(GuestAddress(0), (64 * MIB) as usize)],
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
}
