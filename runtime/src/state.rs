//! Per-container state under `--root` (default /run/husk):
//!
//! ```text
//! <root>/<id>/state.json    this crate's State (written atomically)
//! <root>/<id>/lock          flock(2): one mutating command at a time
//! <root>/<id>/vsock         husk-vmm's vsock Unix socket (agent connections)
//! <root>/<id>/virtiofs.sock virtiofsd's vhost-user socket
//! <root>/<id>/share/        what virtiofsd serves: rootfs/ and bind sources
//!                           (bind mounts made in the monitor's own mount
//!                           namespace: they vanish with it)
//! <root>/<id>/console.log   the guest console; vmm.log, virtiofsd.log
//! <root>/<id>/vm.json       the microVM's configuration (husk-vmm --config)
//! ```

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::IoError;
use crate::sys::SysError;
use crate::util;

/// What the state store failed at, naming the container or the path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An id that is not one (`/etc`, `..`): it would name a path outside
    /// the root.
    #[error(transparent)]
    Id(#[from] husk_protocol::id::IdError),
    #[error("--root {}: {source}", root.display())]
    Root { root: PathBuf, source: io::Error },
    #[error("container with id {id} already exists")]
    Exists { id: String },
    #[error("mkdir {}: {source}", path.display())]
    Mkdir { path: PathBuf, source: io::Error },
    #[error("container {id} does not exist")]
    NotFound { id: String },
    /// The lock file could not be opened: the directory went away.
    #[error("container {id} does not exist ({source})")]
    LockFile { id: String, source: io::Error },
    #[error("lock {}: {source}", path.display())]
    Lock { path: PathBuf, source: io::Error },
    /// Another command kept the container's lock for longer than we wait.
    #[error(
        "container {id}: another command still holds its lock {} after {} s",
        path.display(),
        waited.as_secs()
    )]
    LockTimeout {
        id: String,
        path: PathBuf,
        waited: Duration,
    },
    #[error("read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: corrupt state: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("encode state: {0}")]
    Encode(serde_json::Error),
    #[error(transparent)]
    Write(#[from] IoError),
    #[error(transparent)]
    Unmount(#[from] SysError),
    #[error("remove {}: {source}", path.display())]
    Remove { path: PathBuf, source: io::Error },
}

type Result<T, E = StateError> = std::result::Result<T, E>;

/// What the host knows about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    /// The container id the agent knows (its id rules are stricter).
    pub guest_id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The monitor: the pid the daemon waits on; lives as long as the
    /// container. `monitor_start` tells it apart from a reused pid.
    pub monitor_pid: i32,
    pub monitor_start: u64,
    /// Last status a command recorded; the agent is asked when reachable.
    pub status: Status,
    /// Exit status (128+N for signal N) once stopped.
    #[serde(default)]
    pub exit_status: Option<i32>,
    /// OCI poststart / poststop hooks of the spec, run by start / delete.
    #[serde(default)]
    pub poststart: Vec<husk_protocol::oci::Hook>,
    #[serde(default)]
    pub poststop: Vec<husk_protocol::oci::Hook>,
    /// uid that created the container (OCI state `owner` is its name; we
    /// report "" for root as runc does).
    #[serde(default)]
    pub owner_uid: u32,
}

#[cfg(test)]
impl State {
    /// A running container `id` whose monitor is `monitor_pid`, as tests
    /// of the commands around it need one.
    pub(crate) fn running_for_test(id: &str, monitor_pid: i32) -> State {
        State {
            id: id.into(),
            guest_id: id.into(),
            bundle: "/nonexistent".into(),
            rootfs: "/nonexistent/rootfs".into(),
            created: "2026-01-01T00:00:00.000000000Z".into(),
            annotations: Default::default(),
            monitor_pid,
            monitor_start: crate::util::proc_start_time(monitor_pid).unwrap_or(0),
            status: Status::Running,
            exit_status: None,
            poststart: vec![],
            poststop: vec![],
            owner_uid: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

pub struct Store {
    pub root: PathBuf,
}

/// An exclusive lock on one container's state (released on drop).
pub struct Lock(#[allow(dead_code)] File);

/// How long [`Store::lock`] waits for another command's lock: longer than a
/// `create` holds it while the microVM boots (the boot timeout, 120 s by
/// default, plus 60 s), short of forever.
pub const LOCK_WAIT: Duration = Duration::from_secs(300);

/// Longest pause between two tries of a lock that is held.
const LOCK_POLL_MAX: Duration = Duration::from_millis(50);

impl Store {
    pub fn new(root: PathBuf) -> Store {
        Store { root }
    }

    /// The container's directory (the id unchecked: see [`Store::checked_dir`]).
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The directory of container `id` once the id is checked
    /// ([`husk_protocol::id::check_container_id`]): never `/etc`, `..` or
    /// any other path outside the root.
    pub fn checked_dir(&self, id: &str) -> Result<PathBuf> {
        husk_protocol::id::check_container_id(id)?;
        Ok(self.root.join(id))
    }

    /// Makes the container's directory; fails if the id is taken.
    pub fn create_dir(&self, id: &str) -> Result<PathBuf> {
        husk_protocol::id::check_container_id(id)?;
        util::create_private_dir_all(&self.root).map_err(|source| StateError::Root {
            root: self.root.clone(),
            source,
        })?;
        let d = self.dir(id);
        match util::create_private_dir(&d) {
            Ok(()) => Ok(d),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(StateError::Exists { id: id.to_string() })
            }
            Err(source) => Err(StateError::Mkdir { path: d, source }),
        }
    }

    /// Takes the container's lock, waiting up to [`LOCK_WAIT`] for other
    /// commands on it.
    pub fn lock(&self, id: &str) -> Result<Lock> {
        self.lock_within(id, LOCK_WAIT)
    }

    /// Takes the container's lock, waiting up to `limit` for other commands
    /// on it (tries without blocking, with pauses growing from 1 to 50 ms):
    /// [`StateError::LockTimeout`] names the container and the lock file
    /// when the holder does not let go in time.
    pub fn lock_within(&self, id: &str, limit: Duration) -> Result<Lock> {
        let d = self.checked_dir(id)?;
        if !d.is_dir() {
            return Err(StateError::NotFound { id: id.to_string() });
        }
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(util::PRIVATE_FILE_MODE)
            .open(d.join("lock"))
            .map_err(|source| StateError::LockFile {
                id: id.to_string(),
                source,
            })?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            // SAFETY: flock on a descriptor we own; LOCK_NB never blocks.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Lock(f));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {}
                _ => {
                    return Err(StateError::Lock {
                        path: d.join("lock"),
                        source: e,
                    })
                }
            }
            let waited = start.elapsed();
            if waited >= limit {
                return Err(StateError::LockTimeout {
                    id: id.to_string(),
                    path: d.join("lock"),
                    waited,
                });
            }
            std::thread::sleep(pause.min(limit - waited));
            pause = (pause * 2).min(LOCK_POLL_MAX);
        }
    }

    pub fn load(&self, id: &str) -> Result<State> {
        let p = self.checked_dir(id)?.join("state.json");
        let data = match std::fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StateError::NotFound { id: id.to_string() })
            }
            Err(source) => return Err(StateError::Read { path: p, source }),
        };
        serde_json::from_slice(&data).map_err(|source| StateError::Corrupt { path: p, source })
    }

    pub fn save(&self, st: &State) -> Result<()> {
        let data = serde_json::to_vec(st).map_err(StateError::Encode)?;
        Ok(util::write_atomic(
            &self.checked_dir(&st.id)?.join("state.json"),
            &data,
        )?)
    }

    /// Updates the saved status (and exit status) of a container.
    pub fn set_status(&self, id: &str, status: Status, exit: Option<i32>) -> Result<()> {
        let mut st = self.load(id)?;
        st.status = status;
        if exit.is_some() {
            st.exit_status = exit;
        }
        self.save(&st)
    }

    /// Ids of every container under the root, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("state.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }

    /// Removes the container's directory (best effort for what is gone).
    pub fn remove(&self, id: &str) -> Result<()> {
        let d = self.checked_dir(id)?;
        // Share mount points live in the monitor's namespace; here they are
        // plain (empty) directories and files. Should any be mounted in this
        // namespace (a foreground `run` is its own monitor), detach them
        // first: removing must never reach into a bind-mounted source.
        crate::sys::unmount_under(&d)?;
        match std::fs::remove_dir_all(&d) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Remove { path: d, source }),
        }
    }
}

/// Absolute path of `p` under `base` unless it is absolute already.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "husk-state-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn sample(id: &str) -> State {
        State {
            id: id.into(),
            guest_id: id.into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "2026-01-01T00:00:00.000000000Z".into(),
            annotations: BTreeMap::new(),
            monitor_pid: 1,
            monitor_start: 2,
            status: Status::Creating,
            exit_status: None,
            poststart: vec![],
            poststop: vec![],
            owner_uid: 0,
        }
    }

    #[test]
    fn create_load_save_remove() {
        let root = tmp();
        let s = Store::new(root.clone());
        s.create_dir("c1").unwrap();
        assert_eq!(
            s.create_dir("c1").unwrap_err().to_string(),
            "container with id c1 already exists"
        );
        assert_eq!(
            s.load("c1").unwrap_err().to_string(),
            "container c1 does not exist"
        );
        s.save(&sample("c1")).unwrap();
        s.set_status("c1", Status::Stopped, Some(137)).unwrap();
        let st = s.load("c1").unwrap();
        assert_eq!((st.status, st.exit_status), (Status::Stopped, Some(137)));
        assert_eq!(s.ids(), vec!["c1".to_string()]);
        let _l = s.lock("c1").unwrap();
        s.remove("c1").unwrap();
        assert!(s.ids().is_empty());
        assert!(s.lock("c1").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_held_lock_is_waited_for_a_bounded_time() {
        let root = tmp();
        let s = Store::new(root.clone());
        s.create_dir("c2").unwrap();
        let held = s.lock("c2").unwrap();
        let start = Instant::now();
        let e = s
            .lock_within("c2", Duration::from_millis(200))
            .err()
            .expect("the lock is held");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
        let path = root.join("c2/lock");
        assert!(
            matches!(&e, StateError::LockTimeout { id, path: p, .. } if id == "c2" && *p == path),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "container c2: another command still holds its lock {} after 0 s",
                path.display()
            )
        );
        // Let go while another waits: it gets the lock.
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        s.lock_within("c2", Duration::from_secs(5)).unwrap();
        t.join().unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }
}
