//! cgroup v2: one group per container, `linux.resources` as interface
//! files. The group's life (create, apply, freeze, kill, destroy) is here;
//! the translation of the spec's resources is in [`resources`], one module
//! per controller.

pub mod cpu;
pub mod cpuset;
pub mod hugetlb;
pub mod io;
pub mod memory;
pub mod pids;
pub mod rdma;
pub mod resources;
pub mod unified;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

pub use self::resources::{resource_writes, Write1};
use crate::container::error::SpecError;
use crate::sysinfo::read_bounded;

/// Where the unified hierarchy is mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

/// Controllers enabled for containers (each only if the parent offers it).
const CONTROLLERS: &[&str] = &[
    "cpu", "cpuset", "io", "memory", "pids", "hugetlb", "rdma", "misc",
];

/// Validates `linux.cgroupsPath` (or the default) into a path relative to [`ROOT`].
pub fn rel_path(spec_path: Option<&Path>, id: &str) -> Result<String, SpecError> {
    const FIELD: &str = "linux.cgroupsPath";
    let Some(p) = spec_path else {
        return Ok(format!("husk/{id}"));
    };
    let s = p.to_str().ok_or_else(|| SpecError::NotUtf8 {
        field: FIELD.into(),
    })?;
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(SpecError::invalid(FIELD, format!("{s:?} contains '..'"))),
            c if c.contains(':') => {
                return Err(SpecError::invalid(
                    FIELD,
                    format!(
                        "{s:?} looks like a systemd slice path, which the guest has no systemd for"
                    ),
                ))
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(SpecError::invalid(
            FIELD,
            format!("{s:?} names the root cgroup"),
        ));
    }
    Ok(parts.join("/"))
}

/// Why a cgroup operation failed; each names the group or file.
#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("no cgroup v2 hierarchy at {root}")]
    NoHierarchy { root: &'static str },
    #[error("linux.cgroupsPath: cgroup {} already exists", dir.display())]
    Exists { dir: PathBuf },
    #[error("create cgroup {}: {source}", dir.display())]
    Create {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// A write that `field` of the spec asked for.
    #[error("{field}: write {value:?} to {file}: {source}")]
    Apply {
        field: String,
        file: String,
        value: String,
        source: std::io::Error,
    },
    #[error("write {file}: {source}")]
    Write {
        file: &'static str,
        source: std::io::Error,
    },
    #[error("cgroup {rel} did not {verb} within 10 s")]
    FreezeTimeout { rel: String, verb: &'static str },
    #[error("remove cgroup {}: {source}", dir.display())]
    Remove {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup {} still has processes after 10 s", dir.display())]
    Busy { dir: PathBuf },
}

/// A container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub rel: String,
    pub dir: PathBuf,
}

fn write_file(path: &Path, value: &str) -> std::io::Result<()> {
    // One write(2): cgroup files parse one value per write.
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

impl Cgroup {
    /// Creates the group (and its missing parents, with controllers enabled
    /// on the way down). Fails if the group already exists.
    pub fn create(rel: &str) -> Result<Cgroup, CgroupError> {
        let root = Path::new(ROOT);
        if !root.join("cgroup.controllers").exists() {
            return Err(CgroupError::NoHierarchy { root: ROOT });
        }
        let mut dir = root.to_path_buf();
        let parts: Vec<&str> = rel.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            enable_controllers(&dir);
            dir.push(part);
            let last = i + 1 == parts.len();
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !last => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(CgroupError::Exists { dir })
                }
                Err(source) => return Err(CgroupError::Create { dir, source }),
            }
        }
        Ok(Cgroup {
            rel: rel.to_string(),
            dir,
        })
    }

    /// Writes `writes` in order; stops at the first that fails.
    pub fn apply(&self, writes: &[Write1]) -> Result<(), CgroupError> {
        for wr in writes {
            write_file(&self.dir.join(&wr.file), &wr.value).map_err(|source| {
                CgroupError::Apply {
                    field: wr.field.clone(),
                    file: wr.file.clone(),
                    value: wr.value.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    pub fn add_pid(&self, pid: i32) -> std::io::Result<()> {
        write_file(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    pub fn read(&self, file: &str) -> std::io::Result<String> {
        read_bounded(&self.dir.join(file))
    }

    /// A `key value` line of a flat-keyed file such as `memory.events`.
    pub fn keyed(&self, file: &str, key: &str) -> Option<u64> {
        parse_keyed(&self.read(file).ok()?, key)
    }

    pub fn populated(&self) -> bool {
        self.keyed("cgroup.events", "populated").unwrap_or(0) != 0
    }

    pub fn pids(&self) -> Vec<i32> {
        self.read("cgroup.procs")
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Freezes (`true`) or thaws the group and waits (bounded) until the
    /// kernel reports the new state.
    pub fn freeze(&self, on: bool) -> Result<(), CgroupError> {
        write_file(&self.dir.join("cgroup.freeze"), if on { "1" } else { "0" }).map_err(
            |source| CgroupError::Write {
                file: "cgroup.freeze",
                source,
            },
        )?;
        let want = u64::from(on);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.keyed("cgroup.events", "frozen") != Some(want) {
            if Instant::now() > deadline {
                return Err(CgroupError::FreezeTimeout {
                    rel: self.rel.clone(),
                    verb: if on { "freeze" } else { "thaw" },
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Kills every process in the group (cgroup.kill, or SIGKILL to each pid
    /// on kernels without it).
    pub fn kill_all(&self) {
        if write_file(&self.dir.join("cgroup.kill"), "1").is_err() {
            for pid in self.pids() {
                // SAFETY: kill(2) with integer arguments only.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// Kills what is left, waits (bounded) until the group is empty and
    /// removes it.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        if !self.dir.exists() {
            return Ok(());
        }
        let _ = self.freeze(false);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !self.populated() {
                match fs::remove_dir(&self.dir) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(source) if Instant::now() > deadline => {
                        return Err(CgroupError::Remove {
                            dir: self.dir.clone(),
                            source,
                        })
                    }
                    Err(_) => {}
                }
            } else {
                self.kill_all();
                if Instant::now() > deadline {
                    return Err(CgroupError::Busy {
                        dir: self.dir.clone(),
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Enables every available controller of [`CONTROLLERS`] for `dir`'s children.
fn enable_controllers(dir: &Path) {
    let avail = read_bounded(&dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = read_bounded(&dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in CONTROLLERS {
        if avail.split_whitespace().any(|a| a == *c) && !enabled.split_whitespace().any(|a| a == *c)
        {
            let _ = write_file(&dir.join("cgroup.subtree_control"), &format!("+{c}"));
        }
    }
}

/// The value of `key` in a flat-keyed cgroup file (`key value` lines).
pub fn parse_keyed(s: &str, key: &str) -> Option<u64> {
    s.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths() {
        assert_eq!(rel_path(None, "c1").unwrap(), "husk/c1");
        assert_eq!(rel_path(Some(Path::new("/a/b")), "x").unwrap(), "a/b");
        assert_eq!(rel_path(Some(Path::new("a//b/")), "x").unwrap(), "a/b");
        assert!(rel_path(Some(Path::new("/a/../b")), "x")
            .unwrap_err()
            .to_string()
            .starts_with("linux.cgroupsPath:"));
        assert!(rel_path(Some(Path::new("/")), "x").is_err());
        assert!(rel_path(Some(Path::new("system.slice:docker:x")), "x").is_err());
    }

    #[test]
    fn keyed_files() {
        let s = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n";
        assert_eq!(parse_keyed(s, "oom_kill"), Some(2));
        assert_eq!(parse_keyed(s, "oom"), Some(1));
        assert_eq!(parse_keyed(s, "nope"), None);
        assert_eq!(parse_keyed("populated x", "populated"), None);
    }

    fn fake(name: &str) -> Cgroup {
        let dir = std::env::temp_dir().join(format!("husk-cg-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Cgroup {
            rel: format!("t/{name}"),
            dir,
        }
    }

    #[test]
    fn apply_writes_each_file_and_names_the_field_on_error() {
        let cg = fake("apply");
        fs::write(cg.dir.join("pids.max"), "").unwrap();
        let ok = [Write1 {
            file: "pids.max".into(),
            value: "10".into(),
            field: "linux.resources.pids.limit".into(),
        }];
        cg.apply(&ok).unwrap();
        assert_eq!(fs::read_to_string(cg.dir.join("pids.max")).unwrap(), "10");
        let missing = [Write1 {
            file: "memory.max".into(),
            value: "5".into(),
            field: "linux.resources.memory.limit".into(),
        }];
        let e = cg.apply(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with("linux.resources.memory.limit: write \"5\" to memory.max: "),
            "{e}"
        );
        fs::write(cg.dir.join("cgroup.procs"), "1\n22\nx\n").unwrap();
        assert_eq!(cg.pids(), [1, 22]);
        fs::write(cg.dir.join("cgroup.events"), "populated 0\nfrozen 1\n").unwrap();
        assert!(!cg.populated());
        fs::remove_dir_all(&cg.dir).unwrap();
    }
}
