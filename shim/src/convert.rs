//! Translations between containerd's types and husk's: statuses, times,
//! the cgroup v2 metrics, and the JSON that containerd wraps in an Any
//! (an exec's process, update's resources).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim::api;

use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::types::task::Status as TaskStatus;
use husk_protocol::{oci, ContainerStats};
use husk_runtime::state::Status;
use serde::de::DeserializeOwned;

use crate::error::{Result, ShimError};
use crate::stdio::IoPaths;

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

fn io_paths(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Result<IoPaths> {
    let io = IoPaths {
        stdin: stdin.to_string(),
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
        terminal,
    };
    io.check()?;
    Ok(io)
}

/// What a CreateTaskRequest asks for, checked: the bundle and the stdio.
pub fn create_request(req: &api::CreateTaskRequest) -> Result<(PathBuf, IoPaths)> {
    husk_runtime::container::check_id(&req.id)?;
    if !req.checkpoint.is_empty() {
        return Err(ShimError::Unsupported(
            "checkpoint: husk cannot restore a container from a checkpoint",
        ));
    }
    if !req.bundle.starts_with('/') {
        return Err(ShimError::field(
            "bundle",
            format!("{:?}: not an absolute path", req.bundle),
        ));
    }
    let io = io_paths(&req.stdin, &req.stdout, &req.stderr, req.terminal)?;
    Ok((PathBuf::from(&req.bundle), io))
}

/// What an ExecProcessRequest asks for, checked: the process and its stdio.
pub fn exec_request(req: &api::ExecProcessRequest) -> Result<(oci::Process, IoPaths)> {
    if req.exec_id.is_empty() {
        return Err(ShimError::field("exec_id", "must not be empty"));
    }
    let process = exec_process(req.spec.as_ref(), req.terminal)?;
    let io = io_paths(&req.stdin, &req.stdout, &req.stderr, req.terminal)?;
    Ok((process, io))
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
    fn create_requests() {
        let mut req = api::CreateTaskRequest {
            id: "c1".into(),
            bundle: "/run/containerd/b/c1".into(),
            stdin: "/run/fifo/c1-stdin".into(),
            stdout: "/run/fifo/c1-stdout".into(),
            terminal: true,
            ..Default::default()
        };
        let (bundle, io) = create_request(&req).unwrap();
        assert_eq!(bundle, PathBuf::from("/run/containerd/b/c1"));
        assert_eq!(io.stdout, "/run/fifo/c1-stdout");
        assert!(io.terminal);
        req.stderr = "file:///var/log/c1".into();
        assert!(create_request(&req)
            .unwrap_err()
            .to_string()
            .starts_with("stderr: file:///var/log/c1: log URIs are not supported"));
        req.stderr.clear();
        req.bundle = "rel".into();
        assert_eq!(
            create_request(&req).unwrap_err().to_string(),
            "bundle: \"rel\": not an absolute path"
        );
        req.bundle = "/b".into();
        req.checkpoint = "/cp".into();
        assert_eq!(
            create_request(&req).unwrap_err().code(),
            containerd_shim::protos::ttrpc::Code::UNIMPLEMENTED
        );
        req.checkpoint.clear();
        req.id = "../etc".into();
        assert!(create_request(&req).is_err());
    }

    #[test]
    fn exec_requests() {
        let mut req = api::ExecProcessRequest {
            id: "c1".into(),
            exec_id: "e1".into(),
            stdout: "/run/fifo/e1-stdout".into(),
            spec: MessageField::some(Any {
                value: br#"{"args":["ps"],"cwd":"/","user":{"uid":0,"gid":0},"terminal":true}"#
                    .to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (p, io) = exec_request(&req).unwrap();
        // The request's terminal flag wins over the spec's.
        assert_eq!(p.terminal(), Some(false));
        assert!(!io.terminal);
        assert_eq!(io.stdout, "/run/fifo/e1-stdout");
        req.exec_id.clear();
        assert_eq!(
            exec_request(&req).unwrap_err().to_string(),
            "exec_id: must not be empty"
        );
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
