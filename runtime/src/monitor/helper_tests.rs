//! What the monitor's helpers get, and what the monitor leaves on disk,
//! under the most permissive umask: no ready pipe, umask 077, files 0600
//! and directories 0700.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use super::sandbox::Sandbox;
use super::{keep_ready_pipe, network};
use crate::state::{State, Status, Store};
use crate::util;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The inode of the pipe `fd` is an end of, as /proc/PID/fd shows it.
fn pipe_name(fd: &OwnedFd) -> String {
    // SAFETY: stat is plain data; all-zero is a valid value to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor we own, a valid out-pointer.
    assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
    format!("pipe:[{}]", st.st_ino)
}

/// Runs `f` on a thread whose umask (its own: CLONE_FS unshared) is 000.
fn with_umask_000<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare(2) with a flag: this thread's umask, cwd and root
        // become its own.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_FS) }, 0);
        // SAFETY: umask(2) cannot fail.
        unsafe { libc::umask(0) };
        f()
    })
    .join()
    .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("husk-helpers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Starts `sh -c script` as the monitor starts virtiofsd and husk-vmm;
/// returns what it printed (its log) once it exited.
fn run_helper(dir: &Path, script: &str) -> String {
    let (tx, _rx) = mpsc::channel();
    let mut sb = Sandbox {
        dir: dir.to_path_buf(),
        vsock: PathBuf::new(),
        helpers: vec![],
        logs: vec![],
        tx,
        net: network::Plan::default(),
        cgroup: None,
    };
    let log = dir.join("helper.log");
    let (_, mut child) = sb
        .spawn("sh", Command::new("sh").args(["-c", script]), &log)
        .unwrap();
    child.wait().unwrap();
    sb.logs[0].1.wait(Duration::from_secs(10));
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn helpers_do_not_inherit_the_ready_pipe() {
    let dir = tmp("fds");
    std::fs::create_dir_all(&dir).unwrap();
    // The ready pipe as the monitor finds it: open across exec.
    let (_r, w) = std::io::pipe().unwrap();
    let w = OwnedFd::from(w);
    // SAFETY: fcntl(2) on a descriptor we own.
    assert_eq!(unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETFD, 0) }, 0);
    let ready = Some(w);
    keep_ready_pipe(&ready);
    let name = pipe_name(ready.as_ref().unwrap());
    let fds = run_helper(&dir, "ls -l /proc/self/fd/");
    assert!(
        fds.contains("pipe:["),
        "the listing shows the log pipe: {fds}"
    );
    assert!(
        !fds.contains(&name),
        "the helper holds the ready pipe {name}: {fds}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_the_monitor_makes_is_its_own_whatever_the_umask() {
    let dir = tmp("modes");
    let d = dir.clone();
    with_umask_000(move || {
        let store = Store::new(d.join("root"));
        let cdir = store.create_dir("c1").unwrap();
        let st = State {
            id: "c1".into(),
            guest_id: "c1".into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: String::new(),
            annotations: Default::default(),
            monitor_pid: 0,
            monitor_start: 0,
            status: Status::Creating,
            exit_status: None,
            poststart: vec![],
            poststop: vec![],
            owner_uid: 0,
        };
        store.save(&st).unwrap();
        drop(store.lock("c1").unwrap());
        super::record_exit(&cdir, 0).unwrap();
        let socks = d.join("husk-sock/0123");
        util::create_private_dir_all(&socks).unwrap();
        // A helper's log, and the umask it runs with.
        let made = cdir.join("made-by-helper");
        let umask = run_helper(&cdir, &format!("umask; : >'{}'", made.display()));
        assert_eq!(umask.trim(), "0077", "the helper's umask");
        for p in [d.join("root"), cdir.clone(), d.join("husk-sock"), socks] {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
        }
        for f in [
            "state.json",
            "lock",
            "exit",
            "helper.log",
            "helpers.json",
            "made-by-helper",
        ] {
            assert_eq!(mode(&cdir.join(f)), 0o600, "{f}");
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_helper_that_floods_its_log_does_not_fill_the_disk() {
    let dir = tmp("flood");
    std::fs::create_dir_all(&dir).unwrap();
    // 2.5 caps of output, then its last words.
    let cap = super::helper_log::LOG_CAP;
    let out = run_helper(
        &dir,
        &format!(
            "head -c {} /dev/zero; echo; echo last words >&2",
            cap * 5 / 2
        ),
    );
    let log = dir.join("helper.log");
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&log) <= cap, "{} bytes", size(&log));
    assert_eq!(size(&super::helper_log::rotated(&log)), cap);
    assert!(out.ends_with("last words\n"));
    assert!(!dir.join("helper.log.1.1").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
