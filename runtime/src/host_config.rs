//! Where husk finds its parts on the host. Daemons run the runtime with
//! their own environment, so each has a fixed default, then
//! `/etc/husk/config.json`, then an environment variable:
//!
//! | part        | default                                             | config key   | env             |
//! |-------------|-----------------------------------------------------|--------------|-----------------|
//! | VMM         | `husk-vmm` next to `husk`, else on PATH             | `vmm`        | `HUSK_VMM`      |
//! | virtiofsd   | /usr/lib/qemu/virtiofsd, /usr/libexec/virtiofsd     | `virtiofsd`  | `HUSK_VIRTIOFSD`|
//! | kernel      | /usr/share/husk/vmlinux                             | `kernel`     | `HUSK_KERNEL`   |
//! | initramfs   | /usr/share/husk/initramfs.img                       | `initramfs`  | `HUSK_INITRAMFS`|
//! | boot wait   | 120 s                                               | `boot_timeout_secs` | `HUSK_BOOT_TIMEOUT` |
//! | agent debug | off: the agent's per-request debug lines (console.log) | `agent_debug` | `HUSK_AGENT_DEBUG` (1/0) |
//! | annotations a bundle may set | `io.husk.net.backend` | `enable_annotations` (list) | `HUSK_ENABLE_ANNOTATIONS` (comma-separated) |

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A host part that is missing or misconfigured.
#[derive(Debug, thiserror::Error)]
pub enum HostConfigError {
    #[error("{CONFIG_FILE}: {0}")]
    Read(std::io::Error),
    #[error("{CONFIG_FILE}: {0}")]
    Parse(serde_json::Error),
    /// An environment variable with a value it cannot have.
    #[error("{name}={value:?}: want {want}")]
    Env {
        name: &'static str,
        value: String,
        want: &'static str,
    },
    /// `enable_annotations` names one husk does not read.
    #[error("enable_annotations: {0:?} is not an annotation husk knows")]
    UnknownAnnotation(String),
    /// A part that is not there: `husk-vmm (HUSK_VMM): PATH not found`.
    #[error("{part}: {} not found", path.display())]
    Missing { part: &'static str, path: PathBuf },
}

type Result<T, E = HostConfigError> = std::result::Result<T, E>;

pub const CONFIG_FILE: &str = "/etc/husk/config.json";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    vmm: Option<PathBuf>,
    virtiofsd: Option<PathBuf>,
    kernel: Option<PathBuf>,
    initramfs: Option<PathBuf>,
    boot_timeout_secs: Option<u64>,
    agent_debug: Option<bool>,
    enable_annotations: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct HostConfig {
    pub vmm: PathBuf,
    pub virtiofsd: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub boot_timeout: Duration,
    /// Boot the agent with `husk.debug`: it logs each request and the
    /// phases of creating and starting a container on the VM's console
    /// (every console byte is a VM exit: off by default).
    pub agent_debug: bool,
    /// The `io.husk.*` annotations a bundle may set (see
    /// [`crate::bundle::HostLimits`]).
    pub enable_annotations: Vec<String>,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

fn env_path(k: &str) -> Option<PathBuf> {
    std::env::var_os(k)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A boolean environment variable: 1/true or 0/false.
fn env_bool(name: &'static str, v: &str) -> Result<bool> {
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(HostConfigError::Env {
            name,
            value: v.to_string(),
            want: "1 or 0",
        }),
    }
}

/// A comma-separated list, without empty items.
fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

/// Refuses to enable an annotation husk does not know (a typo would
/// leave the one meant disabled without a word).
fn check_annotations(names: &[String]) -> Result<()> {
    match names
        .iter()
        .find(|n| !crate::bundle::KNOWN_ANNOTATIONS.contains(&n.as_str()))
    {
        Some(n) => Err(HostConfigError::UnknownAnnotation(n.clone())),
        None => Ok(()),
    }
}

impl HostConfig {
    pub fn load() -> Result<HostConfig> {
        let file: File = match std::fs::read(CONFIG_FILE) {
            Ok(d) => serde_json::from_slice(&d).map_err(HostConfigError::Parse)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(HostConfigError::Read(e)),
        };
        let vmm = env_path("HUSK_VMM")
            .or(file.vmm)
            .or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|e| e.parent().map(|d| d.join("husk-vmm")))
                    .filter(|p| p.is_file())
            })
            .or_else(|| on_path("husk-vmm"))
            .unwrap_or_else(|| PathBuf::from("husk-vmm"));
        let virtiofsd = env_path("HUSK_VIRTIOFSD")
            .or(file.virtiofsd)
            .or_else(|| {
                ["/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_file())
            })
            .or_else(|| on_path("virtiofsd"))
            .unwrap_or_else(|| PathBuf::from("/usr/lib/qemu/virtiofsd"));
        let kernel = env_path("HUSK_KERNEL")
            .or(file.kernel)
            .unwrap_or_else(|| husk_vm_config::DEFAULT_KERNEL.into());
        let initramfs = env_path("HUSK_INITRAMFS")
            .or(file.initramfs)
            .unwrap_or_else(|| husk_vm_config::DEFAULT_INITRD.into());
        let secs = match std::env::var("HUSK_BOOT_TIMEOUT") {
            Ok(s) if !s.is_empty() => {
                s.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| HostConfigError::Env {
                        name: "HUSK_BOOT_TIMEOUT",
                        value: s.clone(),
                        want: "seconds > 0",
                    })?
            }
            _ => file.boot_timeout_secs.unwrap_or(120),
        };
        let agent_debug = match std::env::var("HUSK_AGENT_DEBUG") {
            Ok(s) if !s.is_empty() => env_bool("HUSK_AGENT_DEBUG", &s)?,
            _ => file.agent_debug.unwrap_or(false),
        };
        let enable_annotations = match std::env::var("HUSK_ENABLE_ANNOTATIONS") {
            Ok(s) => Some(split_list(&s)),
            Err(_) => file.enable_annotations,
        }
        .unwrap_or_else(|| {
            crate::bundle::ENABLED_BY_DEFAULT
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        check_annotations(&enable_annotations)?;
        let c = HostConfig {
            vmm,
            virtiofsd,
            kernel,
            initramfs,
            boot_timeout: Duration::from_secs(secs),
            agent_debug,
            enable_annotations,
        };
        Ok(c)
    }

    /// Fails with one line naming the first part that is missing.
    pub fn check(&self) -> Result<()> {
        for (what, p) in [
            ("husk-vmm (HUSK_VMM)", &self.vmm),
            ("virtiofsd (HUSK_VIRTIOFSD)", &self.virtiofsd),
            ("guest kernel (HUSK_KERNEL)", &self.kernel),
            ("guest initramfs (HUSK_INITRAMFS)", &self.initramfs),
        ] {
            if !Path::new(p).is_file() {
                return Err(HostConfigError::Missing {
                    part: what,
                    path: p.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_bool_takes_1_0_true_false_and_names_a_bad_value() {
        assert!(env_bool("X", "1").unwrap());
        assert!(env_bool("X", "true").unwrap());
        assert!(!env_bool("X", "0").unwrap());
        assert!(!env_bool("X", "false").unwrap());
        assert_eq!(
            env_bool("HUSK_AGENT_DEBUG", "yes").unwrap_err().to_string(),
            "HUSK_AGENT_DEBUG=\"yes\": want 1 or 0"
        );
    }

    #[test]
    fn enabled_annotations_are_a_list_of_known_ones() {
        assert_eq!(
            split_list(" io.husk.vcpus,,io.husk.memory_mib "),
            ["io.husk.vcpus", "io.husk.memory_mib"]
        );
        assert!(check_annotations(&split_list("io.husk.vcpus,io.husk.net.backend")).is_ok());
        assert_eq!(
            check_annotations(&split_list("io.husk.cpus"))
                .unwrap_err()
                .to_string(),
            "enable_annotations: \"io.husk.cpus\" is not an annotation husk knows"
        );
        let f: File = serde_json::from_str(r#"{"enable_annotations": ["io.husk.vcpus"]}"#).unwrap();
        assert_eq!(f.enable_annotations.unwrap(), ["io.husk.vcpus"]);
    }

    #[test]
    fn config_file_takes_agent_debug_and_rejects_unknown_keys() {
        let f: File = serde_json::from_str(r#"{"agent_debug": true}"#).unwrap();
        assert_eq!(f.agent_debug, Some(true));
        let e = serde_json::from_str::<File>(r#"{"agent_debgu": true}"#).unwrap_err();
        assert!(e.to_string().contains("agent_debgu"), "{e}");
    }
}
