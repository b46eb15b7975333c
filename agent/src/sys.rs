//! Small descriptor helpers the agent's parts share (one copy each):
//! pipes, duplicating and non-blocking descriptors, terminal sizes, signal
//! sets, and passing descriptors over a Unix socket (SCM_RIGHTS).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// A pipe (read end, write end), close-on-exec, plus `flags` (such as
/// `O_NONBLOCK`).
pub fn pipe(flags: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so fds[0] is a fresh descriptor nothing else owns.
    let r = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above, for fds[1].
    let w = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((r, w))
}

/// /dev/null, opened for reading or for writing.
pub fn devnull(write: bool) -> io::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")?
        .into())
}

/// A close-on-exec duplicate of `fd` (which the caller keeps open).
pub fn dup_cloexec(fd: RawFd) -> io::Result<File> {
    // SAFETY: F_DUPFD_CLOEXEC only reads the descriptor table.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `n` is a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(n) })
}

/// Sets O_NONBLOCK on a descriptor the caller owns.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL with the flags just read plus O_NONBLOCK.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the peer hung up (POLLHUP) and how many bytes are readable now.
pub fn poll_state(fd: RawFd) -> (bool, usize) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) };
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes an int to a valid pointer.
    unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    (
        p.revents & libc::POLLHUP != 0,
        usize::try_from(n).unwrap_or(0),
    )
}

/// Sets the size of the terminal `fd` (a pty master or slave).
pub fn set_winsize(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A signal set of `signals`.
pub fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; all-zero is a valid value to fill in.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: as above; an invalid signal number only fails.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

/// Waits for one of `signals` (blocked in every thread) and returns it.
pub fn sigwait(signals: &[libc::c_int]) -> libc::c_int {
    let set = sigset(signals);
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialized; sigwait writes `sig`.
    unsafe { libc::sigwait(&set, &mut sig) };
    sig
}

/// Room for one control message that carries one descriptor, aligned for
/// `cmsghdr` (`u64` elements).
type CmsgBuf = [u64; 8];

/// `CMSG_LEN`/`CMSG_SPACE` of one descriptor's payload.
fn fd_payload_len() -> u32 {
    // The size of a RawFd (4) always fits.
    u32::try_from(std::mem::size_of::<RawFd>()).unwrap_or(4)
}

/// Sends `fd` with one data byte over a Unix socket (SCM_RIGHTS).
pub fn send_fd(s: &UnixStream, fd: RawFd) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf: CmsgBuf = [0; 8];
    // SAFETY: msghdr is plain data, for which all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_payload_len()) };
    msg.msg_controllen = space as usize;
    // SAFETY: `msg` points at `cbuf`, which has room for one header.
    let cm = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if cm.is_null() {
        return Err(io::Error::other("no room for a control message"));
    }
    // SAFETY: CMSG_LEN only computes a size.
    let len = unsafe { libc::CMSG_LEN(fd_payload_len()) };
    // SAFETY: `cm` is non-null and points into `cbuf` (CMSG_FIRSTHDR).
    let hdr = unsafe { &mut *cm };
    hdr.cmsg_level = libc::SOL_SOCKET;
    hdr.cmsg_type = libc::SCM_RIGHTS;
    hdr.cmsg_len = len as usize;
    // SAFETY: the data of a header of CMSG_LEN(4) bytes lies inside `cbuf`.
    let data = unsafe { libc::CMSG_DATA(cm) };
    // SAFETY: `data` has room for one (possibly unaligned) descriptor.
    unsafe { std::ptr::write_unaligned(data.cast::<RawFd>(), fd) };
    // SAFETY: every pointer in `msg` refers to a live local buffer of the
    // length given.
    if unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) } != 1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one byte and the descriptor sent with it by [`send_fd`].
pub fn recv_fd(s: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf: CmsgBuf = [0; 8];
    // SAFETY: msghdr is plain data, for which all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: every pointer in `msg` refers to a live local buffer of the
    // length given; the kernel writes at most that much.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `msg` (filled in by recvmsg) points at `cbuf`.
    let cm = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: CMSG_LEN only computes a size.
    let want_len = unsafe { libc::CMSG_LEN(fd_payload_len()) } as usize;
    // SAFETY: a non-null header from CMSG_FIRSTHDR lies inside `cbuf`.
    let hdr = (!cm.is_null()).then(|| unsafe { &*cm });
    let Some(hdr) = hdr.filter(|h| {
        n == 1
            && h.cmsg_level == libc::SOL_SOCKET
            && h.cmsg_type == libc::SCM_RIGHTS
            && h.cmsg_len == want_len
    }) else {
        return Err(io::Error::other("no descriptor received"));
    };
    // SAFETY: the header is an SCM_RIGHTS message of one descriptor, whose
    // data lies inside `cbuf`.
    let data = unsafe { libc::CMSG_DATA(hdr) };
    // SAFETY: `data` holds one (possibly unaligned) descriptor.
    let fd = unsafe { std::ptr::read_unaligned(data.cast::<RawFd>()) };
    // SAFETY: the kernel installed `fd` for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn pipe_is_cloexec_and_carries_bytes() {
        let (r, w) = pipe(0).unwrap();
        // SAFETY: F_GETFD only reads the descriptor flags.
        let fl = unsafe { libc::fcntl(r.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(fl & libc::FD_CLOEXEC, 0);
        let (mut r, mut w) = (File::from(r), File::from(w));
        w.write_all(b"hi").unwrap();
        drop(w);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hi");
    }

    #[test]
    fn poll_state_sees_bytes_and_hangup() {
        let (r, w) = pipe(0).unwrap();
        assert_eq!(poll_state(r.as_raw_fd()), (false, 0));
        File::from(w).write_all(b"abc").unwrap(); // and closes it
        assert_eq!(poll_state(r.as_raw_fd()), (true, 3));
    }

    #[test]
    fn nonblocking_read_of_an_empty_pipe() {
        let (r, _w) = pipe(0).unwrap();
        set_nonblocking(r.as_raw_fd()).unwrap();
        let e = File::from(r).read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn descriptors_pass_over_a_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = pipe(0).unwrap();
        send_fd(&a, w.as_raw_fd()).unwrap();
        drop(w);
        let got = recv_fd(&b).unwrap();
        File::from(got).write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        File::from(r).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x");
        // A plain byte is not a descriptor.
        (&a).write_all(b"y").unwrap();
        assert!(recv_fd(&b).is_err());
    }

    #[test]
    fn dup_is_a_second_handle() {
        let (r, w) = pipe(0).unwrap();
        let mut d = dup_cloexec(w.as_raw_fd()).unwrap();
        drop(w);
        d.write_all(b"z").unwrap();
        drop(d);
        let mut s = String::new();
        File::from(r).read_to_string(&mut s).unwrap();
        assert_eq!(s, "z");
    }
}
