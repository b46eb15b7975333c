//! container-init: the agent re-executed as `husk-agent __container-init`
//! (a fresh, single-threaded process, so fork and namespace calls are safe).
//!
//! Stage 1 (fd 3 = socket A to the agent) reads the [`InitConfig`], joins
//! namespaces given by path, creates a user namespace (the agent writes the
//! id maps), unshares the other new namespaces and forks. Stage 2 (the child,
//! PID 1 of a new pid namespace; socket B) sets up the root file system,
//! hostname, sysctls and the console, reports `Ready`, waits for `Start`, then
//! drops to the process's user, capabilities and seccomp filter and execs.
//! Socket B is close-on-exec: EOF tells the agent the exec happened.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use husk_protocol::{read_frame, write_frame};
use serde::{Deserialize, Serialize};

use super::config::{InitConfig, NsKind};
use super::{caps, rootfs, seccomp};
use crate::sys;

/// argv[1] of container-init.
pub const ARG: &str = "__container-init";
/// Environment variable with the two socket fds ("A,B").
pub const FDS_ENV: &str = "_HUSK_INIT_FDS";

/// Messages between the agent and container-init.
#[derive(Debug, Serialize, Deserialize)]
pub enum Sync {
    /// First message: followed by three bytes, each carrying one of the
    /// process's stdin, stdout and stderr (SCM_RIGHTS).
    Stdio,
    Config(Box<InitConfig>),
    NeedIdMap,
    IdMapDone,
    Pid(i32),
    PidAck,
    Ready,
    /// Followed by one byte that carries the pty master (SCM_RIGHTS).
    PtyMaster,
    Start,
    Error(String),
}

fn errno_str(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

fn cvt(rc: libc::c_int, what: &str) -> Result<(), String> {
    if rc < 0 {
        Err(errno_str(what))
    } else {
        Ok(())
    }
}

/// Entry point; never returns.
pub fn main() -> ! {
    // Not dumpable: processes of the container cannot open /proc/PID/exe
    // (the agent binary) or ptrace us while we are in their namespaces.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let fds: Vec<RawFd> = std::env::var(FDS_ENV)
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    if fds.len() != 2 || fds.iter().any(|&fd| fd < 3) {
        eprintln!("husk-agent: {ARG} is internal to husk-agent");
        std::process::exit(2);
    }
    // SAFETY: the agent passed these two descriptors to us (fcntl checks they
    // are open); we take sole ownership.
    let (a, b) = unsafe {
        for &fd in &fds {
            if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
                std::process::exit(2);
            }
        }
        (
            UnixStream::from_raw_fd(fds[0]),
            UnixStream::from_raw_fd(fds[1]),
        )
    };
    let mut a = a;
    let code = match stage1(&mut a, b) {
        Ok(()) => 0,
        Err(e) => {
            let _ = write_frame(&mut a, &Sync::Error(e));
            1
        }
    };
    std::process::exit(code)
}

fn expect(s: &mut UnixStream, want: &str) -> Result<Sync, String> {
    read_frame(s).map_err(|e| format!("waiting for {want} from the agent: {e}"))
}

fn setns_fd(f: &std::fs::File, path: &str, kind: NsKind) -> Result<(), String> {
    // SAFETY: setns on a descriptor we own.
    cvt(
        unsafe { libc::setns(f.as_raw_fd(), kind.flag()) },
        &format!("join {} namespace {path}", kind.proc_name()),
    )
}

/// Makes the three descriptors that follow a [`Sync::Stdio`] on `a` our
/// fds 0, 1 and 2 (inherited by everything we start; not close-on-exec).
fn take_stdio(a: &mut UnixStream) -> Result<(), String> {
    match expect(a, "the stdio")? {
        Sync::Stdio => {}
        other => return Err(format!("expected the stdio, got {other:?}")),
    }
    for target in 0..3 {
        let fd = sys::recv_fd(a).map_err(|e| format!("receive stdio descriptor {target}: {e}"))?;
        // SAFETY: dup2 onto a standard descriptor; `fd` stays owned by us
        // and is closed when it drops.
        cvt(
            unsafe { libc::dup2(fd.as_raw_fd(), target) },
            &format!("dup2 onto fd {target}"),
        )?;
    }
    Ok(())
}

fn stage1(a: &mut UnixStream, b: UnixStream) -> Result<(), String> {
    take_stdio(a)?;
    let cfg = match expect(a, "the configuration")? {
        Sync::Config(c) => c,
        other => return Err(format!("expected the configuration, got {other:?}")),
    };
    // Join namespaces given by path (user first: it owns the others). Open
    // them all first: after joining a mount namespace, /proc is another one.
    let mut joins = Vec::new();
    for ns in &cfg.namespaces {
        if let Some(p) = &ns.path {
            let f = std::fs::File::open(p).map_err(|e| format!("open namespace {p}: {e}"))?;
            joins.push((f, p, ns.kind));
        }
    }
    for (f, p, kind) in &joins {
        setns_fd(f, p, *kind)?;
    }
    drop(joins);
    if cfg.new_ns(NsKind::User) {
        // SAFETY: unshare with a constant flag.
        cvt(
            unsafe { libc::unshare(libc::CLONE_NEWUSER) },
            "unshare user namespace",
        )?;
        write_frame(a, &Sync::NeedIdMap).map_err(|e| e.to_string())?;
        match expect(a, "the id maps")? {
            Sync::IdMapDone => {}
            other => return Err(format!("expected IdMapDone, got {other:?}")),
        }
        // SAFETY: plain syscalls with integer arguments.
        cvt(
            unsafe { libc::setresgid(0, 0, 0) },
            "setresgid 0 in the user namespace",
        )?;
        // SAFETY: as above.
        cvt(
            unsafe { libc::setresuid(0, 0, 0) },
            "setresuid 0 in the user namespace",
        )?;
    }
    let flags = cfg
        .namespaces
        .iter()
        .filter(|n| n.path.is_none() && n.kind != NsKind::User)
        .fold(0, |f, n| f | n.kind.flag());
    if flags != 0 {
        // SAFETY: unshare with namespace flags only.
        cvt(unsafe { libc::unshare(flags) }, "unshare namespaces")?;
    }
    if !cfg.time_offsets.is_empty() {
        let text: String = cfg
            .time_offsets
            .iter()
            .map(|(clock, s, ns)| format!("{clock} {s} {ns}\n"))
            .collect();
        std::fs::write("/proc/self/timens_offsets", text)
            .map_err(|e| format!("linux.timeOffsets: {e}"))?;
    }
    // SAFETY: this process is single-threaded, so the child may run any code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno_str("fork"));
    }
    if pid == 0 {
        let mut b = b;
        let code = match stage2(&cfg, &mut b) {
            Ok(never) => match never {},
            Err((e, code)) => {
                let _ = write_frame(&mut b, &Sync::Error(e));
                code
            }
        };
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    drop(b);
    write_frame(a, &Sync::Pid(pid)).map_err(|e| e.to_string())?;
    match expect(a, "the pid acknowledgement")? {
        Sync::PidAck => Ok(()),
        other => Err(format!("expected PidAck, got {other:?}")),
    }
}

enum Never {}

/// Stage 2; returns only on failure, with the message and exit code.
fn stage2(cfg: &InitConfig, b: &mut UnixStream) -> Result<Never, (String, i32)> {
    let pty = setup(cfg, b).map_err(|e| (e, 1))?;
    write_frame(b, &Sync::Ready).map_err(|e| (e.to_string(), 1))?;
    match read_frame::<_, Sync>(b) {
        Ok(Sync::Start) => {}
        Ok(other) => return Err((format!("expected Start, got {other:?}"), 1)),
        Err(e) => return Err((format!("waiting for Start: {e}"), 1)),
    }
    Err(exec(cfg, pty))
}

/// Everything before `Ready`; returns the pty slave if there is a terminal.
fn setup(cfg: &InitConfig, b: &mut UnixStream) -> Result<Option<OwnedFd>, String> {
    // SAFETY: setsid has no arguments; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
    for (k, v) in &cfg.sysctls {
        let p = format!("/proc/sys/{}", k.replace('.', "/"));
        std::fs::write(&p, v).map_err(|e| format!("linux.sysctl.{k:?}: write {p}: {e}"))?;
    }
    if let Some(h) = &cfg.hostname {
        // SAFETY: pointer and length of a live string.
        cvt(
            unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) },
            "hostname",
        )?;
    }
    if let Some(d) = &cfg.domainname {
        // SAFETY: pointer and length of a live string.
        cvt(
            unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) },
            "domainname",
        )?;
    }
    let p = &cfg.process;
    if let Some(adj) = p.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("process.oomScoreAdj: {e}"))?;
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
    }
    for (i, r) in p.rlimits.iter().enumerate() {
        let lim = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: valid rlimit struct; resource is a known RLIMIT_* number.
        cvt(
            unsafe { libc::setrlimit(r.resource as _, &lim) },
            &format!("process.rlimits[{i}]"),
        )?;
    }
    if let Some((class, level)) = p.io_priority {
        // SAFETY: ioprio_set with integer arguments (IOPRIO_WHO_PROCESS, self).
        let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, (class << 13) | level) };
        if rc != 0 {
            return Err(errno_str("process.ioPriority"));
        }
    }
    if let Some(pers) = cfg.personality {
        // SAFETY: personality with an integer argument.
        if unsafe { libc::personality(pers as libc::c_ulong) } < 0 {
            return Err(errno_str("linux.personality"));
        }
    }
    Ok(pty)
}

/// Opens a pty in the container's /dev/pts, binds its slave onto
/// /dev/console, sends the master to the agent and returns the slave.
fn console(cfg: &InitConfig, b: &mut UnixStream) -> Result<OwnedFd, String> {
    let ptmx = CString::new("/dev/ptmx").map_err(|e| e.to_string())?;
    // SAFETY: valid path; the result is checked and owned below.
    let m = unsafe {
        libc::open(
            ptmx.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if m < 0 {
        return Err(errno_str("process.terminal: open /dev/ptmx"));
    }
    // SAFETY: `m` is a fresh descriptor we own.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from a valid pointer.
    cvt(
        unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &unlock) },
        "process.terminal: unlockpt",
    )?;
    // SAFETY: TIOCGPTPEER opens the peer of a master we own.
    let s = unsafe { libc::ioctl(m, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY) };
    if s < 0 {
        return Err(errno_str("process.terminal: open the pty slave"));
    }
    // SAFETY: `s` is a fresh descriptor we own.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int to a valid pointer.
    cvt(
        unsafe { libc::ioctl(m, libc::TIOCGPTN, &mut n) },
        "process.terminal: pty number",
    )?;
    if let Some((rows, cols)) = cfg.process.console_size {
        sys::set_winsize(m, rows, cols).map_err(|e| format!("set the terminal size: {e}"))?;
    }
    if cfg.rootfs.is_some() {
        let console = Path::new("/dev/console");
        if std::fs::symlink_metadata(console).is_err() {
            std::fs::File::create(console).map_err(|e| format!("create /dev/console: {e}"))?;
        }
        rootfs::mount(
            Some(&format!("/dev/pts/{n}")),
            console,
            None,
            libc::MS_BIND,
            None,
        )
        .map_err(|e| format!("bind /dev/console: {e}"))?;
    }
    write_frame(b, &Sync::PtyMaster).map_err(|e| e.to_string())?;
    sys::send_fd(b, master.as_raw_fd()).map_err(|e| format!("send the pty master: {e}"))?;
    Ok(slave)
}

/// Finds `prog` on `PATH` of the process environment, as execvp would.
fn lookup(prog: &str, env: &[String]) -> Result<PathBuf, (String, i32)> {
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
    Err((
        format!("process.args[0]: {prog:?} not found in PATH {path:?}"),
        127,
    ))
}

/// Drops to the process's identity and execs it; returns only on failure.
fn exec(cfg: &InitConfig, pty: Option<OwnedFd>) -> (String, i32) {
    match exec_inner(cfg, pty) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn exec_inner(cfg: &InitConfig, pty: Option<OwnedFd>) -> Result<Never, (String, i32)> {
    let p = &cfg.process;
    let fail = |e: String| (e, 1);
    // Default signal dispositions and an empty mask (Rust ignores SIGPIPE,
    // and ignored signals survive exec).
    // SAFETY: resets dispositions of this single-threaded process.
    unsafe {
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    let exe = lookup(&p.args[0], &p.env)?;
    std::env::set_current_dir(&p.cwd).map_err(|e| fail(format!("process.cwd: {}: {e}", p.cwd)))?;
    if let Some(slave) = pty {
        // SAFETY: dup2 of a descriptor we own onto the stdio slots, then make
        // it the controlling terminal of our session.
        unsafe {
            for fd in 0..3 {
                libc::dup2(slave.as_raw_fd(), fd);
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(fail(errno_str(
                    "process.terminal: set the controlling terminal",
                )));
            }
        }
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
        .map_err(|e| fail(format!("process.capabilities.bounding: {e}")))?;
    if let (Some(f), false) = (&cfg.seccomp, p.no_new_privileges) {
        seccomp::install(f).map_err(|e| fail(format!("linux.seccomp: install: {e}")))?;
    }
    // SAFETY: plain syscalls with integer arguments / a valid gid array.
    unsafe {
        cvt(
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0),
            "keep capabilities",
        )
        .map_err(fail)?;
        cvt(
            libc::setgroups(p.additional_gids.len(), p.additional_gids.as_ptr()),
            "process.user.additionalGids",
        )
        .map_err(fail)?;
        cvt(libc::setresgid(p.gid, p.gid, p.gid), "process.user.gid").map_err(fail)?;
        cvt(libc::setresuid(p.uid, p.uid, p.uid), "process.user.uid").map_err(fail)?;
        cvt(
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0),
            "keep capabilities",
        )
        .map_err(fail)?;
    }
    caps::apply_sets(&p.caps).map_err(|e| fail(format!("process.capabilities: {e}")))?;
    // SAFETY: umask with an integer argument.
    unsafe { libc::umask(p.umask as libc::mode_t) };
    if p.no_new_privileges {
        // SAFETY: prctl with integer arguments only.
        cvt(
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
            "process.noNewPrivileges",
        )
        .map_err(fail)?;
        if let Some(f) = &cfg.seccomp {
            seccomp::install(f).map_err(|e| fail(format!("linux.seccomp: install: {e}")))?;
        }
    }
    let cstrs = |v: &[String]| -> Result<Vec<CString>, (String, i32)> {
        v.iter()
            .map(|s| CString::new(s.as_str()).map_err(|_| fail("NUL in args or env".into())))
            .collect()
    };
    let argv = cstrs(&p.args)?;
    let envp = cstrs(&p.env)?;
    let exe_c = CString::new(exe.as_os_str().as_bytes()).map_err(|_| fail("NUL in path".into()))?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(exe_c.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    let e = io::Error::last_os_error();
    let code = if e.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    Err((
        format!("process.args[0]: exec {}: {e}", exe.display()),
        code,
    ))
}
