//! capset(2) for the calling thread, with 64-bit capability sets.

use std::io;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets, as two 32-bit halves.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The low and the high 32 bits of `v` (capset's two data structs).
fn halves(v: u64) -> [u32; 2] {
    let lo = u32::try_from(v & 0xffff_ffff).unwrap_or(u32::MAX);
    let hi = u32::try_from(v >> 32).unwrap_or(u32::MAX);
    [lo, hi]
}

/// Sets the calling thread's effective, permitted and inheritable
/// capability sets (bit N = capability N).
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let (e, p, i) = (halves(effective), halves(permitted), halves(inheritable));
    let data = [0, 1].map(|n| Data {
        effective: e[n],
        permitted: p[n],
        inheritable: i[n],
    });
    // SAFETY: `header` and `data` are a valid version-3 header and its two
    // data structs, alive for the call; pid 0 is the calling thread.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            std::ptr::addr_of_mut!(header),
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_split_the_64_bit_set() {
        assert_eq!(halves(0x1_0000_0003), [3, 1]);
        assert_eq!(halves(u64::MAX), [u32::MAX, u32::MAX]);
    }
}
