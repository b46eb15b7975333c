//! The agent's containers behind the protocol: create/start/exec, signals,
//! waits, state, pause, update, remove, stdio attachment and events. One
//! [`Runtime`] value holds them all; the server hands it to every
//! connection.
//!
//! By concern:
//! * [`registry`]: the containers by id, and ids reserved while creating;
//! * [`rootfs`]: the root file systems the agent mounts (block, virtio-fs);
//! * [`process`]: a container process and its exit report;
//! * [`stdio`]: its streams and their relays to connections;
//! * [`events`]: the event fan-out to subscribers;
//! * [`oom`]: OOM-kill watching;
//! * [`stats`]: cgroup counters;
//! * [`stream`]: what a connection becomes after `AttachStdio` or `Events`;
//! * the sandbox's network ([`crate::net`]), configured once, which
//!   container specs may then name as their network namespace;
//! * [`error`]: why a request failed, with its protocol error code.

pub mod error;
pub mod events;
pub mod oom;
pub mod process;
pub mod registry;
pub mod rootfs;
pub mod stats;
pub mod stdio;
pub mod stream;

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use husk_protocol::container::{ContainerState, ContainerStats, ContainerStatus, ExecState};
use husk_protocol::net::Network;
use husk_protocol::{oci, ExitInfo, RootfsSource, StdioConfig, StdioStream};

pub use self::error::RuntimeError;
use self::events::Events;
use self::oom::OomSeen;
use self::process::{ExitReport, Proc};
use self::registry::{Entry, Registry};
use self::rootfs::Shares;
use self::stdio::Stdio;
pub use self::stream::StreamJob;
use crate::container::cgroup::{self, Cgroup};
use crate::container::launch::SpareInit;
use crate::container::{spec, Container, ContainerError, Launch, Process};
use crate::log::{info, Phases};

type Res<T> = Result<T, RuntimeError>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The agent's containers and what serving them needs (created empty:
/// nothing at boot).
#[derive(Default)]
pub struct Runtime {
    containers: Registry<Entry>,
    events: Arc<Events>,
    env: OnceLock<spec::Env>,
    shares: Arc<Shares>,
    spare: Arc<SpareInit>,
    net: crate::net::Sandbox,
}

impl Runtime {
    fn env(&self) -> &spec::Env {
        self.env.get_or_init(|| spec::Env::from_system(None))
    }

    /// Mounts the virtio-fs share `tag` in the background (see
    /// [`Shares::premount`]).
    pub fn premount_share(&self, tag: String) {
        self.shares.premount(tag);
    }

    /// Starts a container-init ahead of the first create (see
    /// [`SpareInit::prepare`]).
    pub fn prepare_spare(&self) {
        self.spare.prepare();
    }

    /// Sets up the sandbox's network (once; see [`crate::net`]).
    pub fn configure_network(&self, network: &Network) -> Res<()> {
        self.net.configure(network).map_err(RuntimeError::Network)
    }

    fn exit_report(&self, id: &str, proc_: &Arc<Proc>, cg: Cgroup, e: &ExitShared) -> ExitReport {
        ExitReport {
            events: Arc::clone(&self.events),
            id: id.to_string(),
            proc_: Arc::clone(proc_),
            cgroup: cg,
            oom_seen: Arc::clone(&e.oom_seen),
            removed: Arc::clone(&e.removed),
        }
    }

    pub fn create(
        &self,
        id: &str,
        spec: &oci::Spec,
        src: &RootfsSource,
        stdio: StdioConfig,
    ) -> Res<(i32, Vec<String>)> {
        spec::check_id(id, "id")?;
        let reservation = self.containers.reserve(id)?;
        let entry = self.create_entry(id, spec, src, stdio)?;
        let pid = entry.c.init.pid;
        let warnings = entry.c.warnings.clone();
        oom::Watch {
            events: Arc::clone(&self.events),
            id: id.to_string(),
            cgroup: entry.c.cgroup.clone(),
            seen: Arc::clone(&entry.oom_seen),
            removed: Arc::clone(&entry.removed),
        }
        .start();
        reservation.insert(entry);
        Ok((pid, warnings))
    }

    fn create_entry(
        &self,
        id: &str,
        spec: &oci::Spec,
        src: &RootfsSource,
        stdio: StdioConfig,
    ) -> Res<Arc<Entry>> {
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let phases = Phases::start(format!("container {id}: create"));
        // Validate first: a bad spec must not even mount the rootfs.
        crate::net::check_spec(spec, self.net.is_configured())?;
        spec::plan_create(id, spec, Path::new("/"), self.env())?;
        let root = rootfs::mount(&self.shares, self.env(), id, src)?;
        phases.mark("rootfs mounted");
        let cleanup = || {
            if let Some(m) = &root.mounted {
                if let Err(e) = crate::container::rootfs_unmount(m) {
                    info!("container {id}: {e}");
                }
            }
        };
        let (fds, st) = Stdio::pipes(stdio, terminal).map_err(|e| {
            cleanup();
            RuntimeError::Pipes(e)
        })?;
        let proc_ = Arc::new(Proc::new(None, st));
        let shared = ExitShared::default();
        // The hook needs the cgroup, which exists only after create: give it
        // the planned path (validated by plan_create above).
        let cg = planned_cgroup(spec, id)?;
        let how = Launch {
            stdio: fds,
            hook: Some(self.exit_report(id, &proc_, cg, &shared).hook()),
            phases: &phases,
            spare: Some(&self.spare),
        };
        let mut c =
            Container::create(id, spec, root.path.clone(), self.env(), how).map_err(|e| {
                proc_.abandoned.store(true, Ordering::SeqCst);
                cleanup();
                RuntimeError::Create(e)
            })?;
        c.rootfs_mount = root.mounted;
        proc_.pid.store(c.init.pid, Ordering::SeqCst);
        if let Some(m) = lock(&c.init.pty_master).take() {
            proc_.stdio.set_pty(File::from(m));
        }
        for w in &c.warnings {
            info!("container {id}: {w}");
        }
        Ok(Arc::new(Entry {
            c,
            init: proc_,
            execs: Mutex::new(HashMap::new()),
            paused: AtomicBool::new(false),
            removed: shared.removed,
            oom_seen: shared.oom_seen,
        }))
    }

    pub fn start(&self, id: &str) -> Res<()> {
        let e = self.containers.get(id)?;
        let phases = Phases::start(format!("container {id}: start"));
        let r = e.c.init.start();
        phases.mark("init exec'd the process");
        r.map_err(|e| match e {
            ContainerError::AlreadyStarted => RuntimeError::StartedAlready { id: id.into() },
            e => RuntimeError::Start(e),
        })
    }

    pub fn exec(
        &self,
        id: &str,
        exec_id: &str,
        p: &oci::Process,
        stdio: StdioConfig,
    ) -> Res<(i32, Vec<String>)> {
        spec::check_id(exec_id, "exec_id")?;
        let e = self.containers.get(id)?;
        if !e.running() {
            return Err(RuntimeError::NotRunning { id: id.into() });
        }
        if e.paused() {
            return Err(RuntimeError::Paused { id: id.into() });
        }
        {
            let mut x = lock(&e.execs);
            if x.contains_key(exec_id) {
                return Err(RuntimeError::ExecExists {
                    exec_id: exec_id.into(),
                });
            }
            // Reserve the id.
            let placeholder = Proc::new(Some(exec_id.into()), Stdio::default());
            x.insert(exec_id.to_string(), Arc::new(placeholder));
        }
        let res = self.exec_proc(&e, exec_id, p, stdio);
        let mut x = lock(&e.execs);
        match res {
            Ok((proc_, warnings)) => {
                let pid = proc_.pid.load(Ordering::SeqCst);
                x.insert(exec_id.to_string(), proc_);
                Ok((pid, warnings))
            }
            Err(er) => {
                x.remove(exec_id);
                Err(er)
            }
        }
    }

    fn exec_proc(
        &self,
        e: &Entry,
        exec_id: &str,
        p: &oci::Process,
        stdio: StdioConfig,
    ) -> Res<(Arc<Proc>, Vec<String>)> {
        let mut warnings = Vec::new();
        let mut pc = spec::plan_process(p, "process", &mut warnings)?;
        if pc.terminal && pc.console_size.is_none() {
            pc.console_size = Some((24, 80));
        }
        let cfg = spec::plan_exec(&e.c.init_cfg, e.c.init.pid, pc);
        let (fds, st) = Stdio::pipes(stdio, cfg.process.terminal).map_err(RuntimeError::Pipes)?;
        let proc_ = Arc::new(Proc::new(Some(exec_id.into()), st));
        let shared = ExitShared {
            oom_seen: Arc::clone(&e.oom_seen),
            removed: Arc::clone(&e.removed),
        };
        let phases = Phases::start(format!("container {}: exec {exec_id}", e.c.id));
        let how = Launch {
            stdio: fds,
            hook: Some(
                self.exit_report(&e.c.id, &proc_, e.c.cgroup.clone(), &shared)
                    .hook(),
            ),
            phases: &phases,
            spare: Some(&self.spare),
        };
        let pr = Process::spawn(&cfg, &e.c.cgroup, None, how).map_err(|m| {
            proc_.abandoned.store(true, Ordering::SeqCst);
            RuntimeError::Start(m)
        })?;
        proc_.pid.store(pr.pid, Ordering::SeqCst);
        if let Some(m) = lock(&pr.pty_master).take() {
            proc_.stdio.set_pty(File::from(m));
        }
        pr.start().map_err(RuntimeError::Start)?;
        *lock(&proc_.exec) = Some(Arc::new(pr));
        Ok((proc_, warnings))
    }

    pub fn signal(&self, id: &str, exec_id: Option<&str>, sig: i32, all: bool) -> Res<()> {
        if !(1..=64).contains(&sig) {
            return Err(RuntimeError::BadSignal(sig));
        }
        let e = self.containers.get(id)?;
        if all {
            for pid in e.c.cgroup.pids() {
                // SAFETY: kill(2) with integer arguments.
                unsafe { libc::kill(pid, sig) };
            }
            return Ok(());
        }
        let p = e.proc_of(exec_id)?;
        let res = match exec_id {
            None => e.c.init.signal(sig),
            Some(_) => match lock(&p.exec).as_ref() {
                Some(pr) => pr.signal(sig),
                None => return Err(RuntimeError::ExecNotRunning),
            },
        };
        res.map_err(RuntimeError::Signal)
    }

    pub fn wait(&self, id: &str, exec_id: Option<&str>) -> Res<ExitInfo> {
        let p = self.containers.get(id)?.proc_of(exec_id)?;
        Ok(p.wait_reported())
    }

    pub fn resize(&self, id: &str, exec_id: Option<&str>, rows: u16, cols: u16) -> Res<()> {
        let p = self.containers.get(id)?.proc_of(exec_id)?;
        let Some(f) = p.stdio.pty.fd.get() else {
            return Err(RuntimeError::NoTerminal);
        };
        husk_sys::set_window_size(f.as_raw_fd(), husk_sys::WindowSize { rows, cols })
            .map_err(RuntimeError::Winsize)
    }

    pub fn close_stdin(&self, id: &str, exec_id: Option<&str>) -> Res<()> {
        let p = self.containers.get(id)?.proc_of(exec_id)?;
        p.stdio.close_stdin();
        Ok(())
    }

    pub fn state(&self, id: &str) -> Res<ContainerState> {
        let e = self.containers.get(id)?;
        let exit = e.init.reported();
        let status = if exit.is_some() || e.stopped() {
            ContainerStatus::Stopped
        } else if e.paused() {
            ContainerStatus::Paused
        } else if e.c.init.is_started() {
            ContainerStatus::Running
        } else {
            ContainerStatus::Created
        };
        let mut execs: Vec<ExecState> = lock(&e.execs)
            .iter()
            .map(|(k, p)| ExecState {
                exec_id: k.clone(),
                pid: p.pid.load(Ordering::SeqCst),
                exit: p.reported(),
            })
            .collect();
        execs.sort_by(|a, b| a.exec_id.cmp(&b.exec_id));
        Ok(ContainerState {
            id: id.into(),
            status,
            pid: e.c.init.pid,
            exit,
            cgroup: e.c.cgroup.rel.clone(),
            execs,
        })
    }

    pub fn stats(&self, id: &str) -> Res<ContainerStats> {
        Ok(stats::read(&self.containers.get(id)?.c.cgroup))
    }

    pub fn pause(&self, id: &str, on: bool) -> Res<()> {
        let e = self.containers.get(id)?;
        if e.stopped() {
            return Err(RuntimeError::Stopped { id: id.into() });
        }
        e.c.cgroup.freeze(on).map_err(RuntimeError::Freeze)?;
        e.paused.store(on, Ordering::SeqCst);
        Ok(())
    }

    pub fn update(&self, id: &str, r: &oci::LinuxResources) -> Res<()> {
        let e = self.containers.get(id)?;
        let mut w = Vec::new();
        let writes = cgroup::resource_writes(r, &mut w)?;
        e.c.cgroup.apply(&writes).map_err(RuntimeError::Update)
    }

    pub fn remove(&self, id: &str, force: bool) -> Res<()> {
        let e = self.containers.get(id)?;
        if e.running() && !force {
            return Err(RuntimeError::Running { id: id.into() });
        }
        e.c.destroy().map_err(RuntimeError::Destroy)?;
        e.removed.store(true, Ordering::SeqCst);
        self.containers.remove(id);
        Ok(())
    }

    /// Validates an attach and claims the stream (so that `Ok` is only sent
    /// for a stream that this connection then owns).
    pub fn claim(&self, id: &str, exec_id: Option<&str>, stream: StdioStream) -> Res<StreamJob> {
        let p = self.containers.get(id)?.proc_of(exec_id)?;
        p.stdio.claim(stream)?;
        Ok(StreamJob::Stdio(p, stream))
    }

    pub fn subscribe(&self) -> StreamJob {
        StreamJob::Events(self.events.subscribe())
    }
}

/// What every exit report of one container shares.
#[derive(Default)]
struct ExitShared {
    oom_seen: Arc<OomSeen>,
    removed: Arc<AtomicBool>,
}

/// The cgroup that `spec` gives container `id`, before it exists.
fn planned_cgroup(spec: &oci::Spec, id: &str) -> Res<Cgroup> {
    let rel = cgroup::rel_path(
        spec.linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_deref()),
        id,
    )?;
    Ok(Cgroup {
        dir: Path::new(cgroup::ROOT).join(&rel),
        rel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_protocol::{ErrorCode, ErrorInfo};

    fn info<T>(r: Res<T>) -> ErrorInfo {
        ErrorInfo::from(r.err().expect("an error"))
    }

    #[test]
    fn requests_for_unknown_containers() {
        let rt = Runtime::default();
        let nf = |r: Res<()>| {
            let e = info(r);
            assert_eq!(e.code, ErrorCode::NotFound);
            e.message
        };
        assert_eq!(nf(rt.start("x")), "no container \"x\"");
        assert_eq!(nf(rt.wait("x", None).map(drop)), "no container \"x\"");
        assert_eq!(nf(rt.state("x").map(drop)), "no container \"x\"");
        assert_eq!(nf(rt.pause("x", true)), "no container \"x\"");
        assert_eq!(nf(rt.remove("x", true)), "no container \"x\"");
        assert_eq!(nf(rt.close_stdin("x", Some("e"))), "no container \"x\"");
        assert_eq!(
            nf(rt.claim("x", None, StdioStream::Stdout).map(drop)),
            "no container \"x\""
        );
    }

    #[test]
    fn bad_ids_and_signals_are_bad_requests() {
        let rt = Runtime::default();
        let spec: oci::Spec = serde_json::from_str(r#"{"ociVersion":"1.0.2"}"#).unwrap();
        let src = RootfsSource::Path { path: "/".into() };
        let e = info(rt.create("../x", &spec, &src, StdioConfig::default()));
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.starts_with("id: "), "{}", e.message);
        let e = info(rt.signal("x", None, 0, false));
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::BadRequest, "signal: 0 is not a signal number")
        );
        assert!(rt.signal("x", None, 65, true).is_err());
    }

    #[test]
    fn a_bad_spec_is_rejected_before_anything_is_made() {
        let rt = Runtime {
            env: OnceLock::from(spec::Env::default()),
            ..Runtime::default()
        };
        let spec: oci::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": [], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"}
        }))
        .unwrap();
        let src = RootfsSource::Path {
            path: "/no/such/dir".into(),
        };
        let e = info(rt.create("c", &spec, &src, StdioConfig::default()));
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.starts_with("process.args:"), "{}", e.message);
        assert!(rt.containers.is_empty());
        // The id was freed again.
        assert!(rt.containers.reserve("c").is_ok());
    }

    #[test]
    fn the_sandbox_netns_is_refused_until_configured() {
        let rt = Runtime::default();
        let spec: oci::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [
                {"type": "mount"},
                {"type": "network", "path": husk_protocol::net::SANDBOX_NETNS}
            ]}
        }))
        .unwrap();
        let src = RootfsSource::Path { path: "/".into() };
        let e = info(rt.create("c", &spec, &src, StdioConfig::default()));
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                ErrorCode::BadRequest,
                "linux.namespaces[1].path: the sandbox network is not configured"
            )
        );
        assert!(crate::net::check_spec(&spec, true).is_ok());
    }

    #[test]
    fn events_subscriptions() {
        let rt = Runtime::default();
        let job = rt.subscribe();
        assert!(matches!(job, StreamJob::Events(_)));
        assert_eq!(rt.events.subscribers(), 1);
    }
}
