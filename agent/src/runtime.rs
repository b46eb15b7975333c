//! The agent's container registry behind the protocol: create/start/exec,
//! stdio relays, exit reporting after output, events, stats.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use husk_protocol::container::{
    ContainerState, ContainerStats, ContainerStatus, CpuStats, ExecState, IoDeviceStats,
    MemoryStats, PidsStats,
};
use husk_protocol::{
    oci, ErrorCode, ErrorInfo, Event, ExitInfo, RootfsSource, StdioConfig, StdioStream,
};

use crate::container::cgroup::{parse_keyed, Cgroup};
use crate::container::launch::StdioFds;
use crate::container::{cgroup, nsinit, rootfs, spec, Container, Exit, Process};
use crate::log::{debug, info};
use crate::server::Conn;

/// After a process exits, an output stream that is empty but still has a
/// writer (a daemonized child) no longer holds back the exit report after this.
const GRACE: Duration = Duration::from_millis(1000);
/// Queued events per subscriber before it is dropped as too slow.
const EVENT_QUEUE: usize = 1024;
/// Where the agent mounts block-device and virtio-fs root file systems.
const RUN_DIR: &str = "/run/husk/containers";

type Res<T> = Result<T, ErrorInfo>;

fn err(code: ErrorCode, msg: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new(code, msg)
}
fn bad(msg: impl Into<String>) -> ErrorInfo {
    err(ErrorCode::BadRequest, msg)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One output stream (stdout, stderr, or the pty master).
#[derive(Default)]
struct Output {
    /// Our read end; unset when the stream is not piped.
    fd: OnceLock<Arc<File>>,
    attached: AtomicBool,
    done: AtomicBool,
    in_read: AtomicBool,
}

fn poll_state(fd: RawFd) -> (bool, usize) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) };
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes an int to a valid pointer.
    unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    (p.revents & libc::POLLHUP != 0, n.max(0) as usize)
}

impl Output {
    /// Whether the exit may be reported as far as this stream is concerned.
    fn drained(&self, since_exit: Duration) -> bool {
        let Some(f) = self.fd.get() else { return true };
        if self.done.load(Ordering::SeqCst) {
            return true;
        }
        let (hup, avail) = poll_state(f.as_raw_fd());
        if self.attached.load(Ordering::SeqCst) {
            self.in_read.load(Ordering::SeqCst) && avail == 0 && since_exit > GRACE
        } else {
            avail == 0 && (hup || since_exit > GRACE)
        }
    }
}

/// The standard streams of one process, agent side.
#[derive(Default)]
struct Stdio {
    stdin: Mutex<Option<File>>,
    stdin_conn: Mutex<Option<Box<dyn Conn>>>,
    stdin_attached: AtomicBool,
    stdout: Output,
    stderr: Output,
    pty: Output,
}

/// A process of a container: its streams and its reported exit.
pub struct Proc {
    exec_id: Option<String>,
    pid: AtomicI32,
    stdio: Stdio,
    /// Set after the exit *and* the output were delivered.
    reported: Mutex<Option<ExitInfo>>,
    cv: Condvar,
    /// An exec's process (the init's lives in the Container).
    exec: Mutex<Option<Arc<Process>>>,
    /// Creation failed: the exit is nobody's business.
    abandoned: AtomicBool,
}

impl Proc {
    fn wait_reported(&self) -> ExitInfo {
        let mut g = lock(&self.reported);
        loop {
            if let Some(e) = *g {
                return e;
            }
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

struct Entry {
    c: Container,
    init: Arc<Proc>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
    paused: AtomicBool,
    removed: Arc<AtomicBool>,
    oom_seen: Arc<Mutex<u64>>,
}

#[derive(Default)]
pub struct Runtime {
    containers: Mutex<HashMap<String, Arc<Entry>>>,
    creating: Mutex<HashSet<String>>,
    subscribers: Mutex<Vec<SyncSender<Event>>>,
    env: OnceLock<spec::Env>,
    /// Serializes mounting virtio-fs shares.
    share_lock: Mutex<()>,
}

static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();

/// The agent's runtime (created on first use: nothing at boot).
pub fn get() -> &'static Arc<Runtime> {
    RUNTIME.get_or_init(|| Arc::new(Runtime::default()))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn devnull(write: bool) -> io::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")?
        .into())
}

fn dup(fd: RawFd) -> io::Result<File> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor the caller keeps open.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `n` is a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(n) })
}

/// Pipes for the piped streams; returns the process's ends and ours.
fn make_stdio(cfg: StdioConfig, terminal: bool) -> io::Result<(StdioFds, Stdio)> {
    let mut st = Stdio::default();
    let cfg = if terminal {
        StdioConfig::default()
    } else {
        cfg
    };
    let stdin = if cfg.stdin {
        let (r, w) = pipe()?;
        *lock(&st.stdin) = Some(File::from(w));
        r
    } else {
        devnull(false)?
    };
    let out = |on: bool, o: &mut Output| -> io::Result<OwnedFd> {
        if on {
            let (r, w) = pipe()?;
            let _ = o.fd.set(Arc::new(File::from(r)));
            Ok(w)
        } else {
            devnull(true)
        }
    };
    let stdout = out(cfg.stdout, &mut st.stdout)?;
    let stderr = out(cfg.stderr, &mut st.stderr)?;
    Ok((StdioFds::Fds([stdin, stdout, stderr]), st))
}

fn exit_info(e: Exit, oom: bool) -> ExitInfo {
    let mut i = match e {
        Exit::Code(c) => ExitInfo::exited(c),
        Exit::Signal(s) => ExitInfo::killed(s),
    };
    i.oom_killed = oom && e == Exit::Signal(libc::SIGKILL);
    i
}

impl Runtime {
    fn env(&self) -> &spec::Env {
        self.env.get_or_init(|| spec::Env::from_system(None))
    }

    fn emit(&self, e: Event) {
        debug!("event {e:?}");
        lock(&self.subscribers).retain(|s| match s.try_send(e.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                info!("dropping an events subscriber: {EVENT_QUEUE} events unread");
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    fn entry(&self, id: &str) -> Res<Arc<Entry>> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| err(ErrorCode::NotFound, format!("no container {id:?}")))
    }

    fn proc_of(&self, e: &Entry, exec_id: Option<&str>) -> Res<Arc<Proc>> {
        match exec_id {
            None => Ok(Arc::clone(&e.init)),
            Some(x) => lock(&e.execs).get(x).cloned().ok_or_else(|| {
                err(
                    ErrorCode::NotFound,
                    format!("container {:?} has no exec {x:?}", e.c.id),
                )
            }),
        }
    }

    /// Reports an OOM kill once per increase of memory.events oom_kill.
    fn check_oom(self: &Arc<Self>, id: &str, cg: &Cgroup, seen: &Mutex<u64>) {
        let n = cg.keyed("memory.events", "oom_kill").unwrap_or(0);
        let mut s = lock(seen);
        if n > *s {
            *s = n;
            drop(s);
            self.emit(Event::Oom {
                id: id.to_string(),
                oom_kills: n,
            });
        }
    }

    /// The exit hook: on the reaper thread, hand off to a reporter thread
    /// that waits for the output before reporting.
    fn exit_hook(
        self: &Arc<Self>,
        id: String,
        proc_: Arc<Proc>,
        cg: Cgroup,
        seen: Arc<Mutex<u64>>,
        removed: Arc<AtomicBool>,
    ) -> crate::container::ExitHook {
        let rt = Arc::clone(self);
        Box::new(move |e: Exit| {
            let spawned = std::thread::Builder::new()
                .name("exit".into())
                .stack_size(128 * 1024)
                .spawn(move || {
                    let t0 = Instant::now();
                    let s = &proc_.stdio;
                    // (A removed container's unread output is gone.)
                    let gone =
                        || removed.load(Ordering::SeqCst) || proc_.abandoned.load(Ordering::SeqCst);
                    while !gone()
                        && ![&s.stdout, &s.stderr, &s.pty]
                            .iter()
                            .all(|o| o.drained(t0.elapsed()))
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    rt.check_oom(&id, &cg, &seen);
                    let info = exit_info(e, *lock(&seen) > 0);
                    *lock(&proc_.reported) = Some(info);
                    proc_.cv.notify_all();
                    if proc_.abandoned.load(Ordering::SeqCst) {
                        return;
                    }
                    rt.emit(Event::Exit {
                        id,
                        exec_id: proc_.exec_id.clone(),
                        exit: info,
                    });
                });
            if let Err(e) = spawned {
                info!("cannot start an exit reporter thread: {e}");
            }
        })
    }

    /// Mounts the virtio-fs share `tag` at `at` unless it is mounted
    /// there already (shares outlive containers: a pod's containers and
    /// their bind mounts use the same one).
    fn mount_share(&self, tag: &str, at: &Path) -> Res<()> {
        let _guard = self.share_lock.lock().unwrap_or_else(|p| p.into_inner());
        let is_mount = |p: &Path| -> bool {
            use std::os::unix::fs::MetadataExt;
            match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
                (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
                _ => false,
            }
        };
        if is_mount(at) {
            return Ok(());
        }
        std::fs::create_dir_all(at)
            .map_err(|e| err(ErrorCode::Internal, format!("mkdir {}: {e}", at.display())))?;
        rootfs::mount(Some(tag), at, Some("virtiofs"), 0, Some(""))
            .map_err(|e| bad(format!("rootfs: mount virtio-fs share {tag:?}: {e}")))
    }

    /// Mounts the virtio-fs share `tag` from a thread of its own, so that
    /// the first create finds it mounted (`husk.share=TAG` at boot: the
    /// host names its share before it sends anything). A failure is only
    /// logged: the create that needs the share mounts it and reports why not.
    pub fn premount_share(self: &Arc<Self>, tag: String) {
        let rt = self.clone();
        let spawned = std::thread::Builder::new()
            .name("share".into())
            .spawn(move || {
                let t0 = std::time::Instant::now();
                match rt.mount_share(&tag, Path::new(&husk_protocol::container::share_path(&tag))) {
                    Ok(()) => debug!(
                        "virtio-fs share {tag} mounted at boot in {} ms",
                        t0.elapsed().as_millis()
                    ),
                    Err(e) => info!("virtio-fs share {tag}: {}", e.message),
                }
            });
        if let Err(e) = spawned {
            info!("virtio-fs share: cannot start a thread: {e}");
        }
    }

    fn mount_rootfs(&self, id: &str, src: &RootfsSource) -> Res<(PathBuf, Option<PathBuf>)> {
        let target = || -> Res<PathBuf> {
            let d = Path::new(RUN_DIR).join(id).join("rootfs");
            std::fs::create_dir_all(&d)
                .map_err(|e| err(ErrorCode::Internal, format!("mkdir {}: {e}", d.display())))?;
            Ok(d)
        };
        let do_mount = |source: &str,
                        fstype: &str,
                        flags: u64,
                        data: &str|
         -> Res<(PathBuf, Option<PathBuf>)> {
            let t = target()?;
            rootfs::mount(Some(source), &t, Some(fstype), flags, Some(data)).map_err(|e| {
                let _ = crate::container::rootfs_unmount(&t);
                bad(format!("rootfs: mount {source} ({fstype}): {e}"))
            })?;
            Ok((t.clone(), Some(t)))
        };
        match src {
            RootfsSource::Path { path } => {
                if !path.starts_with('/') {
                    return Err(bad(format!(
                        "rootfs.path: {path:?} must be an absolute path"
                    )));
                }
                match std::fs::metadata(path) {
                    Ok(m) if m.is_dir() => Ok((PathBuf::from(path), None)),
                    Ok(_) => Err(bad(format!("rootfs.path: {path} is not a directory"))),
                    Err(e) => Err(bad(format!("rootfs.path: {path}: {e}"))),
                }
            }
            RootfsSource::Block {
                device,
                fstype,
                readonly,
                options,
            } => {
                if !device.starts_with("/dev/") || device.contains("..") {
                    return Err(bad(format!("rootfs.device: {device:?} is not a /dev path")));
                }
                match std::fs::metadata(device) {
                    Ok(m) if m.file_type().is_block_device() => {}
                    Ok(_) => {
                        return Err(bad(format!(
                            "rootfs.device: {device} is not a block device"
                        )))
                    }
                    Err(e) => return Err(bad(format!("rootfs.device: {device}: {e}"))),
                }
                if !self.env().filesystems.contains(fstype) {
                    return Err(bad(format!(
                        "rootfs.fstype: unknown file system type {fstype:?}"
                    )));
                }
                if options.contains('\0') {
                    return Err(bad("rootfs.options: contains a NUL byte"));
                }
                let flags = if *readonly { libc::MS_RDONLY } else { 0 };
                do_mount(device, fstype, flags, options)
            }
            RootfsSource::VirtioFs { tag, subdir } => {
                if !husk_protocol::container::valid_share_tag(tag) {
                    return Err(bad("rootfs.tag: must be 1-36 printable bytes without '/'"));
                }
                let share = PathBuf::from(husk_protocol::container::share_path(tag));
                self.mount_share(tag, &share)?;
                let root = match subdir.as_deref() {
                    None | Some("") => share,
                    Some(d) => {
                        let rel = Path::new(d);
                        if rel.is_absolute()
                            || rel
                                .components()
                                .any(|c| !matches!(c, std::path::Component::Normal(_)))
                        {
                            return Err(bad(format!(
                                "rootfs.subdir: {d:?} must be a relative path without '..'"
                            )));
                        }
                        share.join(rel)
                    }
                };
                match std::fs::symlink_metadata(&root) {
                    Ok(m) if m.is_dir() => Ok((root, None)),
                    Ok(_) => Err(bad(format!(
                        "rootfs.subdir: {} is not a directory",
                        root.display()
                    ))),
                    Err(e) => Err(bad(format!("rootfs.subdir: {}: {e}", root.display()))),
                }
            }
        }
    }

    pub fn create(
        self: &Arc<Self>,
        id: &str,
        spec: &oci::Spec,
        src: &RootfsSource,
        stdio: StdioConfig,
    ) -> Res<(i32, Vec<String>)> {
        spec::check_id(id, "id").map_err(bad)?;
        {
            let cs = lock(&self.containers);
            let mut cr = lock(&self.creating);
            if cs.contains_key(id) || !cr.insert(id.to_string()) {
                return Err(err(
                    ErrorCode::AlreadyExists,
                    format!("container {id:?} exists"),
                ));
            }
        }
        let res = self.create_inner(id, spec, src, stdio);
        lock(&self.creating).remove(id);
        res
    }

    fn create_inner(
        self: &Arc<Self>,
        id: &str,
        spec: &oci::Spec,
        src: &RootfsSource,
        stdio: StdioConfig,
    ) -> Res<(i32, Vec<String>)> {
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let phases = crate::log::Phases::start(format!("container {id}: create"));
        // Validate first: a bad spec must not even mount the rootfs.
        spec::plan_create(id, spec, Path::new("/"), self.env()).map_err(bad)?;
        let (rootfs, mounted) = self.mount_rootfs(id, src)?;
        phases.mark("rootfs mounted");
        let cleanup = |m: &Option<PathBuf>| {
            if let Some(m) = m {
                if let Err(e) = crate::container::rootfs_unmount(m) {
                    info!("container {id}: {e}");
                }
            }
        };
        let (fds, st) = match make_stdio(stdio, terminal) {
            Ok(x) => x,
            Err(e) => {
                cleanup(&mounted);
                return Err(err(ErrorCode::Internal, format!("stdio pipes: {e}")));
            }
        };
        let proc_ = Arc::new(Proc {
            exec_id: None,
            pid: AtomicI32::new(0),
            stdio: st,
            reported: Mutex::new(None),
            cv: Condvar::new(),
            exec: Mutex::new(None),
            abandoned: AtomicBool::new(false),
        });
        let seen = Arc::new(Mutex::new(0));
        // The hook needs the cgroup, which exists only after create: give it
        // the planned path (validated by plan_create above).
        let rel = cgroup::rel_path(
            spec.linux()
                .as_ref()
                .and_then(|l| l.cgroups_path().as_deref()),
            id,
        )
        .map_err(bad)?;
        let cg = Cgroup {
            dir: Path::new(cgroup::ROOT).join(&rel),
            rel,
        };
        let removed = Arc::new(AtomicBool::new(false));
        let hook = self.exit_hook(
            id.to_string(),
            Arc::clone(&proc_),
            cg,
            Arc::clone(&seen),
            Arc::clone(&removed),
        );
        let c = match Container::create(id, spec, rootfs, self.env(), fds, Some(hook), &phases) {
            Ok(c) => c,
            Err(e) => {
                proc_.abandoned.store(true, Ordering::SeqCst);
                cleanup(&mounted);
                return Err(bad(e));
            }
        };
        let mut c = c;
        c.rootfs_mount = mounted;
        proc_.pid.store(c.init.pid, Ordering::SeqCst);
        if let Some(m) = lock(&c.init.pty_master).take() {
            set_pty(&proc_, File::from(m));
        }
        let warnings = c.warnings.clone();
        for w in &warnings {
            info!("container {id}: {w}");
        }
        let pid = c.init.pid;
        let entry = Arc::new(Entry {
            c,
            init: proc_,
            execs: Mutex::new(HashMap::new()),
            paused: AtomicBool::new(false),
            removed: Arc::clone(&removed),
            oom_seen: seen,
        });
        self.start_oom_watch(&entry);
        lock(&self.containers).insert(id.to_string(), entry);
        Ok((pid, warnings))
    }

    fn start_oom_watch(self: &Arc<Self>, e: &Arc<Entry>) {
        let rt = Arc::clone(self);
        let id = e.c.id.clone();
        let cg = e.c.cgroup.clone();
        let seen = Arc::clone(&e.oom_seen);
        let removed = Arc::clone(&e.removed);
        let _ = std::thread::Builder::new()
            .name("oom".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                // SAFETY: inotify_init1 with a flag; the result is checked.
                let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
                if fd < 0 {
                    return;
                }
                // SAFETY: `fd` is ours.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let Ok(path) = std::ffi::CString::new(
                    cg.dir.join("memory.events").as_os_str().as_encoded_bytes(),
                ) else {
                    return;
                };
                // SAFETY: valid descriptor and path.
                unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY) };
                let mut buf = [0u8; 4096];
                while !removed.load(Ordering::SeqCst) {
                    let mut p = libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    if unsafe { libc::poll(&mut p, 1, 1000) } > 0 {
                        // SAFETY: reads into a valid buffer of its length.
                        unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                        rt.check_oom(&id, &cg, &seen);
                    }
                }
            });
    }

    pub fn start(&self, id: &str) -> Res<()> {
        let e = self.entry(id)?;
        let phases = crate::log::Phases::start(format!("container {id}: start"));
        let r = e.c.init.start();
        phases.mark("init exec'd the process");
        r.map_err(|m| {
            if m == "already started" {
                err(
                    ErrorCode::InvalidState,
                    format!("container {id:?} was started already"),
                )
            } else {
                err(ErrorCode::Internal, m)
            }
        })
    }

    pub fn exec(
        self: &Arc<Self>,
        id: &str,
        exec_id: &str,
        p: &oci::Process,
        stdio: StdioConfig,
    ) -> Res<(i32, Vec<String>)> {
        spec::check_id(exec_id, "exec_id").map_err(bad)?;
        let e = self.entry(id)?;
        if e.c.init.exit.wait(Some(Duration::ZERO)).is_some() || !e.c.init.is_started() {
            return Err(err(
                ErrorCode::InvalidState,
                format!("container {id:?} is not running"),
            ));
        }
        if e.paused.load(Ordering::SeqCst) {
            return Err(err(
                ErrorCode::InvalidState,
                format!("container {id:?} is paused"),
            ));
        }
        {
            let mut x = lock(&e.execs);
            if x.contains_key(exec_id) {
                return Err(err(
                    ErrorCode::AlreadyExists,
                    format!("exec {exec_id:?} exists"),
                ));
            }
            // Reserve the id.
            x.insert(
                exec_id.to_string(),
                Arc::new(Proc {
                    exec_id: Some(exec_id.into()),
                    pid: AtomicI32::new(0),
                    stdio: Stdio::default(),
                    reported: Mutex::new(None),
                    cv: Condvar::new(),
                    exec: Mutex::new(None),
                    abandoned: AtomicBool::new(false),
                }),
            );
        }
        let res = self.exec_inner(&e, exec_id, p, stdio);
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

    fn exec_inner(
        self: &Arc<Self>,
        e: &Arc<Entry>,
        exec_id: &str,
        p: &oci::Process,
        stdio: StdioConfig,
    ) -> Res<(Arc<Proc>, Vec<String>)> {
        let mut warnings = Vec::new();
        let mut pc = spec::plan_process(p, "process", &mut warnings).map_err(bad)?;
        if pc.terminal && pc.console_size.is_none() {
            pc.console_size = Some((24, 80));
        }
        let cfg = spec::plan_exec(&e.c.init_cfg, e.c.init.pid, pc);
        let (fds, st) = make_stdio(stdio, cfg.process.terminal)
            .map_err(|er| err(ErrorCode::Internal, format!("stdio pipes: {er}")))?;
        let proc_ = Arc::new(Proc {
            exec_id: Some(exec_id.into()),
            pid: AtomicI32::new(0),
            stdio: st,
            reported: Mutex::new(None),
            cv: Condvar::new(),
            exec: Mutex::new(None),
            abandoned: AtomicBool::new(false),
        });
        let hook = self.exit_hook(
            e.c.id.clone(),
            Arc::clone(&proc_),
            e.c.cgroup.clone(),
            Arc::clone(&e.oom_seen),
            Arc::clone(&e.removed),
        );
        let phases = crate::log::Phases::start(format!("container {}: exec {exec_id}", e.c.id));
        let pr =
            Process::spawn(&cfg, fds, &e.c.cgroup, None, Some(hook), &phases).map_err(|m| {
                proc_.abandoned.store(true, Ordering::SeqCst);
                err(ErrorCode::Internal, m)
            })?;
        proc_.pid.store(pr.pid, Ordering::SeqCst);
        if let Some(m) = lock(&pr.pty_master).take() {
            set_pty(&proc_, File::from(m));
        }
        pr.start().map_err(|m| err(ErrorCode::Internal, m))?;
        *lock(&proc_.exec) = Some(Arc::new(pr));
        Ok((proc_, warnings))
    }

    pub fn signal(&self, id: &str, exec_id: Option<&str>, sig: i32, all: bool) -> Res<()> {
        if !(1..=64).contains(&sig) {
            return Err(bad(format!("signal: {sig} is not a signal number")));
        }
        let e = self.entry(id)?;
        if all {
            for pid in e.c.cgroup.pids() {
                // SAFETY: kill(2) with integer arguments.
                unsafe { libc::kill(pid, sig) };
            }
            return Ok(());
        }
        let p = self.proc_of(&e, exec_id)?;
        let res = match exec_id {
            None => e.c.init.signal(sig),
            Some(_) => match lock(&p.exec).as_ref() {
                Some(pr) => pr.signal(sig),
                None => Err("exec is not running".into()),
            },
        };
        res.map_err(|m| err(ErrorCode::InvalidState, m))
    }

    pub fn wait(&self, id: &str, exec_id: Option<&str>) -> Res<ExitInfo> {
        let e = self.entry(id)?;
        let p = self.proc_of(&e, exec_id)?;
        Ok(p.wait_reported())
    }

    pub fn resize(&self, id: &str, exec_id: Option<&str>, rows: u16, cols: u16) -> Res<()> {
        let e = self.entry(id)?;
        let p = self.proc_of(&e, exec_id)?;
        let Some(f) = p.stdio.pty.fd.get() else {
            return Err(err(ErrorCode::InvalidState, "the process has no terminal"));
        };
        nsinit::set_winsize(f.as_raw_fd(), rows, cols).map_err(|m| err(ErrorCode::Internal, m))
    }

    pub fn close_stdin(&self, id: &str, exec_id: Option<&str>) -> Res<()> {
        let e = self.entry(id)?;
        let p = self.proc_of(&e, exec_id)?;
        lock(&p.stdio.stdin).take();
        if let Some(c) = lock(&p.stdio.stdin_conn).take() {
            let _ = c.shutdown_read();
        }
        Ok(())
    }

    pub fn state(&self, id: &str) -> Res<ContainerState> {
        let e = self.entry(id)?;
        let exit = *lock(&e.init.reported);
        let status = if exit.is_some() || e.c.init.exit.wait(Some(Duration::ZERO)).is_some() {
            ContainerStatus::Stopped
        } else if e.paused.load(Ordering::SeqCst) {
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
                exit: *lock(&p.reported),
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
        let e = self.entry(id)?;
        Ok(read_stats(&e.c.cgroup))
    }

    pub fn pause(&self, id: &str, on: bool) -> Res<()> {
        let e = self.entry(id)?;
        if e.c.init.exit.wait(Some(Duration::ZERO)).is_some() {
            return Err(err(
                ErrorCode::InvalidState,
                format!("container {id:?} is stopped"),
            ));
        }
        e.c.cgroup
            .freeze(on)
            .map_err(|m| err(ErrorCode::Internal, m))?;
        e.paused.store(on, Ordering::SeqCst);
        Ok(())
    }

    pub fn update(&self, id: &str, r: &oci::LinuxResources) -> Res<()> {
        let e = self.entry(id)?;
        let mut w = Vec::new();
        let writes = cgroup::resource_writes(r, &mut w).map_err(bad)?;
        e.c.cgroup.apply(&writes).map_err(bad)
    }

    pub fn remove(&self, id: &str, force: bool) -> Res<()> {
        let e = self.entry(id)?;
        let running = e.c.init.exit.wait(Some(Duration::ZERO)).is_none() && e.c.init.is_started();
        if running && !force {
            return Err(err(
                ErrorCode::InvalidState,
                format!("container {id:?} is running (remove with force)"),
            ));
        }
        e.c.destroy().map_err(|m| err(ErrorCode::Internal, m))?;
        e.removed.store(true, Ordering::SeqCst);
        lock(&self.containers).remove(id);
        Ok(())
    }

    /// Validates an attach and claims the stream (so that `Ok` is only sent
    /// for a stream that this connection then owns).
    pub fn claim(&self, id: &str, exec_id: Option<&str>, stream: StdioStream) -> Res<StreamJob> {
        let e = self.entry(id)?;
        let p = self.proc_of(&e, exec_id)?;
        let taken = |o: &Output| -> Res<()> {
            if o.fd.get().is_none() {
                return Err(err(
                    ErrorCode::InvalidState,
                    format!("{stream:?} of the process is not piped"),
                ));
            }
            if o.attached.swap(true, Ordering::SeqCst) {
                return Err(err(
                    ErrorCode::InvalidState,
                    format!("{stream:?} is attached already"),
                ));
            }
            Ok(())
        };
        match stream {
            StdioStream::Stdout => taken(&p.stdio.stdout)?,
            StdioStream::Stderr => taken(&p.stdio.stderr)?,
            StdioStream::Pty => taken(&p.stdio.pty)?,
            StdioStream::Stdin => {
                if p.stdio.stdin_attached.swap(true, Ordering::SeqCst) {
                    return Err(err(ErrorCode::InvalidState, "stdin is attached already"));
                }
                if lock(&p.stdio.stdin).is_none() {
                    return Err(err(
                        ErrorCode::InvalidState,
                        "stdin of the process is not piped or closed",
                    ));
                }
            }
        }
        Ok(StreamJob::Stdio(p, stream))
    }

    pub fn subscribe(&self) -> StreamJob {
        let (tx, rx) = sync_channel(EVENT_QUEUE);
        lock(&self.subscribers).push(tx);
        StreamJob::Events(rx)
    }
}

fn set_pty(p: &Proc, f: File) {
    let _ = p.stdio.pty.fd.set(Arc::new(f));
}

fn read_stats(cg: &Cgroup) -> ContainerStats {
    let cpu = cg.read("cpu.stat").unwrap_or_default();
    let mem_stat = cg.read("memory.stat").unwrap_or_default();
    let num = |f: &str| cg.read(f).ok().and_then(|s| s.trim().parse::<u64>().ok());
    let io = cg
        .read("io.stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (maj, min) = it.next()?.split_once(':')?;
            let mut d = IoDeviceStats {
                major: maj.parse().ok()?,
                minor: min.parse().ok()?,
                ..Default::default()
            };
            for kv in it {
                let (k, v) = kv.split_once('=')?;
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => d.rbytes = v,
                    "wbytes" => d.wbytes = v,
                    "rios" => d.rios = v,
                    "wios" => d.wios = v,
                    _ => {}
                }
            }
            Some(d)
        })
        .collect();
    let k = |s: &str, key: &str| parse_keyed(s, key).unwrap_or(0);
    ContainerStats {
        cpu: CpuStats {
            usage_usec: k(&cpu, "usage_usec"),
            user_usec: k(&cpu, "user_usec"),
            system_usec: k(&cpu, "system_usec"),
            nr_periods: k(&cpu, "nr_periods"),
            nr_throttled: k(&cpu, "nr_throttled"),
            throttled_usec: k(&cpu, "throttled_usec"),
        },
        memory: MemoryStats {
            current: num("memory.current").unwrap_or(0),
            max: num("memory.max"),
            swap_current: num("memory.swap.current").unwrap_or(0),
            anon: k(&mem_stat, "anon"),
            file: k(&mem_stat, "file"),
            oom: cg.keyed("memory.events", "oom").unwrap_or(0),
            oom_kill: cg.keyed("memory.events", "oom_kill").unwrap_or(0),
        },
        pids: PidsStats {
            current: num("pids.current").unwrap_or(0),
            max: num("pids.max"),
        },
        io,
    }
}

/// What a connection turns into after an `AttachStdio` or `Events` reply.
pub enum StreamJob {
    Stdio(Arc<Proc>, StdioStream),
    Events(Receiver<Event>),
}

impl std::fmt::Debug for StreamJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamJob::Stdio(_, s) => write!(f, "Stdio({s:?})"),
            StreamJob::Events(_) => write!(f, "Events"),
        }
    }
}

impl PartialEq for StreamJob {
    fn eq(&self, _: &Self) -> bool {
        false
    }
}

/// Copies `from` to `conn` until EOF (or EIO: a pty whose slave is closed),
/// then closes the connection's write side.
fn relay_out(o: &Output, mut conn: Box<dyn Conn>) {
    let Some(f) = o.fd.get().cloned() else { return };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        o.in_read.store(true, Ordering::SeqCst);
        let n = (&*f).read(&mut buf);
        o.in_read.store(false, Ordering::SeqCst);
        match n {
            Ok(0) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = conn.shutdown_write();
    o.done.store(true, Ordering::SeqCst);
}

impl StreamJob {
    /// The reply that hands this stream to its connection could not be
    /// sent, so the job will never run: release the claim. Otherwise the
    /// stream would stay "attached" with no relay reading it, and the
    /// process's exit, which waits for attached output to be read, would
    /// never be reported (a `Wait` would hang).
    pub fn release(self) {
        if let StreamJob::Stdio(p, stream) = self {
            let flag = match stream {
                StdioStream::Stdout => &p.stdio.stdout.attached,
                StdioStream::Stderr => &p.stdio.stderr.attached,
                StdioStream::Pty => &p.stdio.pty.attached,
                StdioStream::Stdin => &p.stdio.stdin_attached,
            };
            flag.store(false, Ordering::SeqCst);
        }
    }

    /// Runs on the connection's thread until the stream ends.
    pub fn run(self, mut conn: Box<dyn Conn>, request_id: u64) {
        let _ = conn.set_write_timeout(None);
        let _ = conn.set_read_timeout(None);
        match self {
            StreamJob::Events(rx) => {
                for event in rx {
                    let f = husk_protocol::ResponseFrame::new(
                        request_id,
                        husk_protocol::Response::Event { event },
                    );
                    if husk_protocol::write_frame(&mut conn, &f).is_err() {
                        return;
                    }
                }
            }
            StreamJob::Stdio(p, StdioStream::Stdout) => relay_out(&p.stdio.stdout, conn),
            StreamJob::Stdio(p, StdioStream::Stderr) => relay_out(&p.stdio.stderr, conn),
            StreamJob::Stdio(p, StdioStream::Stdin) => {
                let Some(mut pipe) = lock(&p.stdio.stdin).take() else {
                    return;
                };
                if let Ok(c) = conn.try_clone_conn() {
                    *lock(&p.stdio.stdin_conn) = Some(c);
                }
                let _ = io::copy(&mut conn, &mut pipe);
                drop(pipe); // EOF for the process
                lock(&p.stdio.stdin_conn).take();
            }
            StreamJob::Stdio(p, StdioStream::Pty) => {
                let Some(master) = p.stdio.pty.fd.get().cloned() else {
                    return;
                };
                let (Ok(mut w), Ok(mut r)) = (dup(master.as_raw_fd()), conn.try_clone_conn())
                else {
                    return;
                };
                let _ = std::thread::Builder::new()
                    .name("pty-in".into())
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let _ = io::copy(&mut r, &mut w);
                    });
                relay_out(&p.stdio.pty, conn);
            }
        }
    }
}
