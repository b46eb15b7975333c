//! The device's host side: a tap descriptor (inherited, or opened by name)
//! checked and set up for virtio-net frames, or, in tests, a datagram
//! socket carrying the same frames.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use husk_sys::tun::{self, IFF_NO_PI, IFF_TAP, IFF_VNET_HDR};

use super::features::HDR_LEN;
use crate::devices::virtio::chain::retry_eintr;

/// Why a virtio-net device could not be created. The message leaves out
/// which NIC: the caller names it (`net: fd N: ...`, `net: tap NAME: ...`).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No such descriptor: the host did not pass it, or passed it
    /// close-on-exec.
    #[error("fd {fd} is not open (pass the tap descriptor without close-on-exec)")]
    NotOpen { fd: RawFd },
    #[error("cannot duplicate fd {fd}: {source}")]
    Dup { fd: RawFd, source: io::Error },
    /// TUNGETIFF failed: not a tun/tap descriptor, or one attached to no
    /// interface.
    #[error("fd {fd} is not a tap descriptor (TUNGETIFF: {source})")]
    NotTap { fd: RawFd, source: io::Error },
    #[error("fd {fd}: tap {name} has flags {flags:#06x}, not IFF_TAP | IFF_NO_PI | IFF_VNET_HDR")]
    TapFlags { fd: RawFd, name: String, flags: u16 },
    #[error("cannot open tap {name}: {source}")]
    Open { name: String, source: io::Error },
    /// TUNSETVNETHDRSZ or O_NONBLOCK failed.
    #[error("fd {fd}: {what}: {source}")]
    Setup {
        fd: RawFd,
        what: &'static str,
        source: io::Error,
    },
    /// The kernel's vhost-net could not be set up (backend `vhost`).
    #[error(transparent)]
    Vhost(#[from] super::vhost::VhostError),
}

/// The descriptor frames go through: one `read` is one frame in, one
/// `write` one frame out, each with its 12-byte `virtio_net_hdr_v1`.
#[derive(Debug)]
pub(super) struct Tap {
    /// A `File` because that is what vhost-net's `VHOST_NET_SET_BACKEND`
    /// wrapper takes.
    fd: File,
    /// A real tap takes offload settings; a test socket does not.
    is_tap: bool,
}

impl Tap {
    /// The tap descriptor `fd` husk-vmm inherited. It is duplicated
    /// (close-on-exec) and the duplicate checked, so a wrong number never
    /// makes husk-vmm close a descriptor of its own; the inherited number
    /// stays open for husk-vmm's life.
    pub fn from_inherited(fd: RawFd) -> Result<Tap, NetError> {
        // SAFETY: F_DUPFD_CLOEXEC takes no pointers; on a number that is
        // not an open descriptor it fails with EBADF.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EBADF) => NetError::NotOpen { fd },
                _ => NetError::Dup { fd, source: e },
            });
        }
        // SAFETY: `dup` is a descriptor fcntl just created; nothing else
        // owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(dup) };
        Tap::checked(owned, fd)
    }

    /// Opens (or creates) tap `name` in husk-vmm's network namespace.
    pub fn open(name: &str) -> Result<Tap, NetError> {
        let (fd, _) = tun::open_tap(name).map_err(|source| NetError::Open {
            name: name.to_string(),
            source,
        })?;
        let raw = fd.as_raw_fd();
        Tap::checked(fd, raw)
    }

    /// Checks that `fd` is a tap with a vnet header and no packet info,
    /// sets the header to [`HDR_LEN`] bytes and makes it non-blocking.
    /// `shown` is the number errors name (the inherited one).
    fn checked(fd: OwnedFd, shown: RawFd) -> Result<Tap, NetError> {
        let (name, flags) =
            tun::tap_info(fd.as_fd()).map_err(|source| NetError::NotTap { fd: shown, source })?;
        let want = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        if flags & want != want {
            return Err(NetError::TapFlags {
                fd: shown,
                name,
                flags,
            });
        }
        let setup = |what| {
            move |source| NetError::Setup {
                fd: shown,
                what,
                source,
            }
        };
        let hdr = i32::try_from(HDR_LEN).unwrap_or(i32::MAX);
        tun::set_vnet_hdr_size(fd.as_fd(), hdr).map_err(setup("TUNSETVNETHDRSZ"))?;
        husk_sys::set_nonblocking(&fd, true).map_err(setup("O_NONBLOCK"))?;
        Ok(Tap {
            fd: File::from(fd),
            is_tap: true,
        })
    }

    /// A datagram socket standing in for a tap (tests and fuzzing):
    /// frames carry the header, offloads are not set.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn socket(fd: OwnedFd) -> Result<Tap, NetError> {
        let shown = fd.as_raw_fd();
        husk_sys::set_nonblocking(&fd, true).map_err(|source| NetError::Setup {
            fd: shown,
            what: "O_NONBLOCK",
            source,
        })?;
        Ok(Tap {
            fd: File::from(fd),
            is_tap: false,
        })
    }

    /// Reads one frame into `buf` (not empty); `Ok(0)` is end of file (a
    /// tap never gives it: every frame has its header).
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        let fd = self.fd.as_raw_fd();
        retry_eintr(|| {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes for
            // the call.
            unsafe { libc::read(fd, buf.as_mut_ptr().cast::<libc::c_void>(), buf.len()) }
        })
    }

    /// Writes one frame.
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<usize> {
        let fd = self.fd.as_raw_fd();
        retry_eintr(|| {
            // SAFETY: `frame` is valid for reads of `frame.len()` bytes for
            // the call.
            unsafe { libc::write(fd, frame.as_ptr().cast::<libc::c_void>(), frame.len()) }
        })
    }

    /// Tells the tap which offloads (`TUN_F_*`) the guest takes. A no-op
    /// on a test socket.
    pub fn set_offloads(&self, flags: u32) -> io::Result<()> {
        if !self.is_tap {
            return Ok(());
        }
        tun::set_offload(self.fd.as_fd(), flags)
    }

    /// The descriptor, for the kernel's vhost-net to read and write.
    pub fn file(&self) -> &File {
        &self.fd
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
