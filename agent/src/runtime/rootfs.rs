//! The root file systems the agent mounts for containers: a guest
//! directory as it is, a block device, or a virtio-fs share (mounted once
//! and shared by the containers that use it).

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use husk_protocol::container::{check_share_tag, share_path};
use husk_protocol::{ErrorCode, RootfsSource};
use thiserror::Error;

use super::lock;
use crate::container::{rootfs, rootfs_unmount, spec, SpecError};
use crate::log::{debug, info};

/// Why a container's root file system could not be made.
#[derive(Debug, Error)]
pub enum RootfsError {
    /// A `rootfs` field of the request that is not acceptable.
    #[error(transparent)]
    Field(#[from] SpecError),
    /// The path `path` of request field `field` is not usable.
    #[error("{field}: {path}: {source}")]
    Path {
        field: &'static str,
        path: String,
        source: io::Error,
    },
    /// Mounting `what` failed.
    #[error("rootfs: mount {what}: {source}")]
    Mount { what: String, source: io::Error },
    #[error("mkdir {}: {source}", path.display())]
    Mkdir { path: PathBuf, source: io::Error },
}

impl RootfsError {
    /// The protocol's code: the agent's own failures are internal, the
    /// rest the request's.
    pub fn code(&self) -> ErrorCode {
        match self {
            RootfsError::Mkdir { .. } => ErrorCode::Internal,
            _ => ErrorCode::BadRequest,
        }
    }

    fn path(field: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RootfsError {
        let path = path.display().to_string();
        move |source| RootfsError::Path {
            field,
            path,
            source,
        }
    }

    fn mkdir(path: &Path) -> impl FnOnce(io::Error) -> RootfsError {
        let path = path.to_path_buf();
        move |source| RootfsError::Mkdir { path, source }
    }
}

type Res<T> = Result<T, RootfsError>;

fn invalid(field: &str, problem: impl Into<String>) -> RootfsError {
    RootfsError::Field(SpecError::invalid(field, problem))
}

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
        std::fs::create_dir_all(at).map_err(RootfsError::mkdir(at))?;
        rootfs::mount(Some(tag), at, Some("virtiofs"), 0, Some("")).map_err(|source| {
            RootfsError::Mount {
                what: format!("virtio-fs share {tag:?}"),
                source,
            }
        })
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
                    Err(e) => info!("virtio-fs share {tag}: {e}"),
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
            if let Err(e) = check_share_tag(tag) {
                return Err(invalid("rootfs.tag", e.to_string()));
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
                Ok(_) => Err(invalid(
                    "rootfs.subdir",
                    format!("{} is not a directory", root.display()),
                )),
                Err(e) => Err(RootfsError::path("rootfs.subdir", &root)(e)),
            }
        }
    }
}

/// `rootfs.path`: a directory of the guest, used as it is.
fn guest_dir(path: &str) -> Res<Rootfs> {
    if !path.starts_with('/') {
        return Err(RootfsError::Field(SpecError::NotAbsolute {
            field: "rootfs.path".into(),
            value: path.into(),
        }));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(Rootfs {
            path: PathBuf::from(path),
            mounted: None,
        }),
        Ok(_) => Err(invalid("rootfs.path", format!("{path} is not a directory"))),
        Err(e) => Err(RootfsError::path("rootfs.path", Path::new(path))(e)),
    }
}

/// Checks a block-device root file system before anything is mounted.
fn check_block(device: &str, fstype: &str, options: &str, env: &spec::Env) -> Res<()> {
    if !device.starts_with("/dev/") || device.contains("..") {
        return Err(invalid(
            "rootfs.device",
            format!("{device:?} is not a /dev path"),
        ));
    }
    match std::fs::metadata(device) {
        Ok(m) if m.file_type().is_block_device() => {}
        Ok(_) => {
            return Err(invalid(
                "rootfs.device",
                format!("{device} is not a block device"),
            ))
        }
        Err(e) => return Err(RootfsError::path("rootfs.device", Path::new(device))(e)),
    }
    if !env.filesystems.iter().any(|f| f == fstype) {
        return Err(invalid(
            "rootfs.fstype",
            format!("unknown file system type {fstype:?}"),
        ));
    }
    if options.contains('\0') {
        return Err(RootfsError::Field(SpecError::nul("rootfs.options")));
    }
    Ok(())
}

/// Mounts `source` at the container's directory under [`RUN_DIR`].
fn mount_at_run_dir(id: &str, source: &str, fstype: &str, flags: u64, data: &str) -> Res<Rootfs> {
    let t = Path::new(RUN_DIR).join(id).join("rootfs");
    std::fs::create_dir_all(&t).map_err(RootfsError::mkdir(&t))?;
    rootfs::mount(Some(source), &t, Some(fstype), flags, Some(data)).map_err(|e| {
        let _ = rootfs_unmount(&t);
        RootfsError::Mount {
            what: format!("{source} ({fstype})"),
            source: e,
        }
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
                return Err(invalid(
                    "rootfs.subdir",
                    format!("{d:?} must be a relative path without '..'"),
                ));
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
        assert_eq!(e.code(), ErrorCode::BadRequest);
        e.to_string()
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
            "rootfs.tag: tag \"a/b\": invalid character '/' (printable ASCII, no spaces, commas or '/')"
        );
        assert_eq!(subdir_of(None).unwrap(), None);
        assert_eq!(subdir_of(Some("")).unwrap(), None);
        assert_eq!(subdir_of(Some("a/b")).unwrap(), Some(Path::new("a/b")));
        for bad in ["/abs", "a/../b", "..", "./a"] {
            let e = subdir_of(Some(bad)).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("rootfs.subdir: {bad:?} must be a relative path without '..'")
            );
        }
    }
}
