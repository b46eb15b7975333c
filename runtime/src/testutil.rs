//! Test helpers: work in a mount namespace of its own, never the host's.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Mounts a tmpfs with `flags` at `p` (in the caller's mount namespace).
pub fn mount_tmpfs(p: &Path, flags: libc::c_ulong) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated strings; no data argument.
    let r = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c.as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    assert_eq!(
        r,
        0,
        "mount tmpfs on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// Runs `f` on a thread of its own in a new, private mount namespace, on a
/// fresh tmpfs directory (mounted with `flags`) it gets as its argument.
/// None, with the reason printed, when this is not root.
pub fn in_mount_ns<T: Send + 'static>(
    name: &str,
    flags: libc::c_ulong,
    f: impl FnOnce(&Path) -> T + Send + 'static,
) -> Option<T> {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped {name}: mount namespaces need root");
        return None;
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("husk-ns-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.clone();
    let r = std::thread::spawn(move || {
        // SAFETY: unshare(2) with a flag; this thread alone changes
        // namespace (its fs information is unshared with it).
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNS) }, 0);
        // SAFETY: valid strings / nulls as mount(2) allows.
        let r = unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "make / private: {}", std::io::Error::last_os_error());
        mount_tmpfs(&d, flags);
        f(&d)
    })
    .join();
    // The namespace went with the thread; here the directory is empty.
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Ok(v) => Some(v),
        Err(p) => std::panic::resume_unwind(p),
    }
}
