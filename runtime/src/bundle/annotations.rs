//! The husk annotations a bundle may set, and the host's bounds on what
//! they ask for.
//!
//! A bundle's annotations come from whoever runs the container (a
//! Kubernetes pod spec, `docker run --annotation`), not from the host's
//! administrator, so husk's own (`io.husk.*`) are honoured only where the
//! host enables them (`enable_annotations` in /etc/husk/config.json, as
//! Kata's `enable_annotations`): by default only the NIC backend, which
//! picks between two things the host offers. The VM's size ones
//! (`io.husk.vcpus`, `io.husk.memory_mib`) would let a bundle take more of
//! the host than its resources say; where enabled they are still bounded
//! by the host's CPUs and memory. An `io.husk.*` annotation husk does not
//! know, or one the host has not enabled, is refused in one line (a typo
//! must not be silently ignored).

use husk_protocol::oci;

use super::{At, Result, MAX_VCPUS, NET_BACKEND_ANNOTATION};
use crate::host_config::HostConfig;

pub const VCPUS_ANNOTATION: &str = "io.husk.vcpus";
pub const MEMORY_ANNOTATION: &str = "io.husk.memory_mib";
/// Every annotation husk reads from a bundle.
pub const KNOWN: [&str; 3] = [VCPUS_ANNOTATION, MEMORY_ANNOTATION, NET_BACKEND_ANNOTATION];
/// What a host enables when its configuration says nothing.
pub const ENABLED_BY_DEFAULT: [&str; 1] = [NET_BACKEND_ANNOTATION];
const PREFIX: &str = "io.husk.";

/// What this host gives a microVM, and the annotations it honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLimits {
    /// CPUs this process may run on, 1..=[`MAX_VCPUS`].
    pub cpus: u32,
    /// The host's memory (MemTotal), MiB.
    pub memory_mib: u64,
    /// The `io.husk.*` annotations a bundle may set.
    pub enabled: Vec<String>,
}

impl HostLimits {
    /// This host's CPUs and memory, and the annotations `cfg` enables.
    pub fn of_this_host(cfg: &HostConfig) -> HostLimits {
        let cpus = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(MAX_VCPUS))
            .unwrap_or(1)
            .clamp(1, MAX_VCPUS);
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| mem_total_mib(&m))
            .unwrap_or(u64::MAX);
        HostLimits {
            cpus,
            memory_mib,
            enabled: cfg.enable_annotations.clone(),
        }
    }

    /// A host of `cpus` CPUs and `memory_mib` MiB with the default
    /// annotations (for tests).
    pub fn with(cpus: u32, memory_mib: u64) -> HostLimits {
        HostLimits {
            cpus,
            memory_mib,
            enabled: ENABLED_BY_DEFAULT.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The same host with `names` enabled too.
    pub fn enabling(mut self, names: &[&str]) -> HostLimits {
        self.enabled.extend(names.iter().map(|s| s.to_string()));
        self
    }
}

/// MemTotal of a /proc/meminfo text, MiB.
fn mem_total_mib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib / 1024)
}

/// Refuses an `io.husk.*` annotation husk does not know or `host` has
/// not enabled, naming it.
pub(super) fn check(at: &At, spec: &oci::Spec, host: &HostLimits) -> Result<()> {
    let Some(ann) = spec.annotations() else {
        return Ok(());
    };
    let mut names: Vec<&String> = ann.keys().filter(|k| k.starts_with(PREFIX)).collect();
    names.sort();
    for k in names {
        let field = format!("annotations.{k}");
        if !KNOWN.contains(&k.as_str()) {
            return Err(at.bad(
                &field,
                format!("not an annotation husk knows ({})", KNOWN.join(", ")),
            ));
        }
        if !host.enabled.iter().any(|e| e == k) {
            return Err(at.bad(
                &field,
                format!(
                    "not enabled on this host (enable_annotations in {})",
                    crate::host_config::CONFIG_FILE
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn check_on(ann: serde_json::Value, host: &HostLimits) -> std::result::Result<(), String> {
        let spec: oci::Spec =
            serde_json::from_value(json!({"ociVersion": "1.0.2", "annotations": ann})).unwrap();
        check(&At(Path::new("config.json")), &spec, host).map_err(|e| e.to_string())
    }

    #[test]
    fn only_enabled_husk_annotations_pass() {
        let host = HostLimits::with(2, 4096);
        assert_eq!(
            check_on(
                json!({"io.husk.net.backend": "virtio", "org.other": "x"}),
                &host
            ),
            Ok(())
        );
        assert_eq!(
            check_on(json!({"io.husk.vcpus": "2"}), &host),
            Err(
                "config.json: annotations.io.husk.vcpus: not enabled on this host \
                 (enable_annotations in /etc/husk/config.json)"
                    .into()
            )
        );
        assert_eq!(
            check_on(
                json!({"io.husk.vcpus": "2"}),
                &host.clone().enabling(&[VCPUS_ANNOTATION])
            ),
            Ok(())
        );
        let e = check_on(json!({"io.husk.vcpu": "2"}), &host).unwrap_err();
        assert!(
            e.starts_with("config.json: annotations.io.husk.vcpu: not an annotation husk knows (io.husk.vcpus, "),
            "{e}"
        );
    }

    #[test]
    fn mem_total_is_read_in_mib() {
        let m = "MemFree:  100 kB\nMemTotal:       24601588 kB\n";
        assert_eq!(mem_total_mib(m), Some(24024));
        assert_eq!(mem_total_mib("nothing"), None);
    }
}
