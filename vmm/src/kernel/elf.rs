//! A vmlinux's ELF headers and PVH entry note, read without loading it: the
//! checks and the memory layout (where the kernel ends, so where the initrd
//! can go) that come before guest RAM exists. linux-loader's ELF loader only
//! works on guest memory, and its errors do not say what is wrong with the
//! file, so this stays ours; loading is linux-loader's (`super::load`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use linux_loader::elf::{
    Elf64_Ehdr, Elf64_Nhdr, Elf64_Phdr, EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, ELFMAG,
    EM_X86_64, PT_LOAD, PT_NOTE,
};
use vm_memory::ByteValued;

use super::{ElfPart, Error, KernelError};
use crate::arch::layout::HIMEM_START;

pub(crate) const EHDR_SIZE: usize = std::mem::size_of::<Elf64_Ehdr>();
pub(crate) const PHDR_SIZE: usize = std::mem::size_of::<Elf64_Phdr>();
const NHDR_SIZE: usize = std::mem::size_of::<Elf64_Nhdr>();
pub(crate) const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const MAX_PHDRS: u16 = 64;
/// PT_NOTE segments larger than this are not searched for the PVH note.
const MAX_NOTES: u64 = 1 << 20;
/// Where a bzImage has its setup header's "HdrS" magic.
const BZIMAGE_HDRS_OFFSET: u64 = 0x202;

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

/// Validates that `path` is an x86_64 ELF vmlinux with a PVH entry note and
/// segments that lie inside the file. Reads only the headers and notes.
pub fn inspect_kernel(path: &Path) -> Result<KernelInfo, Error> {
    let file = File::open(path).map_err(|e| kernel_error(path, KernelError::Io(e)))?;
    inspect_open(&file).map_err(|kind| kernel_error(path, kind))
}

fn kernel_error(path: &Path, kind: KernelError) -> Error {
    Error::Kernel {
        path: path.to_path_buf(),
        kind,
    }
}

/// [`inspect_kernel`] on an open file.
pub(super) fn inspect_open(file: &File) -> Result<KernelInfo, KernelError> {
    let meta = file.metadata().map_err(KernelError::Io)?;
    if !meta.is_file() {
        return Err(KernelError::NotRegularFile);
    }
    let size = meta.len();
    if size < EHDR_SIZE as u64 {
        return Err(KernelError::TooSmall(size));
    }
    let read = |buf: &mut [u8], off: u64, part: ElfPart| {
        file.read_exact_at(buf, off)
            .map_err(|_| KernelError::Truncated(part))
    };
    let mut eh = Elf64_Ehdr::default();
    read(eh.as_mut_slice(), 0, ElfPart::ElfHeader)?;
    check_ehdr(file, &eh)?;
    let mut table = vec![0u8; PHDR_SIZE * usize::from(eh.e_phnum)];
    read(&mut table, eh.e_phoff, ElfPart::ProgramHeaders)?;

    let mut end = 0u64;
    let mut segments = Vec::new();
    let mut pvh_entry = None;
    for (index, raw) in table.chunks_exact(PHDR_SIZE).enumerate() {
        let mut ph = Elf64_Phdr::default();
        ph.as_mut_slice().copy_from_slice(raw);
        let in_file = ph
            .p_offset
            .checked_add(ph.p_filesz)
            .is_some_and(|e| e <= size);
        match ph.p_type {
            PT_LOAD => {
                if !in_file {
                    return Err(KernelError::Truncated(ElfPart::Segment(index)));
                }
                let s = load_segment(index, &ph)?;
                end = end.max(s.paddr + s.memsz);
                segments.push(s);
            }
            PT_NOTE if in_file && ph.p_filesz <= MAX_NOTES && pvh_entry.is_none() => {
                let len = usize::try_from(ph.p_filesz)
                    .map_err(|_| KernelError::Truncated(ElfPart::Notes))?;
                let mut notes = vec![0u8; len];
                read(&mut notes, ph.p_offset, ElfPart::Notes)?;
                pvh_entry = find_pvh_note(&notes);
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(KernelError::NoLoadableSegments);
    }
    let pvh_entry = pvh_entry.ok_or(KernelError::NoPvhEntry)?;
    Ok(KernelInfo {
        pvh_entry,
        end,
        segments,
    })
}

/// An x86_64 little-endian ELF64 file with a sane program header table; a
/// bzImage or anything else is named as such.
fn check_ehdr(file: &File, eh: &Elf64_Ehdr) -> Result<(), KernelError> {
    if eh.e_ident[..ELFMAG.len()] != ELFMAG[..] {
        let mut hdrs = [0u8; 4];
        if file.read_exact_at(&mut hdrs, BZIMAGE_HDRS_OFFSET).is_ok() && &hdrs == b"HdrS" {
            return Err(KernelError::BzImage);
        }
        return Err(KernelError::BadMagic);
    }
    if eh.e_ident[EI_CLASS] != ELFCLASS64
        || eh.e_ident[EI_DATA] != ELFDATA2LSB
        || eh.e_machine != EM_X86_64
    {
        return Err(KernelError::NotX86_64);
    }
    let (phentsize, phnum) = (eh.e_phentsize, eh.e_phnum);
    if usize::from(phentsize) != PHDR_SIZE || phnum == 0 || phnum > MAX_PHDRS {
        return Err(KernelError::ProgramHeaderTable { phentsize, phnum });
    }
    Ok(())
}

/// A PT_LOAD segment that lies above the low 1 MiB, with no more file bytes
/// than memory bytes and an end that does not wrap.
fn load_segment(index: usize, ph: &Elf64_Phdr) -> Result<Segment, KernelError> {
    let (paddr, filesz, memsz) = (ph.p_paddr, ph.p_filesz, ph.p_memsz);
    let ok = paddr >= HIMEM_START && filesz <= memsz && paddr.checked_add(memsz).is_some();
    if !ok {
        return Err(KernelError::Segment {
            index,
            paddr,
            memsz,
        });
    }
    Ok(Segment {
        offset: ph.p_offset,
        paddr,
        filesz,
        memsz,
    })
}

/// Finds the Xen PHYS32_ENTRY note in a PT_NOTE segment.
pub(crate) fn find_pvh_note(notes: &[u8]) -> Option<u64> {
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    let mut off = 0usize;
    while off + NHDR_SIZE <= notes.len() {
        let mut nh = Elf64_Nhdr::default();
        nh.as_mut_slice()
            .copy_from_slice(&notes[off..off + NHDR_SIZE]);
        let namesz = usize::try_from(nh.n_namesz).ok()?;
        let descsz = usize::try_from(nh.n_descsz).ok()?;
        let name_off = off + NHDR_SIZE;
        let desc_off = name_off.checked_add(align4(namesz)?)?;
        let next = desc_off.checked_add(align4(descsz)?)?;
        let desc = notes.get(desc_off..desc_off.checked_add(descsz)?)?;
        if nh.n_type == XEN_ELFNOTE_PHYS32_ENTRY
            && notes.get(name_off..name_off + namesz) == Some(b"Xen\0")
        {
            if let Some(Ok(entry)) = desc.get(..4).map(<[u8; 4]>::try_from) {
                return Some(u64::from(u32::from_le_bytes(entry)));
            }
        }
        off = next;
    }
    None
}
