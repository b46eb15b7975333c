//! A container's life cycle over the state store, the monitor and the
//! agent: what a front end (the runc CLI today) asks of the runtime. Each
//! operation takes the [`Store`] and a container id, checks what the
//! container's status allows, and does it.

mod create;
mod exec;
mod stop;

pub use create::{create, run_foreground, start, CreateRequest, MonitorRequest};
pub use exec::{exec, exec_monitor, exec_state, ExecMonitorRequest, ExecRequest};
pub use stop::{delete, kill};

use husk_protocol::client::Events;
use husk_protocol::{oci, ContainerStats};
use serde_json::{json, Value};

use crate::bundle;
use crate::error::{Error, Result};
use crate::monitor;
use crate::session::Target;
use crate::state::{State, Status, Store};
use crate::util;

/// A container id the runtime takes (runc's rule, see
/// [`husk_protocol::id::check_container_id`]).
pub fn check_id(id: &str) -> Result<()> {
    Ok(husk_protocol::id::check_container_id(id)?)
}

/// `OP container ID: why` for a request the agent did not do.
fn agent_err<E: Into<crate::session::SessionError>>(
    op: &'static str,
    id: &str,
) -> impl FnOnce(E) -> Error {
    let id = id.to_string();
    move |e| Error::Agent {
        op,
        id,
        source: e.into(),
    }
}

/// The agent session of a container's process (`exec_id: None`: its init).
pub fn target_of(store: &Store, st: &State, exec_id: Option<String>) -> Target {
    Target {
        vsock: monitor::sock_dir(&store.root, &st.id).join("vsock"),
        guest_id: st.guest_id.clone(),
        exec_id,
    }
}

/// The status a container has now: what commands recorded, unless its
/// monitor has exited (then it is stopped, whatever the record says).
pub fn live_status(store: &Store, st: &State) -> Status {
    if monitor::recorded_exit(&store.dir(&st.id)).is_some() {
        return Status::Stopped;
    }
    if st.monitor_pid > 0 && !util::alive(st.monitor_pid, st.monitor_start) {
        return Status::Stopped;
    }
    if st.monitor_pid <= 0 && st.status != Status::Creating {
        return Status::Stopped;
    }
    st.status
}

fn pid_of(st: &State, status: Status) -> i32 {
    if status == Status::Stopped {
        0
    } else {
        st.monitor_pid
    }
}

/// A container's OCI state (`husk state`, one entry of `husk list`).
pub fn state_value(store: &Store, st: &State) -> Value {
    let status = live_status(store, st);
    let owner = if st.owner_uid == 0 {
        String::new()
    } else {
        st.owner_uid.to_string()
    };
    json!({
        "ociVersion": crate::OCI_VERSION,
        "id": st.id,
        "pid": pid_of(st, status),
        "status": status.as_str(),
        "bundle": st.bundle,
        "rootfs": st.rootfs,
        "created": st.created,
        "owner": owner,
        "annotations": st.annotations,
    })
}

/// The OCI state of container `id`.
pub fn state(store: &Store, id: &str) -> Result<Value> {
    check_id(id)?;
    let st = store.load(id)?;
    Ok(state_value(store, &st))
}

/// The OCI state of every container under the store's root, by id.
pub fn list(store: &Store) -> Vec<Value> {
    store
        .ids()
        .iter()
        .filter_map(|id| store.load(id).ok())
        .map(|st| state_value(store, &st))
        .collect()
}

/// The host pids that stand for container `id` (its monitor; none once it
/// stopped).
pub fn pids(store: &Store, id: &str) -> Result<Vec<i32>> {
    check_id(id)?;
    let st = store.load(id)?;
    let status = live_status(store, &st);
    Ok(if status == Status::Stopped {
        vec![]
    } else {
        vec![st.monitor_pid]
    })
}

/// Freezes (`pause`) or thaws every process of container `id`.
pub fn pause(store: &Store, id: &str, pause: bool) -> Result<()> {
    check_id(id)?;
    let _lock = store.lock(id)?;
    let st = store.load(id)?;
    let status = live_status(store, &st);
    let t = target_of(store, &st, None);
    if pause {
        if status != Status::Running {
            return Err(Error::NotRunning { id: id.into() });
        }
        t.connect()
            .and_then(|mut c| Ok(c.pause(&st.guest_id)?))
            .map_err(agent_err("pause", id))?;
        Ok(store.set_status(id, Status::Paused, None)?)
    } else {
        if status != Status::Paused {
            return Err(Error::NotPaused { id: id.into() });
        }
        t.connect()
            .and_then(|mut c| Ok(c.resume(&st.guest_id)?))
            .map_err(agent_err("resume", id))?;
        Ok(store.set_status(id, Status::Running, None)?)
    }
}

/// Sets container `id`'s resource limits (its cgroup in the guest).
pub fn update(store: &Store, id: &str, res: oci::LinuxResources) -> Result<()> {
    check_id(id)?;
    let _lock = store.lock(id)?;
    let st = store.load(id)?;
    if live_status(store, &st) == Status::Stopped {
        return Err(Error::NotRunning { id: id.into() });
    }
    if let Some(cpus) = res.cpu().as_ref().and_then(|c| c.cpus().clone()) {
        let highest = bundle::cpuset_highest(&cpus).map_err(|e| {
            Error::Bundle(bundle::BundleError::Field {
                path: "--cpuset-cpus".into(),
                field: "linux.resources.cpu.cpus".into(),
                msg: e.to_string(),
            })
        })?;
        let vcpus = bundle::load(&st.bundle).map_or(u32::MAX, |b| b.vcpus);
        if let Some(highest) = highest.filter(|h| *h >= vcpus) {
            return Err(Error::CpusetBeyondVm {
                id: id.into(),
                cpus,
                highest,
                vcpus,
            });
        }
    }
    if let Some(limit) = res.memory().as_ref().and_then(|m| m.limit()) {
        if let Ok(b) = bundle::load(&st.bundle) {
            if u64::try_from(limit).is_ok_and(|l| l > 0 && l >> 20 > b.memory_mib) {
                crate::warn!(
                    "update {}: memory limit {} MiB is above the microVM's {} MiB: the guest cannot give it more",
                    id,
                    limit >> 20,
                    b.memory_mib
                );
            }
        }
    }
    target_of(store, &st, None)
        .connect()
        .and_then(|mut c| Ok(c.update_resources(&st.guest_id, res)?))
        .map_err(agent_err("update", id))
}

/// The state of container `id` if it has not stopped.
pub fn running(store: &Store, id: &str) -> Result<State> {
    check_id(id)?;
    let st = store.load(id)?;
    if live_status(store, &st) == Status::Stopped {
        return Err(Error::NotRunning { id: id.into() });
    }
    Ok(st)
}

/// The cgroup counters of a container.
pub fn stats(store: &Store, st: &State) -> Result<ContainerStats> {
    target_of(store, st, None)
        .connect()
        .and_then(|mut c| Ok(c.stats(&st.guest_id)?))
        .map_err(agent_err("stats of", &st.id))
}

/// The agent's event stream (exits, OOM kills of every container in the
/// container's VM).
pub fn events(store: &Store, st: &State) -> Result<Events> {
    target_of(store, st, None)
        .connect()?
        .events()
        .map_err(Error::Events)
}

#[cfg(test)]
#[path = "id_tests.rs"]
mod id_tests;
