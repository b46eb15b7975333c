//! Child reaping with exit-status delivery.
//!
//! One thread waits for SIGCHLD (blocked in every thread by
//! [`crate::init::block_sigchld`]) and reaps every exited child. A child
//! whose pid was registered gets its callback called with the wait status;
//! others (orphans re-parented to PID 1 or to the subreaper) are just
//! reaped. Registration and reaping share one lock, and [`spawn`] holds it
//! across fork, so a child cannot be reaped before its callback is in place.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::log::debug;

pub type ExitFn = Box<dyn FnOnce(libc::c_int) + Send>;

static WAITERS: OnceLock<Mutex<HashMap<libc::pid_t, ExitFn>>> = OnceLock::new();

fn waiters() -> MutexGuard<'static, HashMap<libc::pid_t, ExitFn>> {
    WAITERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Starts the reaper thread. Call [`crate::init::block_sigchld`] first,
/// before any other thread exists. When not PID 1, also makes this process
/// a child subreaper, so that container processes whose parent exits are
/// re-parented (and reported) here.
pub fn start() -> io::Result<()> {
    if std::process::id() != 1 {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let sigchld = husk_sys::SignalSet::of(&[libc::SIGCHLD]);
    std::thread::Builder::new()
        .name("reaper".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            sigchld.wait();
            let mut ready = Vec::new();
            {
                let mut w = waiters();
                for (pid, status) in crate::init::reap_all() {
                    match w.remove(&pid) {
                        Some(f) => ready.push((f, status)),
                        None => debug!("reaped pid {pid} (wait status {status:#x})"),
                    }
                }
            }
            for (f, status) in ready {
                f(status);
            }
        })
        .map(drop)
}

/// Spawns `cmd` and registers `on_exit` for the child before it can be reaped.
pub fn spawn(cmd: &mut Command, on_exit: ExitFn) -> io::Result<Child> {
    let mut w = waiters();
    let child = cmd.spawn()?;
    // Linux pids are below 2^22: a child's always fits.
    let pid =
        libc::pid_t::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
    w.insert(pid, on_exit);
    Ok(child)
}

/// Registers `on_exit` for `pid`. The caller must make sure `pid` cannot
/// have been reaped yet (e.g. it is a grandchild whose parent is still alive).
pub fn register(pid: libc::pid_t, on_exit: ExitFn) {
    waiters().insert(pid, on_exit);
}
