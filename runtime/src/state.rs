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
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::util::{self, Context, Result};

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
    pub poststart: Vec<oci_spec::runtime::Hook>,
    #[serde(default)]
    pub poststop: Vec<oci_spec::runtime::Hook>,
    /// uid that created the container (OCI state `owner` is its name; we
    /// report "" for root as runc does).
    #[serde(default)]
    pub owner_uid: u32,
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

impl Store {
    pub fn new(root: PathBuf) -> Store {
        Store { root }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Makes the container's directory; fails if the id is taken.
    pub fn create_dir(&self, id: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.root).ctx(format!("--root {}", self.root.display()))?;
        let d = self.dir(id);
        match std::fs::create_dir(&d) {
            Ok(()) => Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(format!("container with id {id} already exists"))
            }
            Err(e) => Err(format!("mkdir {}: {e}", d.display())),
        }
    }

    /// Takes the container's lock, waiting for other commands on it.
    pub fn lock(&self, id: &str) -> Result<Lock> {
        let d = self.dir(id);
        if !d.is_dir() {
            return Err(format!("container {id} does not exist"));
        }
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(d.join("lock"))
            .map_err(|e| format!("container {id} does not exist ({e})"))?;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Lock(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("lock {}: {e}", d.display()));
            }
        }
    }

    pub fn load(&self, id: &str) -> Result<State> {
        let p = self.dir(id).join("state.json");
        let data = match std::fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!("container {id} does not exist"))
            }
            Err(e) => return Err(format!("read {}: {e}", p.display())),
        };
        serde_json::from_slice(&data).ctx(format!("{}: corrupt state", p.display()))
    }

    pub fn save(&self, st: &State) -> Result<()> {
        let data = serde_json::to_vec(st).ctx("encode state")?;
        util::write_atomic(&self.dir(&st.id).join("state.json"), &data)
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
        let d = self.dir(id);
        // Share mount points live in the monitor's namespace; here they are
        // plain (empty) directories and files. Should any be mounted in this
        // namespace (a foreground `run` is its own monitor), detach them
        // first: removing must never reach into a bind-mounted source.
        crate::sys::unmount_under(&d)?;
        match std::fs::remove_dir_all(&d) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("remove {}: {e}", d.display())),
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
            s.create_dir("c1").unwrap_err(),
            "container with id c1 already exists"
        );
        assert_eq!(s.load("c1").unwrap_err(), "container c1 does not exist");
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
}
