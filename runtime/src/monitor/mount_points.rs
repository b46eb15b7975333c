//! Mount points in a read-only rootfs. The guest makes a missing mount
//! point in the rootfs before it mounts there (as runc does, before it
//! makes the root read-only); a `root.readonly` rootfs is read-only on the
//! host too (see [`super::sandbox::mount_shares`]), so the guest cannot. The
//! monitor makes them on the host instead, before the rootfs's bind turns
//! read-only: each path resolved inside the rootfs as if it were `/`
//! (openat2 with RESOLVE_IN_ROOT: `..` and symlinks, absolute ones too,
//! stay inside), each missing component made by name in a directory found
//! that way, so nothing is made outside the rootfs whatever it holds.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use crate::bundle::Bundle;

/// A path the guest mounts on (a file for a bind of a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MountPoint {
    pub(super) dest: PathBuf,
    pub(super) file: bool,
}

/// The mount points the guest needs in the rootfs itself: `/dev` (the
/// agent mounts one when the spec does not), each mount's destination that
/// is not inside an earlier mount (those are made in that mount), and the
/// process's working directory.
pub(super) fn wanted(b: &Bundle) -> Vec<MountPoint> {
    let mut out: Vec<MountPoint> = vec![MountPoint {
        dest: "/dev".into(),
        file: false,
    }];
    let mut mounted: Vec<PathBuf> = vec![];
    for (i, m) in b.guest_spec.mounts().iter().flatten().enumerate() {
        let dest = m.destination().clone();
        if !mounted.iter().any(|d| dest.starts_with(d)) {
            let name = format!("m{i}");
            let file = b.shares.iter().any(|s| s.name == name && !s.is_dir);
            out.push(MountPoint {
                dest: dest.clone(),
                file,
            });
        }
        mounted.push(dest);
    }
    if let Some(cwd) = b.guest_spec.process().as_ref().map(|p| p.cwd().clone()) {
        if !mounted.iter().any(|d| cwd.starts_with(d)) {
            out.push(MountPoint {
                dest: cwd,
                file: false,
            });
        }
    }
    out
}

/// Makes every missing mount point of `points` inside `root`. Best effort:
/// what cannot be made is left to the guest, whose error names it.
pub(super) fn make_all(root: &Path, points: &[MountPoint]) {
    let root_fd = match open_dir(root) {
        Ok(fd) => fd,
        Err(e) => {
            crate::debug!("mount points in {}: {e}", root.display());
            return;
        }
    };
    for p in points {
        if let Err(e) = make(&root_fd, &p.dest, p.file) {
            crate::debug!(
                "mount point {} in {}: {e} (left to the guest)",
                p.dest.display(),
                root.display()
            );
        }
    }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    let c = cstr(p)?;
    // SAFETY: a valid NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor open(2) just returned, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `rel` (relative) opened as an O_PATH descriptor, resolved inside the
/// directory `root` as if it were `/`.
fn open_in_root(root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let c = cstr(if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    })?;
    // SAFETY: open_how is plain data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = u64::try_from(libc::O_PATH | libc::O_CLOEXEC).unwrap_or(0);
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2(2) with a descriptor we own, a valid path and a
    // valid open_how of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &raw const how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(r).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: a descriptor openat2(2) just returned, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes `dest` inside `root` (its parents as directories, itself a file
/// with `file`), component by component.
fn make(root: &OwnedFd, dest: &Path, file: bool) -> io::Result<()> {
    let comps: Vec<&std::ffi::OsStr> = dest
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            Component::ParentDir => Some("..".as_ref()),
            _ => None,
        })
        .collect();
    let mut parent = PathBuf::new();
    for (i, name) in comps.iter().enumerate() {
        let here = parent.join(name);
        match open_in_root(root, &here) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let dir = open_in_root(root, &parent)?;
                let n = CString::new(name.as_encoded_bytes())
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                let r = if file && i + 1 == comps.len() {
                    // SAFETY: mknodat(2) of a regular file by name in a
                    // directory we hold.
                    unsafe { libc::mknodat(dir.as_raw_fd(), n.as_ptr(), libc::S_IFREG | 0o644, 0) }
                } else {
                    // SAFETY: mkdirat(2) by name in a directory we hold.
                    unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), 0o755) }
                };
                if r != 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(e);
                    }
                }
            }
            Err(e) => return Err(e),
        }
        parent = here;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(dest: &str, file: bool) -> MountPoint {
        MountPoint {
            dest: dest.into(),
            file,
        }
    }

    #[test]
    fn mount_points_are_made_inside_the_rootfs_only() {
        let t = std::env::temp_dir().join(format!("husk-mountpoints-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        let (root, outside) = (t.join("rootfs"), t.join("outside"));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // Links that point out of the rootfs, absolutely and by `..`.
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../outside", root.join("etc/rel")).unwrap();
        std::fs::write(root.join("etc/hosts"), "kept").unwrap();
        // Where they lead when resolved inside the rootfs.
        let abs_inside = root.join(outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&abs_inside).unwrap();
        std::fs::create_dir_all(root.join("outside")).unwrap();
        std::os::unix::fs::symlink("/nowhere", root.join("dangling")).unwrap();
        make_all(
            &root,
            &[
                point("/data/deep/dir", false),
                point("/etc/resolv.conf", true),
                point("/etc/hosts", true),
                point("/abs/x", false),
                point("/etc/rel/y", false),
                point("/../../z", false),
                point("/dangling/q", false),
            ],
        );
        assert!(root.join("data/deep/dir").is_dir());
        assert!(root.join("etc/resolv.conf").is_file());
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hosts")).unwrap(),
            "kept"
        );
        // The links are followed inside the rootfs, as the guest would.
        assert!(abs_inside.join("x").is_dir());
        assert!(root.join("outside/y").is_dir());
        assert!(root.join("z").is_dir());
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "made outside the rootfs"
        );
        assert!(!t.join("z").exists() && !Path::new("/z").exists());
        // A link to nothing is left to the guest (whose error names it).
        assert!(!root.join("nowhere").exists() && !Path::new("/nowhere/q").exists());
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn the_mount_points_a_guest_needs_in_the_rootfs() {
        let t = std::env::temp_dir().join(format!("husk-wanted-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(t.join("rootfs")).unwrap();
        std::fs::create_dir_all(t.join("vol")).unwrap();
        std::fs::write(t.join("hosts"), "").unwrap();
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/work/dir", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs", "readonly": true},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
                {"destination": "/data", "type": "bind", "source": "vol", "options": ["rbind"]},
                {"destination": "/etc/hosts", "type": "bind", "source": "hosts", "options": ["bind"]},
                {"destination": "/data/sub", "type": "tmpfs", "source": "tmpfs"}
            ],
            "linux": {"namespaces": [{"type": "network"}]}
        });
        let b =
            crate::bundle::from_value(&t, spec, &crate::bundle::HostLimits::with(2, 4096)).unwrap();
        let got: Vec<(String, bool)> = wanted(&b)
            .into_iter()
            .map(|p| (p.dest.display().to_string(), p.file))
            .collect();
        let want = [
            ("/dev", false),
            ("/proc", false),
            ("/dev", false),
            ("/data", false),
            ("/etc/hosts", true),
            ("/work/dir", false),
        ];
        assert_eq!(
            got,
            want.map(|(d, f)| (d.to_string(), f)),
            "nested ones (/dev/pts, /data/sub) are made in their mounts"
        );
        std::fs::remove_dir_all(&t).unwrap();
    }
}
