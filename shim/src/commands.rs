//! The commands: what runc does for each, for a container in a microVM.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use husk_protocol::oci;
use serde_json::{json, Value};

use crate::bundle::{self, Bundle};
use crate::config::HostConfig;
use crate::monitor::{self, Helpers};
use crate::session::{Target, Terminal};
use crate::state::{State, Status, Store};
use crate::util::{self, Context, Result};
use crate::{hooks, Cmd, CreateArgs, ExecArgs, Global};

pub fn dispatch(g: &Global, cmd: Cmd) -> Result<i32> {
    let store = Store::new(g.root.clone());
    match cmd {
        Cmd::Create(a) => create(g, &store, &a, false).map(|_| 0),
        Cmd::Start(a) => start(&store, &a.id).map(|_| 0),
        Cmd::Run(a) => {
            if a.detach {
                create(g, &store, &a.create, true).map(|_| 0)
            } else {
                run_foreground(&store, &a.create, a.keep)
            }
        }
        Cmd::State(a) => state(&store, &a.id).map(|_| 0),
        Cmd::Kill(a) => kill(&store, &a.id, a.signal.as_deref(), a.all).map(|_| 0),
        Cmd::Delete(a) => delete(&store, &a.id, a.force).map(|_| 0),
        Cmd::Exec(a) => exec(g, &store, a),
        Cmd::Ps(a) => ps(&store, &a.id, &a.format, &a.ps_args).map(|_| 0),
        Cmd::List(a) => list(&store, &a.format, a.quiet).map(|_| 0),
        Cmd::Pause(a) => pause(&store, &a.id, true).map(|_| 0),
        Cmd::Resume(a) => pause(&store, &a.id, false).map(|_| 0),
        Cmd::Update(a) => update(&store, a).map(|_| 0),
        Cmd::Events(a) => events(&store, &a.id, a.stats, &a.interval).map(|_| 0),
        Cmd::Features => {
            println!("{}", serde_json::to_string_pretty(&features()).unwrap_or_default());
            Ok(0)
        }
        Cmd::Spec(a) => spec(a.bundle.as_deref()).map(|_| 0),
        Cmd::Checkpoint(_) => Err(
            "checkpoint is not supported: the container's processes live in a microVM, which CRIU cannot checkpoint"
                .into(),
        ),
        Cmd::Restore(_) => Err(
            "restore is not supported: husk cannot checkpoint, so there is nothing to restore".into(),
        ),
        Cmd::Bench(r) => bench(&r.args),
        Cmd::Monitor(m) => {
            // SAFETY: `create` passes the ready pipe's write end as this
            // descriptor (dup2 before exec); nothing else owns it.
            let ready = (m.ready_fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(m.ready_fd) });
            let term = match m.console_socket {
                Some(s) => Terminal::Console(s),
                None => Terminal::No,
            };
            let opts = monitor::Opts {
                term,
                ready,
                start: m.start,
            };
            // Errors went to the ready pipe and the log; stderr is the
            // container's.
            Ok(monitor::run(&store, &m.id, opts).unwrap_or(1))
        }
        Cmd::ExecMonitor(m) => {
            // SAFETY: as for the monitor: `exec --detach` dup2'd it here.
            let ready = (m.ready_fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(m.ready_fd) });
            let data = std::fs::read(&m.process).ctx(m.process.display())?;
            let _ = std::fs::remove_file(&m.process);
            let process: oci::Process =
                serde_json::from_slice(&data).ctx(m.process.display())?;
            let st = store.load(&m.id)?;
            let term = match (m.console_socket, process.terminal().unwrap_or(false)) {
                (Some(s), true) => Terminal::Console(s),
                _ => Terminal::No,
            };
            let target = target_of(&store, &st, Some(m.exec_id));
            Ok(monitor::exec_session(target, process, term, ready, None))
        }
    }
}

fn check_id(id: &str) -> Result<()> {
    husk_protocol::id::check_container_id(id).map_err(|e| e.to_string())
}

fn target_of(store: &Store, st: &State, exec_id: Option<String>) -> Target {
    Target {
        vsock: monitor::sock_dir(&store.root, &st.id).join("vsock"),
        guest_id: st.guest_id.clone(),
        exec_id,
    }
}

/// The status a container has now: what commands recorded, unless its
/// monitor has exited (then it is stopped, whatever the record says).
fn live_status(store: &Store, st: &State) -> Status {
    if monitor::recorded_exit(&store.dir(&st.id)).is_some() {
        return Status::Stopped;
    }
    if st.monitor_pid > 0 && !util::alive(st.monitor_pid, st.monitor_start) {
        return Status::Stopped;
    }
    if st.monitor_pid <= 0 && st.status != Status::Creating {
        return Status::Stopped;
    }
    st.status
}

fn pid_of(st: &State, status: Status) -> i32 {
    if status == Status::Stopped {
        0
    } else {
        st.monitor_pid
    }
}

fn bundle_dir(b: &Option<PathBuf>) -> Result<PathBuf> {
    match b {
        Some(p) => Ok(p.clone()),
        None => std::env::current_dir().ctx("current directory"),
    }
}

fn new_state(id: &str, b: &Bundle) -> State {
    State {
        id: id.to_string(),
        guest_id: husk_protocol::id::guest_id(id),
        bundle: b.dir.clone(),
        rootfs: b.rootfs.clone(),
        created: util::rfc3339(SystemTime::now()),
        annotations: b
            .spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        monitor_pid: 0,
        monitor_start: 0,
        status: Status::Creating,
        exit_status: None,
        poststart: vec![],
        poststop: vec![],
        // SAFETY: getuid(2) cannot fail.
        owner_uid: unsafe { libc::getuid() },
    }
}

/// Checks everything a create needs before anything is made.
fn precheck(store: &Store, a: &CreateArgs) -> Result<Bundle> {
    check_id(&a.id)?;
    if store.dir(&a.id).join("state.json").exists() {
        return Err(format!("container with id {} already exists", a.id));
    }
    let b = bundle::load(&bundle_dir(&a.bundle)?)?;
    HostConfig::load()?.check()?;
    if let Some(s) = &a.console_socket {
        if !b.terminal {
            crate::debug!(
                "--console-socket {}: ignored, process.terminal is false",
                s.display()
            );
        }
    }
    if a.preserve_fds.unwrap_or(0) > 0 {
        crate::warn!("--preserve-fds: extra descriptors cannot be passed into a microVM; ignored");
    }
    Ok(b)
}

/// Removes what a failed create made.
fn undo_create(store: &Store, id: &str) {
    let _ = store.remove(id);
    let _ = std::fs::remove_dir_all(monitor::sock_dir(&store.root, id));
}

fn global_args(g: &Global) -> Vec<String> {
    let mut v = vec!["--root".to_string(), g.root.display().to_string()];
    if let Some(l) = &g.log {
        v.push("--log".into());
        v.push(l.display().to_string());
    }
    v.push("--log-format".into());
    v.push(g.log_format.clone());
    if g.debug {
        v.push("--debug".into());
    }
    v
}

/// Makes a pipe; both ends close on exec.
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two-element array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts `husk <globals> <args>` as a detached child (own session) with
/// `ready` as its fd 3, and waits for its "ok" or "error: ..." line.
/// Returns the child's pid once it says ok.
///
/// With `console` the child gets /dev/null as stdio: its process's terminal
/// goes over the console socket, and a caller that reads our stdout and
/// stderr to EOF (go-runc does for a terminal create) must not wait for the
/// container's lifetime.
fn spawn_helper(
    g: &Global,
    args: &[String],
    what: &str,
    limit: Duration,
    console: bool,
) -> Result<i32> {
    let (r, w) = pipe()?;
    let wfd = w.as_raw_fd();
    let exe = std::env::current_exe().ctx("/proc/self/exe")?;
    let mut cmd = Command::new(exe);
    cmd.args(global_args(g)).args(args);
    if console {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if wfd == 3 {
                let fl = libc::fcntl(3, libc::F_GETFD);
                if fl < 0 || libc::fcntl(3, libc::F_SETFD, fl & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(wfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut child = cmd.spawn().map_err(|e| format!("start the {what}: {e}"))?;
    drop(w);
    let pid = child.id() as i32;
    match read_ready(r, limit) {
        Ok(()) => Ok(pid),
        Err(e) => {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Reads the ready pipe: Ok on "ok", Err with the message otherwise.
fn read_ready(r: OwnedFd, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut f = std::fs::File::from(r);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no answer from the monitor within {} s",
                limit.as_secs()
            ));
        }
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        if n == 0 {
            continue;
        }
        let mut chunk = [0u8; 4096];
        let k = match f.read(&mut chunk) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read the monitor's answer: {e}")),
        };
        buf.extend_from_slice(&chunk[..k]);
        if k == 0 || buf.contains(&b'\n') || buf.len() > 64 * 1024 {
            break;
        }
    }
    let s = String::from_utf8_lossy(&buf);
    let line = s.lines().next().unwrap_or("").trim();
    if line == "ok" {
        Ok(())
    } else if let Some(e) = line.strip_prefix("error: ") {
        Err(e.to_string())
    } else {
        Err("the monitor exited without an answer (see its log)".into())
    }
}

fn create(g: &Global, store: &Store, a: &CreateArgs, start: bool) -> Result<i32> {
    let b = precheck(store, a)?;
    if b.terminal && a.console_socket.is_none() {
        return Err(
            "process.terminal is true: --console-socket is required to hand over the terminal"
                .into(),
        );
    }
    store.create_dir(&a.id)?;
    let r = (|| {
        let _lock = store.lock(&a.id)?;
        store.save(&new_state(&a.id, &b))?;
        let mut args = vec!["__monitor".to_string(), a.id.clone()];
        if let (Some(s), true) = (&a.console_socket, b.terminal) {
            let s = std::fs::canonicalize(s).ctx(format!("--console-socket {}", s.display()))?;
            args.push("--console-socket".into());
            args.push(s.display().to_string());
        }
        if start {
            args.push("--start".into());
        }
        args.extend(["--ready-fd".into(), "3".into()]);
        let limit = HostConfig::load()?.boot_timeout + Duration::from_secs(60);
        let pid = spawn_helper(g, &args, "monitor", limit, b.terminal)
            .map_err(|e| format!("create container {}: {e}", a.id))?;
        if let Some(p) = &a.pid_file {
            monitor::write_pid_file(p, pid)?;
        }
        Ok(pid)
    })();
    if r.is_err() {
        undo_create(store, &a.id);
    }
    r
}

/// `run` without --detach: this process is the monitor.
fn run_foreground(store: &Store, a: &CreateArgs, keep: bool) -> Result<i32> {
    let b = precheck(store, a)?;
    let term = match (b.terminal, &a.console_socket) {
        (false, _) => Terminal::No,
        (true, Some(s)) => Terminal::Console(
            std::fs::canonicalize(s).ctx(format!("--console-socket {}", s.display()))?,
        ),
        (true, None) => Terminal::Inherit,
    };
    store.create_dir(&a.id)?;
    let r = (|| {
        store.save(&new_state(&a.id, &b))?;
        if let Some(p) = &a.pid_file {
            monitor::write_pid_file(p, std::process::id() as i32)?;
        }
        monitor::run(
            store,
            &a.id,
            monitor::Opts {
                term,
                ready: None,
                start: true,
            },
        )
    })();
    let st = store.load(&a.id);
    if keep && r.is_ok() {
        return r;
    }
    if let Ok(st) = st {
        let json = monitor::state_json(&st, Status::Stopped, 0);
        if let Err(e) = hooks::run("poststop", &st.poststop, &json) {
            crate::warn!("{e}");
        }
    }
    undo_create(store, &a.id);
    r
}

fn start(store: &Store, id: &str) -> Result<()> {
    let _lock = store.lock(id)?;
    let st = store.load(id)?;
    match live_status(store, &st) {
        Status::Created => {}
        Status::Stopped => return Err("cannot start a container that has stopped".into()),
        Status::Creating => return Err(format!("container {id} is still being created")),
        s => return Err(format!("cannot start an already {} container", s.as_str())),
    }
    let t = target_of(store, &st, None);
    t.connect()
        .and_then(|mut c| c.start_container(&st.guest_id).map_err(|e| e.to_string()))
        .map_err(|e| format!("start container {id}: {e}"))?;
    store.set_status(id, Status::Running, None)?;
    let json = monitor::state_json(&st, Status::Running, st.monitor_pid);
    if let Err(e) = hooks::run("poststart", &st.poststart, &json) {
        crate::warn!("{e}");
    }
    Ok(())
}

fn state_value(store: &Store, st: &State) -> Value {
    let status = live_status(store, st);
    let owner = if st.owner_uid == 0 {
        String::new()
    } else {
        st.owner_uid.to_string()
    };
    json!({
        "ociVersion": crate::OCI_VERSION,
        "id": st.id,
        "pid": pid_of(st, status),
        "status": status.as_str(),
        "bundle": st.bundle,
        "rootfs": st.rootfs,
        "created": st.created,
        "owner": owner,
        "annotations": st.annotations,
    })
}

fn state(store: &Store, id: &str) -> Result<()> {
    check_id(id)?;
    let st = store.load(id)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&state_value(store, &st)).unwrap_or_default()
    );
    Ok(())
}

fn kill(store: &Store, id: &str, signal: Option<&str>, all: bool) -> Result<()> {
    check_id(id)?;
    let sig = util::parse_signal(signal.unwrap_or("SIGTERM"))?;
    let _lock = store.lock(id)?;
    let st = store.load(id)?;
    let status = live_status(store, &st);
    if status == Status::Stopped {
        return Err("container not running".into());
    }
    let t = target_of(store, &st, None);
    let r = t.connect().and_then(|mut c| {
        c.signal(&st.guest_id, None, sig, all)
            .map_err(|e| e.to_string())
    });
    match r {
        Ok(()) => Ok(()),
        // A container whose VM cannot take the signal still has to go when
        // told to die: its monitor takes the VM with it.
        Err(e) if sig == libc::SIGKILL || status == Status::Creating => {
            crate::warn!(
                "kill {id}: the agent did not take the signal ({e}); stopping the microVM"
            );
            util::kill_checked(st.monitor_pid, st.monitor_start, libc::SIGKILL);
            Ok(())
        }
        Err(e) => Err(format!("kill container {id}: {e}")),
    }
}

fn wait_gone(pid: i32, start: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while util::alive(pid, start) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn delete(store: &Store, id: &str, force: bool) -> Result<()> {
    check_id(id)?;
    let dir = store.dir(id);
    if !dir.join("state.json").exists() {
        // An aborted create may have left a directory without state.
        if dir.is_dir() {
            undo_create(store, id);
        }
        return if force {
            Ok(())
        } else {
            Err(format!("container {id} does not exist"))
        };
    }
    let _lock = store.lock(id)?;
    let st = store.load(id)?;
    let status = live_status(store, &st);
    match status {
        Status::Stopped | Status::Created => {}
        s if !force => {
            return Err(format!(
                "cannot delete container {id} that is not stopped: {}",
                s.as_str()
            ))
        }
        _ => {}
    }
    if status != Status::Stopped {
        if let Ok(mut c) = target_of(store, &st, None).connect() {
            let _ = c.set_timeout(Duration::from_secs(5));
            let _ = c.signal(&st.guest_id, None, libc::SIGKILL, true);
        }
        if !wait_gone(st.monitor_pid, st.monitor_start, Duration::from_secs(10)) {
            crate::warn!(
                "delete {id}: the container did not exit after SIGKILL; stopping its microVM"
            );
        }
    }
    util::kill_checked(st.monitor_pid, st.monitor_start, libc::SIGKILL);
    if let Ok(data) = std::fs::read(dir.join("helpers.json")) {
        if let Ok(h) = serde_json::from_slice::<Helpers>(&data) {
            for (p, s) in &h.pids {
                util::kill_checked(*p, *s, libc::SIGKILL);
            }
            for (p, s) in &h.pids {
                wait_gone(*p, *s, Duration::from_secs(5));
            }
        }
    }
    wait_gone(st.monitor_pid, st.monitor_start, Duration::from_secs(5));
    let json = monitor::state_json(&st, Status::Stopped, 0);
    if let Err(e) = hooks::run("poststop", &st.poststop, &json) {
        crate::warn!("{e}");
    }
    store.remove(id)?;
    let _ = std::fs::remove_dir_all(monitor::sock_dir(&store.root, id));
    Ok(())
}

fn random_id() -> String {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let n = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64
            ^ ((std::process::id() as u64) << 32);
        b = n.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The process `exec` runs: `--process FILE`, or the container's process
/// with the command line and flags applied (as runc builds it).
fn exec_process(st: &State, a: &ExecArgs) -> Result<oci::Process> {
    let mut p: oci::Process = match &a.process {
        Some(f) => {
            let data = std::fs::read(f).ctx(format!("--process {}", f.display()))?;
            let v: Value = serde_json::from_slice(&data)
                .ctx(format!("--process {}: invalid JSON", f.display()))?;
            husk_protocol::decode_tracked(v, "process")
                .map_err(|e| format!("--process {}: {e}", f.display()))?
        }
        None => {
            if a.command.is_empty() {
                return Err("exec: a command is required (or --process FILE)".into());
            }
            let b = bundle::load(&st.bundle).ok();
            let mut p = b.and_then(|b| b.spec.process().clone()).unwrap_or_default();
            p.set_args(Some(a.command.clone()));
            p.set_terminal(Some(false));
            p
        }
    };
    if a.process.is_some() && !a.command.is_empty() {
        p.set_args(Some(a.command.clone()));
    }
    if p.args().as_ref().is_none_or(|v| v.is_empty()) {
        return Err("exec: process.args must not be empty".into());
    }
    if a.tty {
        p.set_terminal(Some(true));
    }
    if !a.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        for e in &a.env {
            if !e.contains('=') {
                return Err(format!("--env {e}: not KEY=VALUE"));
            }
            let k = e.split('=').next().unwrap_or("");
            env.retain(|x| x.split('=').next() != Some(k));
            env.push(e.clone());
        }
        p.set_env(Some(env));
    }
    if let Some(c) = &a.cwd {
        if !c.starts_with('/') {
            return Err(format!("--cwd {c}: must be an absolute path"));
        }
        p.set_cwd(PathBuf::from(c));
    }
    if let Some(u) = &a.user {
        let mut parts = u.splitn(2, ':');
        let uid: u32 = parts
            .next()
            .unwrap_or("")
            .parse()
            .map_err(|_| format!("--user {u}: expected UID[:GID] (numbers)"))?;
        let gid: u32 = match parts.next() {
            Some(g) => g
                .parse()
                .map_err(|_| format!("--user {u}: expected UID[:GID] (numbers)"))?,
            None => 0,
        };
        let mut user = p.user().clone();
        user.set_uid(uid);
        user.set_gid(gid);
        p.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(a.additional_gids.clone()));
        p.set_user(user);
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        let mut add = Vec::new();
        for c in &a.cap {
            let v = json!(c.to_uppercase());
            let cap: oci_spec::runtime::Capability =
                serde_json::from_value(v).map_err(|_| format!("--cap {c}: unknown capability"))?;
            add.push(cap);
        }
        let with = |s: &Option<oci_spec::runtime::Capabilities>| {
            let mut s = s.clone().unwrap_or_default();
            s.extend(add.iter().copied());
            Some(s)
        };
        caps.set_bounding(with(caps.bounding()));
        caps.set_effective(with(caps.effective()));
        caps.set_permitted(with(caps.permitted()));
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

fn exec(g: &Global, store: &Store, a: ExecArgs) -> Result<i32> {
    check_id(&a.id)?;
    let st = store.load(&a.id)?;
    match live_status(store, &st) {
        Status::Running => {}
        Status::Paused if a.ignore_paused => {}
        Status::Paused => {
            return Err("cannot exec in a paused container (use --ignore-paused)".into())
        }
        Status::Stopped => return Err("cannot exec in a stopped container".into()),
        s => return Err(format!("cannot exec in a {} container", s.as_str())),
    }
    let process = exec_process(&st, &a)?;
    let tty = process.terminal().unwrap_or(false);
    let eid = random_id();
    if a.detach {
        if tty && a.console_socket.is_none() {
            return Err(
                "cannot allocate a tty for a detached exec without --console-socket".into(),
            );
        }
        let pf = store.dir(&a.id).join(format!("exec-{eid}.json"));
        util::write_atomic(&pf, &serde_json::to_vec(&process).ctx("encode process")?)?;
        let mut args = vec![
            "__exec".to_string(),
            a.id.clone(),
            eid.clone(),
            "--process".into(),
            pf.display().to_string(),
        ];
        if let (Some(s), true) = (&a.console_socket, tty) {
            let s = std::fs::canonicalize(s).ctx(format!("--console-socket {}", s.display()))?;
            args.push("--console-socket".into());
            args.push(s.display().to_string());
        }
        args.extend(["--ready-fd".into(), "3".into()]);
        let r = spawn_helper(g, &args, "exec monitor", Duration::from_secs(60), tty);
        let _ = std::fs::remove_file(&pf);
        let pid = r.map_err(|e| format!("exec in container {}: {e}", a.id))?;
        if let Some(p) = &a.pid_file {
            monitor::write_pid_file(p, pid)?;
        }
        return Ok(0);
    }
    let term = match (tty, &a.console_socket) {
        (false, _) => Terminal::No,
        (true, Some(s)) => Terminal::Console(
            std::fs::canonicalize(s).ctx(format!("--console-socket {}", s.display()))?,
        ),
        (true, None) => Terminal::Inherit,
    };
    let target = target_of(store, &st, Some(eid));
    Ok(monitor::exec_session(
        target,
        process,
        term,
        None,
        a.pid_file.as_deref(),
    ))
}

fn ps(store: &Store, id: &str, format: &str, ps_args: &[String]) -> Result<()> {
    check_id(id)?;
    let st = store.load(id)?;
    let status = live_status(store, &st);
    let pids: Vec<i32> = if status == Status::Stopped {
        vec![]
    } else {
        vec![st.monitor_pid]
    };
    match format {
        "json" => {
            println!("{}", serde_json::to_string(&pids).unwrap_or_default());
            Ok(())
        }
        "table" => {
            let args: Vec<String> = if ps_args.is_empty() {
                vec!["-ef".into()]
            } else {
                ps_args.to_vec()
            };
            let out = Command::new("ps")
                .args(&args)
                .stderr(Stdio::inherit())
                .output()
                .ctx("ps")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or("");
            let col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .ok_or("ps: no PID column in its output")?;
            println!("{header}");
            for l in lines {
                let pid = l.split_whitespace().nth(col).and_then(|p| p.parse().ok());
                if pid.is_some_and(|p: i32| pids.contains(&p)) {
                    println!("{l}");
                }
            }
            Ok(())
        }
        f => Err(format!("--format {f}: must be table or json")),
    }
}

fn list(store: &Store, format: &str, quiet: bool) -> Result<()> {
    let states: Vec<Value> = store
        .ids()
        .iter()
        .filter_map(|id| store.load(id).ok())
        .map(|st| state_value(store, &st))
        .collect();
    if quiet {
        for s in &states {
            println!("{}", s["id"].as_str().unwrap_or(""));
        }
        return Ok(());
    }
    match format {
        "json" => {
            println!("{}", serde_json::to_string(&states).unwrap_or_default());
            Ok(())
        }
        "table" => {
            println!(
                "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for s in &states {
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {:<32} {}",
                    s["id"].as_str().unwrap_or(""),
                    s["pid"],
                    s["status"].as_str().unwrap_or(""),
                    s["bundle"].as_str().unwrap_or(""),
                    s["created"].as_str().unwrap_or(""),
                    if s["owner"].as_str().unwrap_or("").is_empty() {
                        "root"
                    } else {
                        s["owner"].as_str().unwrap_or("")
                    }
                );
            }
            Ok(())
        }
        f => Err(format!("--format {f}: must be table or json")),
    }
}

fn pause(store: &Store, id: &str, pause: bool) -> Result<()> {
    check_id(id)?;
    let _lock = store.lock(id)?;
    let st = store.load(id)?;
    let status = live_status(store, &st);
    let t = target_of(store, &st, None);
    if pause {
        if status != Status::Running {
            return Err("container not running".into());
        }
        t.connect()
            .and_then(|mut c| c.pause(&st.guest_id).map_err(|e| e.to_string()))
            .map_err(|e| format!("pause container {id}: {e}"))?;
        store.set_status(id, Status::Paused, None)
    } else {
        if status != Status::Paused {
            return Err("container not paused".into());
        }
        t.connect()
            .and_then(|mut c| c.resume(&st.guest_id).map_err(|e| e.to_string()))
            .map_err(|e| format!("resume container {id}: {e}"))?;
        store.set_status(id, Status::Running, None)
    }
}

/// The resources `update` sets: `-r FILE` (or stdin), then the flags.
fn update_resources(a: &crate::UpdateArgs) -> Result<oci::LinuxResources> {
    let mut v: Value = match &a.resources {
        Some(p) => {
            let mut data = Vec::new();
            if p.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_end(&mut data)
                    .ctx("read resources from stdin")?;
            } else {
                data = std::fs::read(p).ctx(format!("--resources {}", p.display()))?;
            }
            serde_json::from_slice(&data)
                .ctx(format!("--resources {}: invalid JSON", p.display()))?
        }
        None => json!({}),
    };
    if !v.is_object() {
        return Err("--resources: expected a JSON object (linux.resources)".into());
    }
    let mut set = |path: &[&str], val: Value| {
        let mut cur = &mut v;
        for k in &path[..path.len() - 1] {
            if !cur.get(*k).is_some_and(Value::is_object) {
                cur[*k] = json!({});
            }
            cur = &mut cur[*k];
        }
        cur[path[path.len() - 1]] = val;
    };
    if let Some(w) = a.blkio_weight {
        set(&["blockIO", "weight"], json!(w));
    }
    if let Some(x) = a.cpu_period {
        set(&["cpu", "period"], json!(x));
    }
    if let Some(x) = a.cpu_quota {
        set(&["cpu", "quota"], json!(x));
    }
    if let Some(x) = a.cpu_share {
        set(&["cpu", "shares"], json!(x));
    }
    if let Some(x) = &a.cpuset_cpus {
        set(&["cpu", "cpus"], json!(x));
    }
    if let Some(x) = &a.cpuset_mems {
        set(&["cpu", "mems"], json!(x));
    }
    if let Some(x) = &a.memory {
        set(
            &["memory", "limit"],
            json!(util::parse_size(x).map_err(|e| format!("--memory: {e}"))?),
        );
    }
    if let Some(x) = &a.memory_reservation {
        set(
            &["memory", "reservation"],
            json!(util::parse_size(x).map_err(|e| format!("--memory-reservation: {e}"))?),
        );
    }
    if let Some(x) = &a.memory_swap {
        set(
            &["memory", "swap"],
            json!(util::parse_size(x).map_err(|e| format!("--memory-swap: {e}"))?),
        );
    }
    if let Some(x) = a.pids_limit {
        set(&["pids", "limit"], json!(x));
    }
    husk_protocol::decode_tracked(v, "resources")
}

fn update(store: &Store, a: crate::UpdateArgs) -> Result<()> {
    check_id(&a.id)?;
    let res = update_resources(&a)?;
    let _lock = store.lock(&a.id)?;
    let st = store.load(&a.id)?;
    if live_status(store, &st) == Status::Stopped {
        return Err("container not running".into());
    }
    if let Some(limit) = res.memory().as_ref().and_then(|m| m.limit()) {
        if let Ok(b) = bundle::load(&st.bundle) {
            if limit > 0 && (limit as u64 >> 20) > b.memory_mib {
                crate::warn!(
                    "update {}: memory limit {} MiB is above the microVM's {} MiB: the guest cannot give it more",
                    a.id,
                    limit >> 20,
                    b.memory_mib
                );
            }
        }
    }
    target_of(store, &st, None)
        .connect()
        .and_then(|mut c| {
            c.update_resources(&st.guest_id, res)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| format!("update container {}: {e}", a.id))
}

fn stats_value(id: &str, s: &husk_protocol::ContainerStats) -> Value {
    json!({"type": "stats", "id": id, "data": serde_json::to_value(s).unwrap_or(Value::Null)})
}

fn parse_interval(s: &str) -> Result<Duration> {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("--interval {s}: not a duration (e.g. 5s)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => {
            return Err(format!(
                "--interval {s}: unknown unit {unit:?} (ms, s or m)"
            ))
        }
    };
    if !(secs > 0.0 && secs < 86400.0) {
        return Err(format!("--interval {s}: must be between 0 and 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn events(store: &Store, id: &str, stats: bool, interval: &str) -> Result<()> {
    check_id(id)?;
    let every = parse_interval(interval)?;
    let st = store.load(id)?;
    if live_status(store, &st) == Status::Stopped {
        return Err("container not running".into());
    }
    let t = target_of(store, &st, None);
    let get = || -> Result<Value> {
        let s = t
            .connect()
            .and_then(|mut c| c.stats(&st.guest_id).map_err(|e| e.to_string()))
            .map_err(|e| format!("stats of container {id}: {e}"))?;
        Ok(stats_value(id, &s))
    };
    if stats {
        println!("{}", get()?);
        return Ok(());
    }
    // OOM events as the agent pushes them; stats every interval.
    let ev = t.connect()?.events().map_err(|e| format!("events: {e}"))?;
    let gid = st.guest_id.clone();
    let idc = id.to_string();
    let _ = std::thread::Builder::new()
        .name("events".into())
        .spawn(move || {
            let mut ev = ev;
            while let Ok(e) = ev.next_event() {
                if let husk_protocol::Event::Oom { id: g, .. } = e {
                    if g == gid {
                        println!("{}", json!({"type": "oom", "id": idc}));
                        let _ = std::io::stdout().flush();
                    }
                }
            }
        });
    loop {
        let st = store.load(id)?;
        if live_status(store, &st) == Status::Stopped {
            return Ok(());
        }
        match get() {
            Ok(v) => {
                println!("{v}");
                let _ = std::io::stdout().flush();
            }
            Err(e) => crate::debug!("{e}"),
        }
        std::thread::sleep(every);
    }
}

fn features() -> Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "relatime",
                          "strictatime", "nostrictatime", "private", "rprivate", "slave", "rslave"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "cgroup": {"v1": false, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {"enabled": false},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {
            "io.husk.vmm": "husk-vmm (KVM microVM, one per container)",
            "io.husk.vcpus": "vCPUs of the microVM (default: from linux.resources.cpu)",
            "io.husk.memory_mib": "guest memory in MiB (default: memory limit + 64, at least 128)",
        },
    })
}

fn spec(bundle: Option<&Path>) -> Result<()> {
    let dir = match bundle {
        Some(b) => b.to_path_buf(),
        None => std::env::current_dir().ctx("current directory")?,
    };
    let p = dir.join("config.json");
    if p.exists() {
        return Err(format!("{}: exists; remove it first", p.display()));
    }
    let s = oci::Spec::default();
    let data = serde_json::to_vec_pretty(&s).ctx("encode spec")?;
    std::fs::write(&p, data).ctx(p.display())
}

fn bench(args: &[String]) -> Result<i32> {
    let next = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("husk-bench")))
        .filter(|p| p.is_file());
    let prog = next.unwrap_or_else(|| PathBuf::from("husk-bench"));
    let e = Command::new(&prog).args(args).exec();
    Err(format!(
        "run {}: {e} (install husk-bench next to husk or on PATH)",
        prog.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("5h").is_err());
        assert!(parse_interval("x").is_err());
    }

    #[test]
    fn ready_lines() {
        let (r, w) = pipe().unwrap();
        std::fs::File::from(w).write_all(b"ok\n").unwrap();
        assert_eq!(read_ready(r, Duration::from_secs(5)), Ok(()));
        let (r, w) = pipe().unwrap();
        std::fs::File::from(w)
            .write_all(b"error: bad thing\n")
            .unwrap();
        assert_eq!(
            read_ready(r, Duration::from_secs(5)),
            Err("bad thing".into())
        );
        let (r, w) = pipe().unwrap();
        drop(w);
        assert!(read_ready(r, Duration::from_secs(5))
            .unwrap_err()
            .contains("without an answer"));
        let (r, _w) = pipe().unwrap();
        let t = Instant::now();
        assert!(read_ready(r, Duration::from_millis(200))
            .unwrap_err()
            .contains("no answer"));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn update_flags_become_resources() {
        use clap::Parser;
        let cli = crate::Cli::parse_from([
            "husk",
            "update",
            "--memory",
            "64m",
            "--cpu-quota",
            "50000",
            "--pids-limit",
            "10",
            "c1",
        ]);
        let Some(Cmd::Update(a)) = cli.cmd else {
            panic!("not update")
        };
        let r = update_resources(&a).unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50000));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 10);
    }

    #[test]
    fn features_name_hooks() {
        let f = features();
        assert_eq!(f["ociVersionMax"], crate::OCI_VERSION);
        assert!(f["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "poststop"));
    }

    #[test]
    fn default_spec_is_loadable() {
        let d = std::env::temp_dir().join(format!("husk-spec-{}", std::process::id()));
        std::fs::create_dir_all(d.join("rootfs")).unwrap();
        spec(Some(&d)).unwrap();
        assert!(spec(Some(&d)).unwrap_err().contains("exists"));
        let b = bundle::load(&d).unwrap();
        assert_eq!(b.rootfs, std::fs::canonicalize(d.join("rootfs")).unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
