//! `linux.resources` as cgroup v2 interface-file writes: each controller's
//! module translates its part of the spec ([`memory`], [`cpu`],
//! [`cpuset`], [`pids`], [`io`], [`hugetlb`], [`rdma`], [`unified`]), with
//! runc's v1->v2 conversions for cpu.weight, io.weight and swap. Pure:
//! nothing is written here.
//!
//! [`memory`]: super::memory
//! [`cpu`]: super::cpu
//! [`cpuset`]: super::cpuset
//! [`pids`]: super::pids
//! [`io`]: super::io
//! [`hugetlb`]: super::hugetlb
//! [`rdma`]: super::rdma
//! [`unified`]: super::unified

use oci_spec::runtime::LinuxResources;

use super::{cpu, cpuset, hugetlb, io, memory, pids, rdma, unified};
use crate::container::error::SpecError;

/// The spec field all of this is under.
pub const FIELD: &str = "linux.resources";

/// One interface-file write derived from the spec: `file` gets `value`;
/// `field` names the spec field for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write1 {
    pub file: String,
    pub value: String,
    pub field: String,
}

/// A write of `value` to `file` for the spec field `field`.
pub fn w(file: &str, value: impl Into<String>, field: &str) -> Write1 {
    Write1 {
        file: file.into(),
        value: value.into(),
        field: field.into(),
    }
}

/// -1 (unlimited: "max") or a value >= 0.
pub fn limit(v: i64, field: &str) -> Result<String, SpecError> {
    match v {
        -1 => Ok("max".into()),
        v if v < 0 => Err(SpecError::negative(field, v)),
        v => Ok(v.to_string()),
    }
}

/// A device number of the spec: both parts 0..=u32::MAX.
pub fn dev_num(major: i64, minor: i64, field: &str) -> Result<(), SpecError> {
    let ok = |n: i64| u32::try_from(n).is_ok();
    if !ok(major) || !ok(minor) {
        return Err(SpecError::invalid(
            field,
            format!("device {major}:{minor} is negative or too large"),
        ));
    }
    Ok(())
}

/// A warning for a setting that cgroup v2 has no equivalent of.
pub fn ignored(field: &str) -> String {
    format!("{field} ignored: no cgroup v2 equivalent")
}

/// Validates `linux.resources` and turns it into cgroup v2 interface-file
/// writes, controller by controller. Settings with no cgroup v2 equivalent
/// are reported in `warnings`.
pub fn resource_writes(
    r: &LinuxResources,
    warnings: &mut Vec<String>,
) -> Result<Vec<Write1>, SpecError> {
    let mut out = Vec::new();
    if let Some(m) = r.memory() {
        out.extend(memory::writes(m, warnings)?);
    }
    if let Some(c) = r.cpu() {
        out.extend(cpu::writes(c, warnings)?);
        out.extend(cpuset::writes(c)?);
    }
    if let Some(p) = r.pids() {
        out.extend(pids::writes(p)?);
    }
    if let Some(b) = r.block_io() {
        out.extend(io::writes(b, warnings)?);
    }
    out.extend(hugetlb::writes(
        r.hugepage_limits().as_deref().unwrap_or(&[]),
    )?);
    if let Some(devs) = r.rdma() {
        out.extend(rdma::writes(devs)?);
    }
    if let Some(u) = r.unified() {
        out.extend(unified::writes(u)?);
    }
    if r.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        warnings.push(format!(
            "{FIELD}.devices ignored: cgroup v2 device rules need eBPF; the container gets only the devices it is given"
        ));
    }
    if r.network().is_some() {
        warnings.push(ignored(&format!("{FIELD}.network")));
    }
    Ok(out)
}

/// Test helpers shared by the controllers' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::Write1;

    /// (file, value) of each write.
    pub fn files(ws: &[Write1]) -> Vec<(String, String)> {
        ws.iter()
            .map(|w| (w.file.clone(), w.value.clone()))
            .collect()
    }

    /// Parses a part of `linux.resources` from JSON.
    pub fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).unwrap()
    }

    /// Asserts that `(file, value)` pairs are exactly `want`.
    pub fn assert_writes(got: &[Write1], want: &[(&str, &str)]) {
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect();
        assert_eq!(files(got), want);
    }
}

#[cfg(test)]
mod tests {
    use super::testing::files;
    use super::*;

    fn res(json: &str) -> Result<Vec<Write1>, SpecError> {
        let r: LinuxResources = serde_json::from_str(json).unwrap();
        resource_writes(&r, &mut Vec::new())
    }

    #[test]
    fn conversions() {
        let ws = res(r#"{"memory":{"limit":33554432,"swap":67108864,"reservation":-1},
            "cpu":{"shares":1024,"quota":50000,"period":100000,"cpus":"0-1"},
            "pids":{"limit":10},
            "blockIO":{"weight":500,"throttleReadBpsDevice":[{"major":254,"minor":0,"rate":1048576}]}}"#)
        .unwrap();
        let f = files(&ws);
        for want in [
            ("memory.max", "33554432"),
            ("memory.swap.max", "33554432"),
            ("memory.low", "max"),
            ("cpu.weight", "39"),
            ("cpu.max", "50000 100000"),
            ("cpuset.cpus", "0-1"),
            ("pids.max", "10"),
            ("io.weight", "default 4950"),
            ("io.max", "254:0 rbps=1048576"),
        ] {
            assert!(
                f.contains(&(want.0.into(), want.1.into())),
                "{want:?} in {f:?}"
            );
        }
        assert_eq!(
            files(&res(r#"{"pids":{"limit":-1}}"#).unwrap()),
            [("pids.max".into(), "max".into())]
        );
        assert_eq!(
            files(&res(r#"{"cpu":{"quota":-1}}"#).unwrap()),
            [("cpu.max".into(), "max 100000".into())]
        );
    }

    #[test]
    fn writes_keep_the_controller_order() {
        let ws = res(r#"{"unified":{"memory.high":"1"},"pids":{"limit":1},
            "cpu":{"cpus":"0","shares":2},"memory":{"limit":1}}"#)
        .unwrap();
        let order: Vec<&str> = ws.iter().map(|w| w.file.as_str()).collect();
        assert_eq!(
            order,
            [
                "memory.max",
                "cpu.weight",
                "cpuset.cpus",
                "pids.max",
                "memory.high"
            ]
        );
    }

    #[test]
    fn zero_cpu_knobs_are_unset_as_in_runc() {
        let ws =
            res(r#"{"cpu":{"shares":0,"quota":0,"period":0},"blockIO":{"weight":0}}"#).unwrap();
        assert!(ws.is_empty(), "{:?}", files(&ws));
    }

    #[test]
    fn bad_values_name_the_field() {
        for (json, field) in [
            (
                r#"{"memory":{"limit":-5}}"#,
                "linux.resources.memory.limit:",
            ),
            (r#"{"pids":{"limit":-3}}"#, "linux.resources.pids.limit:"),
            (r#"{"memory":{"swap":100}}"#, "linux.resources.memory.swap:"),
            (
                r#"{"memory":{"limit":200,"swap":100}}"#,
                "linux.resources.memory.swap:",
            ),
            (r#"{"cpu":{"shares":1}}"#, "linux.resources.cpu.shares:"),
            (r#"{"cpu":{"quota":-5}}"#, "linux.resources.cpu.quota:"),
            (r#"{"cpu":{"cpus":"0;1"}}"#, "linux.resources.cpu.cpus:"),
            (
                r#"{"blockIO":{"weight":5}}"#,
                "linux.resources.blockIO.weight:",
            ),
            (
                r#"{"blockIO":{"throttleReadBpsDevice":[{"major":-1,"minor":0,"rate":1}]}}"#,
                "linux.resources.blockIO.throttleReadBpsDevice[0]:",
            ),
            (
                r#"{"unified":{"../x":"1"}}"#,
                "linux.resources.unified.../x:",
            ),
            (
                r#"{"unified":{"cgroup.procs":"1"}}"#,
                "linux.resources.unified.cgroup.procs:",
            ),
        ] {
            let e = res(json).unwrap_err().to_string();
            assert!(e.starts_with(field), "{json}: {e}");
        }
    }

    #[test]
    fn settings_without_a_v2_equivalent_are_warned_about() {
        let r: LinuxResources = serde_json::from_str(
            r#"{"devices":[{"allow":false,"access":"rwm"}],"network":{"classID":1}}"#,
        )
        .unwrap();
        let mut warnings = Vec::new();
        assert!(resource_writes(&r, &mut warnings).unwrap().is_empty());
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("linux.resources.devices ignored:"));
        assert_eq!(
            warnings[1],
            "linux.resources.network ignored: no cgroup v2 equivalent"
        );
    }

    #[test]
    fn device_numbers() {
        assert!(dev_num(0, 0, "f").is_ok());
        assert!(dev_num(i64::from(u32::MAX), 1, "f").is_ok());
        assert_eq!(
            dev_num(1, i64::from(u32::MAX) + 1, "f")
                .unwrap_err()
                .to_string(),
            "f: device 1:4294967296 is negative or too large"
        );
        assert!(dev_num(-1, 0, "f").is_err());
    }
}
