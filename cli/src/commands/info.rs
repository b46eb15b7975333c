//! Commands that need no container: `features`, `spec`, `bench`, and
//! `checkpoint` / `restore`, which a microVM cannot do.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use husk_protocol::oci;
use husk_runtime::OCI_VERSION;
use serde_json::{json, Value};

use crate::error::{Error, Result};

pub fn features() -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&features_value()).unwrap_or_default()
    );
    Ok(())
}

fn features_value() -> Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "relatime",
                          "strictatime", "nostrictatime", "private", "rprivate", "slave", "rslave"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "cgroup": {"v1": false, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {"enabled": false},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {
            "io.husk.vmm": "husk-vmm (KVM microVM, one per container)",
            "io.husk.vcpus": "vCPUs of the microVM (default: from linux.resources.cpu; only where /etc/husk/config.json enable_annotations lists it)",
            "io.husk.memory_mib": "guest memory in MiB (default: memory limit + 64, at least 128; only where enable_annotations lists it)",
            "io.husk.net.backend": "virtio or vhost: who serves the NICs (enabled by default)",
            "io.husk.ignored": "process.apparmorProfile, process.selinuxLabel, linux.mountLabel: ignored with a warning in the log (no AppArmor or SELinux in the guest; the microVM is the boundary)",
        },
    })
}

pub fn spec(bundle: Option<&Path>) -> Result<()> {
    let dir = match bundle {
        Some(b) => b.to_path_buf(),
        None => std::env::current_dir().map_err(|source| Error::Io {
            what: "current directory",
            source,
        })?,
    };
    let p = dir.join("config.json");
    if p.exists() {
        return Err(Error::SpecExists(p));
    }
    let s = oci::Spec::default();
    let data = serde_json::to_vec_pretty(&s).map_err(Error::EncodeSpec)?;
    std::fs::write(&p, data).map_err(|source| Error::WriteSpec { path: p, source })
}

pub fn checkpoint() -> Result<i32> {
    Err(Error::Unsupported(
        "checkpoint is not supported: the container's processes live in a microVM, which CRIU cannot checkpoint",
    ))
}

pub fn restore() -> Result<i32> {
    Err(Error::Unsupported(
        "restore is not supported: husk cannot checkpoint, so there is nothing to restore",
    ))
}

pub fn bench(args: &[String]) -> Result<i32> {
    let next = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("husk-bench")))
        .filter(|p| p.is_file());
    let prog = next.unwrap_or_else(|| PathBuf::from("husk-bench"));
    let source = Command::new(&prog).args(args).exec();
    Err(Error::Bench {
        program: prog,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_name_hooks() {
        let f = features_value();
        assert_eq!(f["ociVersionMax"], OCI_VERSION);
        assert!(f["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "poststop"));
        for a in husk_runtime::bundle::KNOWN_ANNOTATIONS {
            assert!(f["annotations"][a].is_string(), "{a} is not in features");
        }
        let ignored = f["annotations"]["io.husk.ignored"].as_str().unwrap();
        for field in ["apparmorProfile", "selinuxLabel", "mountLabel"] {
            assert!(ignored.contains(field), "{field}");
        }
    }

    #[test]
    fn default_spec_is_loadable() {
        let d = std::env::temp_dir().join(format!("husk-spec-{}", std::process::id()));
        std::fs::create_dir_all(d.join("rootfs")).unwrap();
        spec(Some(&d)).unwrap();
        assert!(spec(Some(&d)).unwrap_err().to_string().contains("exists"));
        let b = husk_runtime::bundle::load(&d).unwrap();
        assert_eq!(b.rootfs, std::fs::canonicalize(d.join("rootfs")).unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
