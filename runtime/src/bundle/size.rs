//! The microVM's size from the spec: vCPUs from `linux.resources.cpu`
//! (its quota and its cpuset), memory from `linux.resources.memory`, each
//! overridable by an annotation where the host enables it, and all bounded
//! by the host ([`HostLimits`]).

use husk_protocol::oci;

use super::annotations::{HostLimits, MEMORY_ANNOTATION, VCPUS_ANNOTATION};
use super::{At, Result, DEFAULT_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB, VM_OVERHEAD_MIB};

const CPUS_FIELD: &str = "linux.resources.cpu.cpus";

/// vCPUs and memory (MiB) from linux.resources, overridable by the
/// `io.husk.vcpus` and `io.husk.memory_mib` annotations (which the caller
/// has checked `host` enables), on `host`.
///
/// The guest numbers its vCPUs from 0, and the agent writes the spec's
/// cpuset as it is: a cpuset needs its highest CPU + 1 vCPUs (`"1"` needs
/// two), whatever the quota asks. A cpuset the host cannot give that many
/// for is refused here, in one line, rather than failing the create in the
/// guest.
pub(super) fn vm_size(at: &At, spec: &oci::Spec, host: &HostLimits) -> Result<(u32, u64)> {
    let host_cpus = host.cpus;
    let res = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let cpu = res.and_then(|r| r.cpu().as_ref());
    let set = cpu.and_then(|c| c.cpus().as_deref());
    let needed = match set {
        Some(s) => cpuset_highest(s)
            .map_err(|e| at.bad(CPUS_FIELD, e.to_string()))?
            .map(|h| h + 1),
        None => None,
    };
    if let (Some(n), Some(s)) = (needed, set) {
        if n > host_cpus {
            let most = if host_cpus >= MAX_VCPUS {
                format!("a husk microVM has at most {MAX_VCPUS}")
            } else {
                format!("this host gives at most {host_cpus}")
            };
            return Err(at.bad(
                CPUS_FIELD,
                format!(
                    "{s:?} needs a microVM of {n} vCPUs (CPU {} is in it); {most}",
                    n - 1
                ),
            ));
        }
    }
    let mut vcpus = quota_vcpus(cpu, host_cpus).max(needed.unwrap_or(1));
    let mut memory_mib = DEFAULT_MEMORY_MIB;
    if let Some(limit) = res
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .and_then(|l| u64::try_from(l).ok())
        .filter(|l| *l > 0)
    {
        // A limit is not an allocation: the VM never needs more than the
        // host has.
        memory_mib = (limit.div_ceil(1 << 20) + VM_OVERHEAD_MIB).min(host.memory_mib);
    }
    let ann = spec.annotations().clone().unwrap_or_default();
    if let Some(s) = ann.get(VCPUS_ANNOTATION) {
        let field = format!("annotations.{VCPUS_ANNOTATION}");
        vcpus = s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=host_cpus).contains(n))
            .ok_or_else(|| {
                at.bad(
                    &field,
                    format!("{s:?}: want 1..={host_cpus} (the CPUs this host gives)"),
                )
            })?;
        if let (Some(n), Some(set)) = (needed, set) {
            if vcpus < n {
                return Err(at.bad(
                    &field,
                    format!("{s:?}: {CPUS_FIELD} {set:?} needs {n} vCPUs"),
                ));
            }
        }
    }
    if let Some(s) = ann.get(MEMORY_ANNOTATION) {
        memory_mib = s
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= MIN_MEMORY_MIB && *n <= host.memory_mib)
            .ok_or_else(|| {
                at.bad(
                    &format!("annotations.{MEMORY_ANNOTATION}"),
                    format!(
                        "{s:?}: want {MIN_MEMORY_MIB}..={} (this host's memory, MiB)",
                        host.memory_mib
                    ),
                )
            })?;
    }
    Ok((vcpus, memory_mib.max(MIN_MEMORY_MIB)))
}

/// vCPUs for the CPU quota (quota / period, rounded up), at most the
/// host's; 1 without a quota.
fn quota_vcpus(cpu: Option<&oci::LinuxCpu>, host_cpus: u32) -> u32 {
    match cpu.map(|c| (c.quota(), c.period())) {
        Some((Some(q), Some(p))) if q > 0 && p > 0 => {
            let n = u64::try_from(q).unwrap_or(1).div_ceil(p);
            u32::try_from(n.clamp(1, u64::from(host_cpus))).unwrap_or(host_cpus)
        }
        _ => 1,
    }
}

/// A cpuset list (`linux.resources.cpu.cpus`) that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpusetError {
    #[error("{0:?}: bad CPU list")]
    List(String),
    #[error("{0:?}: bad CPU range")]
    Range(String),
}

/// The highest CPU of a cpuset list (`0-3,8` -> 8); `None` for an empty
/// list (no cpuset).
pub fn cpuset_highest(s: &str) -> Result<Option<u32>, CpusetError> {
    let cpu = |c: &str| {
        c.trim()
            .parse::<u32>()
            .map_err(|_| CpusetError::List(s.to_string()))
    };
    let mut highest = None;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (cpu(a)?, cpu(b)?),
            None => (cpu(part)?, cpu(part)?),
        };
        if b < a || b > 4095 {
            return Err(CpusetError::Range(s.to_string()));
        }
        highest = highest.max(Some(b));
    }
    Ok(highest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    /// The size of a VM for `resources` (and `annotations`) on a host of
    /// `host` CPUs, or the error's text.
    fn size(
        resources: serde_json::Value,
        annotations: serde_json::Value,
        host: u32,
    ) -> std::result::Result<(u32, u64), String> {
        let spec: oci::Spec = serde_json::from_value(json!({
            "ociVersion": "1.0.2",
            "annotations": annotations,
            "linux": {"resources": resources}
        }))
        .unwrap();
        let host = HostLimits::with(host, 4096).enabling(&[VCPUS_ANNOTATION, MEMORY_ANNOTATION]);
        vm_size(&At(Path::new("config.json")), &spec, &host).map_err(|e| e.to_string())
    }

    fn vcpus(cpu: serde_json::Value, host: u32) -> std::result::Result<u32, String> {
        size(json!({ "cpu": cpu }), json!({}), host).map(|(v, _)| v)
    }

    #[test]
    fn a_cpuset_gets_vcpus_up_to_its_highest_cpu() {
        assert_eq!(vcpus(json!({}), 4), Ok(1));
        assert_eq!(vcpus(json!({"cpus": ""}), 4), Ok(1));
        assert_eq!(vcpus(json!({"cpus": "0"}), 4), Ok(1));
        // CPU 1 is the guest's second vCPU.
        assert_eq!(vcpus(json!({"cpus": "1"}), 4), Ok(2));
        assert_eq!(vcpus(json!({"cpus": "0-1"}), 2), Ok(2));
        assert_eq!(vcpus(json!({"cpus": "0,2"}), 4), Ok(3));
        // The quota's vCPUs, or the cpuset's, whichever is more.
        let quota = |q: i64, cpus: &str| json!({"quota": q, "period": 100000, "cpus": cpus});
        assert_eq!(vcpus(quota(150_000, "3"), 4), Ok(4));
        assert_eq!(vcpus(quota(300_000, "0"), 4), Ok(3));
        assert_eq!(vcpus(quota(900_000, "0"), 4), Ok(4));
    }

    #[test]
    fn a_cpuset_the_host_cannot_give_is_refused_in_one_line() {
        assert_eq!(
            vcpus(json!({"cpus": "0-1"}), 1),
            Err(
                "config.json: linux.resources.cpu.cpus: \"0-1\" needs a microVM of 2 vCPUs \
                 (CPU 1 is in it); this host gives at most 1"
                    .into()
            )
        );
        let e = vcpus(json!({"cpus": "0-40"}), MAX_VCPUS).unwrap_err();
        assert!(
            e.ends_with(&format!("a husk microVM has at most {MAX_VCPUS}")),
            "{e}"
        );
        let e = vcpus(json!({"cpus": "0-x"}), 4).unwrap_err();
        assert_eq!(
            e,
            "config.json: linux.resources.cpu.cpus: \"0-x\": bad CPU list"
        );
        let e = size(
            json!({"cpu": {"cpus": "1"}}),
            json!({ VCPUS_ANNOTATION: "1" }),
            4,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "config.json: annotations.io.husk.vcpus: \"1\": linux.resources.cpu.cpus \"1\" needs 2 vCPUs"
        );
        assert_eq!(
            size(
                json!({"cpu": {"cpus": "1"}}),
                json!({ VCPUS_ANNOTATION: "3" }),
                4
            )
            .map(|(v, _)| v),
            Ok(3)
        );
    }

    #[test]
    fn memory_and_cpu_lists() {
        assert_eq!(
            size(json!({"memory": {"limit": 536870912}}), json!({}), 1),
            Ok((1, 512 + VM_OVERHEAD_MIB))
        );
        assert_eq!(size(json!({}), json!({}), 1), Ok((1, DEFAULT_MEMORY_MIB)));
        // Bounded by the host (4096 MiB, 2 CPUs here).
        assert_eq!(
            size(json!({"memory": {"limit": 1_i64 << 40}}), json!({}), 2),
            Ok((1, 4096))
        );
        assert_eq!(
            size(json!({}), json!({ VCPUS_ANNOTATION: "3" }), 2),
            Err("config.json: annotations.io.husk.vcpus: \"3\": want 1..=2 (the CPUs this host gives)".into())
        );
        assert_eq!(
            size(json!({}), json!({ MEMORY_ANNOTATION: "8192" }), 2),
            Err("config.json: annotations.io.husk.memory_mib: \"8192\": want 128..=4096 (this host's memory, MiB)".into())
        );
        assert_eq!(
            size(json!({}), json!({ MEMORY_ANNOTATION: "1024" }), 2),
            Ok((1, 1024))
        );
        assert_eq!(cpuset_highest("0-3,8"), Ok(Some(8)));
        assert_eq!(cpuset_highest(" 2 , 0-1 "), Ok(Some(2)));
        assert_eq!(cpuset_highest(""), Ok(None));
        assert!(cpuset_highest("3-1").is_err());
        assert!(cpuset_highest("0-5000").is_err());
    }
}
