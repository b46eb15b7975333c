//! A terminal's window size (TIOCGWINSZ / TIOCSWINSZ).
//!
//! These take a descriptor number: the host side asks fd 0 or a pty slave
//! it shares with relay threads by number. The ioctls touch only the
//! `winsize` we pass; a number that is not open fails with EBADF.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A terminal's size in character cells.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

impl WindowSize {
    /// 0x0: the size was never set (a fresh pty), so unknown.
    pub fn is_unset(&self) -> bool {
        self.rows == 0 && self.cols == 0
    }
}

/// The window size of the terminal `fd` (a tty, or a pty master or slave).
pub fn window_size(fd: RawFd) -> io::Result<WindowSize> {
    // SAFETY: winsize is plain data, for which all-zero is a valid value.
    let mut w: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize to a valid pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut w) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(WindowSize {
        rows: w.ws_row,
        cols: w.ws_col,
    })
}

/// Sets the window size of the terminal `fd` (a pty master or slave); the
/// kernel sends SIGWINCH to the terminal's foreground process group.
pub fn set_window_size(fd: RawFd, size: WindowSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new pty pair, both ends close-on-exec: (master, slave, the slave's
/// path, empty if ptsname_r fails).
pub fn openpty() -> io::Result<(OwnedFd, OwnedFd, String)> {
    let (mut m, mut s) = (-1, -1);
    // SAFETY: openpty writes two descriptors; the name/termios/winsize
    // arguments may be null.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor only we own.
    let m = unsafe { OwnedFd::from_raw_fd(m) };
    // SAFETY: as for the master.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    for fd in [&m, &s] {
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: buf has the length we pass.
    let r = unsafe { libc::ptsname_r(m.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
    let name = if r == 0 {
        // SAFETY: ptsname_r NUL-terminated buf.
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    } else {
        String::new()
    };
    Ok((m, s, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_set_on_the_master_is_seen_on_the_slave() {
        let (m, s, name) = openpty().unwrap();
        assert!(name.starts_with("/dev/pts/"), "{name}");
        assert!(window_size(s.as_raw_fd()).unwrap().is_unset());
        let size = WindowSize { rows: 24, cols: 80 };
        set_window_size(m.as_raw_fd(), size).unwrap();
        assert_eq!(window_size(s.as_raw_fd()).unwrap(), size);
        assert!(!size.is_unset());
    }

    #[test]
    fn a_pipe_has_no_window_size() {
        let (r, _w) = std::io::pipe().unwrap();
        assert!(window_size(r.as_raw_fd()).is_err());
        assert!(set_window_size(r.as_raw_fd(), WindowSize::default()).is_err());
    }
}
