//! Running another process in a running container: in the foreground
//! (this process relays its stdio and exits with its status) or detached
//! (an exec monitor does, and the caller gets its pid).

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use husk_protocol::oci;

use super::create::canonical_console;
use super::{check_id, live_status, target_of};
use crate::error::{Error, IoContext, Result};
use crate::monitor;
use crate::session::Terminal;
use crate::state::{State, Status, Store};
use crate::util;

/// A process to run in a container.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub process: oci::Process,
    /// Unix socket to send the pty master to (`process.terminal`).
    pub console_socket: Option<PathBuf>,
    /// File to write the pid that stands for the process to.
    pub pid_file: Option<PathBuf>,
    /// Return once the process runs; an exec monitor relays it.
    pub detach: bool,
}

/// How a detached exec's monitor is to be started: the front end starts it
/// (for the CLI, `husk __exec`) with [`crate::spawn::spawn_ready`] and
/// returns its pid; the exec monitor runs [`exec_monitor`].
#[derive(Debug, Clone)]
pub struct ExecMonitorRequest {
    pub id: String,
    pub exec_id: String,
    /// The process (JSON), which the exec monitor reads and removes.
    pub process_file: PathBuf,
    /// The daemon's console socket (canonical path), with a terminal.
    pub console_socket: Option<PathBuf>,
    pub terminal: bool,
    pub limit: Duration,
}

fn random_id() -> String {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let n = (t.as_secs() << 30 | u64::from(t.subsec_nanos()))
            ^ (u64::from(std::process::id()) << 32);
        b = n.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The state of container `id` if a process can be exec'd in it.
pub fn exec_state(store: &Store, id: &str, ignore_paused: bool) -> Result<State> {
    check_id(id)?;
    let st = store.load(id)?;
    match live_status(store, &st) {
        Status::Running => {}
        Status::Paused if ignore_paused => {}
        Status::Paused => return Err(Error::ExecPaused { id: id.into() }),
        Status::Stopped => return Err(Error::ExecStopped { id: id.into() }),
        status => {
            return Err(Error::ExecStatus {
                id: id.into(),
                status,
            })
        }
    }
    Ok(st)
}

/// Runs `req.process` in container `st` (checked by [`exec_state`]).
/// Detached, `launch` starts the exec monitor and returns its pid, and the
/// result is 0; else this process relays the process and returns its exit
/// status.
pub fn exec(
    store: &Store,
    st: &State,
    req: ExecRequest,
    launch: impl FnOnce(&ExecMonitorRequest) -> Result<i32>,
) -> Result<i32> {
    let process = req.process;
    let tty = process.terminal().unwrap_or(false);
    let eid = random_id();
    if req.detach {
        if tty && req.console_socket.is_none() {
            return Err(Error::DetachedTtyWithoutConsole { id: st.id.clone() });
        }
        let console_socket = match (&req.console_socket, tty) {
            (Some(s), true) => Some(canonical_console(s)?),
            _ => None,
        };
        let pf = store.dir(&st.id).join(format!("exec-{eid}.json"));
        let data = serde_json::to_vec(&process).map_err(Error::EncodeProcess)?;
        util::write_atomic(&pf, &data)?;
        let m = ExecMonitorRequest {
            id: st.id.clone(),
            exec_id: eid,
            process_file: pf.clone(),
            console_socket,
            terminal: tty,
            limit: Duration::from_secs(60),
        };
        let r = launch(&m);
        let _ = std::fs::remove_file(&pf);
        let pid = r.map_err(|e| Error::Launch {
            op: "exec in",
            id: st.id.clone(),
            source: Box::new(e),
        })?;
        if let Some(p) = &req.pid_file {
            monitor::write_pid_file(p, pid)?;
        }
        return Ok(0);
    }
    let term = match (tty, &req.console_socket) {
        (false, _) => Terminal::No,
        (true, Some(s)) => Terminal::Console(canonical_console(s)?),
        (true, None) => Terminal::Inherit,
    };
    let target = target_of(store, st, Some(eid));
    Ok(monitor::exec_session(
        target,
        process,
        term,
        None,
        req.pid_file.as_deref(),
    ))
}

/// The exec monitor of a detached exec: runs the process in `process_file`
/// (removed once read) in container `id`, reports on `ready`, relays it
/// and returns its exit status.
pub fn exec_monitor(
    store: &Store,
    id: &str,
    exec_id: String,
    process_file: &Path,
    console_socket: Option<PathBuf>,
    ready: Option<OwnedFd>,
) -> Result<i32> {
    check_id(id)?;
    let data = std::fs::read(process_file).at(process_file)?;
    let _ = std::fs::remove_file(process_file);
    let process: oci::Process =
        serde_json::from_slice(&data).map_err(|source| Error::ProcessFile {
            path: process_file.to_path_buf(),
            source,
        })?;
    let st = store.load(id)?;
    let term = match (console_socket, process.terminal().unwrap_or(false)) {
        (Some(s), true) => Terminal::Console(s),
        _ => Terminal::No,
    };
    let target = target_of(store, &st, Some(exec_id));
    Ok(monitor::exec_session(target, process, term, ready, None))
}
