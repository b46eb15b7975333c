use super::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

#[test]
fn kept_paths_are_absolute_and_lexical_and_never_the_root() {
    assert_eq!(
        normalize(Path::new("/run/./a/../husk-sock/x")).unwrap(),
        Path::new("/run/husk-sock/x")
    );
    let rel = normalize(Path::new("sock")).unwrap();
    assert_eq!(rel, std::env::current_dir().unwrap().join("sock"));
    for root in ["/", "/..", "/a/.."] {
        let e = normalize(Path::new(root)).unwrap_err().to_string();
        assert!(e.contains("the host's root cannot be kept"), "{root}: {e}");
    }
}

#[test]
fn the_namespace_cannot_be_entered_once_threads_run() {
    // The test harness runs this on a thread of its own; hold one more.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || rx.recv());
    let e = enter(None).unwrap_err().to_string();
    assert!(
        e.starts_with("jail: unshare(CLONE_NEWNS): ")
            && e.ends_with(" threads run: the namespace must be entered before any starts"),
        "{e}"
    );
    assert!(!entered());
    drop(tx);
    let _ = t.join();
    assert!(enter(Some((0, 5)))
        .unwrap_err()
        .to_string()
        .contains("must not be 0"));
}

#[test]
fn limits_leave_room_for_what_is_to_come() {
    let big = std::env::temp_dir().join(format!("husk-jail-disk-{}", std::process::id()));
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(FSIZE_FLOOR * 3).unwrap();
    let l = Limits::measure(5, 100, &[&big]).unwrap();
    assert_eq!(l.fsize, FSIZE_FLOOR * 3);
    // This test's own descriptor is open, so the limit lies beyond it.
    assert!(l.nofile > u64::try_from(f.as_raw_fd()).unwrap() + 100);
    assert!(l.nproc >= 6, "{l:?}");
    std::fs::remove_file(&big).unwrap();
    let l = Limits::measure(0, 0, &[Path::new("/dev/null")]).unwrap();
    assert_eq!(l.fsize, FSIZE_FLOOR, "a device is no file to limit");
    assert!(Limits::measure(0, 0, &[Path::new("/nonexistent/disk")])
        .unwrap_err()
        .to_string()
        .starts_with("jail: size of /nonexistent/disk: "));
}

/// What a jailed child reports, one `key=value` per line.
fn child_report(keep: &Path, id: u32) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k}={v}\n"));
    // The runtime's helpers' umask: the jail's directories must still let
    // its ids through to the kept one.
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0o077) };
    // As the monitor starts husk-vmm: killed when its parent dies.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if let Err(e) = enter(Some((id, id))) {
        line("error", e.to_string());
        return out;
    }
    let limits = Limits {
        nofile: 64,
        fsize: 1 << 20,
        nproc: 8,
    };
    let r = isolate_filesystem(&[keep.to_path_buf()])
        .and_then(|()| limits.apply())
        .and_then(|()| switch_ids(id, id))
        // Again: a thread already on the ids succeeds.
        .and_then(|()| switch_ids(id, id));
    if let Err(e) = r {
        line("error", e.to_string());
        return out;
    }
    let mut root: Vec<String> = std::fs::read_dir("/")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    root.sort();
    line("root", root.join(","));
    line(
        "marker",
        std::fs::read_to_string(keep.join("marker")).unwrap_or_default(),
    );
    line("proc", Path::new("/proc/self").exists().to_string());
    line(
        "write-root",
        std::fs::write("/x", b"x")
            .map_err(|e| e.raw_os_error())
            .err()
            .flatten()
            .unwrap_or(0)
            .to_string(),
    );
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    // SAFETY: getgid has no preconditions.
    let gid = unsafe { libc::getgid() };
    // SAFETY: prctl(PR_GET_DUMPABLE) only reads.
    let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE) };
    line("ids", format!("{uid}:{gid}"));
    line("dumpable", dumpable.to_string());
    let mut sig: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes an int through the pointer.
    unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut libc::c_int) };
    line("pdeathsig", sig.to_string());
    for (name, res) in [
        ("nofile", libc::RLIMIT_NOFILE),
        ("fsize", libc::RLIMIT_FSIZE),
        ("nproc", libc::RLIMIT_NPROC),
    ] {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid out-pointer.
        unsafe { libc::getrlimit(res, &mut l) };
        line(name, format!("{}/{}", l.rlim_cur, l.rlim_max));
    }
    out
}

#[test]
fn a_jailed_process_sees_only_what_it_keeps_as_its_ids() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the jail needs root");
        return;
    }
    let keep = std::env::temp_dir().join(format!("husk-jail-keep-{}", std::process::id()));
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::write(keep.join("marker"), "kept").unwrap();
    let id = husk_vm_config::jail_id(std::process::id());
    let (mut parent, mut child) = UnixStream::pair().unwrap();
    // SAFETY: the child is single-threaded after fork: glibc's fork keeps
    // malloc usable in it; it reports through its socket and _exits,
    // never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop(parent);
        let report = child_report(&keep, id);
        let _ = child.write_all(report.as_bytes());
        // SAFETY: ends the forked child at once.
        unsafe { libc::_exit(0) };
    }
    drop(child);
    parent
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut report = String::new();
    let _ = parent.read_to_string(&mut report);
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    std::fs::remove_dir_all(&keep).unwrap();
    let get = |k: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in the child's report: {report}"))
            .to_string()
    };
    assert!(!report.contains("error="), "{report}");
    // Only the kept directory's first component, on a read-only root.
    assert_eq!(
        get("root"),
        keep.components()
            .nth(1)
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap()
    );
    assert_eq!(get("marker"), "kept");
    assert_eq!(get("proc"), "false");
    assert_eq!(get("write-root"), libc::EROFS.to_string());
    assert_eq!(get("ids"), format!("{id}:{id}"));
    assert_eq!(get("dumpable"), "0");
    // The change of uid clears it; the jail arms it again.
    assert_eq!(get("pdeathsig"), libc::SIGKILL.to_string());
    assert_eq!(get("nofile"), "64/64");
    assert_eq!(get("fsize"), format!("{0}/{0}", 1 << 20));
    assert_eq!(get("nproc"), "8/8");
}
