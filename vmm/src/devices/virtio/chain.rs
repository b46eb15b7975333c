//! Descriptor-chain validation and guest-memory I/O helpers shared by the
//! devices.
//!
//! A chain popped from a queue is flattened into its device-readable and
//! device-writable segments, each checked to lie inside guest memory, before a
//! device looks at any of it.

use std::io;
use std::ops::Deref;
use std::os::fd::{AsRawFd, RawFd};

use virtio_queue::DescriptorChain;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap, ReadVolatile,
    VolatileSlice,
};

/// Longest chain (after following an indirect table) we accept.
pub(crate) const MAX_CHAIN_DESCS: usize = 1024;

/// One guest buffer of a chain, known to lie inside guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seg {
    pub addr: GuestAddress,
    pub len: u32,
}

/// A flattened descriptor chain.
#[derive(Debug, Default)]
pub(crate) struct Chain {
    /// Device-readable buffers, in order.
    pub readable: Vec<Seg>,
    /// Device-writable buffers, in order.
    pub writable: Vec<Seg>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChainError {
    TooLong,
    OutOfMemory { addr: u64, len: u32 },
    ReadableAfterWritable,
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainError::TooLong => write!(f, "more than {MAX_CHAIN_DESCS} descriptors"),
            ChainError::OutOfMemory { addr, len } => {
                write!(f, "buffer {addr:#x}+{len:#x} is outside guest memory")
            }
            ChainError::ReadableAfterWritable => {
                write!(f, "device-readable descriptor after a device-writable one")
            }
        }
    }
}

impl Chain {
    /// Total bytes in the readable segments.
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|s| u64::from(s.len)).sum()
    }

    /// Total bytes in the writable segments.
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| u64::from(s.len)).sum()
    }
}

/// Flatten and validate `chain`. Returns the head index in both cases so that
/// a bad chain can still be handed back to the driver.
pub(crate) fn collect<M>(chain: DescriptorChain<M>) -> (u16, Result<Chain, ChainError>)
where
    M: Deref,
    M::Target: GuestMemory,
{
    let head = chain.head_index();
    let mut out = Chain::default();
    let mut count = 0usize;
    let mut chain = chain;
    while let Some(desc) = chain.next() {
        count += 1;
        if count > MAX_CHAIN_DESCS {
            return (head, Err(ChainError::TooLong));
        }
        let seg = Seg {
            addr: desc.addr(),
            len: desc.len(),
        };
        if !range_ok(chain.memory(), seg) {
            return (
                head,
                Err(ChainError::OutOfMemory {
                    addr: seg.addr.raw_value(),
                    len: seg.len,
                }),
            );
        }
        if desc.is_write_only() {
            out.writable.push(seg);
        } else {
            if !out.writable.is_empty() {
                return (head, Err(ChainError::ReadableAfterWritable));
            }
            out.readable.push(seg);
        }
    }
    (head, Ok(out))
}

fn range_ok<M: GuestMemory + ?Sized>(mem: &M, seg: Seg) -> bool {
    if seg.len == 0 {
        return true;
    }
    seg.addr.checked_add(u64::from(seg.len)).is_some()
        && mem.check_range(seg.addr, seg.len as usize, vm_memory::Permissions::Read)
}

/// Iterate over the parts of `segs` covering bytes `offset..offset+len` of
/// their concatenation, as (address, length) pairs.
fn for_each_part(
    segs: &[Seg],
    mut offset: u64,
    mut len: u64,
    mut f: impl FnMut(GuestAddress, usize) -> bool,
) {
    for seg in segs {
        if len == 0 {
            return;
        }
        let seg_len = u64::from(seg.len);
        if offset >= seg_len {
            offset -= seg_len;
            continue;
        }
        let take = (seg_len - offset).min(len);
        // Segments were checked to lie in guest memory, so no overflow.
        let addr = seg.addr.unchecked_add(offset);
        // At most `seg.len`, a u32.
        let take_len = usize::try_from(take).unwrap_or(usize::MAX);
        if !f(addr, take_len) {
            return;
        }
        len -= take;
        offset = 0;
    }
}

/// Copy bytes `offset..offset+buf.len()` of the segments into `buf`. Returns
/// how many bytes were copied (less if the segments are shorter).
pub(crate) fn read_bytes(
    mem: &GuestMemoryMmap,
    segs: &[Seg],
    offset: u64,
    buf: &mut [u8],
) -> usize {
    let mut done = 0usize;
    for_each_part(segs, offset, buf.len() as u64, |addr, n| {
        match mem.read_slice(&mut buf[done..done + n], addr) {
            Ok(()) => {
                done += n;
                true
            }
            Err(_) => false,
        }
    });
    done
}

/// Copy `data` into bytes `offset..` of the segments. Returns how many bytes
/// were copied.
pub(crate) fn write_bytes(mem: &GuestMemoryMmap, segs: &[Seg], offset: u64, data: &[u8]) -> usize {
    let mut done = 0usize;
    for_each_part(segs, offset, data.len() as u64, |addr, n| {
        match mem.write_slice(&data[done..done + n], addr) {
            Ok(()) => {
                done += n;
                true
            }
            Err(_) => false,
        }
    });
    done
}

/// Visit the host mappings of bytes `offset..offset+len` of the segments.
/// `f` returns how many bytes of the slice it consumed; visiting stops at the
/// first short count or error. Returns the bytes consumed, or the error if
/// nothing was consumed.
pub(crate) fn with_slices(
    mem: &GuestMemoryMmap,
    segs: &[Seg],
    offset: u64,
    len: u64,
    mut f: impl FnMut(&mut VolatileSlice<'_, ()>) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut done = 0usize;
    let mut err: Option<io::Error> = None;
    for_each_part(segs, offset, len, |addr, n| {
        for slice in GuestMemoryBackend::get_slices(mem, addr, n) {
            let mut slice = match slice {
                Ok(s) => s,
                Err(e) => {
                    err = Some(io::Error::other(e));
                    return false;
                }
            };
            match f(&mut slice) {
                Ok(k) => {
                    done += k;
                    if k < slice.len() {
                        return false;
                    }
                }
                Err(e) => {
                    err = Some(e);
                    return false;
                }
            }
        }
        true
    });
    match err {
        Some(e) if done == 0 => Err(e),
        _ => Ok(done),
    }
}

/// `read(2)` from `src` into bytes `offset..offset+len` of the segments
/// (zero-copy into guest memory). Stops at the first short read.
pub(crate) fn read_into<R: ReadVolatile>(
    mem: &GuestMemoryMmap,
    segs: &[Seg],
    offset: u64,
    len: u64,
    src: &mut R,
) -> io::Result<usize> {
    with_slices(mem, segs, offset, len, |slice| {
        src.read_volatile(slice).map_err(volatile_to_io)
    })
}

/// `send(2)` (with `MSG_NOSIGNAL`) bytes `offset..offset+len` of the segments
/// to the socket `fd`. Stops at the first short write.
pub(crate) fn send_from<F: AsRawFd>(
    mem: &GuestMemoryMmap,
    segs: &[Seg],
    offset: u64,
    len: u64,
    fd: &F,
) -> io::Result<usize> {
    let fd = fd.as_raw_fd();
    with_slices(mem, segs, offset, len, |slice| {
        let guard = slice.ptr_guard();
        retry_eintr(|| {
            // SAFETY: `guard` points at `slice.len()` bytes of mapped guest
            // memory that stay mapped while the guard lives; send() only reads
            // them. The return value is checked by retry_eintr.
            unsafe {
                libc::send(
                    fd,
                    guard.as_ptr().cast::<libc::c_void>(),
                    slice.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            }
        })
    })
}

/// Runs a raw I/O syscall `f` (returning a byte count, or -1 with errno)
/// again while a signal interrupts it: another negative result is the OS
/// error, a non-negative one the count.
pub(crate) fn retry_eintr(mut f: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let r = f();
        if let Ok(n) = usize::try_from(r) {
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `pread(2)` from `fd` at file offset `file_off` into the segments, filling
/// them completely. A short file is an error.
pub(crate) fn pread_exact<F: AsRawFd>(
    mem: &GuestMemoryMmap,
    segs: &[Seg],
    fd: &F,
    file_off: u64,
) -> io::Result<u64> {
    positional_io(
        mem,
        segs,
        fd,
        file_off,
        io::ErrorKind::UnexpectedEof,
        |fd, p, n, o| {
            // SAFETY: positional_io passes a pointer to `n` bytes of mapped guest
            // memory that stay mapped for the call; pread() writes at most `n`.
            unsafe { libc::pread(fd, p.cast::<libc::c_void>(), n, o) }
        },
    )
}

/// `pwrite(2)` the segments to `fd` at file offset `file_off`, completely.
pub(crate) fn pwrite_all<F: AsRawFd>(
    mem: &GuestMemoryMmap,
    segs: &[Seg],
    fd: &F,
    file_off: u64,
) -> io::Result<u64> {
    positional_io(
        mem,
        segs,
        fd,
        file_off,
        io::ErrorKind::WriteZero,
        |fd, p, n, o| {
            // SAFETY: positional_io passes a pointer to `n` bytes of mapped guest
            // memory that stay mapped for the call; pwrite() reads at most `n`.
            unsafe { libc::pwrite(fd, p.cast_const().cast::<libc::c_void>(), n, o) }
        },
    )
}

/// Moves all the segments' bytes between guest memory and `fd` at file
/// offset `file_off` with a positional syscall `op(fd, ptr, len, offset)`
/// (pread or pwrite), retrying on EINTR and continuing after short
/// transfers. A transfer of 0 bytes ends it with the error `short`.
fn positional_io<F: AsRawFd>(
    mem: &GuestMemoryMmap,
    segs: &[Seg],
    fd: &F,
    file_off: u64,
    short: io::ErrorKind,
    op: impl Fn(RawFd, *mut u8, usize, libc::off_t) -> isize,
) -> io::Result<u64> {
    let fd = fd.as_raw_fd();
    let total: u64 = segs.iter().map(|s| u64::from(s.len)).sum();
    let mut pos = file_off;
    let done = with_slices(mem, segs, 0, total, |slice| {
        let guard = slice.ptr_guard_mut();
        let mut off = 0usize;
        while off < slice.len() {
            let off_t = libc::off_t::try_from(pos)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // `guard` covers `slice.len()` bytes; `off < slice.len()`, so the
            // pointer and length stay inside the slice.
            let r = retry_eintr(|| {
                op(
                    fd,
                    guard.as_ptr().wrapping_add(off),
                    slice.len() - off,
                    off_t,
                )
            })?;
            if r == 0 {
                return Err(io::Error::from(short));
            }
            off += r;
            pos += r as u64;
        }
        Ok(off)
    })?;
    if done as u64 != total {
        return Err(io::Error::from(short));
    }
    Ok(total)
}

fn volatile_to_io(e: vm_memory::VolatileMemoryError) -> io::Error {
    match e {
        vm_memory::VolatileMemoryError::IOError(e) => e,
        e => io::Error::other(e),
    }
}
