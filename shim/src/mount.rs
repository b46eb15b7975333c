//! Mounting containerd's rootfs mounts (a snapshot: overlay, or a bind
//! mount) at `<bundle>/rootfs`, as runc's shim does, and unmounting them.
//! mount(2) is called directly: the `containerd-shim` crate's helper
//! forks and waits through the crate's reaper, which this shim turns off.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use containerd_shim::protos::types::mount::Mount;

use crate::error::{Result, ShimError};

/// The mount(2) flags and the file-system data of fstab-style options.
pub fn parse_options(options: &[String]) -> (libc::c_ulong, String) {
    let mut flags: libc::c_ulong = 0;
    let mut data = Vec::new();
    for o in options {
        let (set, clear) = match o.as_str() {
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "defaults" => (0, 0),
            o => match husk_sys::mount::mount_flag(o) {
                Some((true, f)) => (f, 0),
                Some((false, f)) => (0, f),
                None => {
                    data.push(o);
                    continue;
                }
            },
        };
        flags = (flags | set) & !clear;
    }
    (flags, data.join(","))
}

fn cstr(field: &'static str, s: &[u8]) -> Result<CString> {
    CString::new(s).map_err(|_| ShimError::field(field, "contains a NUL byte"))
}

fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    let (flags, data) = parse_options(&m.options);
    let src = cstr("rootfs.source", m.source.as_bytes())?;
    let typ = cstr("rootfs.type", m.type_.as_bytes())?;
    let tgt = cstr("rootfs", target.as_os_str().as_bytes())?;
    let dat = cstr("rootfs.options", data.as_bytes())?;
    let typ_ptr = if m.type_.is_empty() || flags & libc::MS_BIND != 0 {
        std::ptr::null()
    } else {
        typ.as_ptr()
    };
    let dat_ptr = if data.is_empty() {
        std::ptr::null()
    } else {
        dat.as_ptr().cast()
    };
    // SAFETY: every pointer is a NUL-terminated string that outlives the
    // call, or null where mount(2) allows it.
    let r = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), typ_ptr, flags, dat_ptr) };
    if r != 0 {
        return Err(ShimError::field(
            "rootfs",
            format!(
                "mount {} ({}) at {}: {}",
                m.source,
                m.type_,
                target.display(),
                std::io::Error::last_os_error()
            ),
        ));
    }
    // A read-only bind mount takes a remount to become read-only.
    if flags & libc::MS_BIND != 0 && flags & libc::MS_RDONLY != 0 {
        // SAFETY: as above, with null source, type and data.
        let r = unsafe {
            libc::mount(
                std::ptr::null(),
                tgt.as_ptr(),
                std::ptr::null(),
                flags | libc::MS_REMOUNT,
                std::ptr::null(),
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            unmount(target);
            return Err(ShimError::field(
                "rootfs",
                format!("remount {} read-only: {e}", target.display()),
            ));
        }
    }
    Ok(())
}

/// Mounts `mounts` at `<bundle>/rootfs` (nothing to do for none).
pub fn mount_rootfs(bundle: &Path, mounts: &[Mount]) -> Result<()> {
    if mounts.is_empty() {
        return Ok(());
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target)
        .map_err(ShimError::io(format!("mkdir {}", target.display())))?;
    for m in mounts {
        if let Err(e) = mount_one(m, &target) {
            unmount(&target);
            return Err(e);
        }
    }
    Ok(())
}

/// Detaches every mount stacked at `target` (none is fine).
pub fn unmount(target: &Path) {
    let Ok(t) = CString::new(target.as_os_str().as_bytes()) else {
        return;
    };
    // Bounded: one round per mount stacked there.
    for _ in 0..16 {
        // SAFETY: umount2(2) with a NUL-terminated path.
        if unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) } != 0 {
            break;
        }
    }
}

/// Unmounts what create mounted at `<bundle>/rootfs`.
pub fn unmount_rootfs(bundle: &Path) {
    unmount(&bundle.join("rootfs"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn overlay_options() {
        let (f, d) = parse_options(&s(&[
            "index=off",
            "workdir=/s/2/work",
            "upperdir=/s/2/fs",
            "lowerdir=/s/1/fs",
        ]));
        assert_eq!(f, 0);
        assert_eq!(
            d,
            "index=off,workdir=/s/2/work,upperdir=/s/2/fs,lowerdir=/s/1/fs"
        );
    }

    #[test]
    fn bind_flags() {
        let (f, d) = parse_options(&s(&["rbind", "ro", "nosuid"]));
        assert_eq!(
            f,
            libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY | libc::MS_NOSUID
        );
        assert_eq!(d, "");
        let (f, _) = parse_options(&s(&["ro", "rw"]));
        assert_eq!(f, 0);
    }

    #[test]
    fn bad_source_names_the_field() {
        let m = Mount {
            type_: "overlay".into(),
            source: "over\0lay".into(),
            ..Default::default()
        };
        let e = mount_one(&m, Path::new("/nonexistent")).unwrap_err();
        assert_eq!(e.to_string(), "rootfs.source: contains a NUL byte");
    }
}
