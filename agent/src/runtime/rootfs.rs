//! The root file systems the agent mounts for containers: a guest
//! directory as it is, a block device, or a virtio-fs share (mounted once
//! and shared by the containers that use it).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use husk_protocol::container::{share_path, valid_share_tag};
use husk_protocol::{ErrorCode, RootfsSource};

use super::{bad, err, lock, Res};
use crate::container::{rootfs, rootfs_unmount, spec};
use crate::log::{debug, info};

/// Where the agent mounts block-device and virtio-fs root file systems.
pub const RUN_DIR: &str = "/run/husk/containers";

/// A container's root file system: where it is, and what the agent
/// mounted for it (to unmount with the container).
pub struct Rootfs {
    pub path: PathBuf,
    pub mounted: Option<PathBuf>,
}

/// The virtio-fs shares the agent mounts (serialized: a pod's containers
/// may ask for one share at once).
#[derive(Default)]
pub struct Shares {
    lock: Mutex<()>,
}

impl Shares {
    /// Mounts the virtio-fs share `tag` at `at` unless it is mounted
    /// there already (shares outlive containers: a pod's containers and
    /// their bind mounts use the same one).
    pub fn mount(&self, tag: &str, at: &Path) -> Res<()> {
        let _guard = lock(&self.lock);
        if is_mount(at) {
            return Ok(());
        }
        std::fs::create_dir_all(at)
            .map_err(|e| err(ErrorCode::Internal, format!("mkdir {}: {e}", at.display())))?;
        rootfs::mount(Some(tag), at, Some("virtiofs"), 0, Some(""))
            .map_err(|e| bad(format!("rootfs: mount virtio-fs share {tag:?}: {e}")))
    }

    /// Mounts the virtio-fs share `tag` from a thread of its own, so that
    /// the first create finds it mounted (`husk.share=TAG` at boot: the
    /// host names its share before it sends anything). A failure is only
    /// logged: the create that needs the share mounts it and reports why not.
    pub fn premount(self: &Arc<Self>, tag: String) {
        let shares = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("share".into())
            .spawn(move || {
                let t0 = std::time::Instant::now();
                match shares.mount(&tag, Path::new(&share_path(&tag))) {
                    Ok(()) => debug!(
                        "virtio-fs share {tag} mounted at boot in {} ms",
                        t0.elapsed().as_millis()
                    ),
                    Err(e) => info!("virtio-fs share {tag}: {}", e.message),
                }
            });
        if let Err(e) = spawned {
            info!("virtio-fs share: cannot start a thread: {e}");
        }
    }
}

/// Whether `p` is the root of a mount (its device differs from its parent's).
fn is_mount(p: &Path) -> bool {
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Makes the root file system of container `id` from `src`.
pub fn mount(shares: &Shares, env: &spec::Env, id: &str, src: &RootfsSource) -> Res<Rootfs> {
    match src {
        RootfsSource::Path { path } => guest_dir(path),
        RootfsSource::Block {
            device,
            fstype,
            readonly,
            options,
        } => {
            check_block(device, fstype, options, env)?;
            let flags = if *readonly { libc::MS_RDONLY } else { 0 };
            mount_at_run_dir(id, device, fstype, flags, options)
        }
        RootfsSource::VirtioFs { tag, subdir } => {
            if !valid_share_tag(tag) {
                return Err(bad("rootfs.tag: must be 1-36 printable bytes without '/'"));
            }
            let share = PathBuf::from(share_path(tag));
            shares.mount(tag, &share)?;
            let root = match subdir_of(subdir.as_deref())? {
                None => share,
                Some(rel) => share.join(rel),
            };
            match std::fs::symlink_metadata(&root) {
                Ok(m) if m.is_dir() => Ok(Rootfs {
                    path: root,
                    mounted: None,
                }),
                Ok(_) => Err(bad(format!(
                    "rootfs.subdir: {} is not a directory",
                    root.display()
                ))),
                Err(e) => Err(bad(format!("rootfs.subdir: {}: {e}", root.display()))),
            }
        }
    }
}

/// `rootfs.path`: a directory of the guest, used as it is.
fn guest_dir(path: &str) -> Res<Rootfs> {
    if !path.starts_with('/') {
        return Err(bad(format!(
            "rootfs.path: {path:?} must be an absolute path"
        )));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(Rootfs {
            path: PathBuf::from(path),
            mounted: None,
        }),
        Ok(_) => Err(bad(format!("rootfs.path: {path} is not a directory"))),
        Err(e) => Err(bad(format!("rootfs.path: {path}: {e}"))),
    }
}

/// Checks a block-device root file system before anything is mounted.
fn check_block(device: &str, fstype: &str, options: &str, env: &spec::Env) -> Res<()> {
    if !device.starts_with("/dev/") || device.contains("..") {
        return Err(bad(format!("rootfs.device: {device:?} is not a /dev path")));
    }
    match std::fs::metadata(device) {
        Ok(m) if m.file_type().is_block_device() => {}
        Ok(_) => {
            return Err(bad(format!(
                "rootfs.device: {device} is not a block device"
            )))
        }
        Err(e) => return Err(bad(format!("rootfs.device: {device}: {e}"))),
    }
    if !env.filesystems.iter().any(|f| f == fstype) {
        return Err(bad(format!(
            "rootfs.fstype: unknown file system type {fstype:?}"
        )));
    }
    if options.contains('\0') {
        return Err(bad("rootfs.options: contains a NUL byte"));
    }
    Ok(())
}

/// Mounts `source` at the container's directory under [`RUN_DIR`].
fn mount_at_run_dir(id: &str, source: &str, fstype: &str, flags: u64, data: &str) -> Res<Rootfs> {
    let t = Path::new(RUN_DIR).join(id).join("rootfs");
    std::fs::create_dir_all(&t)
        .map_err(|e| err(ErrorCode::Internal, format!("mkdir {}: {e}", t.display())))?;
    rootfs::mount(Some(source), &t, Some(fstype), flags, Some(data)).map_err(|e| {
        let _ = rootfs_unmount(&t);
        bad(format!("rootfs: mount {source} ({fstype}): {e}"))
    })?;
    Ok(Rootfs {
        path: t.clone(),
        mounted: Some(t),
    })
}

/// `rootfs.subdir`: a relative path inside the share, without `..`
/// (`None` for the share's root).
fn subdir_of(subdir: Option<&str>) -> Res<Option<&Path>> {
    match subdir {
        None | Some("") => Ok(None),
        Some(d) => {
            let rel = Path::new(d);
            if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                return Err(bad(format!(
                    "rootfs.subdir: {d:?} must be a relative path without '..'"
                )));
            }
            Ok(Some(rel))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> spec::Env {
        spec::Env {
            filesystems: vec!["ext4".into()],
            bundle: None,
        }
    }

    fn msg(r: Res<Rootfs>) -> String {
        let e = r.err().expect("an error");
        assert_eq!(e.code, ErrorCode::BadRequest);
        e.message
    }

    #[test]
    fn guest_directories() {
        let sh = Shares::default();
        let p = |path: &str| RootfsSource::Path { path: path.into() };
        let r = mount(&sh, &env(), "c", &p("/tmp")).unwrap();
        assert_eq!((r.path, r.mounted), (PathBuf::from("/tmp"), None));
        assert_eq!(
            msg(mount(&sh, &env(), "c", &p("tmp"))),
            "rootfs.path: \"tmp\" must be an absolute path"
        );
        assert_eq!(
            msg(mount(&sh, &env(), "c", &p("/proc/self/status"))),
            "rootfs.path: /proc/self/status is not a directory"
        );
        assert!(msg(mount(&sh, &env(), "c", &p("/no/such/dir")))
            .starts_with("rootfs.path: /no/such/dir: "));
    }

    #[test]
    fn block_devices_are_checked_before_mounting() {
        let sh = Shares::default();
        let blk = |device: &str, fstype: &str, options: &str| RootfsSource::Block {
            device: device.into(),
            fstype: fstype.into(),
            readonly: false,
            options: options.into(),
        };
        assert_eq!(
            msg(mount(&sh, &env(), "c", &blk("/etc/passwd", "ext4", ""))),
            "rootfs.device: \"/etc/passwd\" is not a /dev path"
        );
        assert_eq!(
            msg(mount(&sh, &env(), "c", &blk("/dev/../etc", "ext4", ""))),
            "rootfs.device: \"/dev/../etc\" is not a /dev path"
        );
        assert_eq!(
            msg(mount(&sh, &env(), "c", &blk("/dev/null", "ext4", ""))),
            "rootfs.device: /dev/null is not a block device"
        );
        assert!(
            msg(mount(&sh, &env(), "c", &blk("/dev/nosuchdisk", "ext4", "")))
                .starts_with("rootfs.device: /dev/nosuchdisk: ")
        );
    }

    #[test]
    fn share_tags_and_subdirs() {
        let sh = Shares::default();
        let vfs = RootfsSource::VirtioFs {
            tag: "a/b".into(),
            subdir: None,
        };
        assert_eq!(
            msg(mount(&sh, &env(), "c", &vfs)),
            "rootfs.tag: must be 1-36 printable bytes without '/'"
        );
        assert_eq!(subdir_of(None).unwrap(), None);
        assert_eq!(subdir_of(Some("")).unwrap(), None);
        assert_eq!(subdir_of(Some("a/b")).unwrap(), Some(Path::new("a/b")));
        for bad in ["/abs", "a/../b", "..", "./a"] {
            let e = subdir_of(Some(bad)).unwrap_err();
            assert_eq!(
                e.message,
                format!("rootfs.subdir: {bad:?} must be a relative path without '..'")
            );
        }
    }
}
