//! Mount flags as mount(2) takes them.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The per-mount flags of the mount at `p` (ro, nosuid, nodev, noexec,
/// the atime ones) as mount(2)'s `MS_*` flags: a bind remount sets exactly
/// the flags it is given (and, in a user namespace, may not clear locked
/// ones), so a remount that adds a flag must pass these too.
pub fn mount_flags(p: &Path) -> io::Result<libc::c_ulong> {
    let c = CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: statvfs is plain data; all-zero is a valid value to overwrite.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok([
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ]
    .iter()
    .filter(|(st_flag, _)| st.f_flag & st_flag != 0)
    .fold(0, |acc, (_, ms)| acc | ms))
}

/// MS_* flags of mount options; `Some(true)` sets, `Some(false)` clears.
pub fn mount_flag(o: &str) -> Option<(bool, libc::c_ulong)> {
    Some(match o {
        "ro" => (true, libc::MS_RDONLY),
        "rw" => (false, libc::MS_RDONLY),
        "nosuid" => (true, libc::MS_NOSUID),
        "suid" => (false, libc::MS_NOSUID),
        "nodev" => (true, libc::MS_NODEV),
        "dev" => (false, libc::MS_NODEV),
        "noexec" => (true, libc::MS_NOEXEC),
        "exec" => (false, libc::MS_NOEXEC),
        "sync" => (true, libc::MS_SYNCHRONOUS),
        "async" => (false, libc::MS_SYNCHRONOUS),
        "dirsync" => (true, libc::MS_DIRSYNC),
        "remount" => (true, libc::MS_REMOUNT),
        "mand" => (true, libc::MS_MANDLOCK),
        "nomand" => (false, libc::MS_MANDLOCK),
        "atime" => (false, libc::MS_NOATIME),
        "noatime" => (true, libc::MS_NOATIME),
        "diratime" => (false, libc::MS_NODIRATIME),
        "nodiratime" => (true, libc::MS_NODIRATIME),
        "relatime" => (true, libc::MS_RELATIME),
        "norelatime" => (false, libc::MS_RELATIME),
        "strictatime" => (true, libc::MS_STRICTATIME),
        "nostrictatime" => (false, libc::MS_STRICTATIME),
        "lazytime" => (true, libc::MS_LAZYTIME),
        "nolazytime" => (false, libc::MS_LAZYTIME),
        "silent" => (true, libc::MS_SILENT),
        "loud" => (false, libc::MS_SILENT),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags of `p` as /proc/self/mountinfo's per-mount options say.
    fn from_mountinfo(p: &str) -> libc::c_ulong {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let opts = info
            .lines()
            .rfind(|l| l.split(' ').nth(4) == Some(p))
            .and_then(|l| l.split(' ').nth(5))
            .unwrap()
            .to_string();
        [
            ("ro", libc::MS_RDONLY),
            ("nosuid", libc::MS_NOSUID),
            ("nodev", libc::MS_NODEV),
            ("noexec", libc::MS_NOEXEC),
            ("noatime", libc::MS_NOATIME),
            ("nodiratime", libc::MS_NODIRATIME),
            ("relatime", libc::MS_RELATIME),
        ]
        .iter()
        .filter(|(o, _)| opts.split(',').any(|x| x == *o))
        .fold(0, |acc, (_, ms)| acc | ms)
    }

    #[test]
    fn the_flags_are_the_mounts_own() {
        for p in ["/", "/proc"] {
            assert_eq!(mount_flags(Path::new(p)).unwrap(), from_mountinfo(p), "{p}");
        }
        assert!(mount_flags(Path::new("/nonexistent/x")).is_err());
    }
}
