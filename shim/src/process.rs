//! The processes a shim serves: the container's init (its monitor) and
//! each exec (its exec monitor). Each helper is the shim's child; one
//! thread per helper waits for it (waitpid on its pid) and records its
//! exit status, which is the process's.

use std::sync::{Condvar, Mutex};
use std::time::SystemTime;

use husk_protocol::oci;

use crate::stdio::{IoPaths, Relay};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
}

/// Where a process is in its life.
#[derive(Default)]
struct Inner {
    /// The helper's pid once started (0 before).
    pid: i32,
    exit: Option<Exit>,
    relay: Option<Relay>,
    /// An exec's process, until it is started.
    spec: Option<oci::Process>,
}

pub struct Proc {
    /// `None` for the container's init.
    pub exec_id: Option<String>,
    pub io: IoPaths,
    inner: Mutex<Inner>,
    exited: Condvar,
}

/// The exit status of a helper from waitpid's status word: its exit code,
/// or 128 + the signal that killed it (as shells and containerd report).
pub fn exit_status(wstatus: i32) -> u32 {
    let code = if libc::WIFEXITED(wstatus) {
        libc::WEXITSTATUS(wstatus)
    } else if libc::WIFSIGNALED(wstatus) {
        128 + libc::WTERMSIG(wstatus)
    } else {
        255
    };
    u32::try_from(code).unwrap_or(255)
}

/// Waits for child `pid` to exit; its exit status.
pub fn wait_child(pid: i32) -> u32 {
    let mut st = 0;
    loop {
        // SAFETY: waitpid(2) on our own child, with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r == pid {
            return exit_status(st);
        }
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        // Not our child (any more): nothing to learn.
        return 255;
    }
}

impl Proc {
    pub fn new(exec_id: Option<String>, io: IoPaths, spec: Option<oci::Process>) -> Proc {
        Proc {
            exec_id,
            io,
            inner: Mutex::new(Inner {
                spec,
                ..Default::default()
            }),
            exited: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pid(&self) -> i32 {
        self.lock().pid
    }

    /// The pid as containerd's u32 (0 before start).
    pub fn pid_u32(&self) -> u32 {
        u32::try_from(self.pid()).unwrap_or(0)
    }

    pub fn started(&self, pid: i32, relay: Relay) {
        let mut g = self.lock();
        g.pid = pid;
        g.relay = Some(relay);
    }

    pub fn take_spec(&self) -> Option<oci::Process> {
        self.lock().spec.take()
    }

    pub fn has_started(&self) -> bool {
        let g = self.lock();
        g.pid > 0 || g.exit.is_some()
    }

    pub fn exit(&self) -> Option<Exit> {
        self.lock().exit
    }

    /// Records the exit (the first one counts) and wakes the waiters.
    pub fn set_exit(&self, status: u32) -> Exit {
        // Drain outside the lock: the last output may take a moment.
        let relay = self.lock().relay.take();
        if let Some(r) = &relay {
            r.drain();
        }
        let mut g = self.lock();
        if g.relay.is_none() {
            g.relay = relay;
        }
        let e = *g.exit.get_or_insert(Exit {
            status,
            at: SystemTime::now(),
        });
        self.exited.notify_all();
        e
    }

    /// Blocks until the process has exited.
    pub fn wait(&self) -> Exit {
        let mut g = self.lock();
        loop {
            if let Some(e) = g.exit {
                return e;
            }
            g = self.exited.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn with_relay<T>(&self, f: impl FnOnce(&Relay) -> T) -> Option<T> {
        self.lock().relay.as_ref().map(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses() {
        assert_eq!(exit_status(7 << 8), 7);
        assert_eq!(exit_status(0), 0);
        // Killed by SIGKILL (9), no core.
        assert_eq!(exit_status(9), 137);
        assert_eq!(exit_status(15), 143);
    }

    #[test]
    fn exit_is_recorded_once_and_wakes_waiters() {
        let p = std::sync::Arc::new(Proc::new(None, IoPaths::default(), None));
        assert!(!p.has_started());
        let q = p.clone();
        let t = std::thread::spawn(move || q.wait().status);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let e = p.set_exit(7);
        assert_eq!(e.status, 7);
        assert_eq!(p.set_exit(9).status, 7);
        assert_eq!(t.join().unwrap(), 7);
        assert_eq!(p.exit().unwrap().status, 7);
    }

    #[test]
    fn real_child() {
        // Waited for by pid below, as the shim waits for its helpers.
        #[allow(clippy::zombie_processes)]
        let c = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let pid = i32::try_from(c.id()).unwrap();
        assert_eq!(wait_child(pid), 7);
    }
}
