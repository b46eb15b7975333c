//! The monitor: the host process that stands for a container. The daemon
//! waits on its pid (written to `--pid-file`), so it lives exactly as long
//! as the container, exits with the container's status, relays the stdio
//! the daemon gave to `create` and forwards the signals it receives.
//!
//! It owns the sandbox: in a private mount namespace it bind-mounts the
//! bundle's rootfs and the spec's bind sources into the share directory,
//! starts virtiofsd on it and husk-vmm (both die with it: PDEATHSIG), waits
//! for the agent, runs the create hooks and asks the agent to create the
//! container. When the container exits (or the VM or virtiofsd dies) it
//! records the exit status, stops the helpers and exits.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use husk_protocol::client::{Client, ReadyListener};
use husk_protocol::{ExitInfo, RootfsSource, AGENT_PORT};
use husk_vm_config::{ConfigInput as VmConfigInput, FsConfig, SerialConfig};

use crate::bundle::{self, Bundle};
use crate::error::{Error, IoContext, Result};
use crate::host_config::HostConfig;
use crate::log;
use crate::session::SessionError;
use crate::session::{self, Target, Terminal};
use crate::spawn::report;
use crate::state::{State, Status, Store};
use crate::util;
use crate::{hooks, sys};

/// Status a container gets when its VM dies under it.
pub const CRASH_STATUS: i32 = 255;

/// Helper processes the monitor started, for `delete` to find if the
/// monitor itself was killed (they die with it, but delete double-checks).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Helpers {
    pub pids: Vec<(i32, u64)>,
}

pub struct Opts {
    pub term: Terminal,
    /// Write end of the pipe `create` waits on: "ok\n" or "error: ...\n".
    pub ready: Option<OwnedFd>,
    /// Start the container right after creating it (`husk run`).
    pub start: bool,
}

enum Ev {
    Exited(Result<ExitInfo, SessionError>),
    HelperDied(&'static str, ExitStatus),
}

struct Sandbox {
    dir: PathBuf,
    vsock: PathBuf,
    helpers: Vec<(&'static str, i32)>,
    tx: mpsc::Sender<Ev>,
}

/// Short socket directory for a container: Unix socket paths are limited
/// to 107 bytes and daemons use long roots and 64-character ids.
pub fn sock_dir(root: &Path, id: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    root.hash(&mut h);
    id.hash(&mut h);
    PathBuf::from(format!("/run/husk-sock/{:016x}", h.finish()))
}

fn exit_path(dir: &Path) -> PathBuf {
    dir.join("exit")
}

/// The exit status the monitor recorded, if it did.
pub fn recorded_exit(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(exit_path(dir))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn state_json(st: &State, status: Status, pid: i32) -> String {
    serde_json::json!({
        "ociVersion": crate::OCI_VERSION,
        "id": st.id,
        "status": status.as_str(),
        "pid": pid,
        "bundle": st.bundle,
        "annotations": st.annotations,
    })
    .to_string()
}

impl Sandbox {
    fn spawn(&mut self, name: &'static str, cmd: &mut Command, log: &Path) -> Result<(i32, Child)> {
        let out = std::fs::File::create(log).at(log)?;
        let err = out.try_clone().at(log)?;
        // SAFETY: child_setup only makes async-signal-safe calls.
        let child = unsafe { cmd.pre_exec(sys::child_setup) }
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::StartHelper {
                name,
                program: PathBuf::from(cmd.get_program()),
                source,
            })?;
        let pid = util::pid(child.id());
        self.helpers.push((name, pid));
        let h = Helpers {
            pids: self
                .helpers
                .iter()
                .filter_map(|(_, p)| util::proc_start_time(*p).map(|s| (*p, s)))
                .collect(),
        };
        let _ = util::write_atomic(
            &self.dir.join("helpers.json"),
            &serde_json::to_vec(&h).unwrap_or_default(),
        );
        Ok((pid, child))
    }

    /// Watches a helper in a thread; its death is an event.
    fn watch(&self, name: &'static str, mut child: Child) {
        let tx = self.tx.clone();
        let _ = std::thread::Builder::new()
            .name(format!("wait-{name}"))
            .spawn(move || {
                if let Ok(s) = child.wait() {
                    let _ = tx.send(Ev::HelperDied(name, s));
                }
            });
    }

    /// Kills the helpers (virtiofsd last: the VM may still use it).
    fn stop(&self) {
        for (_, pid) in self.helpers.iter().rev() {
            // SAFETY: kill(2) on our own unreaped children (their waiter
            // threads hold them until they exit).
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
    }
}

/// Runs the monitor to the end; returns the container's exit status, or
/// the error that kept it from being created (or started, with `start`),
/// already reported on the ready pipe.
pub fn run(store: &Store, id: &str, mut opts: Opts) -> Result<i32> {
    // Every thread started from here on inherits the blocked set, so the
    // signal thread alone receives them.
    sys::block_signals(&sys::relay_sigset());
    let (tx, rx) = mpsc::channel();
    let dir = store.dir(id);
    let mut sb = Sandbox {
        dir: dir.clone(),
        vsock: PathBuf::new(),
        helpers: vec![],
        tx,
    };
    let t0 = Instant::now();
    let setup = setup(store, id, &mut sb, &opts, t0);
    let (st, target, attached, agent) = match setup {
        Ok(x) => x,
        Err(e) => {
            log::log("error", &e.to_string());
            sb.stop();
            let _ = std::fs::remove_dir_all(sock_dir(&store.root, id));
            report(&mut opts.ready, &format!("error: {e}\n"));
            return Err(e);
        }
    };
    let _ = store.set_status(id, Status::Created, None);
    if opts.start {
        // `run`: the connection that created the container starts it (one
        // vsock connection fewer on the way to the first byte).
        let mut agent = agent;
        let r = agent.start_container(&target.guest_id);
        if let Err(e) = r {
            let e = Error::Agent {
                op: "start",
                id: id.to_string(),
                source: e.into(),
            };
            log::log("error", &e.to_string());
            sb.stop();
            let _ = std::fs::remove_dir_all(sock_dir(&store.root, id));
            report(&mut opts.ready, &format!("error: {e}\n"));
            return Err(e);
        }
        let _ = store.set_status(id, Status::Running, None);
        crate::debug!("container {id} started at {} ms", t0.elapsed().as_millis());
        let json = state_json(&st, Status::Running, util::pid(std::process::id()));
        if let Err(e) = hooks::run("poststart", &st.poststart, &json) {
            crate::warn!("{e}");
        }
    } else {
        drop(agent); // `husk start` comes later, on a connection of its own
    }
    report(&mut opts.ready, "ok\n");
    let _ = session::forward_signals(target.clone(), attached.tty());

    let t2 = target.clone();
    let tx = sb.tx.clone();
    let _ = std::thread::Builder::new()
        .name("wait".into())
        .spawn(move || {
            let _ = tx.send(Ev::Exited(session::wait(&t2)));
        });

    let status = match rx.recv() {
        Ok(Ev::Exited(Ok(info))) => {
            crate::debug!("container {id} exited: {info:?}");
            attached.finish(Duration::from_secs(10));
            session::status_of(&info)
        }
        Ok(Ev::Exited(Err(e))) => {
            // The agent connection broke: the VM is going down. Give the
            // helper's exit a moment to explain it.
            let why = match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Ev::HelperDied(n, s)) => format!("{n} exited ({s})"),
                _ => e.to_string(),
            };
            crash(&dir, id, &why)
        }
        Ok(Ev::HelperDied(n, s)) => crash(&dir, id, &format!("{n} exited ({s})")),
        Err(_) => crash(&dir, id, "monitor lost its event channel"),
    };
    let _ = util::write_atomic(&exit_path(&dir), format!("{status}\n").as_bytes());
    let _ = store.set_status(id, Status::Stopped, Some(status));
    sb.stop();
    // The helpers' waiter threads reap them; don't wait long for that.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sb
        .helpers
        .iter()
        .any(|(_, p)| util::proc_start_time(*p).is_some())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = std::fs::remove_dir_all(sock_dir(&store.root, id));
    Ok(status)
}

fn crash(dir: &Path, id: &str, why: &str) -> i32 {
    let tail = session::tail(&dir.join("console.log"), 5);
    log::log(
        "error",
        &format!("container {id}: the microVM stopped unexpectedly: {why}; console: {tail}"),
    );
    CRASH_STATUS
}

fn setup(
    store: &Store,
    id: &str,
    sb: &mut Sandbox,
    opts: &Opts,
    t0: Instant,
) -> Result<(State, Target, session::Attached, Client)> {
    // Monitor-side phases (`--debug`), in ms since the monitor began, to
    // put beside husk-vmm's own (HUSK_VMM_TIMING=1 in its vmm.log).
    let phase =
        |what: &str| crate::debug!("container {id}: {what} at {} ms", t0.elapsed().as_millis());
    let mut st = store.load(id)?;
    st.monitor_pid = util::pid(std::process::id());
    st.monitor_start = util::proc_start_time(st.monitor_pid).unwrap_or(0);
    store.save(&st)?;
    let b: Bundle = bundle::load(&st.bundle)?;
    let cfg = HostConfig::load()?;
    cfg.check()?;

    sys::unshare_mounts()?;
    if let Some(ns) = &b.netns {
        sys::enter_netns(ns.as_deref())?;
    }
    let share = sb.dir.join("share");
    std::fs::create_dir_all(&share).at(&share)?;
    for s in &b.shares {
        let at = share.join(&s.name);
        if s.is_dir {
            std::fs::create_dir_all(&at).at(&at)?;
        } else {
            std::fs::File::create(&at).at(&at)?;
        }
        sys::bind(&s.source, &at)?;
    }

    let sdir = sock_dir(&store.root, id);
    let _ = std::fs::remove_dir_all(&sdir);
    std::fs::create_dir_all(&sdir).at(&sdir)?;
    let fs_sock = sdir.join("fs.sock");
    sb.vsock = sdir.join("vsock");

    let (_, vfsd) = sb.spawn(
        "virtiofsd",
        Command::new(&cfg.virtiofsd)
            .arg(format!("--socket-path={}", fs_sock.display()))
            .arg("-o")
            .arg(format!("source={}", share.display()))
            .args(["-o", "cache=auto", "-o", "xattr"]),
        &sb.dir.join("virtiofsd.log"),
    )?;
    sb.watch("virtiofsd", vfsd);
    phase("virtiofsd spawned");

    // Before the VMM starts, so the agent's ready signal cannot be missed.
    let ready = ReadyListener::bind(&sb.vsock).map_err(Error::ReadySocket)?;
    let vm_json = sb.dir.join("vm.json");
    vm_config(&cfg, &b, &sb.vsock, &sb.dir, &fs_sock).write_json_file(&vm_json)?;
    let mut vmm_cmd = Command::new(&cfg.vmm);
    vmm_cmd.arg("run").arg("--config").arg(&vm_json);
    if log::debug_enabled() {
        // husk-vmm's boot phases in vmm.log.
        vmm_cmd.env("HUSK_VMM_TIMING", "1");
    }
    let (_, vmm) = sb.spawn("husk-vmm", &mut vmm_cmd, &sb.dir.join("vmm.log"))?;
    sb.watch("husk-vmm", vmm);
    phase("husk-vmm spawned");

    let mut agent = boot_wait(sb, &cfg, &b, &ready)?;
    drop(ready);

    // createRuntime and prestart hooks see the monitor as the container's
    // process: its network namespace is the container's on the host.
    let hk = b.spec.hooks().clone().unwrap_or_default();
    let json = state_json(&st, Status::Creating, st.monitor_pid);
    hooks::run(
        "prestart",
        hk.prestart().as_deref().unwrap_or_default(),
        &json,
    )?;
    hooks::run(
        "createRuntime",
        hk.create_runtime().as_deref().unwrap_or_default(),
        &json,
    )?;
    let ifs: Vec<String> = sys::net_interfaces()
        .into_iter()
        .filter(|i| i != "lo")
        .collect();
    if b.netns.is_some() && !ifs.is_empty() {
        let msg = format!(
            "networking is not supported by husk yet: the container has loopback only \
             ({} in its network namespace on the host {} not connected to the microVM; \
             use --network none to say so)",
            ifs.join(", "),
            if ifs.len() == 1 { "is" } else { "are" }
        );
        crate::warn!("container {id}: {msg}");
        // The user sees it too: one line on the container's stderr, before
        // any of its own output (a terminal's output goes over the pty).
        if matches!(opts.term, Terminal::No) {
            let _ = std::io::stderr().write_all(format!("husk: warning: {msg}\n").as_bytes());
        }
    }

    let target = Target {
        vsock: sb.vsock.clone(),
        guest_id: st.guest_id.clone(),
        exec_id: None,
    };
    let (_, warnings) = agent
        .create_container(
            &st.guest_id,
            b.guest_spec.clone(),
            RootfsSource::VirtioFs {
                tag: bundle::SHARE_TAG.into(),
                subdir: Some(bundle::ROOTFS_DIR.into()),
            },
            opts.term.stdio(),
        )
        .map_err(|source| Error::CreateInVm {
            id: id.to_string(),
            source,
        })?;
    phase("container created in the microVM");
    for w in warnings {
        crate::warn!("container {id}: {w}");
    }
    let attached = session::attach(&target, &opts.term)?;
    attached.resize(&target);
    st.poststart = hk.poststart().clone().unwrap_or_default();
    st.poststop = hk.poststop().clone().unwrap_or_default();
    st.status = Status::Created;
    store.save(&st)?;
    Ok((st, target, attached, agent))
}

/// The microVM of a container: sized by its bundle, its share served by
/// virtiofsd at `fs_sock`, the agent reached at `vsock`, the console in
/// `dir`/console.log.
fn vm_config(
    cfg: &HostConfig,
    b: &Bundle,
    vsock: &Path,
    dir: &Path,
    fs_sock: &Path,
) -> VmConfigInput {
    // husk.share: the agent mounts the share as soon as it listens, while
    // the ready signal, the hooks and the create request are on their way.
    let mut append = format!("husk.share={}", bundle::SHARE_TAG);
    if cfg.agent_debug {
        // The agent's debug lines (each request, the phases of a create
        // and a start) on the console: console.log.
        append += " husk.debug";
    }
    VmConfigInput {
        kernel: Some(cfg.kernel.clone()),
        initrd: Some(cfg.initramfs.clone()),
        append: Some(append),
        vcpus: Some(b.vcpus),
        memory: Some(b.memory_mib),
        fs: Some(vec![FsConfig::new(bundle::SHARE_TAG, fs_sock)]),
        vsock_uds: Some(vsock.to_path_buf()),
        serial: Some(SerialConfig::File(dir.join("console.log")).to_string()),
        ..Default::default()
    }
}

/// How often the agent is tried without its ready signal (an agent that
/// does not send one still gets found).
const BOOT_FALLBACK_POLL: Duration = Duration::from_millis(250);

/// Waits for the agent's ready signal, then for its answer; fails at once
/// if a helper dies. Connecting only once the agent listens spares the
/// booting guest a REQUEST and a RST per early attempt.
fn boot_wait(sb: &Sandbox, cfg: &HostConfig, b: &Bundle, ready: &ReadyListener) -> Result<Client> {
    let start = Instant::now();
    let deadline = start + cfg.boot_timeout;
    let mut last = "no ready signal yet".to_string();
    let mut signalled = false;
    let mut next_try = start + BOOT_FALLBACK_POLL;
    let timed_out = |last: &str| Error::BootTimeout {
        secs: cfg.boot_timeout.as_secs(),
        last: last.to_string(),
        console_tail: session::tail(&sb.dir.join("console.log"), 3),
    };
    let dead_now = || -> Vec<(&str, i32)> {
        sb.helpers
            .iter()
            .filter(|(_, p)| util::proc_start_time(*p).is_none())
            .map(|(n, p)| (*n, *p))
            .collect()
    };
    loop {
        let mut dead = dead_now();
        // husk-vmm first: when it goes, virtiofsd follows (its frontend hung
        // up), possibly before husk-vmm is gone itself, and husk-vmm's log
        // says why; when only virtiofsd went, its own log.
        if !dead.is_empty() && dead.len() < sb.helpers.len() {
            std::thread::sleep(Duration::from_millis(300));
            dead = dead_now();
        }
        if let Some(&(n, p)) = dead.iter().find(|(n, _)| *n == "husk-vmm").or(dead.first()) {
            let log = sb.dir.join(if n == "virtiofsd" {
                "virtiofsd.log"
            } else {
                "vmm.log"
            });
            let also = dead
                .iter()
                .filter(|(m, _)| *m != n)
                .map(|(m, q)| format!(" ({m}, pid {q}, exited too)"))
                .collect::<String>();
            return Err(Error::HelperExited {
                name: n,
                pid: p,
                also,
                log_tail: session::tail(&log, 3),
            });
        }
        if !signalled {
            // Short slices: the helpers are checked between them.
            match ready.wait(Duration::from_millis(50)) {
                Ok(s) => signalled = s,
                Err(e) => {
                    last = format!("waiting for the ready signal: {e}");
                    signalled = true; // poll instead
                }
            }
        }
        let now = Instant::now();
        if !signalled && now < next_try {
            if now >= deadline {
                return Err(timed_out(&last));
            }
            continue;
        }
        next_try = now + BOOT_FALLBACK_POLL;
        match Client::connect_uds(&sb.vsock, AGENT_PORT, Duration::from_secs(2)) {
            Ok(mut c) => match c.ping() {
                Ok(info) => {
                    crate::debug!(
                        "agent {} ready after {} ms ({} vCPUs, {} MiB), reached {}",
                        info.agent_version,
                        start.elapsed().as_millis(),
                        b.vcpus,
                        b.memory_mib,
                        if signalled {
                            "after its ready signal"
                        } else {
                            "by polling, without a ready signal"
                        }
                    );
                    c.set_timeout(session::CALL_TIMEOUT)
                        .map_err(SessionError::from)?;
                    return Ok(c);
                }
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(timed_out(&last));
        }
        if signalled {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// An exec'd process: attach, forward signals, wait; returns its status.
/// With `ready`, reports "ok" once the process runs (for `exec --detach`).
pub fn exec_session(
    target: Target,
    process: husk_protocol::oci::Process,
    term: Terminal,
    mut ready: Option<OwnedFd>,
    pid_file: Option<&Path>,
) -> i32 {
    sys::block_signals(&sys::relay_sigset());
    let eid = target.exec_id.clone().unwrap_or_default();
    let r = target.connect().map_err(Error::from).and_then(|mut c| {
        c.exec(&target.guest_id, &eid, process, term.stdio())
            .map_err(|e| Error::Agent {
                op: "exec in",
                id: target.guest_id.clone(),
                source: e.into(),
            })
    });
    let attached = match r.and_then(|_| Ok(session::attach(&target, &term)?)) {
        Ok(a) => a,
        Err(e) => {
            report(&mut ready, &format!("error: {e}\n"));
            if ready.is_none() {
                eprintln!("husk: {e}");
            }
            log::log("error", &e.to_string());
            return 1;
        }
    };
    attached.resize(&target);
    if let Some(p) = pid_file {
        if let Err(e) = write_pid_file(p, util::pid(std::process::id())) {
            eprintln!("husk: {e}");
        }
    }
    report(&mut ready, "ok\n");
    let _ = session::forward_signals(target.clone(), attached.tty());
    match session::wait(&target) {
        Ok(info) => {
            attached.finish(Duration::from_secs(10));
            session::status_of(&info)
        }
        Err(e) => {
            log::log("error", &format!("exec {eid}: {e}"));
            CRASH_STATUS
        }
    }
}

pub fn write_pid_file(p: &Path, pid: i32) -> Result<()> {
    util::write_atomic(p, pid.to_string().as_bytes()).map_err(Error::PidFile)
}
