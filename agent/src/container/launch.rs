//! Agent side of container-init: spawn it, answer its requests (cgroup
//! placement, id maps, pid registration), and release it with `Start`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use husk_protocol::{read_frame, write_frame, FrameError};

use super::cgroup::Cgroup;
use super::config::{map_text, IdMap, InitConfig};
use super::nsinit::{self, Sync};
use crate::reaper;
use crate::sys::{recv_fd, send_fd};

/// How long container-init may take to set up (TCG-emulated guests are slow).
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

/// The process's standard streams: three descriptors, or the agent's own.
pub enum StdioFds {
    Inherit,
    /// stdin, stdout, stderr (pipes of the protocol server).
    Fds([OwnedFd; 3]),
}

/// A container process that finished set-up and waits for `Start`.
pub struct Pending {
    pub pid: i32,
    sync: UnixStream,
    pub pty_master: Option<OwnedFd>,
}

fn kill(pid: i32) {
    // SAFETY: kill(2) with integer arguments.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn read_sync(s: &mut UnixStream, what: &str) -> Result<Sync, String> {
    match read_frame(s) {
        Ok(m) => Ok(m),
        Err(FrameError::Closed) => Err(format!("container-init exited while {what}")),
        Err(e) if e.is_timeout() => Err(format!(
            "container-init did not answer within {} s while {what}",
            SETUP_TIMEOUT.as_secs()
        )),
        Err(e) => Err(format!("container-init, {what}: {e}")),
    }
}

/// A container-init that has been exec'd and waits for its stdio and
/// configuration (stage 1 reads nothing before them).
struct Started {
    pid: i32,
    a: UnixStream,
    b: UnixStream,
}

/// Starts `husk-agent __container-init`: its stdio is /dev/null until it
/// gets the container's over socket A.
fn start_init() -> Result<Started, String> {
    let (a, a_child) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let (b, b_child) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    for s in [&a, &b] {
        s.set_read_timeout(Some(SETUP_TIMEOUT))
            .map_err(|e| format!("socket timeout: {e}"))?;
    }
    let (fa, fb) = (a_child.as_raw_fd(), b_child.as_raw_fd());
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(nsinit::ARG)
        .env_clear()
        .env(nsinit::FDS_ENV, format!("{fa},{fb}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs between fork and exec and only calls fcntl,
    // which is async-signal-safe, on descriptors that stay open in the child.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [fa, fb] {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = reaper::spawn(&mut cmd, Box::new(|_| {}))
        .map_err(|e| format!("start container-init: {e}"))?;
    Ok(Started {
        pid: child.id() as i32,
        a,
        b,
    })
}

/// One container-init started ahead of need, for the next [`spawn`] to
/// take (see [`SpareInit::prepare`]). At most one is kept.
#[derive(Default)]
pub struct SpareInit(Mutex<Option<Started>>);

impl SpareInit {
    /// Starts a container-init now, from a thread of its own: the agent
    /// calls this once it listens, so the fork and exec of its own 3.7 MB
    /// binary happen while the host is still on its way to the first create.
    pub fn prepare(self: &Arc<Self>) {
        let spare = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("spare-init".into())
            .spawn(move || match start_init() {
                // A spare replaced here ends when its sockets close.
                Ok(st) => drop(lock(&spare.0).replace(st)),
                Err(e) => crate::log::info!("spare container-init: {e}"),
            });
        if let Err(e) = spawned {
            crate::log::info!("spare container-init: cannot start a thread: {e}");
        }
    }

    /// The spare, if there is one and it takes its stdio.
    fn take(&self, stdio: &StdioFds) -> Option<Started> {
        // (None, or it died since: dropping its sockets ends it if not.)
        let mut sp = lock(&self.0).take()?;
        match send_stdio(&mut sp, stdio) {
            Ok(()) => Some(sp),
            Err(e) => {
                crate::log::debug!("spare container-init unusable ({e}); starting another");
                None
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands the process its stdin, stdout and stderr: a [`Sync::Stdio`]
/// frame, then one descriptor per byte (SCM_RIGHTS).
fn send_stdio(st: &mut Started, stdio: &StdioFds) -> Result<(), String> {
    let fds = match stdio {
        StdioFds::Inherit => [0, 1, 2],
        StdioFds::Fds([i, o, e]) => [i.as_raw_fd(), o.as_raw_fd(), e.as_raw_fd()],
    };
    write_frame(&mut st.a, &Sync::Stdio).map_err(|e| e.to_string())?;
    for fd in fds {
        send_fd(&st.a, fd).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Spawns container-init for `cfg` in `cgroup`, and waits until the process
/// is ready to exec. `on_exit` gets the wait status of the container
/// process (not of container-init's first stage). On error every process
/// started here is killed (the cgroup is the caller's).
pub fn spawn(
    cfg: &InitConfig,
    stdio: StdioFds,
    cgroup: &Cgroup,
    maps: Option<(&[IdMap], &[IdMap])>,
    on_exit: reaper::ExitFn,
    phases: &crate::log::Phases,
    spare: Option<&SpareInit>,
) -> Result<Pending, String> {
    // The spare if there is one that takes its stdio; else a fresh one.
    let st = match spare.and_then(|s| s.take(&stdio)) {
        Some(sp) => sp,
        None => {
            let mut st = start_init()?;
            if let Err(e) = send_stdio(&mut st, &stdio) {
                kill(st.pid);
                return Err(format!("hand container-init its stdio: {e}"));
            }
            st
        }
    };
    phases.mark("container-init forked");
    drop(stdio); // closes our copies of the stdio descriptors
    let Started {
        pid: s1,
        mut a,
        mut b,
    } = st;
    let mut pid = None;
    let res = (|| {
        cgroup
            .add_pid(s1)
            .map_err(|e| format!("move container-init into cgroup {}: {e}", cgroup.rel))?;
        write_frame(&mut a, &Sync::Config(Box::new(cfg.clone())))
            .map_err(|e| format!("send the configuration to container-init: {e}"))?;
        let mut on_exit = Some(on_exit);
        loop {
            match read_sync(&mut a, "creating namespaces")? {
                Sync::NeedIdMap => {
                    let (u, g) =
                        maps.ok_or("container-init asked for id maps without a user namespace")?;
                    std::fs::write(format!("/proc/{s1}/uid_map"), map_text(u))
                        .map_err(|e| format!("linux.uidMappings: write uid_map: {e}"))?;
                    std::fs::write(format!("/proc/{s1}/gid_map"), map_text(g))
                        .map_err(|e| format!("linux.gidMappings: write gid_map: {e}"))?;
                    write_frame(&mut a, &Sync::IdMapDone).map_err(|e| e.to_string())?;
                }
                Sync::Pid(p) if p > 0 => {
                    // Its parent (stage 1) waits for our ack, so `p` cannot
                    // have been re-parented and reaped yet.
                    if let Some(f) = on_exit.take() {
                        reaper::register(p, f);
                    }
                    pid = Some(p);
                    write_frame(&mut a, &Sync::PidAck).map_err(|e| e.to_string())?;
                    phases.mark("namespaces created");
                    break;
                }
                Sync::Error(e) => return Err(e),
                other => return Err(format!("unexpected message from container-init: {other:?}")),
            }
        }
        let mut pty_master = None;
        loop {
            match read_sync(&mut b, "setting up the container")? {
                Sync::Ready => {
                    phases.mark("container set up (rootfs, mounts)");
                    break;
                }
                Sync::PtyMaster => {
                    pty_master =
                        Some(recv_fd(&b).map_err(|e| format!("receive the pty master: {e}"))?);
                }
                Sync::Error(e) => return Err(e),
                other => return Err(format!("unexpected message from container-init: {other:?}")),
            }
        }
        Ok(pty_master)
    })();
    match res {
        Ok(pty_master) => Ok(Pending {
            pid: pid.unwrap_or(0),
            sync: b,
            pty_master,
        }),
        Err(e) => {
            kill(s1);
            if let Some(p) = pid {
                kill(p);
            }
            Err(e)
        }
    }
}

impl Pending {
    /// Lets the process exec; returns once it has (or why it could not).
    pub fn start(mut self) -> Result<(), String> {
        write_frame(&mut self.sync, &Sync::Start).map_err(|e| format!("start: {e}"))?;
        match read_frame::<_, Sync>(&mut self.sync) {
            Err(FrameError::Closed) => Ok(()),
            Ok(Sync::Error(e)) => Err(e),
            Ok(other) => Err(format!("unexpected message from container-init: {other:?}")),
            Err(e) => {
                kill(self.pid);
                Err(format!("start: {e}"))
            }
        }
    }
}
