//! Image layers as block devices (first part: finding the layers and
//! making their images; nothing uses it yet).
//!
//! Every file a virtio-fs rootfs serves costs FUSE round trips (four or five
//! per cold small-file read: docs/file-io.md). A container's image layers
//! never change, so they can reach the guest as read-only block devices
//! instead, overlaid in the guest under a writable upper directory that
//! stays on virtio-fs (the daemon's own upper directory: `docker commit`
//! keeps working). This module does the host's part:
//!
//! - [`overlay_of`]: Docker (overlay2), Podman (overlay) and containerd
//!   (overlayfs snapshotter) give a rootfs that is an overlay mount; its
//!   lower directories are the layers, read from mountinfo.
//! - [`LayerCache::image_for`]: one read-only ext4 image per layer (the
//!   guest kernel has EXT4 and OVERLAY; `mkfs.ext4 -d` copies modes, owners,
//!   xattrs — overlay's opaque markers included — device nodes such as
//!   whiteouts, and hard links), made once and kept under the cache
//!   directory, keyed by the layer directory's identity (device, inode,
//!   change time: a daemon never changes a layer once made).

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Why a layer has no image (the caller falls back to virtio-fs).
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("layer {path}: more than {limit} entries")]
    TooBig { path: PathBuf, limit: u64 },
    #[error("layer {path}: mkfs.ext4 failed: {reason}")]
    Mkfs { path: PathBuf, reason: String },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> LayerError + '_ {
    move |source| LayerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An overlay mount's directories, top layer first (overlay's order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    pub lower: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
}

/// Splits overlay's `lowerdir` value at its unescaped colons (`\:` is a
/// colon inside a path).
fn split_lowerdir(v: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut().unwrap().push(n);
                }
            }
            ':' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The overlay mounted at `mount_point` in `mountinfo` (the last mount
/// there: the one on top), if it is an overlay with absolute layer paths.
/// (Docker passes relative paths, after a chdir, when the options would
/// not fit a page: those layers cannot be found from here.)
pub fn parse_overlay(mountinfo: &str, mount_point: &Path) -> Option<Overlay> {
    let want = mount_point.to_str()?;
    let line = mountinfo.lines().rev().find(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| husk_protocol::unescape_mountinfo(m) == want)
    })?;
    let (_, after) = line.split_once(" - ")?;
    let mut f = after.splitn(3, ' ');
    if f.next()? != "overlay" {
        return None;
    }
    let _source = f.next()?;
    let mut o = Overlay {
        lower: Vec::new(),
        upper: None,
        work: None,
    };
    for opt in f.next()?.split(',') {
        let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
        let v = husk_protocol::unescape_mountinfo(v);
        match k {
            "lowerdir" => o.lower = split_lowerdir(&v).into_iter().map(PathBuf::from).collect(),
            "upperdir" => o.upper = Some(PathBuf::from(v)),
            "workdir" => o.work = Some(PathBuf::from(v)),
            _ => {}
        }
    }
    let absolute = |p: &PathBuf| p.is_absolute();
    (!o.lower.is_empty()
        && o.lower.iter().all(absolute)
        && o.upper.iter().all(absolute)
        && o.work.iter().all(absolute))
    .then_some(o)
}

/// The overlay mounted at `rootfs` in this process's mount namespace.
pub fn overlay_of(rootfs: &Path) -> Option<Overlay> {
    let real = std::fs::canonicalize(rootfs).ok()?;
    let info = std::fs::read_to_string("/proc/thread-self/mountinfo").ok()?;
    parse_overlay(&info, &real)
}

/// What an image of a directory tree needs: bytes of data (in 4 KiB
/// blocks) and inodes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Usage {
    blocks: u64,
    inodes: u64,
}

/// Walks `dir` (not following symlinks, not crossing into other mounts)
/// and counts; more than `limit` entries is an error, not a stall.
fn usage(dir: &Path, limit: u64) -> Result<Usage, LayerError> {
    let root_dev = std::fs::symlink_metadata(dir).map_err(io_at(dir))?.dev();
    let mut u = Usage::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(io_at(&d))? {
            let e = e.map_err(io_at(&d))?;
            let m = e.metadata().map_err(io_at(&e.path()))?;
            u.inodes += 1;
            if u.inodes > limit {
                return Err(LayerError::TooBig {
                    path: dir.to_path_buf(),
                    limit,
                });
            }
            u.blocks += m.len().div_ceil(4096).max(1);
            if m.is_dir() && m.dev() == root_dev {
                stack.push(e.path());
            }
        }
    }
    Ok(u)
}

/// The image's size in 4 KiB blocks and its inode count for `u`: data,
/// one block per inode for directories and small files' tails, ext4's own
/// metadata (inode tables at 256 bytes an inode, bitmaps, group
/// descriptors) and a margin; at least 4 MiB.
fn image_geometry(u: Usage) -> (u64, u64) {
    let inodes = (u.inodes + 64) * 5 / 4;
    let metadata = inodes.div_ceil(16) + 256;
    let blocks = ((u.blocks + metadata) * 6 / 5).max(1024);
    (blocks, inodes)
}

/// Cached read-only ext4 images of layer directories.
pub struct LayerCache {
    dir: PathBuf,
    /// Most entries a layer may have.
    pub max_entries: u64,
    /// Longest an image may take to make.
    pub mkfs_timeout: Duration,
}

impl LayerCache {
    pub fn new(dir: &Path) -> LayerCache {
        LayerCache {
            dir: dir.to_path_buf(),
            max_entries: 2_000_000,
            mkfs_timeout: Duration::from_secs(300),
        }
    }

    /// The cache key of layer directory `layer`: its device, inode and
    /// change time, and the image format's version.
    fn key(layer: &Path) -> Result<String, LayerError> {
        let m = std::fs::metadata(layer).map_err(io_at(layer))?;
        Ok(format!(
            "ext4-v1-{:x}-{:x}-{}.{:09}",
            m.dev(),
            m.ino(),
            m.ctime(),
            m.ctime_nsec()
        ))
    }

    /// The image of `layer`, made now if the cache has none. Concurrent
    /// callers for one layer wait on one maker (a lock file); an image is
    /// made under a temporary name and renamed into place when whole.
    pub fn image_for(&self, layer: &Path) -> Result<PathBuf, LayerError> {
        let key = Self::key(layer)?;
        let img = self.dir.join(format!("{key}.img"));
        if img.is_file() {
            return Ok(img);
        }
        crate::util::create_private_dir_all(&self.dir).map_err(io_at(&self.dir))?;
        let lock_path = self.dir.join(format!("{key}.lock"));
        let lock = File::create(&lock_path).map_err(io_at(&lock_path))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_at(&lock_path)(std::io::Error::last_os_error()));
        }
        let made = if img.is_file() {
            Ok(img.clone())
        } else {
            self.make(layer, &img)
        };
        let _ = std::fs::remove_file(&lock_path);
        made
    }

    fn make(&self, layer: &Path, img: &Path) -> Result<PathBuf, LayerError> {
        let (blocks, inodes) = image_geometry(usage(layer, self.max_entries)?);
        let mut tmp = OsString::from(img.as_os_str());
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let mut cmd = Command::new("mkfs.ext4");
        cmd.args(["-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0"])
            // Read-only, never grown or journaled: nothing of that.
            .args(["-O", "^has_journal,^resize_inode"])
            .args(["-E", "lazy_itable_init=0,nodiscard"])
            .arg("-N")
            .arg(inodes.to_string())
            .arg("-d")
            .arg(layer)
            .arg(&tmp)
            .arg(blocks.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let result = run_by(&mut cmd, self.mkfs_timeout);
        let fail = |reason: String| {
            let _ = std::fs::remove_file(&tmp);
            LayerError::Mkfs {
                path: layer.to_path_buf(),
                reason,
            }
        };
        result.map_err(fail)?;
        std::fs::rename(&tmp, img).map_err(|e| fail(e.to_string()))?;
        Ok(img.to_path_buf())
    }
}

/// Runs `cmd` to its end within `limit`; the error is the last line of the
/// first 4 KiB of its stderr.
fn run_by(cmd: &mut Command, limit: Duration) -> Result<(), String> {
    let mut child = cmd.spawn().map_err(|e| format!("cannot run: {e}"))?;
    match crate::util::wait_by(&mut child, limit) {
        Ok(Some(st)) if st.success() => Ok(()),
        Ok(Some(st)) => {
            let mut err = String::new();
            if let Some(e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut std::io::Read::take(e, 4096), &mut err);
            }
            let last = err.lines().last().unwrap_or("").trim().to_string();
            Err(format!("{st}: {last}"))
        }
        Ok(None) => Err(format!("not done within {} s", limit.as_secs())),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
#[path = "layers_tests.rs"]
mod tests;
