//! The connections the server serves: vsock in the guest, Unix sockets
//! in host-side tests.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use husk_protocol::vsock::{VsockListener, VsockStream};

/// A connected byte stream (vsock in the guest, Unix socket in tests).
pub trait Conn: Read + Write + Send {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn shutdown_write(&self) -> io::Result<()>;
    fn shutdown_read(&self) -> io::Result<()>;
    /// A second handle on the same connection (for two-way stdio relays).
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>>;
}

impl Conn for UnixStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, t)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
    fn shutdown_read(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Read)
    }
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
}

impl Conn for VsockStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        VsockStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        VsockStream::set_write_timeout(self, t)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        VsockStream::shutdown_write(self)
    }
    fn shutdown_read(&self) -> io::Result<()> {
        VsockStream::shutdown_read(self)
    }
    fn try_clone_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
}

/// Where the agent listens.
pub enum Listener {
    Vsock(VsockListener),
    Unix(UnixListener),
}

impl Listener {
    pub(super) fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Vsock(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }

    /// Makes [`accept`](Self::accept) return `WouldBlock` instead of waiting.
    pub(super) fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Vsock(l) => l.set_nonblocking(true),
            Listener::Unix(l) => l.set_nonblocking(true),
        }
    }

    pub(super) fn accept(&self) -> io::Result<Box<dyn Conn>> {
        Ok(match self {
            Listener::Vsock(l) => Box::new(l.accept()?),
            Listener::Unix(l) => Box::new(l.accept()?.0),
        })
    }
}
