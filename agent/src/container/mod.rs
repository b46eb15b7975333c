//! OCI containers inside the guest: the spec is validated into an
//! [`config::InitConfig`] ([`spec`], with [`caps`] and [`seccomp`]), a
//! cgroup v2 group is made for it ([`cgroup`], one module per controller),
//! and the agent re-executes itself as container-init ([`nsinit`], driven
//! by [`launch`]) to build the namespaces and root file system
//! ([`rootfs`]) and exec the process. Errors: [`error`].
//!
//! Nothing here runs before the agent listens: all of it is on demand.

pub mod caps;
pub mod cgroup;
pub mod config;
pub mod error;
pub mod launch;
pub mod nsinit;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
mod syscall_table;

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use oci_spec::runtime::Spec;

use self::cgroup::Cgroup;
use self::config::InitConfig;
pub use self::error::{ContainerError, SpecError};
use self::launch::{Pending, StdioFds};

/// Largest config.json / spec accepted.
pub const MAX_SPEC: usize = husk_protocol::MAX_FRAME;

/// Parses an OCI runtime spec; errors name the JSON path of the bad field
/// (`linux.namespaces[0].type: unknown variant ...`).
pub fn parse_spec(bytes: &[u8]) -> Result<Spec, SpecError> {
    if bytes.len() > MAX_SPEC {
        return Err(SpecError::TooLarge { max: MAX_SPEC });
    }
    // The same path-tracking decoder as the protocol's (one copy of the
    // oci-spec decoding code in the binary).
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| SpecError::Json(e.to_string()))?;
    husk_protocol::decode_tracked(v, "").map_err(SpecError::Decode)
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn from_wait_status(status: libc::c_int) -> Exit {
        if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        }
    }

    /// Shell convention: the exit code, or 128 + the signal number.
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// The exit of one process, set once by the reaper.
#[derive(Default)]
pub struct ExitCell {
    exit: Mutex<Option<Exit>>,
    cv: Condvar,
}

impl ExitCell {
    pub fn set(&self, e: Exit) {
        *self.exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        self.cv.notify_all();
    }

    /// Waits for the exit; `None` on timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> Option<Exit> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut g = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(e) = *g {
                return Some(e);
            }
            match deadline {
                None => g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    g = self
                        .cv
                        .wait_timeout(g, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

/// Called (on the reaper thread) when a container process exits.
pub type ExitHook = Box<dyn FnOnce(Exit) + Send>;

/// How to start a container process: its stdio, who hears of its exit,
/// where its set-up times are logged, and a container-init started ahead
/// of need to use (if any).
pub struct Launch<'a> {
    pub stdio: StdioFds,
    pub hook: Option<ExitHook>,
    pub phases: &'a crate::log::Phases,
    pub spare: Option<&'a launch::SpareInit>,
}

/// A started or waiting container process.
pub struct Process {
    pub pid: i32,
    pub exit: Arc<ExitCell>,
    pending: Mutex<Option<Pending>>,
    pub pty_master: Mutex<Option<std::os::fd::OwnedFd>>,
}

impl Process {
    /// Spawns `cfg` in `cgroup`, ready to start.
    pub fn spawn(
        cfg: &InitConfig,
        cgroup: &Cgroup,
        maps: Option<(&[config::IdMap], &[config::IdMap])>,
        how: Launch<'_>,
    ) -> Result<Process, ContainerError> {
        let exit = Arc::new(ExitCell::default());
        let cell = Arc::clone(&exit);
        let hook = how.hook;
        let mut pending = launch::spawn(
            cfg,
            how.stdio,
            cgroup,
            maps,
            Box::new(move |status| {
                let e = Exit::from_wait_status(status);
                cell.set(e);
                if let Some(h) = hook {
                    h(e);
                }
            }),
            how.phases,
            how.spare,
        )?;
        let pty = pending.pty_master.take();
        Ok(Process {
            pid: pending.pid,
            exit,
            pending: Mutex::new(Some(pending)),
            pty_master: Mutex::new(pty),
        })
    }

    /// Lets the process exec. Fails if it was started already.
    pub fn start(&self) -> Result<(), ContainerError> {
        let p = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or(ContainerError::AlreadyStarted)?;
        Ok(p.start()?)
    }

    pub fn is_started(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// Sends `sig` unless the process has been reaped (its pid may be reused).
    pub fn signal(&self, sig: i32) -> Result<(), ContainerError> {
        let g = self.exit.exit.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_some() {
            return Err(ContainerError::Exited { pid: self.pid });
        }
        // SAFETY: kill(2) with integer arguments; the lock keeps the reaper
        // from recording the exit (and so the pid from being reused unseen).
        if unsafe { libc::kill(self.pid, sig) } != 0 {
            return Err(ContainerError::Kill {
                pid: self.pid,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// A container: its cgroup, its init process and what exec needs.
pub struct Container {
    pub id: String,
    /// What exec needs (namespaces, seccomp).
    pub init_cfg: InitConfig,
    pub cgroup: Cgroup,
    pub init: Process,
    pub warnings: Vec<String>,
    /// A root file system the agent mounted for this container (block
    /// device, virtio-fs), unmounted by [`Container::destroy`].
    pub rootfs_mount: Option<PathBuf>,
}

impl Container {
    /// Validates `spec` and creates the container (namespaces, root file
    /// system, cgroup) with its process waiting for [`Process::start`].
    /// On error nothing is left behind.
    pub fn create(
        id: &str,
        spec: &Spec,
        rootfs: PathBuf,
        env: &spec::Env,
        how: Launch<'_>,
    ) -> Result<Container, ContainerError> {
        let plan = spec::plan_create(id, spec, &rootfs, env)?;
        let cg = Cgroup::create(&plan.cgroup_rel)?;
        let res = cg
            .apply(&plan.cgroup_writes)
            .map_err(ContainerError::from)
            .and_then(|()| {
                how.phases.mark("cgroup set up");
                let maps =
                    (!plan.uid_maps.is_empty()).then_some((&plan.uid_maps[..], &plan.gid_maps[..]));
                Process::spawn(&plan.init, &cg, maps, how)
            });
        match res {
            Ok(init) => Ok(Container {
                id: id.to_string(),
                init_cfg: plan.init,
                cgroup: cg,
                init,
                warnings: plan.warnings,
                rootfs_mount: None,
            }),
            Err(e) => {
                if let Err(e2) = cg.destroy() {
                    crate::log::info!("container {id}: cleanup after a failed create: {e2}");
                }
                Err(e)
            }
        }
    }

    /// OOM kills in the container's cgroup so far (memory.events oom_kill).
    pub fn oom_kills(&self) -> u64 {
        self.cgroup.keyed("memory.events", "oom_kill").unwrap_or(0)
    }

    /// Kills every process, removes the cgroup and unmounts what the agent
    /// mounted for the container.
    pub fn destroy(&self) -> Result<(), ContainerError> {
        self.cgroup.kill_all();
        let _ = self.init.signal(libc::SIGKILL);
        // The reaper records the exit; bounded so a stuck process cannot hang us.
        if self.init.exit.wait(Some(Duration::from_secs(10))).is_none() {
            return Err(ContainerError::InitStuck {
                id: self.id.clone(),
            });
        }
        self.cgroup.destroy()?;
        if let Some(m) = &self.rootfs_mount {
            crate::container::rootfs_unmount(m)?;
        }
        Ok(())
    }
}

/// Unmounts a root file system the agent mounted and removes its directory.
pub fn rootfs_unmount(p: &std::path::Path) -> Result<(), ContainerError> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| {
        ContainerError::Mount(rootfs::MountError::Nul {
            path: p.to_path_buf(),
        })
    })?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(ContainerError::Unmount {
                path: p.to_path_buf(),
                source: e,
            });
        }
    }
    let _ = std::fs::remove_dir(p);
    if let Some(parent) = p.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(())
}
