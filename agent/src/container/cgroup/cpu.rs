//! The cpu controller: `shares` -> cpu.weight (runc's conversion),
//! `quota`/`period` -> cpu.max, `burst` -> cpu.max.burst, `idle` ->
//! cpu.idle. 0 means "not set" for shares, quota and period, as runc reads
//! them (Docker sends 0 for every CPU knob the user left alone).

use oci_spec::runtime::LinuxCpu;

use super::resources::{w, Write1, FIELD};
use crate::container::error::SpecError;

/// cpu.max's period when the spec gives only a quota, in µs.
const DEFAULT_PERIOD: u64 = 100_000;

pub fn writes(c: &LinuxCpu, warnings: &mut Vec<String>) -> Result<Vec<Write1>, SpecError> {
    let f = format!("{FIELD}.cpu");
    let mut out = Vec::new();
    if let Some(shares) = c.shares().filter(|s| *s != 0) {
        let field = format!("{f}.shares");
        out.push(w("cpu.weight", weight(shares, &field)?.to_string(), &field));
    }
    let (quota, period) = (
        c.quota().filter(|q| *q != 0),
        c.period().filter(|p| *p != 0),
    );
    if quota.is_some() || period.is_some() {
        let field = format!("{f}.quota");
        out.push(w("cpu.max", max(quota, period, &f)?, &field));
    }
    if let Some(b) = c.burst() {
        out.push(w("cpu.max.burst", b.to_string(), &format!("{f}.burst")));
    }
    if let Some(i) = c.idle() {
        let field = format!("{f}.idle");
        if !(0..=1).contains(&i) {
            return Err(SpecError::invalid(field, format!("{i} is not 0 or 1")));
        }
        out.push(w("cpu.idle", i.to_string(), &field));
    }
    if c.realtime_runtime().is_some() || c.realtime_period().is_some() {
        warnings.push(format!(
            "{f}.realtimeRuntime/realtimePeriod ignored: no cgroup v2 equivalent"
        ));
    }
    Ok(out)
}

/// cpu.weight (1..10000) of cgroup v1 shares (2..262144).
fn weight(shares: u64, field: &str) -> Result<u64, SpecError> {
    if !(2..=262_144).contains(&shares) {
        return Err(SpecError::out_of_range(field, shares, "2..262144"));
    }
    Ok(1 + ((shares - 2) * 9999) / 262_142)
}

/// cpu.max ("QUOTA PERIOD", QUOTA "max" for unlimited); `f` is the cpu field.
fn max(quota: Option<i64>, period: Option<u64>, f: &str) -> Result<String, SpecError> {
    let quota = match quota {
        None | Some(-1) => "max".to_string(),
        Some(q) if q <= 0 => {
            return Err(SpecError::invalid(
                format!("{f}.quota"),
                format!("{q} must be positive or -1 (unlimited)"),
            ))
        }
        Some(q) => q.to_string(),
    };
    let period = period.unwrap_or(DEFAULT_PERIOD);
    if !(1_000..=1_000_000).contains(&period) {
        return Err(SpecError::out_of_range(
            format!("{f}.period"),
            period,
            "1000..1000000 us",
        ));
    }
    Ok(format!("{quota} {period}"))
}

#[cfg(test)]
mod tests {
    use super::super::resources::testing::{assert_writes, parse};
    use super::*;

    fn run(json: &str) -> Result<Vec<Write1>, SpecError> {
        writes(&parse(json), &mut Vec::new())
    }

    #[test]
    fn shares_become_weights() {
        for (shares, weight) in [("2", "1"), ("1024", "39"), ("262144", "10000")] {
            let ws = run(&format!(r#"{{"shares":{shares}}}"#)).unwrap();
            assert_writes(&ws, &[("cpu.weight", weight)]);
        }
        assert_eq!(
            run(r#"{"shares":1}"#).unwrap_err().to_string(),
            "linux.resources.cpu.shares: 1 is outside 2..262144"
        );
        assert!(run(r#"{"shares":262145}"#).is_err());
    }

    #[test]
    fn quota_and_period() {
        assert_writes(
            &run(r#"{"quota":50000,"period":200000}"#).unwrap(),
            &[("cpu.max", "50000 200000")],
        );
        assert_writes(
            &run(r#"{"quota":-1}"#).unwrap(),
            &[("cpu.max", "max 100000")],
        );
        assert_writes(
            &run(r#"{"period":5000}"#).unwrap(),
            &[("cpu.max", "max 5000")],
        );
        assert_eq!(
            run(r#"{"quota":-5}"#).unwrap_err().to_string(),
            "linux.resources.cpu.quota: -5 must be positive or -1 (unlimited)"
        );
        assert_eq!(
            run(r#"{"quota":1000,"period":999}"#)
                .unwrap_err()
                .to_string(),
            "linux.resources.cpu.period: 999 is outside 1000..1000000 us"
        );
    }

    #[test]
    fn burst_idle_and_unset_knobs() {
        assert_writes(
            &run(r#"{"burst":1000,"idle":1}"#).unwrap(),
            &[("cpu.max.burst", "1000"), ("cpu.idle", "1")],
        );
        assert_eq!(
            run(r#"{"idle":2}"#).unwrap_err().to_string(),
            "linux.resources.cpu.idle: 2 is not 0 or 1"
        );
        assert!(run(r#"{"shares":0,"quota":0,"period":0}"#)
            .unwrap()
            .is_empty());
        let mut warnings = Vec::new();
        writes(&parse(r#"{"realtimeRuntime":1}"#), &mut warnings).unwrap();
        assert_eq!(
            warnings,
            ["linux.resources.cpu.realtimeRuntime/realtimePeriod ignored: no cgroup v2 equivalent"]
        );
    }
}
