//! The container's cgroup on the host: one cgroup v2 leaf that holds the
//! monitor, virtiofsd and husk-vmm, at the path the spec's
//! `linux.cgroupsPath` names (as runc would create it for the container),
//! sized from the container's limits plus the VMM's overhead ([`plan`]),
//! as Kata's `sandbox_cgroup_only=true` does. The daemon's accounting
//! (docker stats, podman stats, its OOM events) and the host's limits then
//! see the whole microVM.
//!
//! The monitor creates it and moves itself in before it spawns virtiofsd
//! and husk-vmm, which inherit it; at its end (and on a failed create) it
//! moves itself back to the cgroup it came from and removes the cgroup
//! once its helpers are gone. `delete` removes it too, for a monitor that
//! was killed (recorded in the state directory's `host-cgroup`).
//!
//! Only the unified hierarchy (cgroup v2) is handled: on a v1 or hybrid
//! host the monitor logs one line and the processes stay where they are.
//! Inside the VM the guest still makes the spec's cgroup for the container.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub mod plan;

pub use plan::Limits;

/// Where the unified hierarchy is mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

/// The file in the container's state directory that names its host cgroup.
const RECORD: &str = "host-cgroup";

/// The controllers enabled for the container's cgroup (those the host
/// has): its limits and what the daemons' stats read.
const CONTROLLERS: [&str; 4] = ["cpu", "io", "memory", "pids"];

/// How long removal waits for the cgroup's processes to leave (killed
/// helpers being torn down by the kernel).
pub const REMOVE_WAIT: Duration = Duration::from_secs(5);

/// What making, joining or removing the host cgroup failed at.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("linux.cgroupsPath {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("/proc/self/cgroup: no cgroup v2 entry (0::/path)")]
    OwnCgroup,
    /// The path names a cgroup that processes or other cgroups already
    /// use: the container's must be its own.
    #[error("host cgroup {}: already in use ({what})", path.display())]
    InUse { path: PathBuf, what: String },
    #[error("host cgroup {}: processes still in it after {} ms: {pids}", path.display(), waited.as_millis())]
    Busy {
        path: PathBuf,
        waited: Duration,
        pids: String,
    },
}

type Result<T, E = CgroupError> = std::result::Result<T, E>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `root` is a cgroup v2 (unified) hierarchy: only then is it
/// where a process's every controller is.
pub fn unified(root: &Path) -> bool {
    root.join("cgroup.controllers").is_file()
}

/// The calling process's cgroup (`/a/b`, `/` for the root), from
/// /proc/self/cgroup.
pub fn own_cgroup() -> Result<String> {
    let p = Path::new("/proc/self/cgroup");
    let s = std::fs::read_to_string(p).map_err(io_err("read", p))?;
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|c| c.trim().to_string())
        .ok_or(CgroupError::OwnCgroup)
}

/// A container's cgroup on the host, that this process moved into.
#[derive(Debug)]
pub struct Joined {
    /// The cgroup's directory.
    pub dir: PathBuf,
    /// The cgroup this process came from, to go back to.
    pub origin: PathBuf,
    /// The hierarchy's root, where it goes if its origin is gone.
    root: PathBuf,
    /// The record in the state directory.
    record: PathBuf,
}

/// Makes the cgroup `rel` (a path from [`plan::resolve`]) under `root`
/// with `limits`, records it in `state_dir` and moves this process into
/// it. `None` on a host without the unified hierarchy (one line logged).
pub fn join(root: &Path, rel: &str, limits: &Limits, state_dir: &Path) -> Result<Option<Joined>> {
    if !unified(root) {
        crate::warn!(
            "{} is not a cgroup v2 hierarchy (a v1 or hybrid host): the microVM's processes stay in their cgroups",
            root.display()
        );
        return Ok(None);
    }
    let origin = root.join(own_cgroup()?.trim_start_matches('/'));
    let dir = create(root, rel)?;
    let record = state_dir.join(RECORD);
    let j = Joined {
        dir: dir.clone(),
        origin,
        root: root.to_path_buf(),
        record: record.clone(),
    };
    let r = (|| {
        write(&record, &dir.to_string_lossy())?;
        apply(&dir, limits)?;
        write(&dir.join("cgroup.procs"), &std::process::id().to_string())
    })();
    match r {
        Ok(()) => Ok(Some(j)),
        Err(e) => {
            let _ = remove(&dir, Duration::ZERO, false);
            let _ = std::fs::remove_file(&record);
            Err(e)
        }
    }
}

impl Joined {
    /// Moves this process back to where it came from (the root cgroup if
    /// that is gone) and removes the cgroup once its processes are gone,
    /// killing what is left after a bounded wait: the caller has stopped
    /// the helpers, anything still inside is theirs.
    pub fn leave(self) -> Result<()> {
        let me = std::process::id().to_string();
        if let Err(e) = write(&self.origin.join("cgroup.procs"), &me) {
            crate::debug!("host cgroup: back to where the monitor came from: {e}; to the root");
            write(&self.root.join("cgroup.procs"), &me)?;
        }
        remove(&self.dir, REMOVE_WAIT, true)?;
        let _ = std::fs::remove_file(&self.record);
        Ok(())
    }
}

/// Removes the cgroup a container's state directory records (`delete`,
/// for a monitor that could not). `kill`: processes still inside after a
/// bounded wait are killed (cgroup.kill); the caller has stopped husk-vmm
/// first.
pub fn remove_recorded(state_dir: &Path, kill: bool) -> Result<()> {
    let record = state_dir.join(RECORD);
    let Ok(p) = std::fs::read_to_string(&record) else {
        return Ok(());
    };
    let dir = PathBuf::from(p.trim());
    // The state directory is root's; still, only ever a cgroup below the
    // hierarchy, never the root itself.
    if dir.starts_with(ROOT) && dir != Path::new(ROOT) && !p.contains("..") {
        remove(&dir, REMOVE_WAIT, kill)?;
    }
    let _ = std::fs::remove_file(&record);
    Ok(())
}

/// Creates `rel` below `root`, enabling [`CONTROLLERS`] in each
/// ancestor's cgroup.subtree_control as runc does (one by one, what an
/// ancestor cannot enable is left: a limit that needs it fails to be set).
/// The leaf's own subtree_control is left empty: it holds processes.
/// A leaf that exists already must be empty (a daemon may make it first).
fn create(root: &Path, rel: &str) -> Result<PathBuf> {
    let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let mut dir = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        enable_controllers(&dir);
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists && i + 1 < parts.len() => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => check_unused(&dir)?,
            Err(e) => return Err(io_err("mkdir", &dir)(e)),
        }
    }
    Ok(dir)
}

fn check_unused(dir: &Path) -> Result<()> {
    let procs = read(&dir.join("cgroup.procs"))?;
    if !procs.trim().is_empty() {
        return Err(CgroupError::InUse {
            path: dir.to_path_buf(),
            what: format!(
                "processes {}",
                procs.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        });
    }
    let children = std::fs::read_dir(dir)
        .map_err(io_err("read", dir))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .count();
    if children > 0 {
        return Err(CgroupError::InUse {
            path: dir.to_path_buf(),
            what: format!("{children} child cgroups"),
        });
    }
    Ok(())
}

fn enable_controllers(dir: &Path) {
    let (Ok(have), Ok(on)) = (
        read(&dir.join("cgroup.controllers")),
        read(&dir.join("cgroup.subtree_control")),
    ) else {
        return;
    };
    let on: Vec<&str> = on.split_whitespace().collect();
    for c in CONTROLLERS {
        if have.split_whitespace().any(|h| h == c) && !on.contains(&c) {
            if let Err(e) = write(&dir.join("cgroup.subtree_control"), &format!("+{c}")) {
                crate::debug!("host cgroup: {e}");
            }
        }
    }
}

/// Writes `limits` into the cgroup. pids.max is the runtime's own bound:
/// a host without the pids controller only loses it (one line).
fn apply(dir: &Path, l: &Limits) -> Result<()> {
    if let Some(m) = l.memory_max {
        write(&dir.join("memory.max"), &m.to_string())?;
    }
    if let Some((q, p)) = l.cpu_max {
        write(&dir.join("cpu.max"), &format!("{q} {p}"))?;
    }
    if let Some(w) = l.cpu_weight {
        write(&dir.join("cpu.weight"), &w.to_string())?;
    }
    if let Some(n) = l.pids_max {
        if let Err(e) = write(&dir.join("pids.max"), &n.to_string()) {
            crate::warn!("host cgroup: {e}");
        }
    }
    Ok(())
}

/// Removes the cgroup `dir` once it is empty, waiting up to `wait`; with
/// `kill`, what is still in it halfway through is killed (cgroup.kill).
/// A cgroup already gone is removed.
pub fn remove(dir: &Path, wait: Duration, kill: bool) -> Result<()> {
    let start = Instant::now();
    let mut killed = false;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() != Some(libc::EBUSY) => return Err(io_err("rmdir", dir)(e)),
            Err(_) => {}
        }
        let waited = start.elapsed();
        if kill && !killed && waited >= wait / 2 {
            killed = true;
            kill_all(dir);
        }
        if waited >= wait {
            let pids = read(&dir.join("cgroup.procs")).unwrap_or_default();
            return Err(CgroupError::Busy {
                path: dir.to_path_buf(),
                waited,
                pids: pids.split_whitespace().collect::<Vec<_>>().join(" "),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills every process of the cgroup: cgroup.kill (Linux 5.14), else each
/// pid of cgroup.procs.
fn kill_all(dir: &Path) {
    if write(&dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for pid in read(&dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        // SAFETY: kill(2) with a pid read from the container's own cgroup.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(io_err("read", p))
}

fn write(p: &Path, v: &str) -> Result<()> {
    std::fs::write(p, v).map_err(io_err("write", p))
}

#[cfg(test)]
mod tests;
