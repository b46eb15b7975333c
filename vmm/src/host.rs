//! Host checks: which KVM implementation backs /dev/kvm, and opening it with
//! errors a user can act on.

use std::path::Path;

use kvm_ioctls::Kvm;

pub const KVM_PATH: &str = "/dev/kvm";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(
        "this host's /dev/kvm is PVM (kvm_pvm) and cannot boot standard guest kernels; \
         run inside the nested lab: tests/lab/run -- husk-vmm ..."
    )]
    Pvm,
    #[error("{KVM_PATH} not found: KVM is not available (load kvm_intel or kvm_amd, or enable nested virtualization)")]
    NotFound,
    #[error("{KVM_PATH}: permission denied (add this user to the group owning {KVM_PATH})")]
    NotPermitted,
    #[error("{KVM_PATH}: {0}")]
    Other(String),
    #[error("KVM API version {0} is not supported (need 12)")]
    ApiVersion(i32),
}

/// True if `sysfs` (normally `/sys`) shows the PVM flavour of KVM and no
/// hardware-virtualization KVM module.
pub fn is_pvm(sysfs: &Path) -> bool {
    let module = |m: &str| sysfs.join("module").join(m).exists();
    module("kvm_pvm") && !module("kvm_intel") && !module("kvm_amd")
}

/// Opens /dev/kvm, refusing PVM hosts first unless `allow_pvm` (no guest
/// code will run: `--startup-only`).
pub fn open_kvm(allow_pvm: bool) -> Result<Kvm, Error> {
    if !allow_pvm && is_pvm(Path::new("/sys")) {
        return Err(Error::Pvm);
    }
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => Error::NotFound,
        libc::EACCES | libc::EPERM => Error::NotPermitted,
        _ => Error::Other(e.to_string()),
    })?;
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(Error::ApiVersion(v));
    }
    Ok(kvm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(modules: &[&str]) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!(
            "husk-sysfs-{}-{}",
            std::process::id(),
            modules.join("-")
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("module")).unwrap();
        for m in modules {
            std::fs::create_dir_all(root.join("module").join(m)).unwrap();
        }
        root
    }

    #[test]
    fn pvm_detection() {
        for (mods, want) in [
            (&["kvm", "kvm_pvm"][..], true),
            (&["kvm", "kvm_pvm", "kvm_intel"][..], false),
            (&["kvm", "kvm_pvm", "kvm_amd"][..], false),
            (&["kvm", "kvm_intel"][..], false),
            (&[][..], false),
        ] {
            let root = fake_sysfs(mods);
            assert_eq!(is_pvm(&root), want, "{mods:?}");
            std::fs::remove_dir_all(&root).unwrap();
        }
        assert!(!is_pvm(Path::new("/nonexistent-sysfs")));
    }

    #[test]
    fn pvm_message_is_one_line() {
        let m = Error::Pvm.to_string();
        assert!(!m.contains('\n'));
        assert!(m.contains("tests/lab/run -- husk-vmm"));
    }
}
