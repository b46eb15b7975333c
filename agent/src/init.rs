//! PID 1 duties: early mounts, console, kernel command line, child reaping,
//! power-off. Nothing here runs unless the agent is PID 1.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use thiserror::Error;

use crate::log::{debug, info};

const NOSUID: libc::c_ulong = libc::MS_NOSUID;
const NODEV: libc::c_ulong = libc::MS_NODEV;
const NOEXEC: libc::c_ulong = libc::MS_NOEXEC;

/// One early mount.
#[derive(Debug)]
pub struct MountSpec {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: libc::c_ulong,
    pub data: &'static str,
}

/// In order: /dev must be mounted before /dev/pts and /dev/shm are created.
pub const MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID | NODEV | NOEXEC,
        data: "",
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID | NODEV | NOEXEC,
        data: "",
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: NOSUID,
        data: "mode=0755",
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: NOSUID | NOEXEC,
        data: "newinstance,ptmxmode=0666,mode=0620",
    },
    MountSpec {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NOSUID | NODEV,
        data: "mode=1777",
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID | NODEV,
        data: "mode=0755",
    },
    MountSpec {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: NOSUID | NODEV,
        data: "mode=1777",
    },
    // Containers need the unified hierarchy.
    MountSpec {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID | NODEV | NOEXEC,
        data: "nsdelegate",
    },
];

fn cstr(s: &str) -> CString {
    // The mount table is static and has no NUL bytes.
    CString::new(s).expect("static mount string without NUL")
}

/// True if `path` is the root of a mount (its device differs from its parent's).
pub fn is_mountpoint(path: &Path) -> io::Result<bool> {
    let me = std::fs::metadata(path)?;
    let parent = std::fs::metadata(path.join(".."))?;
    Ok(me.dev() != parent.dev() || me.ino() == parent.ino())
}

/// Why an early mount failed.
#[derive(Debug, Error)]
pub enum EarlyMountError {
    #[error("mkdir {target}: {source}")]
    Mkdir {
        target: &'static str,
        source: io::Error,
    },
    #[error("mount {} ({}) on {}: {source}", spec.source, spec.fstype, spec.target)]
    Mount {
        spec: &'static MountSpec,
        source: io::Error,
    },
}

/// Mounts `spec`, creating the directory if needed. Already mounted is fine.
pub fn mount(spec: &'static MountSpec) -> Result<(), EarlyMountError> {
    let target = Path::new(spec.target);
    if let Err(source) = std::fs::create_dir(target) {
        if source.kind() != io::ErrorKind::AlreadyExists {
            return Err(EarlyMountError::Mkdir {
                target: spec.target,
                source,
            });
        }
    }
    if is_mountpoint(target).unwrap_or(false) {
        debug!("{} already mounted", spec.target);
        return Ok(());
    }
    let src = cstr(spec.source);
    let tgt = cstr(spec.target);
    let fstype = cstr(spec.fstype);
    let data = cstr(spec.data);
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            spec.flags,
            if spec.data.is_empty() {
                std::ptr::null()
            } else {
                data.as_ptr().cast()
            },
        )
    };
    if rc != 0 {
        let source = io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::EBUSY) {
            return Ok(());
        }
        return Err(EarlyMountError::Mount { spec, source });
    }
    Ok(())
}

/// Makes fds 0, 1 and 2 point at /dev/console if any of them is closed
/// (the kernel leaves them closed when it could not open a console).
pub fn setup_console() {
    // SAFETY: F_GETFD on any integer fd only queries the descriptor table.
    let closed: Vec<i32> = (0..3)
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0)
        .collect();
    if closed.is_empty() {
        return;
    }
    let path = cstr("/dev/console");
    // SAFETY: valid NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    if fd < 0 {
        return; // no console: logging goes nowhere, which is survivable
    }
    for &target in &closed {
        if target != fd {
            // SAFETY: dup2 of a descriptor we just opened onto a closed stdio slot.
            unsafe { libc::dup2(fd, target) };
        }
    }
    if !closed.contains(&fd) {
        // SAFETY: `fd` is ours and was only used as a dup2 source.
        unsafe { libc::close(fd) };
    }
}

/// Settings read from /proc/cmdline.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cmdline {
    pub debug: bool,
    pub agent_port: Option<u32>,
    /// `husk.share=TAG`: a virtio-fs share to mount as soon as the agent
    /// listens, while the host is still on its way to the first request.
    pub share: Option<String>,
    /// Problems to log once the console is up.
    pub warnings: Vec<String>,
}

/// Parses the kernel command line: `husk.debug` (or `husk.debug=1`/`=0`),
/// `husk.agent_port=N` (1..=u32::MAX) and `husk.share=TAG`.
pub fn parse_cmdline(s: &str) -> Cmdline {
    let mut c = Cmdline::default();
    for word in s.split_ascii_whitespace() {
        let (key, val) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        match (key, val) {
            ("husk.debug", None | Some("1") | Some("y") | Some("on")) => c.debug = true,
            ("husk.debug", Some(_)) => c.debug = false,
            ("husk.agent_port", Some(v)) => match v.parse::<u32>() {
                Ok(p) if p != 0 && p != u32::MAX => c.agent_port = Some(p),
                _ => c.warnings.push(format!(
                    "ignoring husk.agent_port={:.16}: not a port number",
                    v
                )),
            },
            ("husk.agent_port", None) => c
                .warnings
                .push("ignoring husk.agent_port without a value".into()),
            ("husk.share", Some(v)) if husk_protocol::container::valid_share_tag(v) => {
                c.share = Some(v.to_string())
            }
            ("husk.share", _) => c.warnings.push(format!(
                "ignoring husk.share={:.40}: not a virtio-fs tag",
                val.unwrap_or_default()
            )),
            _ => {}
        }
    }
    c
}

/// Blocks SIGCHLD in the calling thread. Call before any other thread starts,
/// so every thread inherits the mask and the reaper's sigwait sees them all.
pub fn block_sigchld() {
    husk_sys::SignalSet::of(&[libc::SIGCHLD]).block();
}

/// Reaps every exited child without blocking; returns (pid, wait status).
pub fn reap_all() -> Vec<(libc::pid_t, libc::c_int)> {
    let mut reaped = Vec::new();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid out-pointer; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            reaped.push((pid, status));
            continue;
        }
        if pid < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return reaped; // 0: children left but none exited; -1 ECHILD: none at all
    }
}

/// Syncs and resets the VM (`reboot=k`: the VMM exits on the i8042 reset).
/// Never returns: if reboot fails, the agent hangs rather than exiting (an
/// exiting PID 1 panics the kernel).
pub fn poweroff() -> ! {
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
    // SAFETY: reboot(2) with a valid command; as PID 1 we have CAP_SYS_BOOT.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    let e = io::Error::last_os_error();
    info!("reboot failed: {e}; halting");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Early PID 1 set-up; returns the command-line settings. Mount failures are
/// logged (after the console is ready), never fatal.
pub fn early_setup() -> Cmdline {
    let mut errors = Vec::new();
    for spec in MOUNTS {
        if let Err(e) = mount(spec) {
            errors.push(e.to_string());
        }
    }
    setup_console();
    if std::env::var_os("PATH").is_none() {
        // Single-threaded here, so setting the environment is sound.
        std::env::set_var(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
    let cmdline = match crate::sysinfo::read_bounded(Path::new("/proc/cmdline")) {
        Ok(s) => parse_cmdline(&s),
        Err(e) => {
            errors.push(format!("read /proc/cmdline: {e}"));
            Cmdline::default()
        }
    };
    crate::log::set_debug(cmdline.debug);
    for e in errors.iter().chain(&cmdline.warnings) {
        info!("{e}");
    }
    cmdline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline() {
        let c = parse_cmdline("console=ttyS0 reboot=k husk.debug quiet\n");
        assert!(c.debug);
        assert_eq!(c.agent_port, None);
        let c = parse_cmdline("husk.agent_port=2048 husk.debug=0");
        assert_eq!((c.debug, c.agent_port), (false, Some(2048)));
        assert!(c.warnings.is_empty());
        for bad in [
            "husk.agent_port=x",
            "husk.agent_port=0",
            "husk.agent_port=-1",
            "husk.agent_port=",
            "husk.agent_port",
        ] {
            let c = parse_cmdline(bad);
            assert_eq!(c.agent_port, None, "{bad}");
            assert_eq!(c.warnings.len(), 1, "{bad}");
        }
        // A hostile value is not echoed at length.
        let c = parse_cmdline(&format!("husk.agent_port={}", "9".repeat(5000)));
        assert!(c.warnings[0].len() < 100);
        assert_eq!(
            parse_cmdline("xhusk.debug husk.debugger"),
            Cmdline::default()
        );
        let c = parse_cmdline("quiet husk.share=husk husk.debug");
        assert_eq!((c.share.as_deref(), c.debug), (Some("husk"), true));
        for bad in ["husk.share", "husk.share=", "husk.share=a/b"] {
            let c = parse_cmdline(bad);
            assert_eq!(c.share, None, "{bad}");
            assert_eq!(c.warnings.len(), 1, "{bad}");
        }
        let c = parse_cmdline(&format!("husk.share={}", "x".repeat(37)));
        assert_eq!(c.share, None);
        assert!(c.warnings[0].len() < 100, "{}", c.warnings[0]);
    }

    #[test]
    fn mountpoints() {
        assert!(is_mountpoint(Path::new("/")).unwrap());
        assert!(is_mountpoint(Path::new("/proc")).unwrap());
        let d = std::env::temp_dir().join(format!("husk-agent-mp-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert!(!is_mountpoint(&d).unwrap());
        std::fs::remove_dir(&d).unwrap();
    }

    #[test]
    fn reap_all_collects_exited_children() {
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        std::mem::forget(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut got = None;
        while got.is_none() && std::time::Instant::now() < deadline {
            got = reap_all().into_iter().find(|&(p, _)| p == pid);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let (_, status) = got.expect("child reaped");
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 3);
    }
}
