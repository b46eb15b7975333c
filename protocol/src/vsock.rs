//! Minimal AF_VSOCK stream sockets over libc (std has none): the agent's
//! listener and its ready signal in the guest, the benchmark's client of a
//! vhost-vsock guest on the host.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The size of a socket argument (`sockaddr_vm`, `timeval`) as the kernel
/// takes it.
fn socklen<T>() -> libc::socklen_t {
    #[allow(clippy::cast_possible_truncation)] // a few dozen bytes
    let len = std::mem::size_of::<T>() as libc::socklen_t;
    len
}

/// A fresh blocking, close-on-exec AF_VSOCK stream socket.
fn stream_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw =
        cvt(unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// bind(2) (`bind` true) or connect(2) `fd` to (cid, port).
fn to_addr(fd: &OwnedFd, cid: u32, port: u32, bind: bool) -> io::Result<()> {
    // SAFETY: sockaddr_vm is plain data; all-zero is valid (reserved fields must be 0).
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    #[allow(clippy::cast_possible_truncation)] // AF_VSOCK is 40
    let family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_family = family;
    addr.svm_port = port;
    addr.svm_cid = cid;
    let (a, len) = (
        std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
        socklen::<libc::sockaddr_vm>(),
    );
    let rc = if bind {
        // SAFETY: `a` points to a valid sockaddr_vm of `len` bytes; fd is ours.
        unsafe { libc::bind(fd.as_raw_fd(), a, len) }
    } else {
        // SAFETY: as for bind.
        unsafe { libc::connect(fd.as_raw_fd(), a, len) }
    };
    cvt(rc).map(drop)
}

/// A listening vsock socket bound to (VMADDR_CID_ANY, port).
#[derive(Debug)]
pub struct VsockListener {
    fd: OwnedFd,
}

impl VsockListener {
    pub fn bind(port: u32) -> io::Result<VsockListener> {
        let fd = stream_socket()?;
        to_addr(&fd, libc::VMADDR_CID_ANY, port, true)?;
        // SAFETY: listen(2) on a descriptor we own.
        cvt(unsafe { libc::listen(fd.as_raw_fd(), 128) })?;
        Ok(VsockListener { fd })
    }

    /// Accepts one connection (blocking unless the listener is non-blocking).
    /// The accepted socket is blocking and close-on-exec.
    pub fn accept(&self) -> io::Result<VsockStream> {
        self.accept_peer().map(|(s, _)| s)
    }

    /// [`accept`](Self::accept), with the peer's CID.
    pub fn accept_peer(&self) -> io::Result<(VsockStream, u32)> {
        // SAFETY: sockaddr_vm is plain data; all-zero is valid.
        let mut peer: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        let mut len = socklen::<libc::sockaddr_vm>();
        // SAFETY: peer/len describe a writable sockaddr_vm; fd is ours.
        let raw = cvt(unsafe {
            libc::accept4(
                self.fd.as_raw_fd(),
                std::ptr::from_mut(&mut peer).cast::<libc::sockaddr>(),
                &mut len,
                libc::SOCK_CLOEXEC,
            )
        })?;
        // SAFETY: `raw` is a freshly accepted descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok((VsockStream { fd }, peer.svm_cid))
    }

    /// Makes [`accept`](Self::accept) return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        husk_sys::set_nonblocking(&self.fd, on)
    }
}

/// Waits up to `timeout` (at least 1 ms) for `fd` to be readable (for a
/// listener: a connection to accept). Returns early on a signal; the caller
/// re-checks and loops.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    match cvt(unsafe { libc::poll(&mut p, 1, ms) }) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
        r => r.map(drop),
    }
}

impl AsRawFd for VsockListener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A connected vsock stream.
#[derive(Debug)]
pub struct VsockStream {
    fd: OwnedFd,
}

impl VsockStream {
    /// Connects to (cid, port); blocks until the peer answers (or the
    /// kernel's vsock connect timeout, 2 s by default).
    pub fn connect(cid: u32, port: u32) -> io::Result<VsockStream> {
        let fd = stream_socket()?;
        to_addr(&fd, cid, port, false)?;
        Ok(VsockStream { fd })
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        // SAFETY: shutdown(2) on a descriptor we own.
        cvt(unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) }).map(drop)
    }

    pub fn shutdown_read(&self) -> io::Result<()> {
        // SAFETY: shutdown(2) on a descriptor we own.
        cvt(unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RD) }).map(drop)
    }

    /// A second handle on the connection (dup, close-on-exec).
    pub fn try_clone(&self) -> io::Result<VsockStream> {
        // std duplicates with F_DUPFD_CLOEXEC (lowest free number from 3).
        Ok(VsockStream {
            fd: self.fd.try_clone()?,
        })
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        set_timeout(self.fd.as_raw_fd(), libc::SO_RCVTIMEO, t)
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        set_timeout(self.fd.as_raw_fd(), libc::SO_SNDTIMEO, t)
    }
}

fn set_timeout(fd: RawFd, opt: libc::c_int, t: Option<Duration>) -> io::Result<()> {
    let tv = match t {
        // A zero timeval means "no timeout": round tiny timeouts up to 1 us.
        Some(d) => libc::timeval {
            tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(d.subsec_micros()).max(if d.as_secs() == 0 {
                1
            } else {
                0
            }),
        },
        None => libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    // SAFETY: `tv` is a valid timeval and the length passed is its size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            std::ptr::from_ref(&tv).cast::<libc::c_void>(),
            socklen::<libc::timeval>(),
        )
    })
    .map(drop)
}

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        // A negative count is an error, in errno.
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes. MSG_NOSIGNAL:
        // a closed peer gives EPIPE, never SIGPIPE.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        // A negative count is an error, in errno.
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for VsockStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
