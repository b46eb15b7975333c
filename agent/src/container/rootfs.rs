//! The container's root file system, set up by container-init in its new
//! mount namespace: spec mounts, /dev, the switch of root, masked and
//! read-only paths. Nothing here runs in the agent process.

use std::ffi::{CString, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

use super::config::{DeviceConfig, MountConfig, MountKind, RootfsConfig};

/// Why setting up a root file system failed; each names the path, and the
/// spec field where one is to blame.
#[derive(Debug, Error)]
pub enum MountError {
    #[error("{}: contains a NUL byte", path.display())]
    Nul { path: PathBuf },
    #[error("{path}: too many levels of symbolic links")]
    Loop { path: String },
    /// `op` (mkdir, create, readlink, mknod, ...) on `path` failed.
    #[error("{op} {}: {source}", path.display())]
    Path {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The path `path` that spec field `field` names is not usable.
    #[error("{field}: {path}: {source}")]
    Field {
        field: String,
        path: String,
        source: io::Error,
    },
    /// `what` (bind mount, remount, ...) of spec field `field` on `dest`.
    #[error("{field}: {what} on {dest}: {source}")]
    Mount {
        field: String,
        what: String,
        dest: String,
        source: io::Error,
    },
    /// A step of the switch of root or of the root's own set-up.
    #[error("{what}: {source}")]
    Step { what: String, source: io::Error },
    #[error("root.path: {path} is not a directory")]
    NotDir { path: String },
    /// The process's working directory could not be made.
    #[error("process.cwd: {0}")]
    Cwd(Box<MountError>),
}

impl MountError {
    fn path(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MountError {
        let path = path.to_path_buf();
        move |source| MountError::Path { op, path, source }
    }

    fn step(what: impl Into<String>) -> impl FnOnce(io::Error) -> MountError {
        let what = what.into();
        move |source| MountError::Step { what, source }
    }
}

fn c(p: impl AsRef<Path>) -> Result<CString, MountError> {
    CString::new(p.as_ref().as_os_str().as_bytes()).map_err(|_| MountError::Nul {
        path: p.as_ref().to_path_buf(),
    })
}

/// mount(2); `None` strings are passed as NULL.
pub fn mount(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: u64,
    data: Option<&str>,
) -> io::Result<()> {
    let cs = |s: Option<&str>| {
        s.map(|s| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput)))
            .transpose()
    };
    let (src, fstype, data) = (cs(src)?, cs(fstype)?, cs(data.filter(|d| !d.is_empty()))?);
    let target = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let p = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is NULL or a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            p(&src),
            target.as_ptr(),
            p(&fstype),
            flags as libc::c_ulong,
            p(&data).cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn umount_detach(p: &Path) -> io::Result<()> {
    let cp = CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(cp.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Resolves `unsafe_path` inside `root` as if `root` were "/": `..` stops at
/// the root and symlinks (absolute ones too) are followed inside it. Missing
/// components are kept as they are (to be created).
pub fn secure_join(root: &Path, unsafe_path: &str) -> Result<PathBuf, MountError> {
    let mut pending: Vec<OsString> = Vec::new(); // reversed: next component last
    let push_path = |pending: &mut Vec<OsString>, p: &Path| {
        let comps: Vec<OsString> = p
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect();
        pending.extend(comps.into_iter().rev());
    };
    push_path(&mut pending, Path::new(unsafe_path));
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(comp) = pending.pop() {
        if comp == ".." {
            resolved.pop();
            continue;
        }
        let mut cand = root.to_path_buf();
        cand.extend(&resolved);
        cand.push(&comp);
        match fs::symlink_metadata(&cand) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(MountError::Loop {
                        path: unsafe_path.into(),
                    });
                }
                let target = fs::read_link(&cand).map_err(MountError::path("readlink", &cand))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                push_path(&mut pending, &target);
            }
            _ => resolved.push(comp),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

fn mkdir_all(p: &Path) -> Result<(), MountError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(p)
        .map_err(MountError::path("mkdir", p))
}

/// Creates `p` as an empty file (for bind mounts of files), parents included.
fn touch(p: &Path) -> Result<(), MountError> {
    if let Some(parent) = p.parent() {
        mkdir_all(parent)?;
    }
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(()),
        Err(_) => fs::File::create(p)
            .map(drop)
            .map_err(MountError::path("create", p)),
    }
}

/// Flags of the mount at `p` that a bind remount must keep (they may be
/// locked in a user namespace).
fn locked_flags(p: &Path) -> u64 {
    husk_sys::mount::mount_flags(p).unwrap_or(0)
}

/// Bind-remounts `p` with `flags` added to the flags it has.
fn remount_bind(p: &Path, flags: u64) -> io::Result<()> {
    let keep = locked_flags(p);
    mount(
        None,
        p,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | keep | flags,
        None,
    )
}

const RO_FLAGS: u64 = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

fn do_mount(root: &Path, m: &MountConfig, cfg: &RootfsConfig) -> Result<(), MountError> {
    let target = secure_join(root, &m.dest)?;
    let err = |what: &str, source: io::Error| MountError::Mount {
        field: m.field.clone(),
        what: what.into(),
        dest: m.dest.clone(),
        source,
    };
    match &m.kind {
        MountKind::Bind { source, recursive } => {
            let meta = fs::metadata(source).map_err(|e| MountError::Field {
                field: format!("{}.source", m.field),
                path: source.clone(),
                source: e,
            })?;
            if meta.is_dir() {
                mkdir_all(&target)?;
            } else {
                touch(&target)?;
            }
            let rec = if *recursive { libc::MS_REC } else { 0 };
            mount(Some(source), &target, None, libc::MS_BIND | rec, None)
                .map_err(|e| err("bind mount", e))?;
            let extra = m.flags & !libc::MS_REMOUNT;
            if extra != 0 {
                remount_bind(&target, extra).map_err(|e| err("remount", e))?;
            }
        }
        MountKind::Cgroup => {
            mkdir_all(&target)?;
            if cfg.cgroupns {
                mount(
                    Some("cgroup2"),
                    &target,
                    Some("cgroup2"),
                    m.flags,
                    Some(&m.data),
                )
                .map_err(|e| err("mount cgroup2", e))?;
            } else {
                mount(
                    Some(&cfg.cgroup_dir),
                    &target,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                )
                .map_err(|e| err("bind the container's cgroup", e))?;
                if m.flags != 0 {
                    remount_bind(&target, m.flags).map_err(|e| err("remount", e))?;
                }
            }
        }
        MountKind::Fs { fstype, source } => {
            mkdir_all(&target)?;
            mount(Some(source), &target, Some(fstype), m.flags, Some(&m.data))
                .map_err(|e| err(&format!("mount {fstype}"), e))?;
        }
    }
    for p in &m.propagation {
        mount(None, &target, None, *p, None).map_err(|e| err("set propagation", e))?;
    }
    Ok(())
}

/// The device number of `major:minor` (both checked to fit by the spec
/// planner; an out-of-range part saturates).
fn makedev(major: u64, minor: u64) -> libc::dev_t {
    let part = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    libc::makedev(part(major), part(minor))
}

/// Creates a device node, or (in a user namespace, where mknod is not
/// allowed) bind-mounts the agent's node of the same path over an empty file.
fn create_device(root: &Path, d: &DeviceConfig) -> Result<(), MountError> {
    let target = secure_join(root, &d.path)?;
    if let Some(parent) = target.parent() {
        mkdir_all(parent)?;
    }
    let _ = fs::remove_file(&target);
    let ct = c(&target)?;
    // SAFETY: valid path; mode and dev are plain integers.
    let rc = unsafe { libc::mknod(ct.as_ptr(), d.kind | d.mode, makedev(d.major, d.minor)) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(MountError::path("mknod", Path::new(&d.path))(e));
        }
        touch(&target)?;
        mount(Some(&d.path), &target, None, libc::MS_BIND, None)
            .map_err(MountError::path("bind device", Path::new(&d.path)))?;
        return Ok(());
    }
    // SAFETY: valid path; explicit mode (mknod's was masked by the umask).
    unsafe { libc::chmod(ct.as_ptr(), d.mode) };
    // SAFETY: valid path; plain ids.
    unsafe { libc::chown(ct.as_ptr(), d.uid, d.gid) };
    Ok(())
}

/// The devices every container gets (runc's list).
fn default_devices() -> Vec<DeviceConfig> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(n, major, minor)| DeviceConfig {
        path: format!("/dev/{n}"),
        kind: libc::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// Sets up everything under `cfg.path` and makes it the root (before the
/// process's own settings are applied).
pub fn setup(cfg: &RootfsConfig, cwd: &str) -> Result<(), MountError> {
    let root = PathBuf::from(&cfg.path);
    // First cut this namespace's copy of the agent's mounts off from the
    // agent's (rprivate for a private mode, else rslave), so nothing the
    // set-up mounts reaches the agent. The spec's mode goes on the
    // container's own "/" last ([`propagate`]), as runc sets it after
    // pivot_root: set here, on the agent's root, it would not be the
    // container root's, and an unbindable one would keep the root and
    // the spec's bind mounts from being bound.
    let isolate = if cfg.propagation & libc::MS_PRIVATE != 0 {
        libc::MS_PRIVATE | libc::MS_REC
    } else {
        libc::MS_SLAVE | libc::MS_REC
    };
    mount(None, Path::new("/"), None, isolate, None).map_err(MountError::step(
        "make the agent's mounts rslave or rprivate",
    ))?;
    let meta = fs::metadata(&root).map_err(|source| MountError::Field {
        field: "root.path".into(),
        path: cfg.path.clone(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(MountError::NotDir {
            path: cfg.path.clone(),
        });
    }
    mount(
        Some(&cfg.path),
        &root,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(MountError::step(format!("root.path: bind {}", cfg.path)))?;
    let dev_mount = |dest: &str, fstype: &str, flags: u64, data: &str| MountConfig {
        dest: dest.into(),
        kind: MountKind::Fs {
            fstype: fstype.into(),
            source: fstype.into(),
        },
        flags,
        propagation: Vec::new(),
        data: data.into(),
        field: format!("default mount {dest}"),
    };
    if cfg.default_dev {
        do_mount(
            &root,
            &dev_mount(
                "/dev",
                "tmpfs",
                libc::MS_NOSUID | libc::MS_STRICTATIME,
                "mode=755,size=65536k",
            ),
            cfg,
        )?;
    }
    for m in &cfg.mounts {
        do_mount(&root, m, cfg)?;
    }
    if cfg.default_dev {
        let has = |d: &str| cfg.mounts.iter().any(|m| m.dest.trim_end_matches('/') == d);
        if !has("/dev/pts") {
            do_mount(
                &root,
                &dev_mount(
                    "/dev/pts",
                    "devpts",
                    libc::MS_NOSUID | libc::MS_NOEXEC,
                    "newinstance,ptmxmode=0666,mode=0620",
                ),
                cfg,
            )?;
        }
        if !has("/dev/shm") {
            do_mount(
                &root,
                &dev_mount(
                    "/dev/shm",
                    "tmpfs",
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    "mode=1777,size=65536k",
                ),
                cfg,
            )?;
        }
    }
    for d in default_devices().iter().chain(&cfg.devices) {
        create_device(&root, d)?;
    }
    let dev = secure_join(&root, "/dev")?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let p = dev.join(link);
        if fs::symlink_metadata(&p).is_err() {
            std::os::unix::fs::symlink(target, &p).map_err(MountError::path("symlink", &p))?;
        }
    }
    make_cwd(&root, cwd)?;
    switch_root(&root)?;
    Ok(())
}

/// After the switch: masked and read-only paths, then the read-only root.
pub fn finish(cfg: &RootfsConfig) -> Result<(), MountError> {
    for (i, p) in cfg.masked.iter().enumerate() {
        let path = Path::new(p);
        let res = match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => Err(e),
            Ok(m) if m.is_dir() => mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                libc::MS_RDONLY,
                Some("size=0"),
            ),
            Ok(_) => mount(Some("/dev/null"), path, None, libc::MS_BIND, None),
        };
        res.map_err(|source| MountError::Field {
            field: format!("linux.maskedPaths[{i}]"),
            path: p.clone(),
            source,
        })?;
    }
    for (i, p) in cfg.readonly_paths.iter().enumerate() {
        let path = Path::new(p);
        if fs::symlink_metadata(path).is_err() {
            continue;
        }
        mount(Some(p), path, None, libc::MS_BIND | libc::MS_REC, None)
            .and_then(|()| remount_bind(path, RO_FLAGS & !libc::MS_NODEV | libc::MS_RDONLY))
            .map_err(|source| MountError::Field {
                field: format!("linux.readonlyPaths[{i}]"),
                path: p.clone(),
                source,
            })?;
    }
    if cfg.readonly {
        remount_bind(Path::new("/"), libc::MS_RDONLY)
            .map_err(MountError::step("root.readonly: remount /"))?;
    }
    Ok(())
}

/// The spec's `linux.rootfsPropagation` on the container's "/": last of
/// the set-up, after every bind mount of it (masked paths, read-only
/// paths, the console), which an unbindable root would refuse.
pub fn propagate(cfg: &RootfsConfig) -> Result<(), MountError> {
    mount(None, Path::new("/"), None, cfg.propagation, None)
        .map_err(MountError::step("linux.rootfsPropagation: set on /"))
}

/// Makes `root` the root: pivot_root, or (when the current root is the
/// initramfs, which cannot be pivoted away) detach every other mount, move
/// `root` onto "/" and chroot into it. Either way nothing outside `root`
/// stays reachable: the moved mount covers the initramfs's "/", and ".."
/// at a root that covers the namespace's root stays there.
fn switch_root(root: &Path) -> Result<(), MountError> {
    std::env::set_current_dir(root).map_err(MountError::path("chdir", root))?;
    let dot = c(".")?;
    // SAFETY: pivot_root(".", ".") with valid strings; stacks the old root
    // on top of the new one, which the umount below detaches.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    if rc == 0 {
        umount_detach(Path::new(".")).map_err(MountError::step("detach the old root"))?;
        std::env::set_current_dir("/").map_err(MountError::path("chdir", Path::new("/")))?;
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) {
        return Err(MountError::step("pivot_root")(e));
    }
    move_root(root)
}

fn move_root(root: &Path) -> Result<(), MountError> {
    let info =
        fs::read_to_string("/proc/self/mountinfo").map_err(MountError::step("read mountinfo"))?;
    let rs = root.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(husk_protocol::unescape_mountinfo))
        .filter(|mp| {
            mp != "/"
                && *mp != rs
                && !mp.starts_with(&format!("{rs}/"))
                && !rs.starts_with(&format!("{mp}/"))
        })
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        let _ = umount_detach(Path::new(&p));
    }
    mount(Some(&rs), Path::new("/"), None, libc::MS_MOVE, None)
        .map_err(MountError::step("move the root onto /"))?;
    let dot = c(".")?;
    // SAFETY: chroot(".") with a valid string; cwd is the moved root.
    if unsafe { libc::chroot(dot.as_ptr()) } != 0 {
        return Err(MountError::step("chroot")(io::Error::last_os_error()));
    }
    std::env::set_current_dir("/").map_err(MountError::path("chdir", Path::new("/")))?;
    Ok(())
}

/// Creates the working directory inside the root (before the switch) if missing.
fn make_cwd(root: &Path, cwd: &str) -> Result<(), MountError> {
    let p = secure_join(root, cwd)?;
    if fs::metadata(&p).is_err() {
        mkdir_all(&p).map_err(|e| MountError::Cwd(Box::new(e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_join_stays_inside() {
        let d = std::env::temp_dir().join(format!("husk-sj-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", d.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", d.join("a/up")).unwrap();
        std::os::unix::fs::symlink("loop", d.join("loop")).unwrap();
        assert_eq!(secure_join(&d, "/a/b/c").unwrap(), d.join("a/b/c"));
        assert_eq!(secure_join(&d, "/../../x").unwrap(), d.join("x"));
        assert_eq!(
            secure_join(&d, "/abs/passwd").unwrap(),
            d.join("etc/passwd")
        );
        assert_eq!(secure_join(&d, "/a/up/etc").unwrap(), d.join("etc"));
        assert!(secure_join(&d, "/loop/x").is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    /// Sets up a container root (proc, tmpfs, masked and read-only paths,
    /// the default /dev, a read-only root) whose spec says
    /// `linux.rootfsPropagation: mode`, in a mount namespace of a thread
    /// of its own (unshare(CLONE_NEWNS) also gives the thread its own root
    /// and working directory), and returns the propagation fields of the
    /// container's "/" in its mountinfo ("shared:N", "unbindable", or ""
    /// for a private mount).
    fn root_propagation(mode: &str) -> Result<String, String> {
        use crate::container::spec::{plan_create, Env};
        let d = std::env::temp_dir().join(format!("husk-prop-{}-{mode}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("proc")).unwrap();
        fs::create_dir_all(d.join("tmp")).unwrap();
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs", "readonly": true},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}],
            "linux": {"namespaces": [{"type": "mount"}], "rootfsPropagation": mode,
                      "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]}
        });
        let env = Env {
            filesystems: ["proc", "tmpfs", "devpts"].map(String::from).to_vec(),
            bundle: None,
        };
        let plan = plan_create("c", &serde_json::from_value(spec).unwrap(), &d, &env)
            .map_err(|e| e.to_string())?;
        let r = plan.init.rootfs.unwrap();
        let got = std::thread::spawn(move || {
            // SAFETY: unshare with a constant flag; it affects this thread only.
            if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                return Err(format!("unshare: {}", io::Error::last_os_error()));
            }
            setup(&r, "/").map_err(|e| e.to_string())?;
            finish(&r).map_err(|e| e.to_string())?;
            propagate(&r).map_err(|e| e.to_string())?;
            let info = fs::read_to_string("/proc/thread-self/mountinfo")
                .map_err(|e| format!("mountinfo: {e}"))?;
            let root = info
                .lines()
                .rev()
                .find(|l| l.split(' ').nth(4) == Some("/"))
                .ok_or("no / in mountinfo")?;
            // Fields 6.. up to "-": the optional ones (propagation).
            let fields: Vec<&str> = root
                .split(' ')
                .skip(6)
                .take_while(|f| *f != "-")
                .filter(|f| !f.starts_with("master:"))
                .collect();
            Ok(fields.join(" "))
        })
        .join()
        .unwrap();
        fs::remove_dir_all(&d).unwrap();
        got
    }

    /// Every rootfsPropagation mode sets the container's own "/" up (an
    /// unbindable one too, though the set-up binds into it), and that
    /// "/" has the mode. Needs root.
    #[test]
    fn the_container_root_gets_the_spec_propagation() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (mount namespaces)");
            return;
        }
        let shared = root_propagation("shared").unwrap();
        assert!(shared.starts_with("shared:"), "shared: {shared:?}");
        assert_eq!(root_propagation("unbindable").unwrap(), "unbindable");
        assert_eq!(root_propagation("runbindable").unwrap(), "unbindable");
        assert_eq!(root_propagation("private").unwrap(), "");
        assert_eq!(root_propagation("slave").unwrap(), "");
        assert_eq!(root_propagation("rslave").unwrap(), "");
    }
}
