//! The end of container-init: drop to the process's identity
//! (capabilities, seccomp, user, groups, umask) and exec it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{cvt, InitError, Never};
use crate::container::config::InitConfig;
use crate::container::{caps, seccomp};

/// Finds `prog` on `PATH` of the process environment, as execvp would.
fn lookup(prog: &str, env: &[String]) -> Result<PathBuf, InitError> {
    if prog.contains('/') {
        return Ok(PathBuf::from(prog));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(prog);
        if let Ok(c) = CString::new(cand.as_os_str().as_bytes()) {
            // SAFETY: valid path; access only queries.
            if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 && cand.is_file() {
                return Ok(cand);
            }
        }
    }
    Err(InitError::NotFound {
        prog: prog.into(),
        path: path.into(),
    })
}

/// Default signal dispositions and an empty mask (Rust ignores SIGPIPE,
/// and ignored signals survive exec).
fn reset_signals() {
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: resets a disposition of this single-threaded process.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // Single-threaded here: the thread's mask is the process's.
    husk_sys::SignalSet::empty().set_mask();
}

/// Makes the pty slave our stdio and controlling terminal.
fn take_terminal(slave: &OwnedFd) -> Result<(), InitError> {
    for fd in 0..3 {
        // SAFETY: dup2 of a descriptor we own onto a stdio slot.
        unsafe { libc::dup2(slave.as_raw_fd(), fd) };
    }
    // SAFETY: TIOCSCTTY with an integer argument on our stdin.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(InitError::errno(
            "process.terminal: set the controlling terminal",
        ));
    }
    Ok(())
}

/// Changes to the process's uid, gid and groups, keeping the capabilities
/// across the change (they are set afterwards).
fn change_user(uid: u32, gid: u32, groups: &[u32]) -> Result<(), InitError> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    cvt(rc, "keep capabilities")?;
    // SAFETY: a valid array of `groups.len()` gids.
    let rc = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
    cvt(rc, "process.user.additionalGids")?;
    // SAFETY: a plain syscall with integer arguments.
    let rc = unsafe { libc::setresgid(gid, gid, gid) };
    cvt(rc, "process.user.gid")?;
    // SAFETY: as above.
    let rc = unsafe { libc::setresuid(uid, uid, uid) };
    cvt(rc, "process.user.uid")?;
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    cvt(rc, "keep capabilities")
}

fn install_seccomp(f: &seccomp::Filter) -> Result<(), InitError> {
    seccomp::install(f).map_err(InitError::io("linux.seccomp: install"))
}

/// Drops to the process's identity and execs it; returns only on failure.
pub(super) fn exec(cfg: &InitConfig, pty: Option<OwnedFd>) -> Result<Never, InitError> {
    let p = &cfg.process;
    reset_signals();
    let exe = lookup(&p.args[0], &p.env)?;
    std::env::set_current_dir(&p.cwd).map_err(InitError::io(format!("process.cwd: {}", p.cwd)))?;
    if let Some(slave) = pty {
        take_terminal(&slave)?;
    }
    // Nothing but stdio and socket B (close-on-exec) crosses the exec.
    // SAFETY: close_range with integer arguments.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    caps::apply_bounding(p.caps.bounding)
        .map_err(InitError::io("process.capabilities.bounding"))?;
    if let (Some(f), false) = (&cfg.seccomp, p.no_new_privileges) {
        install_seccomp(f)?;
    }
    change_user(p.uid, p.gid, &p.additional_gids)?;
    caps::apply_sets(&p.caps).map_err(InitError::io("process.capabilities"))?;
    // SAFETY: umask with an integer argument.
    unsafe { libc::umask(p.umask) };
    if p.no_new_privileges {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        cvt(rc, "process.noNewPrivileges")?;
        if let Some(f) = &cfg.seccomp {
            install_seccomp(f)?;
        }
    }
    let cstrs = |v: &[String]| -> Result<Vec<CString>, InitError> {
        v.iter()
            .map(|s| CString::new(s.as_str()).map_err(|_| InitError::Nul("args or env")))
            .collect()
    };
    let argv = cstrs(&p.args)?;
    let envp = cstrs(&p.env)?;
    let exe_c = CString::new(exe.as_os_str().as_bytes()).map_err(|_| InitError::Nul("path"))?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(exe_c.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    Err(InitError::Exec {
        exe,
        source: io::Error::last_os_error(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_process_path() {
        let env = |p: &str| vec![format!("PATH={p}")];
        assert_eq!(
            lookup("sh", &env("/nonexistent:/bin")).unwrap(),
            Path::new("/bin/sh")
        );
        assert_eq!(lookup("./x", &env("/bin")).unwrap(), Path::new("./x"));
        let e = lookup("no-such-program", &env("/bin")).unwrap_err();
        assert_eq!(e.exit_code(), 127);
        assert_eq!(
            e.to_string(),
            "process.args[0]: \"no-such-program\" not found in PATH \"/bin\""
        );
    }
}
