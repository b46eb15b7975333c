//! The Task service's work: each request mapped onto the runtime library
//! (`husk_runtime::container`), the processes' helpers started and
//! waited for, events published. `rpc.rs` is the ttrpc face of it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim::api;
use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::ExitSignal;
use husk_protocol::Event as AgentEvent;
use husk_runtime::container::{self, CreateRequest, ExecRequest};
use husk_runtime::error::IoContext;
use husk_runtime::spawn;
use husk_runtime::state::Store;

use crate::convert::{self, timestamp};
use crate::error::{Result, ShimError};
use crate::helper::HelperArgs;
use crate::mount::{mount_rootfs, unmount_rootfs};
use crate::process::{wait_child, Exit, Proc};
use crate::stdio::{self, IoPaths, Prepared};

/// How long delete waits for a created (never started) container's
/// monitor to go once it was told to.
const DELETE_WAIT: Duration = Duration::from_secs(30);

pub struct Shared {
    ns: String,
    store: Store,
    publisher: RemotePublisher,
    debug: bool,
    /// The container's id and bundle, once created.
    init: Mutex<Option<(String, PathBuf, Arc<Proc>)>>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
    /// Held while a start is published, so that a fast process's exit
    /// event never comes before its start event.
    order: Mutex<()>,
}

#[derive(Clone)]
pub struct TaskService {
    pub(crate) s: Arc<Shared>,
    pub(crate) exit: Arc<ExitSignal>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn task_io(io: &IoPaths) -> MessageField<TaskIO> {
    MessageField::some(TaskIO {
        stdin: io.stdin.clone(),
        stdout: io.stdout.clone(),
        stderr: io.stderr.clone(),
        terminal: io.terminal,
        ..Default::default()
    })
}

impl TaskService {
    pub fn new(
        ns: String,
        store: Store,
        publisher: RemotePublisher,
        exit: Arc<ExitSignal>,
        debug: bool,
    ) -> TaskService {
        TaskService {
            s: Arc::new(Shared {
                ns,
                store,
                publisher,
                debug,
                init: Mutex::new(None),
                execs: Mutex::new(HashMap::new()),
                order: Mutex::new(()),
            }),
            exit,
        }
    }

    fn publish(&self, topic: &str, ev: impl Event + 'static) {
        self.s.publish(topic, ev);
    }

    /// The container's id, checked against the request's.
    fn init(&self, id: &str) -> Result<(String, PathBuf, Arc<Proc>)> {
        match &*lock(&self.s.init) {
            Some((cid, b, p)) if cid == id => Ok((cid.clone(), b.clone(), p.clone())),
            _ => Err(ShimError::NotFound(format!("container {id}"))),
        }
    }

    /// The process `exec_id` of container `id` (its init for "").
    pub fn proc(&self, id: &str, exec_id: &str) -> Result<Arc<Proc>> {
        let (_, _, init) = self.init(id)?;
        if exec_id.is_empty() {
            return Ok(init);
        }
        lock(&self.s.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(format!("exec {exec_id} in container {id}")))
    }

    fn helper(&self, h: HelperArgs, p: &mut Option<Prepared>) -> husk_runtime::Result<Command> {
        let exe = std::env::current_exe().at(Path::new("/proc/self/exe"))?;
        let mut cmd = Command::new(exe);
        cmd.args(h.to_args());
        if let Some(p) = p.as_mut() {
            cmd.stdin(std::mem::replace(&mut p.stdin, std::process::Stdio::null()))
                .stdout(std::mem::replace(
                    &mut p.stdout,
                    std::process::Stdio::null(),
                ))
                .stderr(std::mem::replace(
                    &mut p.stderr,
                    std::process::Stdio::null(),
                ));
        }
        Ok(cmd)
    }

    pub fn create(&self, req: &api::CreateTaskRequest) -> Result<u32> {
        let (bundle, io) = convert::create_request(req)?;
        if lock(&self.s.init).is_some() {
            return Err(ShimError::Exists(format!("container {}", req.id)));
        }
        mount_rootfs(&bundle, &req.rootfs)?;
        let r = self.create_mounted(req, &bundle, io.clone());
        let pid = match r {
            Ok(pid) => pid,
            Err(e) => {
                unmount_rootfs(&bundle);
                return Err(e);
            }
        };
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: task_io(&io),
                pid,
                ..Default::default()
            },
        );
        Ok(pid)
    }

    fn create_mounted(
        &self,
        req: &api::CreateTaskRequest,
        bundle: &Path,
        io: IoPaths,
    ) -> Result<u32> {
        let mut prepared = Some(stdio::prepare(&io, &self.s.store.root)?);
        let console_socket = prepared.as_ref().and_then(|p| p.console_socket.clone());
        let creq = CreateRequest {
            id: req.id.clone(),
            bundle: bundle.to_path_buf(),
            console_socket: console_socket.clone(),
            pid_file: None,
            preserve_fds: 0,
        };
        let r = container::create(&self.s.store, &creq, false, |m| {
            let h = HelperArgs {
                root: self.s.store.root.clone(),
                id: m.id.clone(),
                console_socket: m.console_socket.clone(),
                start: m.start,
                debug: self.s.debug,
                ..Default::default()
            };
            let cmd = self.helper(h, &mut prepared)?;
            Ok(spawn::spawn_ready(cmd, "monitor", m.limit, m.terminal)?)
        });
        let pid = match r {
            Ok(pid) => pid,
            Err(e) => {
                if let Some(p) = prepared {
                    p.abandon();
                }
                return Err(e.into());
            }
        };
        let proc = Arc::new(Proc::new(None, io.clone(), None));
        let relay = match prepared.map(|p| p.attach(&io)).transpose() {
            Ok(r) => r,
            Err(e) => {
                // SAFETY: kill(2) on our own child, which we wait for below.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                wait_child(pid);
                let _ = container::delete(&self.s.store, &req.id, true);
                return Err(e);
            }
        };
        if let Some(r) = relay {
            proc.started(pid, r);
        }
        *lock(&self.s.init) = Some((req.id.clone(), bundle.to_path_buf(), proc.clone()));
        self.watch(req.id.clone(), proc, pid);
        Ok(u32::try_from(pid).unwrap_or(0))
    }

    /// Starts the thread that waits for helper `pid` of `proc` and
    /// publishes its exit.
    fn watch(&self, id: String, proc: Arc<Proc>, pid: i32) {
        let s = self.s.clone();
        let _ = std::thread::Builder::new()
            .name(format!("wait-{pid}"))
            .spawn(move || {
                let status = wait_child(pid);
                let _order = lock(&s.order);
                let e = proc.set_exit(status);
                s.publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    TaskExit {
                        container_id: id.clone(),
                        id: proc.exec_id.clone().unwrap_or(id),
                        pid: u32::try_from(pid).unwrap_or(0),
                        exit_status: e.status,
                        exited_at: MessageField::some(timestamp(e.at)),
                        ..Default::default()
                    },
                );
            });
    }

    /// Relays the agent's OOM events for the container as TaskOOM.
    fn watch_oom(&self, id: &str) {
        let Ok(st) = self.s.store.load(id) else {
            return;
        };
        let Ok(mut events) = container::events(&self.s.store, &st) else {
            return;
        };
        let (s, id, guest) = (self.s.clone(), id.to_string(), st.guest_id.clone());
        let _ = std::thread::Builder::new()
            .name("oom".into())
            .spawn(move || {
                // Ends when the VM (and with it the connection) goes.
                while let Ok(ev) = events.next_event() {
                    if let AgentEvent::Oom { id: gid, .. } = ev {
                        if gid == guest {
                            s.publish(
                                topics::TASK_OOM_EVENT_TOPIC,
                                TaskOOM {
                                    container_id: id.clone(),
                                    ..Default::default()
                                },
                            );
                        }
                    }
                }
            });
    }

    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        let p = self.proc(id, exec_id)?;
        if !exec_id.is_empty() {
            return self.start_exec(id, exec_id, &p);
        }
        let _order = lock(&self.s.order);
        container::start(&self.s.store, id)?;
        let pid = p.pid_u32();
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            TaskStart {
                container_id: id.to_string(),
                pid,
                ..Default::default()
            },
        );
        drop(_order);
        self.watch_oom(id);
        Ok(pid)
    }

    fn start_exec(&self, id: &str, exec_id: &str, p: &Arc<Proc>) -> Result<u32> {
        let process = p
            .take_spec()
            .ok_or_else(|| ShimError::Precondition(format!("exec {exec_id}: already started")))?;
        let st = container::exec_state(&self.s.store, id, false)?;
        let mut prepared = Some(stdio::prepare(&p.io, &self.s.store.root)?);
        let console_socket = prepared.as_ref().and_then(|x| x.console_socket.clone());
        let mut pid = 0;
        let _order = lock(&self.s.order);
        let req = ExecRequest {
            process,
            console_socket,
            pid_file: None,
            detach: true,
        };
        let r = container::exec(&self.s.store, &st, req, |m| {
            let h = HelperArgs {
                exec: true,
                root: self.s.store.root.clone(),
                id: m.id.clone(),
                exec_id: Some(m.exec_id.clone()),
                process: Some(m.process_file.clone()),
                console_socket: m.console_socket.clone(),
                debug: self.s.debug,
                ..Default::default()
            };
            let cmd = self.helper(h, &mut prepared)?;
            pid = spawn::spawn_ready(cmd, "exec monitor", m.limit, m.terminal)?;
            Ok(pid)
        });
        if let Err(e) = r {
            if let Some(x) = prepared {
                x.abandon();
            }
            return Err(e.into());
        }
        match prepared.map(|x| x.attach(&p.io)).transpose() {
            Ok(Some(relay)) => p.started(pid, relay),
            Ok(None) => {}
            Err(e) => {
                // SAFETY: kill(2) on our own child; the waiter reaps it.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                self.watch(id.to_string(), p.clone(), pid);
                return Err(e);
            }
        }
        let pid_u = u32::try_from(pid).unwrap_or(0);
        self.publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            TaskExecStarted {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                pid: pid_u,
                ..Default::default()
            },
        );
        self.watch(id.to_string(), p.clone(), pid);
        Ok(pid_u)
    }

    pub fn exec(&self, req: &api::ExecProcessRequest) -> Result<()> {
        self.init(&req.id)?;
        let (process, io) = convert::exec_request(req)?;
        let mut execs = lock(&self.s.execs);
        if execs.contains_key(&req.exec_id) {
            return Err(ShimError::Exists(format!("exec {}", req.exec_id)));
        }
        let p = Proc::new(Some(req.exec_id.clone()), io, Some(process));
        execs.insert(req.exec_id.clone(), Arc::new(p));
        drop(execs);
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            },
        );
        Ok(())
    }

    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let sig = convert::signal(signal)?;
        let p = self.proc(id, exec_id)?;
        if p.exit().is_some() {
            return Err(ShimError::NotFound(format!(
                "process {}: already finished",
                p.exec_id.as_deref().unwrap_or(id)
            )));
        }
        if exec_id.is_empty() {
            return Ok(container::kill(&self.s.store, id, sig, all)?);
        }
        let pid = p.pid();
        if pid <= 0 {
            return Err(ShimError::Precondition(format!(
                "exec {exec_id}: not started"
            )));
        }
        // The exec monitor forwards the signal to the process in the guest.
        // SAFETY: kill(2) on our own child, not yet reaped (no exit seen).
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(ShimError::io(format!("kill exec {exec_id}"))(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Deletes a process: the init (the container, its VM, state and
    /// rootfs mount) once it exited or if it never started; an exec once
    /// it exited or if it never started.
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<(u32, Exit)> {
        let p = self.proc(id, exec_id)?;
        if !exec_id.is_empty() {
            if p.has_started() && p.exit().is_none() {
                return Err(ShimError::Precondition(format!(
                    "exec {exec_id}: still running"
                )));
            }
            lock(&self.s.execs).remove(exec_id);
            p.with_relay(|r| r.close());
            let e = p.exit().unwrap_or(Exit {
                status: 0,
                at: std::time::SystemTime::now(),
            });
            return Ok((p.pid_u32(), e));
        }
        let (_, bundle, _) = self.init(id)?;
        let status = self
            .s
            .store
            .load(id)
            .map(|st| container::live_status(&self.s.store, &st));
        let created = matches!(
            status,
            Ok(husk_runtime::state::Status::Created | husk_runtime::state::Status::Creating)
        );
        if p.exit().is_none() && !created {
            return Err(ShimError::Precondition(format!(
                "container {id}: still running (kill it first)"
            )));
        }
        container::delete(&self.s.store, id, created)?;
        let e = match p.exit() {
            Some(e) => e,
            None => self.wait_within(&p, DELETE_WAIT)?,
        };
        unmount_rootfs(&bundle);
        p.with_relay(|r| r.close());
        for (_, x) in lock(&self.s.execs).drain() {
            x.with_relay(|r| r.close());
        }
        *lock(&self.s.init) = None;
        let pid = p.pid_u32();
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            TaskDelete {
                container_id: id.to_string(),
                pid,
                exit_status: e.status,
                exited_at: MessageField::some(timestamp(e.at)),
                id: id.to_string(),
                ..Default::default()
            },
        );
        Ok((pid, e))
    }

    fn wait_within(&self, p: &Proc, limit: Duration) -> Result<Exit> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(e) = p.exit() {
                return Ok(e);
            }
            if std::time::Instant::now() >= deadline {
                return Err(ShimError::Precondition(format!(
                    "the container's monitor did not exit within {} s",
                    limit.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pause(&self, id: &str, pause: bool) -> Result<()> {
        self.init(id)?;
        container::pause(&self.s.store, id, pause)?;
        let cid = id.to_string();
        if pause {
            self.publish(
                topics::TASK_PAUSED_EVENT_TOPIC,
                TaskPaused {
                    container_id: cid,
                    ..Default::default()
                },
            );
        } else {
            self.publish(
                topics::TASK_RESUMED_EVENT_TOPIC,
                TaskResumed {
                    container_id: cid,
                    ..Default::default()
                },
            );
        }
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.s.store
    }

    /// Whether the shim has nothing left to serve.
    pub fn idle(&self) -> bool {
        lock(&self.s.init).is_none()
    }

    pub fn namespace(&self) -> &str {
        &self.s.ns
    }

    pub fn execs(&self) -> Vec<Arc<Proc>> {
        lock(&self.s.execs).values().cloned().collect()
    }
}

impl Shared {
    fn publish(&self, topic: &str, ev: impl Event + 'static) {
        let ctx = containerd_shim::protos::ttrpc::context::Context::default();
        if let Err(e) = self.publisher.publish(ctx, topic, &self.ns, Box::new(ev)) {
            containerd_shim::warn!("publish {topic}: {e}");
        }
    }
}
