//! Translations between containerd's types and husk's: statuses, times,
//! the cgroup v2 metrics, and the JSON that containerd wraps in an Any
//! (an exec's process, update's resources).

use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::types::task::Status as TaskStatus;
use husk_protocol::{oci, ContainerStats};
use husk_runtime::state::Status;
use serde::de::DeserializeOwned;

use crate::error::{Result, ShimError};

/// The type URL containerd's clients look the metrics type up by.
pub const METRICS_TYPE: &str = "io.containerd.cgroups.v2.Metrics";

pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        ..Default::default()
    }
}

/// containerd's status for a container in husk's status.
pub fn task_status(s: Status) -> TaskStatus {
    match s {
        Status::Creating | Status::Created => TaskStatus::CREATED,
        Status::Running => TaskStatus::RUNNING,
        Status::Paused => TaskStatus::PAUSED,
        Status::Stopped => TaskStatus::STOPPED,
    }
}

/// The guest's cgroup v2 counters as containerd's v2 metrics.
pub fn metrics(s: &ContainerStats) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    m.pids = MessageField::some(v2::PidsStat {
        current: s.pids.current,
        limit: s.pids.max.unwrap_or(0),
        ..Default::default()
    });
    m.cpu = MessageField::some(v2::CPUStat {
        usage_usec: s.cpu.usage_usec,
        user_usec: s.cpu.user_usec,
        system_usec: s.cpu.system_usec,
        nr_periods: s.cpu.nr_periods,
        nr_throttled: s.cpu.nr_throttled,
        throttled_usec: s.cpu.throttled_usec,
        ..Default::default()
    });
    m.memory = MessageField::some(v2::MemoryStat {
        anon: s.memory.anon,
        file: s.memory.file,
        usage: s.memory.current,
        usage_limit: s.memory.max.unwrap_or(u64::MAX),
        swap_usage: s.memory.swap_current,
        ..Default::default()
    });
    m.memory_events = MessageField::some(v2::MemoryEvents {
        oom: s.memory.oom,
        oom_kill: s.memory.oom_kill,
        ..Default::default()
    });
    m.io = MessageField::some(v2::IOStat {
        usage: s
            .io
            .iter()
            .map(|d| v2::IOEntry {
                major: u64::from(d.major),
                minor: u64::from(d.minor),
                rbytes: d.rbytes,
                wbytes: d.wbytes,
                rios: d.rios,
                wios: d.wios,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    m
}

/// The metrics as the Any containerd's StatsResponse carries.
pub fn metrics_any(s: &ContainerStats) -> Result<Any> {
    let value = metrics(s)
        .write_to_bytes()
        .map_err(|e| ShimError::Precondition(format!("encode metrics: {e}")))?;
    Ok(Any {
        type_url: METRICS_TYPE.to_string(),
        value,
        ..Default::default()
    })
}

/// Decodes the JSON containerd puts in an Any for a non-protobuf type
/// (an OCI process, LinuxResources); errors name `field`.
pub fn json_any<T: DeserializeOwned>(field: &'static str, a: Option<&Any>) -> Result<T> {
    let a = a.ok_or_else(|| ShimError::field(field, "missing"))?;
    serde_json::from_slice(&a.value).map_err(|e| {
        ShimError::field(
            field,
            format!("{} is not valid JSON for it: {e}", a.type_url),
        )
    })
}

/// An exec's process from ExecProcessRequest.spec.
pub fn exec_process(a: Option<&Any>, terminal: bool) -> Result<oci::Process> {
    let mut p: oci::Process = json_any("spec", a)?;
    if p.args().as_ref().is_none_or(|v| v.is_empty()) {
        return Err(ShimError::field("spec", "process.args must not be empty"));
    }
    p.set_terminal(Some(terminal));
    Ok(p)
}

/// A signal number from KillRequest.signal.
pub fn signal(n: u32) -> Result<i32> {
    match i32::try_from(n) {
        Ok(s) if (1..=64).contains(&s) => Ok(s),
        _ => Err(ShimError::field(
            "signal",
            format!("{n}: not a signal number"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_protocol::container::{CpuStats, IoDeviceStats, MemoryStats, PidsStats};

    #[test]
    fn metrics_conversion() {
        let s = ContainerStats {
            cpu: CpuStats {
                usage_usec: 10,
                user_usec: 6,
                system_usec: 4,
                nr_periods: 1,
                nr_throttled: 2,
                throttled_usec: 3,
            },
            memory: MemoryStats {
                current: 4096,
                max: None,
                swap_current: 0,
                anon: 1024,
                file: 2048,
                oom: 1,
                oom_kill: 1,
            },
            pids: PidsStats {
                current: 3,
                max: Some(100),
            },
            io: vec![IoDeviceStats {
                major: 254,
                minor: 0,
                rbytes: 512,
                wbytes: 1024,
                rios: 1,
                wios: 2,
            }],
        };
        let any = metrics_any(&s).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.pids.limit, 100);
        assert_eq!(m.cpu.usage_usec, 10);
        assert_eq!(m.cpu.throttled_usec, 3);
        assert_eq!(m.memory.usage, 4096);
        assert_eq!(m.memory.usage_limit, u64::MAX);
        assert_eq!(m.memory.anon, 1024);
        assert_eq!(m.memory_events.oom_kill, 1);
        assert_eq!(m.io.usage.len(), 1);
        assert_eq!(m.io.usage[0].major, 254);
        assert_eq!(m.io.usage[0].wbytes, 1024);
    }

    #[test]
    fn statuses_and_times() {
        assert_eq!(task_status(Status::Creating), TaskStatus::CREATED);
        assert_eq!(task_status(Status::Running), TaskStatus::RUNNING);
        assert_eq!(task_status(Status::Paused), TaskStatus::PAUSED);
        assert_eq!(task_status(Status::Stopped), TaskStatus::STOPPED);
        let t = UNIX_EPOCH + std::time::Duration::new(5, 7);
        let ts = timestamp(t);
        assert_eq!((ts.seconds, ts.nanos), (5, 7));
    }

    #[test]
    fn exec_spec_from_any() {
        let a = Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: br#"{"args":["sh","-c","echo hi"],"cwd":"/","user":{"uid":0,"gid":0}}"#.to_vec(),
            ..Default::default()
        };
        let p = exec_process(Some(&a), true).unwrap();
        assert_eq!(p.args().as_ref().unwrap()[2], "echo hi");
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(
            exec_process(None, false).unwrap_err().to_string(),
            "spec: missing"
        );
        let bad = Any {
            type_url: "x".into(),
            value: b"{".to_vec(),
            ..Default::default()
        };
        assert!(exec_process(Some(&bad), false)
            .unwrap_err()
            .to_string()
            .starts_with("spec: x is not valid JSON"));
        let empty = Any {
            value: br#"{"args":[],"cwd":"/","user":{"uid":0,"gid":0}}"#.to_vec(),
            ..Default::default()
        };
        assert_eq!(
            exec_process(Some(&empty), false).unwrap_err().to_string(),
            "spec: process.args must not be empty"
        );
    }

    #[test]
    fn resources_from_any() {
        let a = Any {
            type_url: "opencontainers.runtime-spec.1.LinuxResources".into(),
            value: br#"{"memory":{"limit":104857600},"pids":{"limit":50}}"#.to_vec(),
            ..Default::default()
        };
        let r: oci::LinuxResources = json_any("resources", Some(&a)).unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(104857600));
    }

    #[test]
    fn signals() {
        assert_eq!(signal(15).unwrap(), 15);
        assert_eq!(
            signal(0).unwrap_err().to_string(),
            "signal: 0: not a signal number"
        );
        assert!(signal(u32::MAX).is_err());
    }
}
