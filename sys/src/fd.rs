//! Descriptor flags and state std has no call for (std sets O_NONBLOCK on
//! sockets only).

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Sets (`on`) or clears O_NONBLOCK on `fd` (any kind: pipe, socket, tty).
pub fn set_nonblocking(fd: impl AsFd, on: bool) -> io::Result<()> {
    let fd = fd.as_fd().as_raw_fd();
    // SAFETY: F_GETFL only reads the flags of a descriptor the borrow keeps open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: F_SETFL with the flags just read, O_NONBLOCK changed; no pointers.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What the read end of a pipe (or a pty master) holds right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipeState {
    /// Every writer is gone (POLLHUP).
    pub hung_up: bool,
    /// Bytes readable without blocking (FIONREAD).
    pub available: usize,
}

/// The state of `fd` now, without waiting. Where poll or FIONREAD fails,
/// that half reads as not hung up, or as no bytes.
pub fn pipe_state(fd: impl AsFd) -> PipeState {
    let fd = fd.as_fd().as_raw_fd();
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the call's duration, zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) };
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to a valid pointer.
    unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    PipeState {
        hung_up: p.revents & libc::POLLHUP != 0,
        available: usize::try_from(n).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn pipe_state_sees_bytes_and_hangup() {
        let (r, mut w) = std::io::pipe().unwrap();
        let empty = PipeState {
            hung_up: false,
            available: 0,
        };
        assert_eq!(pipe_state(&r), empty);
        w.write_all(b"abc").unwrap();
        drop(w);
        assert_eq!(
            pipe_state(&r),
            PipeState {
                hung_up: true,
                available: 3
            }
        );
    }

    fn is_cloexec(fd: impl AsFd) -> bool {
        // SAFETY: F_GETFD only reads the flags of a descriptor the borrow keeps open.
        let fl = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_GETFD) };
        fl >= 0 && fl & libc::FD_CLOEXEC != 0
    }

    /// The std calls used instead of helpers of our own make close-on-exec
    /// descriptors, as the helpers did.
    #[test]
    fn std_pipe_and_dup_are_cloexec() {
        let (mut r, w) = std::io::pipe().unwrap();
        assert!(is_cloexec(&r) && is_cloexec(&w));
        let dup = w.as_fd().try_clone_to_owned().unwrap();
        assert!(is_cloexec(&dup));
        assert!(dup.as_raw_fd() >= 3);
        drop(w);
        std::fs::File::from(dup).write_all(b"z").unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "z");
    }

    #[test]
    fn nonblocking_read_of_an_empty_pipe() {
        let (mut r, _w) = std::io::pipe().unwrap();
        set_nonblocking(&r, true).unwrap();
        let e = r.read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn nonblocking_is_cleared_again() {
        let (r, _w) = std::io::pipe().unwrap();
        // SAFETY: F_GETFL only reads the flags of a descriptor `r` keeps open.
        let flags = || unsafe { libc::fcntl(r.as_raw_fd(), libc::F_GETFL) };
        set_nonblocking(&r, true).unwrap();
        assert_ne!(flags() & libc::O_NONBLOCK, 0);
        set_nonblocking(&r, false).unwrap();
        assert_eq!(flags() & libc::O_NONBLOCK, 0);
    }
}
