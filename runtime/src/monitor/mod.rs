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

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use husk_protocol::client::Client;
use husk_protocol::{ExitInfo, RootfsSource};

use crate::bundle::{self, Bundle};
use crate::error::{Error, Result};
use crate::host_config::HostConfig;
use crate::log;
use crate::session::{self, SessionError, Target, Terminal};
use crate::spawn::{self, report};
use crate::state::{State, Status, Store};
use crate::util;
use crate::{hooks, host_cgroup, sys};

mod helper_log;
#[cfg(test)]
mod helper_tests;
mod mount_points;
mod network;
mod sandbox;
mod virtiofsd;

use sandbox::Sandbox;

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

/// Records the container's exit status for `state` (the monitor does this
/// itself, unless something had to stop it).
pub fn record_exit(dir: &Path, status: i32) -> Result<()> {
    Ok(util::write_atomic(
        &exit_path(dir),
        format!("{status}\n").as_bytes(),
    )?)
}

/// How long the monitor waits for another command's lock to save the
/// container's final status.
const FINAL_STATUS_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Records the container's exit: the exit file, which every command reads
/// first (`container::live_status`), then the saved state under the
/// container's lock, so that the write cannot race a `delete` removing the
/// directory or a `start` saving Running after the process already ended.
/// When another command keeps the lock past a short wait, the exit file
/// alone says Stopped.
pub fn record_final_status(store: &Store, id: &str, status: i32) {
    let _ = record_exit(&store.dir(id), status);
    if let Ok(_lock) = store.lock_within(id, FINAL_STATUS_LOCK_WAIT) {
        let _ = store.set_status(id, Status::Stopped, Some(status));
    }
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

/// Runs the monitor to the end; returns the container's exit status, or
/// the error that kept it from being created (or started, with `start`),
/// already reported on the ready pipe.
pub fn run(store: &Store, id: &str, mut opts: Opts) -> Result<i32> {
    keep_ready_pipe(&opts.ready);
    if let Err(e) = crate::container::check_id(id) {
        report(&mut opts.ready, &format!("error: {e}\n"));
        return Err(e);
    }
    // Every thread started from here on inherits the blocked set, so the
    // signal thread alone receives them.
    sys::relay_sigset().block();
    let (tx, rx) = mpsc::channel();
    let dir = store.dir(id);
    let mut sb = Sandbox {
        dir: dir.clone(),
        vsock: PathBuf::new(),
        helpers: vec![],
        logs: vec![],
        tx,
        net: network::Plan::default(),
        cgroup: None,
    };
    let t0 = Instant::now();
    let setup = setup(store, id, &mut sb, &opts, t0);
    let (st, target, attached, agent) = match setup {
        Ok(x) => x,
        Err(e) => {
            log::log("error", &e.to_string());
            sb.stop();
            leave_cgroup(&mut sb);
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
            leave_cgroup(&mut sb);
            let _ = std::fs::remove_dir_all(sock_dir(&store.root, id));
            report(&mut opts.ready, &format!("error: {e}\n"));
            return Err(e);
        }
        let _ = store.set_status(id, Status::Running, None);
        crate::debug!("container {id} started at {} ms", t0.elapsed().as_millis());
        let json = state_json(&st, Status::Running, util::pid(std::process::id()));
        // A failing poststart hook is a warning; the rest still run.
        hooks::run_all("poststart", &st.poststart, &json);
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
    record_final_status(store, id, status);
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
    leave_cgroup(&mut sb);
    let _ = std::fs::remove_dir_all(sock_dir(&store.root, id));
    Ok(status)
}

/// The monitor's end (its helpers stopped): back to the cgroup it came
/// from, the container's host cgroup removed.
fn leave_cgroup(sb: &mut Sandbox) {
    if let Some(j) = sb.cgroup.take() {
        if let Err(e) = j.leave() {
            crate::warn!("{e}");
        }
    }
}

/// Makes the container's host cgroup (see [`host_cgroup`]) and moves the
/// monitor into it, so that virtiofsd and husk-vmm start in it.
fn join_cgroup(id: &str, b: &Bundle, dir: &Path) -> Result<Option<host_cgroup::Joined>> {
    let root = Path::new(host_cgroup::ROOT);
    let linux = b.spec.linux().as_ref();
    let path = linux.and_then(|l| l.cgroups_path().as_ref());
    let rel = if host_cgroup::unified(root) {
        let path = path.map(|p| p.to_string_lossy());
        host_cgroup::plan::resolve(path.as_deref(), id, &host_cgroup::own_cgroup()?)?
    } else {
        String::new()
    };
    let limits = host_cgroup::plan::limits(
        linux.and_then(|l| l.resources().as_ref()),
        b.vcpus,
        b.memory_mib,
    );
    let j = host_cgroup::join(root, &rel, &limits, dir)?;
    if let Some(j) = &j {
        crate::debug!("container {id}: host cgroup {} {limits:?}", j.dir.display());
    }
    Ok(j)
}

/// The ready pipe is this process's alone: nothing it starts inherits it.
fn keep_ready_pipe(ready: &Option<OwnedFd>) {
    if let Some(fd) = ready {
        if let Err(e) = spawn::close_on_exec(fd) {
            crate::warn!("the ready pipe: close-on-exec: {e}");
        }
    }
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
    sys::enter_netns(b.netns.as_deref())?;
    network::refuse_shared(&b)?;
    let share = sandbox::mount_shares(&sb.dir, &b.shares, &mount_points::wanted(&b))?;

    // createRuntime and prestart hooks see the monitor as the container's
    // process: its network namespace is the container's on the host. They
    // run before the VM is made, since the VM's network is made from what
    // they put there (Docker's network hook adds the interfaces).
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
    sb.net = network::prepare(id, &b)?;
    phase("network prepared");

    // After the hooks (which run where the daemon runs them), before the
    // helpers, which inherit it.
    sb.cgroup = join_cgroup(id, &b, &sb.dir)?;
    let ready = sb.start_helpers(&cfg, &b, &share, &sock_dir(&store.root, id), phase)?;
    // husk-vmm has the taps now: they go away with it.
    sb.net.taps.clear();
    let network = sb.net.network.clone();
    if let Some(addr) = network.as_ref().and_then(|n| n.dns_forward) {
        network::serve_dns(&sb.vsock, addr)?;
    }
    let mut agent = sandbox::boot_wait(sb, &cfg, &b, &ready)?;
    drop(ready);
    let mut guest_spec = b.guest_spec.clone();
    if let Some(n) = network {
        agent
            .configure_network(n)
            .map_err(|source| Error::ConfigureNetwork {
                id: id.to_string(),
                source,
            })?;
        network::join_sandbox_netns(&mut guest_spec);
        phase("network configured in the microVM");
    }

    let target = Target {
        vsock: sb.vsock.clone(),
        guest_id: st.guest_id.clone(),
        exec_id: None,
    };
    let (_, warnings) = agent
        .create_container(
            &st.guest_id,
            guest_spec,
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
        crate::warn!(
            "container {id}: {}",
            husk_protocol::printable(&w, husk_protocol::MAX_ERROR_MESSAGE)
        );
    }
    let attached = session::attach(&target, &opts.term)?;
    attached.resize(&target);
    st.poststart = hk.poststart().clone().unwrap_or_default();
    st.poststop = hk.poststop().clone().unwrap_or_default();
    st.status = Status::Created;
    store.save(&st)?;
    Ok((st, target, attached, agent))
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
    sys::relay_sigset().block();
    keep_ready_pipe(&ready);
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

#[cfg(test)]
mod final_status_tests;
