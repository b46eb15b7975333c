//! The jail: what Firecracker's jailer does before it execs Firecracker,
//! done by husk-vmm to itself once its setup has opened everything.
//!
//! * Its own mount namespace ([`enter`], at start-up, while husk-vmm is
//!   still single-threaded: `unshare(CLONE_NEWNS)` moves the calling thread
//!   alone, giving it a `fs_struct` of its own, so a thread started before
//!   would stay in the host's namespace, under the host's root), every
//!   mount private.
//! * A root of its own ([`isolate_filesystem`], at the jail point, the
//!   vCPU threads not started yet): an empty read-only tmpfs holding only
//!   the directories husk-vmm still reaches by path, each bound at the same
//!   path: the vsock socket's directory (it connects to `<uds>_<port>` for
//!   guest-initiated connections and removes `<uds>` at the end). The host's
//!   root is unmounted from the namespace: the kernel, initrd, disks, taps,
//!   `/dev/kvm` and the vhost-user sockets are open descriptors by then.
//! * Resource limits ([`Limits`]): descriptors, file size, threads.
//! * An unprivileged uid and gid ([`switch_ids`]), when the caller gives
//!   them: each thread switches its own credentials with the raw syscalls
//!   as part of its privilege drop (see [`super::drop_privileges`]), because
//!   glibc's `setresuid` signals every thread to do it, and a thread already
//!   under its seccomp filter (the virtio-fs worker) may not. No supplementary
//!   groups, and not dumpable, so another process of the same uid can
//!   neither ptrace it nor read its memory through /proc.
//!
//! The ids must be unique per VM: `RLIMIT_NPROC` counts the threads of the
//! uid, not of the process, and two VMs of one uid could signal each other
//! if their filters were off. The runtime passes
//! `husk_vm_config::jail_id(monitor pid)`, `smoke` its own pid's.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use super::ConfineError;

/// Where the new root is assembled: a tmpfs mounted over it in the private
/// namespace only (the directories bound into it are opened first, so what
/// it hides can still be bound).
const STAGING: &str = "/tmp";
/// The new root's tmpfs: directories only, made read-only once assembled.
const ROOT_TMPFS_OPTS: &str = "size=64k,nr_inodes=64,mode=0755";
/// The smallest `RLIMIT_FSIZE`: husk-vmm writes regular files only through
/// descriptors it was given (the console file, capped at 4 MiB; stdout and
/// stderr when they are files; writable disks, which raise it to their size).
pub const FSIZE_FLOOR: u64 = 64 << 20;

static ENTERED: AtomicBool = AtomicBool::new(false);
static IDS: OnceLock<(u32, u32)> = OnceLock::new();
/// The parent-death signal husk-vmm was started with (the monitor arms
/// SIGKILL) and the parent's pid then: a change of uid clears the signal,
/// so [`switch_ids`] arms it again and checks the parent is still there.
static PARENT_DEATH: OnceLock<(libc::c_int, libc::pid_t)> = OnceLock::new();

fn err(step: impl Into<String>) -> impl FnOnce(io::Error) -> ConfineError {
    let step = step.into();
    move |source| ConfineError::Jail { step, source }
}

fn last(step: impl Into<String>) -> ConfineError {
    err(step)(io::Error::last_os_error())
}

fn cstr(p: &Path) -> Result<CString, ConfineError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| err(p.display().to_string())(io::Error::from_raw_os_error(libc::EINVAL)))
}

/// Enters a private mount namespace (every mount made private, so nothing
/// propagates either way) and records `ids` for [`switch_ids`]. Must run
/// before husk-vmm starts any thread.
pub fn enter(ids: Option<(u32, u32)>) -> Result<(), ConfineError> {
    if let Some((uid, gid)) = ids {
        if uid == 0 || gid == 0 {
            return Err(ConfineError::Jail {
                step: format!("ids {uid}:{gid}"),
                source: io::Error::other("the jail's uid and gid must not be 0"),
            });
        }
        let _ = IDS.set((uid, gid));
    }
    let mut sig: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes an int through the pointer.
    if unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut libc::c_int) } == 0 && sig != 0
    {
        // SAFETY: getppid has no preconditions.
        let _ = PARENT_DEATH.set((sig, unsafe { libc::getppid() }));
    }
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(err("reading /proc/self/task"))?
        .count();
    if threads != 1 {
        return Err(ConfineError::Jail {
            step: "unshare(CLONE_NEWNS)".into(),
            source: io::Error::other(format!(
                "{threads} threads run: the namespace must be entered before any starts"
            )),
        });
    }
    // SAFETY: unshare with a flag only.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(last("unshare(CLONE_NEWNS)"));
    }
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(err("making / private"))?;
    ENTERED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Whether [`enter`] ran: the rest of the jail follows at the jail point.
pub fn entered() -> bool {
    ENTERED.load(Ordering::SeqCst)
}

/// The unprivileged uid and gid, if the caller gave them.
pub fn ids() -> Option<(u32, u32)> {
    IDS.get().copied()
}

fn mount(
    src: Option<&Path>,
    dst: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let c = |s: &[u8]| CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let src = src.map(|p| c(p.as_os_str().as_bytes())).transpose()?;
    let dst = c(dst.as_os_str().as_bytes())?;
    let fstype = fstype.map(|s| c(s.as_bytes())).transpose()?;
    let data = data.map(|s| c(s.as_bytes())).transpose()?;
    let ptr = |o: &Option<CString>| o.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: NUL-terminated strings (or null, which mount(2) accepts for
    // these arguments) that outlive the call.
    let rc = unsafe {
        libc::mount(
            ptr(&src),
            dst.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `dir` made absolute and free of `.` and `..` (lexically: the jail binds
/// it at the path husk-vmm uses, not where symlinks lead).
fn normalize(dir: &Path) -> Result<PathBuf, ConfineError> {
    let abs = std::path::absolute(dir).map_err(err(dir.display().to_string()))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    if out == Path::new("/") {
        return Err(ConfineError::Jail {
            step: format!("binding {}", dir.display()),
            source: io::Error::other("the host's root cannot be kept in the jail"),
        });
    }
    Ok(out)
}

/// Replaces the root of the mount namespace ([`enter`]) with an empty
/// tmpfs holding only `keep` (directories, each bound at its own path,
/// nosuid, nodev, noexec), made read-only; the host's root is detached.
/// Paths outside `keep` no longer resolve, for every thread.
pub fn isolate_filesystem(keep: &[PathBuf]) -> Result<(), ConfineError> {
    let mut sources = Vec::with_capacity(keep.len());
    for d in keep {
        let path = normalize(d)?;
        let c = cstr(&path)?;
        // SAFETY: a NUL-terminated path; O_PATH opens no file contents.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(last(format!("opening {}", path.display())));
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        sources.push((path, unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    let staging = Path::new(STAGING);
    let hardening = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(
        Some(Path::new("tmpfs")),
        staging,
        Some("tmpfs"),
        hardening,
        Some(ROOT_TMPFS_OPTS),
    )
    .map_err(err(format!("tmpfs on {STAGING}")))?;
    for (path, fd) in &sources {
        let at = staging.join(path.strip_prefix("/").unwrap_or(path));
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(&at)
            .map_err(err(format!("making {}", path.display())))?;
        // 0755 whatever the umask (the runtime's is 077): the jail's ids
        // must get through to the kept directory.
        let mut dir = at.as_path();
        while dir != staging {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(err(format!("mode of {}", dir.display())))?;
            dir = dir.parent().unwrap_or(staging);
        }
        let src = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        mount(Some(&src), &at, None, libc::MS_BIND, None)
            .map_err(err(format!("binding {}", path.display())))?;
        // A bind remount sets exactly the flags given: keep the source's.
        let flags = husk_sys::mount::mount_flags(&at)
            .map_err(err(format!("flags of {}", path.display())))?;
        mount(
            None,
            &at,
            None,
            libc::MS_REMOUNT | libc::MS_BIND | flags | hardening,
            None,
        )
        .map_err(err(format!("restricting {}", path.display())))?;
    }
    drop(sources);
    std::env::set_current_dir(staging).map_err(err(format!("chdir {STAGING}")))?;
    // pivot_root(".", "."): the old root ends up on top of the new one, at
    // "/", and is detached right away (pivot_root(2), NOTES).
    // SAFETY: two NUL-terminated paths.
    if unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } != 0 {
        return Err(last("pivot_root"));
    }
    // SAFETY: a NUL-terminated path and a flag.
    if unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(last("detaching the host's root"));
    }
    std::env::set_current_dir("/").map_err(err("chdir /"))?;
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | hardening,
        None,
    )
    .map_err(err("making the new root read-only"))?;
    Ok(())
}

/// The jail's resource limits, soft and hard alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_NOFILE`: the highest descriptor open now, plus room for
    /// what the running VM still opens (vsock connections, mostly).
    pub nofile: u64,
    /// `RLIMIT_FSIZE`: [`FSIZE_FLOOR`] or the largest writable disk.
    pub fsize: u64,
    /// `RLIMIT_NPROC`: the threads running now, plus the ones still to
    /// start (vCPUs, the smoke client). Counted per uid: see the module.
    pub nproc: u64,
}

impl Limits {
    /// The limits for this process as it is now: `threads_to_come` more
    /// threads, `fds_to_come` more descriptors, writes to `writable` files.
    pub fn measure(
        threads_to_come: u64,
        fds_to_come: u64,
        writable: &[&Path],
    ) -> Result<Limits, ConfineError> {
        let highest_fd = std::fs::read_dir("/proc/self/fd")
            .map_err(err("reading /proc/self/fd"))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap_or(2);
        let threads = std::fs::read_dir("/proc/self/task")
            .map_err(err("reading /proc/self/task"))?
            .count() as u64;
        let mut fsize = FSIZE_FLOOR;
        for p in writable {
            let m = std::fs::metadata(p).map_err(err(format!("size of {}", p.display())))?;
            if m.is_file() {
                fsize = fsize.max(m.len());
            }
        }
        Ok(Limits {
            nofile: highest_fd + 1 + fds_to_come,
            fsize,
            nproc: threads + threads_to_come,
        })
    }

    /// Sets them for the process. `SIGXFSZ` is ignored: a write past the
    /// size limit fails with `EFBIG` instead of ending the VM.
    pub fn apply(&self) -> Result<(), ConfineError> {
        for (res, name, v) in [
            (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE", self.nofile),
            (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE", self.fsize),
            (libc::RLIMIT_NPROC, "RLIMIT_NPROC", self.nproc),
        ] {
            let lim = libc::rlimit {
                rlim_cur: v,
                rlim_max: v,
            };
            // SAFETY: a valid rlimit for a known resource.
            if unsafe { libc::setrlimit(res, &lim) } != 0 {
                return Err(last(format!("{name} {v}")));
            }
        }
        // SAFETY: SIG_IGN for a signal that has no handler of ours.
        if unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(last("ignoring SIGXFSZ"));
        }
        Ok(())
    }
}

/// Switches the calling thread (only) to `uid` and `gid` with no
/// supplementary groups, and makes the process not dumpable. A thread
/// already on them succeeds without a change. Needs `CAP_SETUID` and
/// `CAP_SETGID` otherwise: call it before the capabilities go.
pub fn switch_ids(uid: u32, gid: u32) -> Result<(), ConfineError> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    let (mut rg, mut eg, mut sg) = (0, 0, 0);
    // SAFETY: out-pointers to local integers.
    let got_uids = unsafe { libc::getresuid(&mut r, &mut e, &mut s) } == 0;
    // SAFETY: as above.
    let got_gids = unsafe { libc::getresgid(&mut rg, &mut eg, &mut sg) } == 0;
    // SAFETY: as above; a size of 0 only counts the groups.
    let no_groups = unsafe { libc::getgroups(0, std::ptr::null_mut()) } == 0;
    let done =
        got_uids && got_gids && no_groups && [r, e, s] == [uid; 3] && [rg, eg, sg] == [gid; 3];
    if !done {
        // Raw syscalls: this thread's credentials only (see the module).
        // SAFETY: setgroups with an empty list.
        if unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) } != 0 {
            return Err(last("setgroups([])"));
        }
        let (g, u) = (libc::c_long::from(gid), libc::c_long::from(uid));
        // SAFETY: setresgid with integer arguments.
        if unsafe { libc::syscall(libc::SYS_setresgid, g, g, g) } != 0 {
            return Err(last(format!("setresgid({gid})")));
        }
        // SAFETY: setresuid with integer arguments.
        if unsafe { libc::syscall(libc::SYS_setresuid, u, u, u) } != 0 {
            return Err(last(format!("setresuid({uid})")));
        }
        rearm_parent_death()?;
    }
    set_not_dumpable()
}

/// The change of ids cleared the parent-death signal (prctl(2)): without it
/// a husk-vmm whose monitor is killed would run on. Arms it again, and
/// fails if the parent died meanwhile (husk-vmm then has another parent).
/// Only the main thread's matters (the monitor's child); harmless on others.
fn rearm_parent_death() -> Result<(), ConfineError> {
    let Some(&(sig, ppid)) = PARENT_DEATH.get() else {
        return Ok(());
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::c_ulong::try_from(sig).unwrap_or(0),
        )
    } != 0
    {
        return Err(last("PR_SET_PDEATHSIG"));
    }
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != ppid {
        return Err(ConfineError::Jail {
            step: "PR_SET_PDEATHSIG".into(),
            source: io::Error::other(format!("the parent (pid {ppid}) is gone")),
        });
    }
    Ok(())
}

/// `PR_SET_DUMPABLE` 0 for the process.
pub fn set_not_dumpable() -> Result<(), ConfineError> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(last("PR_SET_DUMPABLE"));
    }
    Ok(())
}

/// Mounts a small private tmpfs (mode 0700) on `at`, in the namespace
/// [`enter`] made: `smoke` keeps its sockets there.
pub fn private_tmpfs(at: &Path) -> Result<(), ConfineError> {
    mount(
        Some(Path::new("tmpfs")),
        at,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("size=1m,nr_inodes=64,mode=0700"),
    )
    .map_err(err(format!("tmpfs on {}", at.display())))
}

#[cfg(test)]
#[path = "jail_tests.rs"]
mod tests;
