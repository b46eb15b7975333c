//! Agent side of container-init: spawn it, answer its requests (cgroup
//! placement, id maps, pid registration), and release it with `Start`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use husk_protocol::{read_frame, write_frame, FrameError};
use thiserror::Error;

use super::cgroup::Cgroup;
use super::config::{map_text, IdMap, InitConfig};
use super::nsinit::{self, Sync};
use crate::reaper;
use husk_sys::{recv_fd, send_fd};

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

/// Why a container process could not be started.
#[derive(Debug, Error)]
pub enum LaunchError {
    #[error("socketpair: {0}")]
    Socketpair(io::Error),
    #[error("socket timeout: {0}")]
    SocketTimeout(io::Error),
    #[error("start container-init: {0}")]
    Spawn(io::Error),
    #[error("hand container-init its stdio: {0}")]
    StdioFrame(FrameError),
    #[error("hand container-init its stdio: {0}")]
    StdioFd(io::Error),
    #[error("move container-init into cgroup {rel}: {source}")]
    Cgroup { rel: String, source: io::Error },
    #[error("send the configuration to container-init: {0}")]
    Config(FrameError),
    #[error("container-init asked for id maps without a user namespace")]
    NoIdMaps,
    /// Writing /proc/PID/uid_map or gid_map (`field` is the spec's).
    #[error("{field}: write {file}: {source}")]
    IdMap {
        field: &'static str,
        file: &'static str,
        source: io::Error,
    },
    /// An answer to container-init could not be sent.
    #[error("{0}")]
    Reply(FrameError),
    #[error("container-init exited while {what}")]
    Exited { what: &'static str },
    #[error("container-init did not answer within {secs} s while {what}")]
    Timeout { what: &'static str, secs: u64 },
    #[error("container-init, {what}: {source}")]
    Recv {
        what: &'static str,
        source: FrameError,
    },
    #[error("receive the pty master: {0}")]
    PtyMaster(io::Error),
    /// container-init's own report of what failed.
    #[error("{0}")]
    Init(String),
    #[error("unexpected message from container-init: {0}")]
    Unexpected(String),
    #[error("start: {0}")]
    Start(FrameError),
}

fn unexpected(m: &Sync) -> LaunchError {
    LaunchError::Unexpected(format!("{m:?}"))
}

fn read_sync(s: &mut UnixStream, what: &'static str) -> Result<Sync, LaunchError> {
    match read_frame(s) {
        Ok(m) => Ok(m),
        Err(FrameError::Closed) => Err(LaunchError::Exited { what }),
        Err(e) if e.is_timeout() => Err(LaunchError::Timeout {
            what,
            secs: SETUP_TIMEOUT.as_secs(),
        }),
        Err(source) => Err(LaunchError::Recv { what, source }),
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
fn start_init() -> Result<Started, LaunchError> {
    let (a, a_child) = UnixStream::pair().map_err(LaunchError::Socketpair)?;
    let (b, b_child) = UnixStream::pair().map_err(LaunchError::Socketpair)?;
    for s in [&a, &b] {
        s.set_read_timeout(Some(SETUP_TIMEOUT))
            .map_err(LaunchError::SocketTimeout)?;
    }
    let (fa, fb) = (a_child.as_raw_fd(), b_child.as_raw_fd());
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(nsinit::ARG)
        .env_clear()
        .env(nsinit::FDS_ENV, format!("{fa},{fb}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let keep_open = move || {
        for fd in [fa, fb] {
            // SAFETY: F_SETFD only changes the flags of a descriptor that
            // stays open in the child.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure runs between fork and exec and only calls fcntl,
    // which is async-signal-safe.
    unsafe { cmd.pre_exec(keep_open) };
    let child = reaper::spawn(&mut cmd, Box::new(|_| {})).map_err(LaunchError::Spawn)?;
    let pid = i32::try_from(child.id()).map_err(|_| {
        LaunchError::Spawn(io::Error::other("container-init's pid is out of range"))
    })?;
    Ok(Started { pid, a, b })
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
fn send_stdio(st: &mut Started, stdio: &StdioFds) -> Result<(), LaunchError> {
    let ours = (io::stdin(), io::stdout(), io::stderr());
    let fds = match stdio {
        StdioFds::Inherit => [ours.0.as_fd(), ours.1.as_fd(), ours.2.as_fd()],
        StdioFds::Fds([i, o, e]) => [i.as_fd(), o.as_fd(), e.as_fd()],
    };
    write_frame(&mut st.a, &Sync::Stdio).map_err(LaunchError::StdioFrame)?;
    for fd in fds {
        send_fd(&st.a, fd).map_err(LaunchError::StdioFd)?;
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
) -> Result<Pending, LaunchError> {
    // The spare if there is one that takes its stdio; else a fresh one.
    let st = match spare.and_then(|s| s.take(&stdio)) {
        Some(sp) => sp,
        None => {
            let mut st = start_init()?;
            if let Err(e) = send_stdio(&mut st, &stdio) {
                kill(st.pid);
                return Err(e);
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
        cgroup.add_pid(s1).map_err(|source| LaunchError::Cgroup {
            rel: cgroup.rel.clone(),
            source,
        })?;
        write_frame(&mut a, &Sync::Config(Box::new(cfg.clone()))).map_err(LaunchError::Config)?;
        namespaces_created(&mut a, s1, maps, on_exit, &mut pid)?;
        phases.mark("namespaces created");
        let pty_master = set_up(&mut b)?;
        phases.mark("container set up (rootfs, mounts)");
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

/// Answers stage 1 of container-init `s1` on socket A until it reports the
/// container process's pid (set in `pid` as soon as it is known, so that a
/// failure after it kills the process too; it gets `on_exit`); writes the
/// id maps if it asks for them.
fn namespaces_created(
    a: &mut UnixStream,
    s1: i32,
    maps: Option<(&[IdMap], &[IdMap])>,
    on_exit: reaper::ExitFn,
    pid: &mut Option<i32>,
) -> Result<(), LaunchError> {
    loop {
        match read_sync(a, "creating namespaces")? {
            Sync::NeedIdMap => {
                let (u, g) = maps.ok_or(LaunchError::NoIdMaps)?;
                write_id_map(s1, "linux.uidMappings", "uid_map", u)?;
                write_id_map(s1, "linux.gidMappings", "gid_map", g)?;
                write_frame(a, &Sync::IdMapDone).map_err(LaunchError::Reply)?;
            }
            Sync::Pid(p) if p > 0 => {
                // Its parent (stage 1) waits for our ack, so `p` cannot
                // have been re-parented and reaped yet.
                reaper::register(p, on_exit);
                *pid = Some(p);
                return write_frame(a, &Sync::PidAck).map_err(LaunchError::Reply);
            }
            Sync::Error(e) => return Err(LaunchError::Init(e)),
            other => return Err(unexpected(&other)),
        }
    }
}

fn write_id_map(
    pid: i32,
    field: &'static str,
    file: &'static str,
    maps: &[IdMap],
) -> Result<(), LaunchError> {
    std::fs::write(format!("/proc/{pid}/{file}"), map_text(maps)).map_err(|source| {
        LaunchError::IdMap {
            field,
            file,
            source,
        }
    })
}

/// Waits on socket B until stage 2 is ready to exec; returns the pty
/// master if it sent one.
fn set_up(b: &mut UnixStream) -> Result<Option<OwnedFd>, LaunchError> {
    let mut pty_master = None;
    loop {
        match read_sync(b, "setting up the container")? {
            Sync::Ready => return Ok(pty_master),
            Sync::PtyMaster => {
                pty_master = Some(recv_fd(b).map_err(LaunchError::PtyMaster)?);
            }
            Sync::Error(e) => return Err(LaunchError::Init(e)),
            other => return Err(unexpected(&other)),
        }
    }
}

impl Pending {
    /// Lets the process exec; returns once it has (or why it could not).
    pub fn start(mut self) -> Result<(), LaunchError> {
        write_frame(&mut self.sync, &Sync::Start).map_err(LaunchError::Start)?;
        match read_frame::<_, Sync>(&mut self.sync) {
            Err(FrameError::Closed) => Ok(()),
            Ok(Sync::Error(e)) => Err(LaunchError::Init(e)),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => {
                kill(self.pid);
                Err(LaunchError::Start(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// `start` answers only once the process has exec'd, not when Start
    /// is sent: container-init's sync socket is close-on-exec, so its EOF
    /// is the exec. Here a shell stands for container-init: it reads
    /// Start, takes 300 ms, then execs `sleep` with the socket closed.
    #[test]
    fn start_returns_once_the_process_has_execd() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let fd = theirs.as_raw_fd();
        // It reads the Start frame (4-byte length, JSON) as stage 2 does.
        let frame = 4 + serde_json::to_vec(&Sync::Start).unwrap().len();
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            &format!("head -c {frame} <&3 >/dev/null; sleep 0.3; exec sleep 5 3>&-"),
        ]);
        let onto_3 = move || {
            // SAFETY: dup2 of a descriptor open in the child onto fd 3
            // (not close-on-exec); async-signal-safe.
            if unsafe { libc::dup2(fd, 3) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: the closure only calls dup2 and does not allocate.
        unsafe { cmd.pre_exec(onto_3) };
        let mut child = cmd.spawn().unwrap();
        drop(theirs);
        let pid = i32::try_from(child.id()).unwrap();
        let t0 = Instant::now();
        let pending = Pending {
            pid,
            sync: ours,
            pty_master: None,
        };
        pending.start().unwrap();
        let waited = t0.elapsed();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert_eq!(comm.trim(), "sleep", "start returned before the exec");
    }
}
