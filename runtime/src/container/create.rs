//! Creating and starting a container: the bundle checked, the state
//! recorded, its monitor started (which boots the microVM and creates the
//! container in it), `start` asked of the agent.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{check_id, live_status, target_of};
use crate::bundle::{self, Bundle};
use crate::error::{Error, Result};
use crate::hooks;
use crate::host_config::HostConfig;
use crate::monitor;
use crate::session::Terminal;
use crate::state::StateError;
use crate::state::{State, Status, Store};
use crate::util;

/// What `create` and `run` are given.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub id: String,
    /// The bundle directory (config.json, rootfs).
    pub bundle: PathBuf,
    /// Unix socket to send the pty master to (`process.terminal`).
    pub console_socket: Option<PathBuf>,
    /// File to write the monitor's pid to.
    pub pid_file: Option<PathBuf>,
    /// Descriptors the caller wanted passed on (a microVM cannot take them).
    pub preserve_fds: u32,
}

/// How a new container's monitor is to be started: the front end starts
/// it (for the CLI, `husk __monitor`) with [`crate::spawn::spawn_ready`]
/// and returns its pid; the monitor runs [`monitor::run`].
#[derive(Debug, Clone)]
pub struct MonitorRequest {
    pub id: String,
    /// The daemon's console socket (canonical path), with a terminal.
    pub console_socket: Option<PathBuf>,
    /// Start the container once created (`run --detach`).
    pub start: bool,
    /// The process has a terminal: the monitor's stdio is not the caller's.
    pub terminal: bool,
    /// How long to wait for the monitor's answer.
    pub limit: Duration,
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
fn precheck(store: &Store, a: &CreateRequest) -> Result<Bundle> {
    check_id(&a.id)?;
    if store.dir(&a.id).join("state.json").exists() {
        return Err(StateError::Exists { id: a.id.clone() }.into());
    }
    let b = bundle::load(&a.bundle)?;
    HostConfig::load()?.check()?;
    if let Some(s) = &a.console_socket {
        if !b.terminal {
            crate::debug!(
                "--console-socket {}: ignored, process.terminal is false",
                s.display()
            );
        }
    }
    if a.preserve_fds > 0 {
        crate::warn!("--preserve-fds: extra descriptors cannot be passed into a microVM; ignored");
    }
    Ok(b)
}

/// Removes what a failed create made.
pub(crate) fn undo_create(store: &Store, id: &str) {
    if let Err(e) = crate::host_cgroup::remove_recorded(&store.dir(id), true) {
        crate::warn!("{id}: {e}");
    }
    let _ = store.remove(id);
    let _ = std::fs::remove_dir_all(monitor::sock_dir(&store.root, id));
}

pub(crate) fn canonical_console(s: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(s).map_err(|source| Error::ConsoleSocket {
        path: s.to_path_buf(),
        source,
    })
}

/// Creates container `a.id` (and starts it with `start`: `run --detach`):
/// `launch` starts its monitor and returns the monitor's pid once the
/// container is created. Returns that pid.
pub fn create(
    store: &Store,
    a: &CreateRequest,
    start: bool,
    launch: impl FnOnce(&MonitorRequest) -> Result<i32>,
) -> Result<i32> {
    let b = precheck(store, a)?;
    if b.terminal && a.console_socket.is_none() {
        return Err(Error::ConsoleSocketRequired { id: a.id.clone() });
    }
    store.create_dir(&a.id)?;
    let r = (|| {
        let _lock = store.lock(&a.id)?;
        store.save(&new_state(&a.id, &b))?;
        let console_socket = match (&a.console_socket, b.terminal) {
            (Some(s), true) => Some(canonical_console(s)?),
            _ => None,
        };
        let req = MonitorRequest {
            id: a.id.clone(),
            console_socket,
            start,
            terminal: b.terminal,
            limit: HostConfig::load()?.boot_timeout + Duration::from_secs(60),
        };
        let pid = launch(&req).map_err(|e| Error::Launch {
            op: "create",
            id: a.id.clone(),
            source: Box::new(e),
        })?;
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

/// `run` without --detach: this process is the monitor. Returns the
/// container's exit status.
pub fn run_foreground(store: &Store, a: &CreateRequest, keep: bool) -> Result<i32> {
    let b = precheck(store, a)?;
    let term = match (b.terminal, &a.console_socket) {
        (false, _) => Terminal::No,
        (true, Some(s)) => Terminal::Console(canonical_console(s)?),
        (true, None) => Terminal::Inherit,
    };
    store.create_dir(&a.id)?;
    let r = (|| {
        store.save(&new_state(&a.id, &b))?;
        if let Some(p) = &a.pid_file {
            monitor::write_pid_file(p, util::pid(std::process::id()))?;
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
        // A failing poststop hook is a warning; the rest still run.
        hooks::run_all("poststop", &st.poststop, &json);
    }
    undo_create(store, &a.id);
    r
}

/// Starts the process of a created container.
pub fn start(store: &Store, id: &str) -> Result<()> {
    check_id(id)?;
    let _lock = store.lock(id)?;
    let st = store.load(id)?;
    match live_status(store, &st) {
        Status::Created => {}
        Status::Stopped => return Err(Error::StartStopped { id: id.into() }),
        Status::Creating => return Err(Error::StillCreating { id: id.into() }),
        status => {
            return Err(Error::AlreadyStarted {
                id: id.into(),
                status,
            })
        }
    }
    let t = target_of(store, &st, None);
    let started = t
        .connect()
        .and_then(|mut c| Ok(c.start_container(&st.guest_id)?));
    if let Err(source) = started {
        // As with runc, a container that failed to start is stopped, so
        // that the daemon's cleanup (`delete` without --force, which
        // containerd's client allows only for stopped tasks) removes it.
        let status = super::stop::stop_failed_start(store, &st);
        return Err(Error::StartFailed {
            id: id.into(),
            status,
            source,
        });
    }
    store.set_status(id, Status::Running, None)?;
    let json = monitor::state_json(&st, Status::Running, st.monitor_pid);
    // A failing poststart hook is a warning; the rest still run.
    hooks::run_all("poststart", &st.poststart, &json);
    Ok(())
}
