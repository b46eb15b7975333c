//! The memory controller: `memory.limit` -> memory.max, `reservation` ->
//! memory.low, `swap` (OCI: memory+swap) -> memory.swap.max (swap alone).

use oci_spec::runtime::LinuxMemory;

use super::resources::{ignored, limit, w, Write1, FIELD};
use crate::container::error::SpecError;

pub fn writes(m: &LinuxMemory, warnings: &mut Vec<String>) -> Result<Vec<Write1>, SpecError> {
    let f = format!("{FIELD}.memory");
    let mut out = Vec::new();
    if let Some(l) = m.limit() {
        let field = format!("{f}.limit");
        out.push(w("memory.max", limit(l, &field)?, &field));
    }
    if let Some(r) = m.reservation() {
        let field = format!("{f}.reservation");
        out.push(w("memory.low", limit(r, &field)?, &field));
    }
    if let Some(s) = m.swap() {
        let field = format!("{f}.swap");
        out.push(w(
            "memory.swap.max",
            swap_max(s, m.limit(), &field)?,
            &field,
        ));
    }
    #[allow(deprecated)]
    if m.kernel().is_some() || m.kernel_tcp().is_some() {
        warnings.push(ignored(&format!("{f}.kernel/kernelTCP")));
    }
    if m.swappiness().is_some() {
        warnings.push(ignored(&format!("{f}.swappiness")));
    }
    if m.disable_oom_killer() == Some(true) {
        warnings.push(ignored(&format!("{f}.disableOOMKiller")));
    }
    Ok(out)
}

/// memory.swap.max of OCI's `swap` (memory+swap) given the memory limit.
fn swap_max(swap: i64, mem_limit: Option<i64>, field: &str) -> Result<String, SpecError> {
    Ok(match (swap, mem_limit) {
        (-1, _) => "max".to_string(),
        (s, _) if s < 0 => return Err(SpecError::negative(field, s)),
        (_, None) | (_, Some(-1)) => {
            return Err(SpecError::invalid(
                field,
                "needs a memory.limit (it is memory+swap)",
            ))
        }
        (s, Some(l)) if s < l => {
            return Err(SpecError::invalid(
                field,
                format!("{s} is below memory.limit {l} (it is memory+swap)"),
            ))
        }
        (s, Some(l)) => (s - l).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::resources::testing::{assert_writes, parse};
    use super::*;

    fn run(json: &str) -> (Result<Vec<Write1>, SpecError>, Vec<String>) {
        let mut warnings = Vec::new();
        let r = writes(&parse(json), &mut warnings);
        (r, warnings)
    }

    #[test]
    fn limits() {
        let (ws, warn) = run(r#"{"limit":1048576,"reservation":-1,"swap":3145728}"#);
        assert_writes(
            &ws.unwrap(),
            &[
                ("memory.max", "1048576"),
                ("memory.low", "max"),
                ("memory.swap.max", "2097152"),
            ],
        );
        assert!(warn.is_empty());
        let (ws, _) = run(r#"{"limit":-1,"swap":-1}"#);
        assert_writes(
            &ws.unwrap(),
            &[("memory.max", "max"), ("memory.swap.max", "max")],
        );
        let (ws, _) = run(r#"{"limit":0}"#);
        assert_writes(&ws.unwrap(), &[("memory.max", "0")]);
    }

    #[test]
    fn swap_is_memory_plus_swap() {
        let e = |json| run(json).0.unwrap_err().to_string();
        assert_eq!(
            e(r#"{"swap":100}"#),
            "linux.resources.memory.swap: needs a memory.limit (it is memory+swap)"
        );
        assert_eq!(
            e(r#"{"limit":-1,"swap":100}"#),
            "linux.resources.memory.swap: needs a memory.limit (it is memory+swap)"
        );
        assert_eq!(
            e(r#"{"limit":200,"swap":100}"#),
            "linux.resources.memory.swap: 100 is below memory.limit 200 (it is memory+swap)"
        );
        assert_eq!(
            e(r#"{"limit":200,"swap":-2}"#),
            "linux.resources.memory.swap: -2 is negative (only -1, unlimited, is allowed)"
        );
        let (ws, _) = run(r#"{"limit":200,"swap":200}"#);
        assert_writes(
            &ws.unwrap(),
            &[("memory.max", "200"), ("memory.swap.max", "0")],
        );
    }

    #[test]
    fn negative_limits_name_the_field() {
        for (json, want) in [
            (
                r#"{"limit":-5}"#,
                "linux.resources.memory.limit: -5 is negative",
            ),
            (
                r#"{"reservation":-2}"#,
                "linux.resources.memory.reservation: -2 is negative",
            ),
        ] {
            let e = run(json).0.unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn v1_only_settings_are_warned_about() {
        let (ws, warn) = run(r#"{"kernel":1,"swappiness":10,"disableOOMKiller":true}"#);
        assert!(ws.unwrap().is_empty());
        assert_eq!(
            warn,
            [
                "linux.resources.memory.kernel/kernelTCP ignored: no cgroup v2 equivalent",
                "linux.resources.memory.swappiness ignored: no cgroup v2 equivalent",
                "linux.resources.memory.disableOOMKiller ignored: no cgroup v2 equivalent",
            ]
        );
        let (_, warn) = run(r#"{"disableOOMKiller":false}"#);
        assert!(warn.is_empty());
    }
}
