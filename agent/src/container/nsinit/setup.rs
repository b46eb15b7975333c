//! Stage 2 of container-init before `Ready`: sysctls, uts names, the root
//! file system, the console, rlimits, I/O priority and personality.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::{cvt, send, InitError, Sync};
use crate::container::config::InitConfig;
use crate::container::rootfs;

/// Everything before `Ready`; returns the pty slave if there is a terminal.
pub(super) fn setup(cfg: &InitConfig, b: &mut UnixStream) -> Result<Option<OwnedFd>, InitError> {
    // SAFETY: setsid has no arguments; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
    for (k, v) in &cfg.sysctls {
        let p = format!("/proc/sys/{}", k.replace('.', "/"));
        std::fs::write(&p, v).map_err(InitError::io(format!("linux.sysctl.{k:?}: write {p}")))?;
    }
    if let Some(h) = &cfg.hostname {
        // SAFETY: pointer and length of a live string.
        let rc = unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) };
        cvt(rc, "hostname")?;
    }
    if let Some(d) = &cfg.domainname {
        // SAFETY: pointer and length of a live string.
        let rc = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
        cvt(rc, "domainname")?;
    }
    let p = &cfg.process;
    if let Some(adj) = p.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(InitError::io("process.oomScoreAdj"))?;
    }
    if let Some(r) = &cfg.rootfs {
        rootfs::setup(r, &p.cwd)?;
    }
    let pty = if p.terminal {
        Some(console(cfg, b)?)
    } else {
        None
    };
    if let Some(r) = &cfg.rootfs {
        rootfs::finish(r)?;
        rootfs::propagate(r)?;
    }
    limits(cfg)?;
    Ok(pty)
}

/// rlimits, I/O priority and personality.
fn limits(cfg: &InitConfig) -> Result<(), InitError> {
    let p = &cfg.process;
    for (i, r) in p.rlimits.iter().enumerate() {
        let lim = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: valid rlimit struct; resource is a known RLIMIT_* number.
        let rc = unsafe { libc::setrlimit(r.resource, &lim) };
        cvt(rc, &format!("process.rlimits[{i}]"))?;
    }
    if let Some((class, level)) = p.io_priority {
        // SAFETY: ioprio_set with integer arguments (IOPRIO_WHO_PROCESS, self).
        let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, (class << 13) | level) };
        if rc != 0 {
            return Err(InitError::errno("process.ioPriority"));
        }
    }
    if let Some(pers) = cfg.personality {
        // SAFETY: personality with an integer argument.
        if unsafe { libc::personality(pers) } < 0 {
            return Err(InitError::errno("linux.personality"));
        }
    }
    Ok(())
}

/// Opens a pty in the container's /dev/pts, binds its slave onto
/// /dev/console, sends the master to the agent and returns the slave.
fn console(cfg: &InitConfig, b: &mut UnixStream) -> Result<OwnedFd, InitError> {
    let ptmx = CString::new("/dev/ptmx").map_err(|_| InitError::Nul("path"))?;
    // SAFETY: valid path; the result is checked and owned below.
    let m = unsafe {
        libc::open(
            ptmx.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if m < 0 {
        return Err(InitError::errno("process.terminal: open /dev/ptmx"));
    }
    // SAFETY: `m` is a fresh descriptor we own.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from a valid pointer.
    let rc = unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &unlock) };
    cvt(rc, "process.terminal: unlockpt")?;
    // SAFETY: TIOCGPTPEER opens the peer of a master we own.
    let s = unsafe { libc::ioctl(m, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY) };
    if s < 0 {
        return Err(InitError::errno("process.terminal: open the pty slave"));
    }
    // SAFETY: `s` is a fresh descriptor we own.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int to a valid pointer.
    let rc = unsafe { libc::ioctl(m, libc::TIOCGPTN, &mut n) };
    cvt(rc, "process.terminal: pty number")?;
    if let Some((rows, cols)) = cfg.process.console_size {
        husk_sys::set_window_size(m, husk_sys::WindowSize { rows, cols })
            .map_err(InitError::io("set the terminal size"))?;
    }
    if cfg.rootfs.is_some() {
        let console = Path::new("/dev/console");
        if std::fs::symlink_metadata(console).is_err() {
            std::fs::File::create(console).map_err(InitError::io("create /dev/console"))?;
        }
        rootfs::mount(
            Some(&format!("/dev/pts/{n}")),
            console,
            None,
            libc::MS_BIND,
            None,
        )
        .map_err(InitError::io("bind /dev/console"))?;
    }
    send(b, &Sync::PtyMaster)?;
    husk_sys::send_fd(b, &master).map_err(InitError::io("send the pty master"))?;
    Ok(slave)
}
