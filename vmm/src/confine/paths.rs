//! The few host paths a confined main thread may still look at and remove:
//! the vsock socket it made (removed when the VM ends) and `smoke`'s private
//! directory. Each is registered during setup, which keeps one copy of it
//! for the life of the process; the main thread's allowlist lets `unlink`,
//! `rmdir` and `lstat` through only with that copy's address as the path,
//! so a confined husk-vmm (still uid 0) cannot remove or probe other files.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;

static PATHS: Mutex<Vec<&'static CStr>> = Mutex::new(Vec::new());

fn lock() -> std::sync::MutexGuard<'static, Vec<&'static CStr>> {
    PATHS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Registers `path` (before the main thread confines itself).
pub fn register(path: &Path) {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let mut paths = lock();
    if !paths.contains(&c.as_c_str()) {
        paths.push(Box::leak(c.into_boxed_c_str()));
    }
}

/// The addresses of the registered paths, for the allowlist.
pub(super) fn addresses() -> Vec<u64> {
    lock().iter().map(|p| p.as_ptr() as usize as u64).collect()
}

fn registered(path: &Path) -> Option<&'static CStr> {
    let bytes = path.as_os_str().as_bytes();
    lock().iter().copied().find(|p| p.to_bytes() == bytes)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `(dev, ino)` of `path` itself (not following a symlink), if it exists.
pub fn lstat_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let Some(c) = registered(path) else {
        return std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
    };
    // SAFETY: an all-zero stat is a valid value to fill in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path alive for the process and `st`
    // a writable stat.
    check(unsafe { libc::lstat(c.as_ptr(), &mut st) }).ok()?;
    Some((st.st_dev, st.st_ino))
}

/// Removes the file `path`.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match registered(path) {
        // SAFETY: `c` is a NUL-terminated path alive for the process.
        Some(c) => check(unsafe { libc::unlink(c.as_ptr()) }),
        None => std::fs::remove_file(path),
    }
}

/// Removes the empty directory `path`.
pub fn remove_dir(path: &Path) -> io::Result<()> {
    match registered(path) {
        // SAFETY: `c` is a NUL-terminated path alive for the process.
        Some(c) => check(unsafe { libc::rmdir(c.as_ptr()) }),
        None => std::fs::remove_dir(path),
    }
}
