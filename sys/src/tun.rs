//! TUN/TAP descriptors (`/dev/net/tun`, linux/if_tun.h): the monitor
//! creates a tap in the container's network namespace, husk-vmm serves a
//! virtio-net device on its descriptor.
//!
//! A tap made by [`open_tap`] is not persistent: it goes away with its
//! last descriptor, so a VMM that dies leaves no tap behind.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// `IFF_TAP`: Ethernet frames.
pub const IFF_TAP: u16 = 0x0002;
/// `IFF_NO_PI`: no 4-byte packet-information header.
pub const IFF_NO_PI: u16 = 0x1000;
/// `IFF_VNET_HDR`: every frame carries a `virtio_net_hdr` first.
pub const IFF_VNET_HDR: u16 = 0x4000;

/// Offload flags for [`set_offload`] (`TUN_F_*`).
pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;
pub const TUN_F_TSO_ECN: u32 = 0x08;
pub const TUN_F_UFO: u32 = 0x10;

// ioctl numbers (_IOW('T', n, int) / _IOR('T', n, unsigned int)).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;

/// Largest interface name (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// `struct ifreq` as TUNSETIFF/TUNGETIFF use it: the name, then the flags.
#[repr(C)]
#[derive(Default)]
struct IfReq {
    name: [u8; 16],
    flags: u16,
    _pad: [u8; 22],
}

/// Opens `/dev/net/tun` and attaches it to tap `name` in the calling
/// thread's network namespace (creating the tap if there is none), with
/// `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`. The descriptor is close-on-exec
/// and blocking; returns it with the name the kernel gave (the same as
/// `name` unless `name` has a `%d`).
pub fn open_tap(name: &str) -> io::Result<(OwnedFd, String)> {
    if name.is_empty() || name.len() > IFNAME_MAX || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "tap name '{}' is not 1..={IFNAME_MAX} bytes",
                name.escape_debug()
            ),
        ));
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::NotFound {
                " (the tun module is not loaded: modprobe tun)"
            } else {
                ""
            };
            io::Error::new(e.kind(), format!("/dev/net/tun: {e}{hint}"))
        })?;
    let mut req = IfReq {
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        ..IfReq::default()
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req`
    // is (name and flags at the kernel's offsets, 40 bytes), on a tun fd.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((f.into(), name_of(&req)))
}

fn name_of(req: &IfReq) -> String {
    let end = req
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(req.name.len());
    String::from_utf8_lossy(&req.name[..end]).into_owned()
}

/// The name and `IFF_*` flags of the tap `fd` is attached to (TUNGETIFF):
/// fails unless `fd` is a tun descriptor attached to an interface.
pub fn tap_info(fd: BorrowedFd<'_>) -> io::Result<(String, u16)> {
    let mut req = IfReq::default();
    // SAFETY: TUNGETIFF writes one `struct ifreq` into `req`; on a
    // descriptor that is not a tun device it fails with EBADFD/ENOTTY.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((name_of(&req), req.flags))
}

/// Sets the size of the `virtio_net_hdr` in front of every frame
/// (10, or 12 for virtio 1.0's header with `num_buffers`).
pub fn set_vnet_hdr_size(fd: BorrowedFd<'_>, size: i32) -> io::Result<()> {
    // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tells the tap which offloads the reader handles (`TUN_F_*`): frames it
/// delivers may then carry partial checksums and be up to 64 KiB (TSO).
pub fn set_offload(fd: BorrowedFd<'_>, flags: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes the flags as the ioctl's integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, libc::c_ulong::from(flags)) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_name_too_long_is_refused_before_any_syscall() {
        let e = open_tap("a-name-of-16byte").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("a-name-of-16byte"), "{e}");
    }

    #[test]
    fn tap_info_refuses_what_is_not_a_tap() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(tap_info(f.as_fd()).is_err());
    }

    /// Creates a tap in a network namespace of a thread of its own.
    #[test]
    fn a_tap_is_made_and_configured_in_a_private_namespace() {
        let r = std::thread::spawn(|| {
            // SAFETY: unshare(2) with a flag; affects only this thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(format!("skipped: unshare: {}", io::Error::last_os_error()));
            }
            let (fd, name) = match open_tap("husktest0") {
                Ok(x) => x,
                Err(e) => return Err(format!("skipped: /dev/net/tun: {e}")),
            };
            assert_eq!(name, "husktest0");
            let (n, flags) = tap_info(fd.as_fd()).unwrap();
            assert_eq!(n, "husktest0");
            assert_eq!(
                flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR),
                IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
            );
            set_vnet_hdr_size(fd.as_fd(), 12).unwrap();
            set_offload(fd.as_fd(), TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6).unwrap();
            Ok(())
        })
        .join()
        .unwrap();
        if let Err(why) = r {
            eprintln!("{why}");
        }
    }
}
