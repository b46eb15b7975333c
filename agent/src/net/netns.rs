//! The sandbox network namespace: made by a thread that unshares one (a
//! network namespace is per thread), pinned by a bind mount of that
//! thread's `/proc/thread-self/ns/net` on a file (the path containers join
//! by), and entered by short-lived threads that need to open a socket in
//! it (a socket stays in the namespace it was made in, whichever thread
//! then uses it).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{NetError, StepError};

/// The calling thread's network namespace, as the kernel shows it.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Runs `f` on a new thread of its own and returns what it returns (the
/// thread's namespace changes die with it).
fn on_thread<T: Send>(
    what: &str,
    f: impl FnOnce() -> Result<T, NetError> + Send,
) -> Result<T, NetError> {
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("husk-netns".into())
            .spawn_scoped(s, f)
            .map_err(NetError::op(format!("{what}: spawn a thread")))?;
        h.join().unwrap_or_else(|_| {
            Err(NetError::Op {
                what: what.into(),
                source: io::Error::other("the thread panicked").into(),
            })
        })
    })
}

/// Makes a new network namespace, bind-mounts it on `path` (creating the
/// parent directory and the file) and returns a descriptor of it.
pub fn create(path: &Path) -> Result<OwnedFd, NetError> {
    let what = "create the sandbox network namespace";
    on_thread(what, || {
        // SAFETY: unshare with a constant flag; it changes only this
        // thread's network namespace (the thread ends after this call).
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
            return Err(NetError::op(format!("{what}: unshare"))(
                io::Error::last_os_error(),
            ));
        }
        let ns = File::open(THREAD_NETNS).map_err(NetError::op(format!("{what}: open it")))?;
        bind_mount_here(path)?;
        Ok(OwnedFd::from(ns))
    })
}

/// Bind-mounts the calling thread's network namespace on `path`.
fn bind_mount_here(path: &Path) -> Result<(), NetError> {
    let at = || {
        format!(
            "bind-mount the sandbox network namespace on {}",
            path.display()
        )
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(NetError::op(format!("{}: create the directory", at())))?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o444)
        .open(path)
        .map_err(NetError::op(format!("{}: create the file", at())))?;
    let src = c_path(Path::new(THREAD_NETNS))?;
    let dst = c_path(path)?;
    // SAFETY: both are NUL-terminated paths that outlive the call; a bind
    // mount takes no file system type or data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Err(NetError::op(at())(io::Error::last_os_error()));
    }
    Ok(())
}

fn c_path(p: &Path) -> Result<std::ffi::CString, NetError> {
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| NetError::Op {
        what: format!("{}", p.display()),
        source: io::Error::new(io::ErrorKind::InvalidInput, "NUL in the path").into(),
    })
}

/// Runs `f` on a thread that has joined the network namespace `ns`: for
/// opening sockets there.
pub fn run_in<T: Send, E: Into<StepError>>(
    ns: BorrowedFd<'_>,
    what: &str,
    f: impl FnOnce() -> Result<T, E> + Send,
) -> Result<T, NetError> {
    let fd = ns.as_raw_fd();
    on_thread(what, move || {
        // SAFETY: setns on a descriptor borrowed for the duration of the
        // scoped thread; it changes only this thread's network namespace.
        if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } < 0 {
            return Err(NetError::op(format!(
                "{what}: enter the sandbox network namespace"
            ))(io::Error::last_os_error()));
        }
        f().map_err(NetError::op(what.to_string()))
    })
}
