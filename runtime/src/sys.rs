//! Thin wrappers over the system calls only the host side needs:
//! namespaces, bind mounts, ptys, the console socket, terminal modes and
//! the set of signals relayed to the guest. Generic descriptor and signal
//! helpers (shared with the agent) are in `husk_sys`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// A system call that failed, naming what it was for.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("{}: NUL in path", .0.display())]
    NulInPath(PathBuf),
    #[error("unshare({flag}): {source}")]
    Unshare {
        flag: &'static str,
        source: io::Error,
    },
    #[error("make / a slave mount: {0}")]
    SlaveRoot(io::Error),
    #[error("bind-mount {} on {}: {source}", src.display(), dst.display())]
    Bind {
        src: PathBuf,
        dst: PathBuf,
        source: io::Error,
    },
    #[error("remount {} nosuid,nodev (read-only for a ro share): {source}", path.display())]
    Remount { path: PathBuf, source: io::Error },
    #[error("mount a tmpfs on {}: {source}", path.display())]
    Tmpfs { path: PathBuf, source: io::Error },
    #[error("unmount {}: {source}", path.display())]
    Unmount { path: PathBuf, source: io::Error },
    #[error("{} is still mounted", .0.display())]
    StillMounted(PathBuf),
    #[error("network namespace {}: {source}", path.display())]
    OpenNetns { path: PathBuf, source: io::Error },
    #[error("join network namespace {}: {source}", path.display())]
    JoinNetns { path: PathBuf, source: io::Error },
    #[error("openpty: {0}")]
    Openpty(io::Error),
    #[error("--console-socket {}: {source}", socket.display())]
    ConsoleConnect { socket: PathBuf, source: io::Error },
    #[error("--console-socket {}: send: {source}", socket.display())]
    ConsoleSend { socket: PathBuf, source: io::Error },
}

type Result<T, E = SysError> = std::result::Result<T, E>;

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SysError::NulInPath(p.to_path_buf()))
}

/// `Ok` for a zero return, else the error `what` makes of errno.
fn check(r: libc::c_int, what: impl FnOnce(io::Error) -> SysError) -> Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(what(io::Error::last_os_error()))
    }
}

/// A private mount namespace whose mounts see the host's unmounts (slave
/// propagation), so mounts made here vanish with this process.
pub fn unshare_mounts() -> Result<()> {
    // SAFETY: unshare(2) with a flag; affects only this (single-threaded) process.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) }, |source| {
        SysError::Unshare {
            flag: "CLONE_NEWNS",
            source,
        }
    })?;
    // SAFETY: valid NUL-terminated strings / nulls as mount(2) allows.
    check(
        unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            )
        },
        SysError::SlaveRoot,
    )
}

/// Bind-mounts `src` onto `dst`: with `recursive` (an `rbind`) the mounts
/// under `src` come along, without (a plain `bind`) they do not.
pub fn bind(src: &Path, dst: &Path, recursive: bool) -> Result<()> {
    let (s, d) = (cstr(src)?, cstr(dst)?);
    let rec = if recursive { libc::MS_REC } else { 0 };
    // SAFETY: valid NUL-terminated paths; no data argument.
    check(
        unsafe {
            libc::mount(
                s.as_ptr(),
                d.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | rec,
                std::ptr::null(),
            )
        },
        |source| SysError::Bind {
            src: src.to_path_buf(),
            dst: dst.to_path_buf(),
            source,
        },
    )
}

/// Mounts a small tmpfs on `dst`: nosuid, nodev, noexec, mode 0700, at
/// most `inodes` inodes and 64 KiB (a skeleton of mount points, not a
/// place for data).
pub fn mount_skeleton_tmpfs(dst: &Path, inodes: usize) -> Result<()> {
    let d = cstr(dst)?;
    let opts = CString::new(format!("size=64k,nr_inodes={inodes},mode=0700"))
        .map_err(|_| SysError::NulInPath(dst.to_path_buf()))?;
    // SAFETY: valid NUL-terminated strings; the data is tmpfs's options.
    check(
        unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                d.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                opts.as_ptr().cast(),
            )
        },
        |source| SysError::Tmpfs {
            path: dst.to_path_buf(),
            source,
        },
    )
}

/// [`husk_sys::mount::mount_flags`], with the path in the error.
fn mount_flags(p: &Path) -> Result<libc::c_ulong> {
    husk_sys::mount::mount_flags(p).map_err(|source| SysError::Remount {
        path: p.to_path_buf(),
        source,
    })
}

/// Restricts the bind mount at `dst` as the host must see a share: nosuid
/// and nodev always (what the guest plants there is never setuid or a
/// device on the host), read-only with `readonly`. With `recursive` every
/// mount under `dst` (an `rbind` brought them) gets the same; each keeps
/// the flags it had (noexec, ro, atime), so nothing is loosened. Mounts
/// that appear under `dst` later (propagated from the host's source) are
/// not covered.
pub fn restrict_bind(dst: &Path, readonly: bool, recursive: bool) -> Result<()> {
    let ro = if readonly { libc::MS_RDONLY } else { 0 };
    // mountinfo names mount points by their resolved paths.
    let top = std::fs::canonicalize(dst).map_err(|source| SysError::Remount {
        path: dst.to_path_buf(),
        source,
    })?;
    let mut under = if recursive {
        mounts_under(&top)
    } else {
        vec![]
    };
    if !under.contains(&top) {
        under.push(top);
    }
    for m in &under {
        let flags = mount_flags(m)?
            | libc::MS_REMOUNT
            | libc::MS_BIND
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | ro;
        let c = cstr(m)?;
        // SAFETY: a valid NUL-terminated path; no source, type or data.
        let r = unsafe {
            libc::mount(
                std::ptr::null(),
                c.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        };
        check(r, |source| SysError::Remount {
            path: m.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Mount points at or under `dir` in this thread's mount namespace,
/// deepest first (from /proc/thread-self/mountinfo, whose paths escape
/// space, tab, newline and backslash in octal).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(husk_protocol::unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    v.dedup();
    v
}

/// Detaches every mount at or under `dir` (so that removing `dir` can
/// never reach into a bind-mounted source).
pub fn unmount_under(dir: &Path) -> Result<()> {
    for m in mounts_under(dir) {
        let c = cstr(&m)?;
        // SAFETY: umount2 with a valid NUL-terminated path.
        let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        check(r, |source| SysError::Unmount {
            path: m.clone(),
            source,
        })?;
    }
    match mounts_under(dir).first() {
        Some(m) => Err(SysError::StillMounted(m.clone())),
        None => Ok(()),
    }
}

/// Joins the network namespace at `path`, or makes a new one.
pub fn enter_netns(path: Option<&Path>) -> Result<()> {
    match path {
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|source| SysError::OpenNetns {
                path: p.to_path_buf(),
                source,
            })?;
            // SAFETY: setns on a descriptor we own.
            check(
                unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) },
                |source| SysError::JoinNetns {
                    path: p.to_path_buf(),
                    source,
                },
            )
        }
        // SAFETY: unshare(2) with a flag.
        None => check(unsafe { libc::unshare(libc::CLONE_NEWNET) }, |source| {
            SysError::Unshare {
                flag: "CLONE_NEWNET",
                source,
            }
        }),
    }
}

/// Names of the network interfaces of this thread's network namespace.
pub fn net_interfaces() -> Vec<String> {
    std::fs::read_to_string("/proc/thread-self/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .collect()
}

/// A new pty pair: (master, slave, slave path).
pub fn openpty() -> Result<(OwnedFd, OwnedFd, String)> {
    husk_sys::term::openpty().map_err(SysError::Openpty)
}

/// Sends `fd` over the Unix socket at `socket` with `name` as the message,
/// as runc does with a console's pty master (`--console-socket`).
pub fn send_console(socket: &Path, fd: impl AsFd, name: &str) -> Result<()> {
    let sock = UnixStream::connect(socket).map_err(|source| SysError::ConsoleConnect {
        socket: socket.to_path_buf(),
        source,
    })?;
    // A descriptor needs at least one data byte to travel with.
    let data = if name.is_empty() { "/" } else { name };
    husk_sys::send_fd_with(&sock, fd, data.as_bytes()).map_err(|source| SysError::ConsoleSend {
        socket: socket.to_path_buf(),
        source,
    })
}

/// Puts the terminal `fd` in raw mode; returns the old settings.
pub fn make_raw(fd: RawFd) -> Option<libc::termios> {
    // SAFETY: termios is plain data; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a descriptor the caller owns; t is valid.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return None;
    }
    let old = t;
    // SAFETY: t is a valid termios.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: as above.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
        return None;
    }
    Some(old)
}

pub fn restore_term(fd: RawFd, t: &libc::termios) {
    // SAFETY: t came from tcgetattr on this fd.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, t) };
}

/// Makes terminal `fd` this session's controlling terminal (the caller is
/// a session leader), so the kernel sends SIGWINCH on resizes.
pub fn set_ctty(fd: RawFd) {
    // SAFETY: TIOCSCTTY with arg 0 on a tty we own.
    unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
}

/// The signals the host side relays to the container: everything a user
/// or daemon sends, not the synchronous faults.
pub fn relay_sigset() -> husk_sys::SignalSet {
    let mut set = husk_sys::SignalSet::full();
    for s in [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGABRT,
        libc::SIGTRAP,
        libc::SIGSYS,
        libc::SIGKILL,
        libc::SIGSTOP,
    ] {
        set.remove(s);
    }
    set
}

/// For a child between fork and exec: its own session (no terminal
/// signals from the daemon's or the monitor's terminal), death with its
/// parent, so nothing outlives the monitor, and umask 077: the sockets and
/// files it makes (virtiofsd's and husk-vmm's sockets, the console) are
/// its owner's alone, whatever the caller's umask. `parent` is the
/// spawning process's pid: if it died before the death signal was armed
/// (the child then has another parent), the child fails with ESRCH instead
/// of running on alone.
pub fn child_setup(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: setsid(2) and umask(2) are async-signal-safe (between fork
    // and exec).
    unsafe { libc::setsid() };
    // SAFETY: as above.
    unsafe { libc::umask(0o077) };
    #[allow(clippy::cast_sign_loss)] // SIGKILL is 9
    let sig = libc::SIGKILL as libc::c_ulong;
    // SAFETY: prctl(2) is async-signal-safe.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid(2) is async-signal-safe.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    /// A child whose parent is not the one it was spawned for (the monitor
    /// died before the death signal was armed) does not run.
    #[test]
    fn a_child_of_a_gone_parent_does_not_run() {
        use std::os::unix::process::CommandExt;
        let me = crate::util::pid(std::process::id());
        let run = |parent: libc::pid_t| {
            let mut cmd = std::process::Command::new("/bin/true");
            // SAFETY: child_setup only makes async-signal-safe calls.
            unsafe { cmd.pre_exec(move || child_setup(parent)) };
            cmd.status().map_err(|e| e.raw_os_error())
        };
        assert!(run(me).unwrap().success());
        assert_eq!(run(me + 1_000_000).unwrap_err(), Some(libc::ESRCH));
    }

    #[test]
    fn console_fd_passing() {
        let dir = std::env::temp_dir().join(format!("husk-sys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("c.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let (m, _s, name) = openpty().unwrap();
        assert!(name.starts_with("/dev/pts/"), "{name}");
        send_console(&sock, &m, &name).unwrap();
        let (mut c, _) = l.accept().unwrap();
        let mut got = vec![0u8; 64];
        let n = c.read(&mut got).unwrap();
        assert_eq!(&got[..n], name.as_bytes());
        assert!(send_console(&dir.join("missing"), &m, &name)
            .unwrap_err()
            .to_string()
            .starts_with("--console-socket "));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relayed_signals_leave_out_the_faults() {
        let set = relay_sigset();
        assert!(set.contains(libc::SIGTERM) && set.contains(libc::SIGWINCH));
        assert!(!set.contains(libc::SIGSEGV) && !set.contains(libc::SIGKILL));
    }

    #[test]
    fn mountinfo_paths() {
        assert!(mounts_under(Path::new("/proc"))
            .iter()
            .any(|m| m == Path::new("/proc")));
        assert!(mounts_under(Path::new("/nonexistent-husk")).is_empty());
    }

    #[test]
    fn interfaces_include_lo() {
        assert!(net_interfaces().iter().any(|i| i == "lo"));
    }
}
