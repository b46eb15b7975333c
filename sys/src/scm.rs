//! Passing a descriptor over a Unix stream socket (SCM_RIGHTS), which
//! std offers only unstably: one descriptor per message, with at least one
//! data byte (a stream socket drops a control message sent without data).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Room for one control message that carries one descriptor, aligned for
/// `cmsghdr` (`u64` elements).
type CmsgBuf = [u64; 8];

/// The payload length of one descriptor, as CMSG_LEN/CMSG_SPACE take it.
fn fd_payload_len() -> u32 {
    // The size of a RawFd (4) always fits.
    u32::try_from(std::mem::size_of::<RawFd>()).unwrap_or(4)
}

/// Sends `fd` with one zero data byte over `s`; [`recv_fd`] takes it.
pub fn send_fd(s: &UnixStream, fd: impl AsFd) -> io::Result<()> {
    send_fd_with(s, fd, &[0])
}

/// Sends `fd` with `data` (not empty) as the message's bytes, retrying when
/// a signal interrupts the call. A peer that is gone is an error
/// (EPIPE), never SIGPIPE.
pub fn send_fd_with(s: &UnixStream, fd: impl AsFd, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a descriptor needs at least one data byte to go with it",
        ));
    }
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
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
    // SAFETY: `cm` is non-null and points into `cbuf` (CMSG_FIRSTHDR), which
    // is aligned for cmsghdr.
    let hdr = unsafe { &mut *cm };
    hdr.cmsg_level = libc::SOL_SOCKET;
    hdr.cmsg_type = libc::SCM_RIGHTS;
    hdr.cmsg_len = len as usize;
    // SAFETY: the data of a header of CMSG_LEN(4) bytes lies inside `cbuf`.
    let payload = unsafe { libc::CMSG_DATA(cm) };
    // SAFETY: `payload` has room for one (possibly unaligned) descriptor.
    unsafe { std::ptr::write_unaligned(payload.cast::<RawFd>(), fd.as_fd().as_raw_fd()) };
    loop {
        // SAFETY: every pointer in `msg` refers to a live buffer of the
        // length given; sendmsg only reads them.
        let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        match usize::try_from(n) {
            Ok(n) if n == data.len() => return Ok(()),
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the descriptor's data went out in part",
                ))
            }
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Receives one data byte and the descriptor sent with it by [`send_fd`]
/// (close-on-exec). Anything else (no descriptor, more bytes, end of
/// stream) is an error.
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
    fn descriptors_pass_over_a_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut r, w) = std::io::pipe().unwrap();
        send_fd(&a, &w).unwrap();
        drop(w);
        let got = recv_fd(&b).unwrap();
        std::fs::File::from(got).write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x");
        // A plain byte is not a descriptor.
        (&a).write_all(b"y").unwrap();
        assert!(recv_fd(&b).is_err());
    }

    #[test]
    fn a_descriptor_goes_with_its_data() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let (_r, w) = std::io::pipe().unwrap();
        send_fd_with(&a, &w, b"/dev/pts/7").unwrap();
        let mut got = [0u8; 32];
        let n = b.read(&mut got).unwrap();
        assert_eq!(&got[..n], b"/dev/pts/7");
        let e = send_fd_with(&a, &w, b"").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_closed_peer_is_an_error_not_sigpipe() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let (_r, w) = std::io::pipe().unwrap();
        let e = send_fd(&a, &w).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
