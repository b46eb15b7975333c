//! Stopping a container: signals through the agent, and delete, which
//! makes sure the monitor and its helpers are gone, runs the poststop hooks
//! and removes the state.

use std::path::Path;
use std::time::{Duration, Instant};

use super::create::undo_create;
use super::{agent_err, check_id, live_status, target_of};
use crate::error::{Error, Result};
use crate::hooks;
use crate::host_cgroup;
use crate::monitor::{self, Helpers};
use crate::session::Target;
use crate::state::StateError;
use crate::state::{State, Status, Store};
use crate::util;

/// How long `kill -9` and `delete` give the agent to take the signal: a VM
/// that does not answer in time is stopped anyway.
const STOP_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `kill -9` and `delete` wait for another command's lock on the
/// container before they stop its microVM without it (`delete` only with
/// `--force`; see [`stop_unlocked`]).
const STOP_LOCK_WAIT: Duration = Duration::from_secs(5);

/// After stopping the microVM without the lock, how long `delete --force`
/// waits again for the holder, whose agent calls now fail at once.
const RELOCK_WAIT: Duration = Duration::from_secs(2);

/// How long `delete` waits for a container whose agent took SIGKILL to end
/// by itself (its monitor then records its exit status).
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// The status of a container whose microVM the host had to stop (128 +
/// SIGKILL, as the container's own death by SIGKILL would give).
const KILLED_STATUS: i32 = 128 + libc::SIGKILL;

/// Sends `sig` to the container's process (`all`: every process of it).
/// SIGKILL ends the microVM within seconds whatever the guest does: if the
/// agent does not take it by its deadline, or another command keeps the
/// container's lock, the host stops the microVM itself.
pub fn kill(store: &Store, id: &str, sig: i32, all: bool) -> Result<()> {
    check_id(id)?;
    kill_via(store, id, sig, all, |st| target_of(store, st, None))
}

/// [`kill`], reaching the agent through `target`.
fn kill_via(
    store: &Store,
    id: &str,
    sig: i32,
    all: bool,
    target: impl Fn(&State) -> Target,
) -> Result<()> {
    let _lock = if sig == libc::SIGKILL {
        match store.lock_within(id, STOP_LOCK_WAIT) {
            Ok(l) => l,
            Err(e @ StateError::LockTimeout { .. }) => {
                crate::warn!("kill {id}: {e}; stopping the microVM without the lock");
                return if stop_unlocked(store, id) {
                    Ok(())
                } else {
                    Err(e.into())
                };
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        store.lock(id)?
    };
    let st = store.load(id)?;
    let status = live_status(store, &st);
    if status == Status::Stopped {
        return Err(Error::NotRunning { id: id.into() });
    }
    // SIGKILL must end the container within seconds, VM answering or not.
    let limit = if sig == libc::SIGKILL {
        STOP_CALL_TIMEOUT
    } else {
        crate::session::CALL_TIMEOUT
    };
    let r = target(&st)
        .connect_by(Instant::now() + limit)
        .and_then(|mut c| Ok(c.signal(&st.guest_id, None, sig, all)?));
    match r {
        Ok(()) => Ok(()),
        // A container whose VM cannot take the signal still has to go when
        // told to die: the host stops its microVM.
        Err(e) if sig == libc::SIGKILL || status == Status::Creating => {
            crate::warn!(
                "kill {id}: the agent did not take the signal ({e}); stopping the microVM"
            );
            stop_vm(store, &st);
            Ok(())
        }
        Err(e) => Err(agent_err("kill", id)(e)),
    }
}

fn wait_gone(pid: i32, start: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while util::alive(pid, start) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Deletes a stopped (or created) container; `force` kills it first, within
/// seconds whatever the guest does (see [`kill`]).
pub fn delete(store: &Store, id: &str, force: bool) -> Result<()> {
    check_id(id)?;
    delete_via(store, id, force, |st| target_of(store, st, None))
}

/// [`delete`], reaching the agent through `target`.
fn delete_via(
    store: &Store,
    id: &str,
    force: bool,
    target: impl Fn(&State) -> Target,
) -> Result<()> {
    let dir = store.dir(id);
    if !dir.join("state.json").exists() {
        // An aborted create may have left a directory without state.
        if dir.is_dir() {
            undo_create(store, id);
        }
        return if force {
            Ok(())
        } else {
            Err(StateError::NotFound { id: id.into() }.into())
        };
    }
    let _lock = match store.lock_within(id, STOP_LOCK_WAIT) {
        Ok(l) => l,
        Err(e @ StateError::LockTimeout { .. }) if force => {
            crate::warn!("delete {id}: {e}; stopping the microVM without the lock");
            stop_unlocked(store, id);
            match store.lock_within(id, RELOCK_WAIT) {
                Ok(l) => l,
                // The holder removed it meanwhile (a create that failed).
                Err(StateError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let st = store.load(id)?;
    let status = live_status(store, &st);
    match status {
        Status::Stopped | Status::Created => {}
        status if !force => {
            return Err(Error::NotStopped {
                id: id.into(),
                status,
            })
        }
        _ => {}
    }
    if status != Status::Stopped {
        let took = target(&st)
            .connect_by(Instant::now() + STOP_CALL_TIMEOUT)
            .and_then(|mut c| Ok(c.signal(&st.guest_id, None, libc::SIGKILL, true)?));
        match took {
            Ok(()) if wait_gone(st.monitor_pid, st.monitor_start, EXIT_WAIT) => {}
            Ok(()) => crate::warn!(
                "delete {id}: the container did not exit after SIGKILL; stopping its microVM"
            ),
            Err(e) => crate::warn!(
                "delete {id}: the agent did not take SIGKILL ({e}); stopping its microVM"
            ),
        }
    }
    stop_sandbox(&dir, &st);
    // The monitor removes its host cgroup at its end; one it could not (it
    // was killed) goes now, what is left in it killed: husk-vmm is dead.
    if let Err(e) = host_cgroup::remove_recorded(&dir, true) {
        crate::warn!("delete {id}: {e}");
    }
    let json = monitor::state_json(&st, Status::Stopped, 0);
    // A failing poststop hook is a warning; the rest still run.
    hooks::run_all("poststop", &st.poststop, &json);
    store.remove(id)?;
    let _ = std::fs::remove_dir_all(monitor::sock_dir(&store.root, id));
    Ok(())
}

/// Stops the microVM of a container we hold the lock of, and records it
/// stopped ([`KILLED_STATUS`] unless its monitor recorded a status first).
fn stop_vm(store: &Store, st: &State) {
    let dir = store.dir(&st.id);
    stop_sandbox(&dir, st);
    let status = monitor::recorded_exit(&dir).unwrap_or(KILLED_STATUS);
    if let Err(e) = monitor::record_exit(&dir, status) {
        crate::warn!("{}: {e}", st.id);
    }
    if let Err(e) = store.set_status(&st.id, Status::Stopped, Some(status)) {
        crate::warn!("{}: {e}", st.id);
    }
}

/// Stops the microVM of a container whose lock another command keeps.
///
/// Signalling by pid is safe without the lock: each pid is checked against
/// its start time, so only the monitor and helpers the state names are hit,
/// and their death is what the design already handles for a monitor that
/// dies (OOM, SIGKILL): `state` reports it stopped, and the holder's agent
/// calls fail at once as the VMM's socket goes. What needs the lock is left
/// to whoever gets it: `state.json` is not rewritten (only the `exit` file,
/// written atomically as the monitor itself does, without the lock), the
/// poststop hooks are not run and nothing is removed, so the holder never
/// finds its container half deleted. Returns whether there was a live
/// monitor to stop (a container still being created may not name one yet).
fn stop_unlocked(store: &Store, id: &str) -> bool {
    let Ok(st) = store.load(id) else {
        return false;
    };
    if !util::alive(st.monitor_pid, st.monitor_start) {
        return false;
    }
    let dir = store.dir(id);
    stop_sandbox(&dir, &st);
    if monitor::recorded_exit(&dir).is_none() {
        let _ = monitor::record_exit(&dir, KILLED_STATUS);
    }
    true
}

/// After a failed start: gives the monitor a moment to record a status of
/// its own (a container-init that died), else records
/// [`monitor::CRASH_STATUS`] and stops the monitor and its microVM. Returns
/// the status the container now has.
pub(super) fn stop_failed_start(store: &Store, st: &State) -> i32 {
    let dir = store.dir(&st.id);
    if !wait_gone(st.monitor_pid, st.monitor_start, Duration::from_secs(2)) {
        if monitor::recorded_exit(&dir).is_none() {
            if let Err(e) = monitor::record_exit(&dir, monitor::CRASH_STATUS) {
                crate::warn!("{}: {e}", st.id);
            }
        }
        stop_sandbox(&dir, st);
    }
    let status = monitor::recorded_exit(&dir).unwrap_or(monitor::CRASH_STATUS);
    let _ = store.set_status(&st.id, Status::Stopped, Some(status));
    status
}

/// Stops a container's monitor and the helpers it started (husk-vmm,
/// virtiofsd: they die with it, but a monitor killed at the wrong moment is
/// double-checked from helpers.json), waiting a bounded time for each.
fn stop_sandbox(dir: &Path, st: &State) {
    util::kill_checked(st.monitor_pid, st.monitor_start, libc::SIGKILL);
    if let Ok(data) = std::fs::read(dir.join("helpers.json")) {
        if let Ok(h) = serde_json::from_slice::<Helpers>(&data) {
            for (p, s) in &h.pids {
                util::kill_checked(*p, *s, libc::SIGKILL);
            }
            for (p, s) in &h.pids {
                wait_gone(*p, *s, Duration::from_secs(5));
            }
        }
    }
    wait_gone(st.monitor_pid, st.monitor_start, Duration::from_secs(5));
}

#[cfg(test)]
#[path = "stop_tests.rs"]
mod tests;
