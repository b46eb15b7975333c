//! One process of a container as the runtime tracks it: its streams, its
//! pid, and its exit, reported (to `Wait` and as an `Exit` event) only
//! after its output was delivered.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use husk_protocol::{Event, ExitInfo};

use super::events::Events;
use super::lock;
use super::oom::{self, OomSeen};
use super::stdio::Stdio;
use crate::container::cgroup::Cgroup;
use crate::container::{Exit, ExitHook, Process};
use crate::log::info;

/// A process of a container: its streams and its reported exit.
pub struct Proc {
    pub exec_id: Option<String>,
    pub pid: AtomicI32,
    pub stdio: Stdio,
    /// Set after the exit *and* the output were delivered.
    reported: Mutex<Option<ExitInfo>>,
    cv: Condvar,
    /// An exec's process (the init's lives in the Container).
    pub exec: Mutex<Option<Arc<Process>>>,
    /// Creation failed: the exit is nobody's business.
    pub abandoned: AtomicBool,
}

impl Proc {
    pub fn new(exec_id: Option<String>, stdio: Stdio) -> Proc {
        Proc {
            exec_id,
            pid: AtomicI32::new(0),
            stdio,
            reported: Mutex::new(None),
            cv: Condvar::new(),
            exec: Mutex::new(None),
            abandoned: AtomicBool::new(false),
        }
    }

    /// The reported exit, if it was.
    pub fn reported(&self) -> Option<ExitInfo> {
        *lock(&self.reported)
    }

    /// Waits until the exit is reported.
    pub fn wait_reported(&self) -> ExitInfo {
        let mut g = lock(&self.reported);
        loop {
            if let Some(e) = *g {
                return e;
            }
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn report(&self, e: ExitInfo) {
        *lock(&self.reported) = Some(e);
        self.cv.notify_all();
    }
}

/// The protocol's form of an exit; a SIGKILL in a container that saw an
/// OOM kill counts as OOM-killed.
pub fn exit_info(e: Exit, oom: bool) -> ExitInfo {
    let mut i = match e {
        Exit::Code(c) => ExitInfo::exited(c),
        Exit::Signal(s) => ExitInfo::killed(s),
    };
    i.oom_killed = oom && e == Exit::Signal(libc::SIGKILL);
    i
}

/// What the exit report of one process needs.
pub struct ExitReport {
    pub events: Arc<Events>,
    /// The container's id.
    pub id: String,
    pub proc_: Arc<Proc>,
    pub cgroup: Cgroup,
    pub oom_seen: Arc<OomSeen>,
    /// Set when the container is removed (its unread output is gone).
    pub removed: Arc<AtomicBool>,
}

impl ExitReport {
    /// The exit hook: on the reaper thread, hands off to a reporter thread
    /// that waits for the output before reporting.
    pub fn hook(self) -> ExitHook {
        Box::new(move |e: Exit| {
            let spawned = std::thread::Builder::new()
                .name("exit".into())
                .stack_size(128 * 1024)
                .spawn(move || self.report(e));
            if let Err(e) = spawned {
                info!("cannot start an exit reporter thread: {e}");
            }
        })
    }

    fn report(self, e: Exit) {
        let t0 = Instant::now();
        let p = &self.proc_;
        let gone = || self.removed.load(Ordering::SeqCst) || p.abandoned.load(Ordering::SeqCst);
        while !gone() && !p.stdio.outputs().iter().all(|o| o.drained(t0.elapsed())) {
            std::thread::sleep(Duration::from_millis(5));
        }
        oom::check(&self.events, &self.id, &self.cgroup, &self.oom_seen);
        let info = exit_info(e, self.oom_seen.any());
        p.report(info);
        if p.abandoned.load(Ordering::SeqCst) {
            return;
        }
        self.events.emit(Event::Exit {
            id: self.id,
            exec_id: p.exec_id.clone(),
            exit: info,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::oom::tests::fake_cgroup;

    fn report(name: &str, p: &Arc<Proc>, ev: &Arc<Events>) -> (ExitReport, Cgroup) {
        let cg = fake_cgroup(name);
        let r = ExitReport {
            events: Arc::clone(ev),
            id: "c".into(),
            proc_: Arc::clone(p),
            cgroup: cg.clone(),
            oom_seen: Arc::default(),
            removed: Arc::default(),
        };
        (r, cg)
    }

    #[test]
    fn exit_infos() {
        assert_eq!(exit_info(Exit::Code(3), true), ExitInfo::exited(3));
        assert!(!exit_info(Exit::Signal(libc::SIGTERM), true).oom_killed);
        assert!(!exit_info(Exit::Signal(libc::SIGKILL), false).oom_killed);
        assert!(exit_info(Exit::Signal(libc::SIGKILL), true).oom_killed);
    }

    #[test]
    fn exit_is_reported_to_waiters_and_subscribers() {
        let ev = Arc::new(Events::default());
        let rx = ev.subscribe();
        let p = Arc::new(Proc::new(Some("e1".into()), Stdio::default()));
        let (r, cg) = report("exit", &p, &ev);
        std::fs::write(cg.dir.join("memory.events"), "oom_kill 1\n").unwrap();
        let waiter = {
            let p = Arc::clone(&p);
            std::thread::spawn(move || p.wait_reported())
        };
        assert_eq!(p.reported(), None);
        r.hook()(Exit::Signal(libc::SIGKILL));
        let got = waiter.join().unwrap();
        assert!(got.oom_killed);
        assert_eq!(p.reported(), Some(got));
        let evs: Vec<Event> = rx.iter().take(2).collect();
        assert_eq!(
            evs,
            [
                Event::Oom {
                    id: "c".into(),
                    oom_kills: 1
                },
                Event::Exit {
                    id: "c".into(),
                    exec_id: Some("e1".into()),
                    exit: got
                }
            ]
        );
        std::fs::remove_dir_all(&cg.dir).unwrap();
    }

    #[test]
    fn an_abandoned_process_is_reported_without_an_event() {
        let ev = Arc::new(Events::default());
        let rx = ev.subscribe();
        let p = Arc::new(Proc::new(None, Stdio::default()));
        p.abandoned.store(true, Ordering::SeqCst);
        let (r, cg) = report("abandoned", &p, &ev);
        r.hook()(Exit::Code(1));
        assert_eq!(p.wait_reported(), ExitInfo::exited(1));
        std::thread::sleep(Duration::from_millis(20));
        assert!(rx.try_recv().is_err());
        std::fs::remove_dir_all(&cg.dir).unwrap();
    }
}
