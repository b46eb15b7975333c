//! The host's view of a container's share, in a mount namespace of the
//! test's own: what virtiofsd would serve to a guest that mounts the share
//! itself.

use std::io::ErrorKind;
use std::path::Path;

use super::mount_shares;
use crate::bundle::Shared;
use crate::testutil::{in_mount_ns, mount_tmpfs};

fn share(source: &Path, name: &str, readonly: bool, recursive: bool) -> Shared {
    Shared {
        source: source.to_path_buf(),
        name: name.into(),
        is_dir: source.is_dir(),
        readonly,
        recursive,
    }
}

fn statvfs_flags(p: &Path) -> u64 {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs is plain data; all-zero is a valid value to overwrite.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid path and out-pointer.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_flag
}

/// A write to `p` on the host; the error kind if it failed.
fn write(p: &Path) -> Result<(), ErrorKind> {
    std::fs::write(p, "written from the share").map_err(|e| e.kind())
}

#[test]
fn the_host_view_of_a_share_has_its_mode() {
    // The test's tmpfs is noexec: the binds must keep that.
    in_mount_ns("share-modes", libc::MS_NOEXEC, |t| {
        let src = t.join("vol");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("f"), "host").unwrap();
        mount_tmpfs(&src.join("sub"), 0);
        std::fs::write(src.join("sub/g"), "host").unwrap();
        std::fs::write(t.join("file"), "host").unwrap();
        let state = t.join("state");
        let shares = [
            share(&src, "ro", true, false),
            share(&src, "rw", false, false),
            share(&src, "rbind", false, true),
            share(&src, "rbind-ro", true, true),
            share(&t.join("file"), "file-ro", true, false),
        ];
        let dir = mount_shares(&state, &shares, &[]).unwrap();
        assert_eq!(dir, state.join("share"));

        // One source, two modes: each bind keeps its own.
        assert_eq!(write(&dir.join("ro/f")), Err(ErrorKind::ReadOnlyFilesystem));
        assert_eq!(
            write(&dir.join("ro/new")),
            Err(ErrorKind::ReadOnlyFilesystem)
        );
        assert_eq!(
            write(&dir.join("file-ro")),
            Err(ErrorKind::ReadOnlyFilesystem)
        );
        assert_eq!(std::fs::read_to_string(t.join("file")).unwrap(), "host");
        assert_eq!(write(&dir.join("rw/f")), Ok(()));
        assert_eq!(
            std::fs::read_to_string(src.join("f")).unwrap(),
            "written from the share"
        );

        // A plain bind leaves the mount under the source out; an rbind
        // brings it, with the share's mode.
        assert!(dir.join("rw/sub").is_dir());
        assert!(!dir.join("rw/sub/g").exists());
        assert!(!dir.join("ro/sub/g").exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("rbind/sub/g")).unwrap(),
            "host"
        );
        assert_eq!(
            write(&dir.join("rbind-ro/sub/g")),
            Err(ErrorKind::ReadOnlyFilesystem)
        );
        assert_eq!(write(&dir.join("rbind/sub/g")), Ok(()));

        // nosuid and nodev everywhere, the source's noexec kept; the
        // sources themselves are untouched.
        for p in ["ro", "rw", "rbind", "rbind/sub", "rbind-ro/sub", "file-ro"] {
            let f = statvfs_flags(&dir.join(p));
            assert_ne!(f & libc::ST_NOSUID, 0, "{p}: not nosuid");
            assert_ne!(f & libc::ST_NODEV, 0, "{p}: not nodev");
        }
        for p in ["ro", "rw", "rbind"] {
            assert_ne!(
                statvfs_flags(&dir.join(p)) & libc::ST_NOEXEC,
                0,
                "{p}: noexec lost"
            );
        }
        assert_eq!(statvfs_flags(&src) & (libc::ST_NOSUID | libc::ST_RDONLY), 0);

        // The top level holds the mount points only: nothing can be
        // made there, whatever the share modes below.
        assert_eq!(write(&dir.join("new")), Err(ErrorKind::ReadOnlyFilesystem));
        assert_eq!(
            std::fs::create_dir(dir.join("d")).map_err(|e| e.kind()),
            Err(ErrorKind::ReadOnlyFilesystem)
        );
        let f = statvfs_flags(&dir);
        for (flag, name) in [
            (libc::ST_NOSUID, "nosuid"),
            (libc::ST_NODEV, "nodev"),
            (libc::ST_NOEXEC, "noexec"),
        ] {
            assert_ne!(f & flag, 0, "the share's top level is not {name}");
        }
        assert_eq!(statvfs_flags(&src.join("sub")) & libc::ST_RDONLY, 0);
    });
}

#[test]
fn a_read_only_source_stays_read_only_in_a_rw_share() {
    in_mount_ns("share-ro-source", 0, |t| {
        let src = t.join("vol");
        std::fs::create_dir_all(&src).unwrap();
        mount_tmpfs(&src, libc::MS_RDONLY);
        let dir = mount_shares(&t.join("state"), &[share(&src, "rw", false, true)], &[]).unwrap();
        assert_eq!(write(&dir.join("rw/f")), Err(ErrorKind::ReadOnlyFilesystem));
    });
}

#[test]
fn a_read_only_rootfs_gets_its_mount_points_then_turns_read_only() {
    in_mount_ns("share-ro-rootfs", 0, |t| {
        let rootfs = t.join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let points = [super::mount_points::MountPoint {
            dest: "/data".into(),
            file: false,
        }];
        let root = share(&rootfs, crate::bundle::ROOTFS_DIR, true, true);
        let dir = mount_shares(&t.join("state"), &[root], &points).unwrap();
        assert!(rootfs.join("data").is_dir(), "the mount point on the host");
        assert_eq!(
            write(&dir.join("rootfs/data/f")),
            Err(ErrorKind::ReadOnlyFilesystem)
        );
    });
}
