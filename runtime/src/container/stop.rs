//! Stopping a container: signals through the agent, and delete, which
//! makes sure the monitor and its helpers are gone, runs the poststop hooks
//! and removes the state.

use std::path::Path;
use std::time::{Duration, Instant};

use super::create::undo_create;
use super::{agent_err, check_id, live_status, target_of};
use crate::error::{Error, Result};
use crate::hooks;
use crate::monitor::{self, Helpers};
use crate::state::StateError;
use crate::state::{State, Status, Store};
use crate::util;

/// How long `kill -9` and `delete` give the agent to take the signal: a VM
/// that does not answer in time is stopped anyway.
const STOP_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `sig` to the container's process (`all`: every process of it).
pub fn kill(store: &Store, id: &str, sig: i32, all: bool) -> Result<()> {
    check_id(id)?;
    let _lock = store.lock(id)?;
    let st = store.load(id)?;
    let status = live_status(store, &st);
    if status == Status::Stopped {
        return Err(Error::NotRunning { id: id.into() });
    }
    let t = target_of(store, &st, None);
    // SIGKILL must end the container within seconds, VM answering or not.
    let limit = if sig == libc::SIGKILL {
        STOP_CALL_TIMEOUT
    } else {
        crate::session::CALL_TIMEOUT
    };
    let r = t
        .connect_within(limit)
        .and_then(|mut c| Ok(c.signal(&st.guest_id, None, sig, all)?));
    match r {
        Ok(()) => Ok(()),
        // A container whose VM cannot take the signal still has to go when
        // told to die: its monitor takes the VM with it.
        Err(e) if sig == libc::SIGKILL || status == Status::Creating => {
            crate::warn!(
                "kill {id}: the agent did not take the signal ({e}); stopping the microVM"
            );
            util::kill_checked(st.monitor_pid, st.monitor_start, libc::SIGKILL);
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

/// Deletes a stopped (or created) container; `force` kills it first.
pub fn delete(store: &Store, id: &str, force: bool) -> Result<()> {
    check_id(id)?;
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
    let _lock = store.lock(id)?;
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
        // A VM that does not answer quickly is stopped anyway below.
        if let Ok(mut c) = target_of(store, &st, None).connect_within(STOP_CALL_TIMEOUT) {
            let _ = c.signal(&st.guest_id, None, libc::SIGKILL, true);
        }
        if !wait_gone(st.monitor_pid, st.monitor_start, Duration::from_secs(10)) {
            crate::warn!(
                "delete {id}: the container did not exit after SIGKILL; stopping its microVM"
            );
        }
    }
    stop_sandbox(&dir, &st);
    let json = monitor::state_json(&st, Status::Stopped, 0);
    if let Err(e) = hooks::run("poststop", &st.poststop, &json) {
        crate::warn!("{e}");
    }
    store.remove(id)?;
    let _ = std::fs::remove_dir_all(monitor::sock_dir(&store.root, id));
    Ok(())
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
