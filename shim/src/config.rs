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

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::util::{Context, Result};

pub const CONFIG_FILE: &str = "/etc/husk/config.json";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    vmm: Option<PathBuf>,
    virtiofsd: Option<PathBuf>,
    kernel: Option<PathBuf>,
    initramfs: Option<PathBuf>,
    boot_timeout_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct HostConfig {
    pub vmm: PathBuf,
    pub virtiofsd: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub boot_timeout: Duration,
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

impl HostConfig {
    pub fn load() -> Result<HostConfig> {
        let file: File = match std::fs::read(CONFIG_FILE) {
            Ok(d) => serde_json::from_slice(&d).ctx(CONFIG_FILE)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(format!("{CONFIG_FILE}: {e}")),
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
            .unwrap_or_else(|| "/usr/share/husk/vmlinux".into());
        let initramfs = env_path("HUSK_INITRAMFS")
            .or(file.initramfs)
            .unwrap_or_else(|| "/usr/share/husk/initramfs.img".into());
        let secs = match std::env::var("HUSK_BOOT_TIMEOUT") {
            Ok(s) if !s.is_empty() => s
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("HUSK_BOOT_TIMEOUT={s:?}: want seconds > 0"))?,
            _ => file.boot_timeout_secs.unwrap_or(120),
        };
        let c = HostConfig {
            vmm,
            virtiofsd,
            kernel,
            initramfs,
            boot_timeout: Duration::from_secs(secs),
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
                return Err(format!("{what}: {} not found", p.display()));
            }
        }
        Ok(())
    }
}
