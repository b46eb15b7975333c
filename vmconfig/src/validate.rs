//! Validation of a [`ConfigInput`] into the [`VmConfig`] husk-vmm runs:
//! defaults filled in, ranges and paths checked, each error naming its
//! field.

use std::path::{Path, PathBuf};

use crate::{
    err, io_msg, ConfigError, ConfigInput, DiskConfig, FsConfig, SerialConfig, DEFAULT_CMDLINE,
    DEFAULT_INITRD, DEFAULT_KERNEL, DEFAULT_MEMORY_MIB, DEFAULT_VCPUS, DEFAULT_VSOCK_CID,
    MAX_FS_QUEUE_SIZE, MAX_MEMORY_MIB, MAX_VCPUS, MAX_VIRTIO_DEVICES, MIN_MEMORY_MIB,
    UNIX_PATH_MAX,
};

/// A validated VM configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub append: String,
    pub vcpus: u8,
    pub memory_mib: u64,
    pub disks: Vec<DiskConfig>,
    pub fs: Vec<FsConfig>,
    pub vsock: Option<VsockConfig>,
    pub serial: SerialConfig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    pub uds: PathBuf,
    pub cid: u64,
}

impl VmConfig {
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }

    /// Number of virtio-mmio devices (disks, file systems, vsock).
    pub fn virtio_devices(&self) -> usize {
        self.disks.len() + self.fs.len() + usize::from(self.vsock.is_some())
    }

    /// Whether guest RAM must be shareable with another process (a
    /// vhost-user backend maps it).
    pub fn shared_memory(&self) -> bool {
        !self.fs.is_empty()
    }

    /// Validates `input`, filling defaults. `env` looks up environment
    /// variables (`HUSK_KERNEL`, `HUSK_INITRAMFS`).
    pub fn from_input(
        input: ConfigInput,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<VmConfig, ConfigError> {
        let env_path = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let kernel = input
            .kernel
            .or_else(|| env_path("HUSK_KERNEL"))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_KERNEL));
        let initrd = input
            .initrd
            .or_else(|| env_path("HUSK_INITRAMFS"))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_INITRD));
        let vcpus = check_vcpus(input.vcpus.unwrap_or(DEFAULT_VCPUS))?;
        let memory_mib = check_memory(input.memory.unwrap_or(DEFAULT_MEMORY_MIB))?;

        let disks = input.disks.unwrap_or_default();
        for d in &disks {
            check_disk(&d.path)?;
        }
        let fs = input.fs.unwrap_or_default();
        for (i, f) in fs.iter().enumerate() {
            check_fs(f)?;
            if fs[..i].iter().any(|o| o.tag == f.tag) {
                return Err(err("fs", format!("tag '{}' is used twice", f.tag)));
            }
        }
        let vsock = match (input.vsock_uds, input.vsock_cid) {
            (Some(uds), cid) => {
                let cid = cid.unwrap_or(DEFAULT_VSOCK_CID);
                check_vsock(&uds, cid)?;
                Some(VsockConfig { uds, cid })
            }
            (None, Some(_)) => return Err(err("vsock-cid", "given without --vsock-uds")),
            (None, None) => None,
        };
        let devices = disks.len() + fs.len() + usize::from(vsock.is_some());
        if devices > MAX_VIRTIO_DEVICES {
            return Err(err(
                if fs.is_empty() { "disk" } else { "fs" },
                format!("{devices} virtio devices requested, at most {MAX_VIRTIO_DEVICES} fit"),
            ));
        }

        let serial = match input.serial {
            Some(s) => s.parse()?,
            None => SerialConfig::Stdout,
        };
        let cmdline = input.cmdline.unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
        let append = input.append.unwrap_or_default();
        for (field, s) in [("cmdline", &cmdline), ("append", &append)] {
            check_printable(field, s)?;
        }

        Ok(VmConfig {
            kernel,
            initrd,
            cmdline,
            append,
            vcpus,
            memory_mib,
            disks,
            fs,
            vsock,
            serial,
        })
    }
}

fn check_vcpus(vcpus: u32) -> Result<u8, ConfigError> {
    if !(1..=MAX_VCPUS).contains(&vcpus) {
        return Err(err(
            "vcpus",
            format!("{vcpus} is out of range 1..={MAX_VCPUS}"),
        ));
    }
    u8::try_from(vcpus).map_err(|_| err("vcpus", format!("{vcpus} does not fit in a byte")))
}

fn check_memory(memory_mib: u64) -> Result<u64, ConfigError> {
    if memory_mib < MIN_MEMORY_MIB {
        return Err(err(
            "memory",
            format!("{memory_mib} MiB is below the minimum of {MIN_MEMORY_MIB} MiB"),
        ));
    }
    if memory_mib > MAX_MEMORY_MIB {
        return Err(err(
            "memory",
            format!("{memory_mib} MiB is above the maximum of {MAX_MEMORY_MIB} MiB"),
        ));
    }
    Ok(memory_mib)
}

fn check_printable(field: &str, s: &str) -> Result<(), ConfigError> {
    match s.chars().find(|c| !(' '..='~').contains(c)) {
        Some(c) => Err(err(
            field,
            format!("invalid character {c:?} (printable ASCII only)"),
        )),
        None => Ok(()),
    }
}

fn check_disk(path: &Path) -> Result<(), ConfigError> {
    let field = "disk";
    let meta = std::fs::metadata(path)
        .map_err(|e| err(field, format!("{}: {}", path.display(), io_msg(&e))))?;
    use std::os::unix::fs::FileTypeExt;
    if !(meta.is_file() || meta.file_type().is_block_device()) {
        return Err(err(
            field,
            format!("{}: not a regular file or block device", path.display()),
        ));
    }
    Ok(())
}

/// A Unix socket path's length: not empty, fits in `sun_path`.
fn check_socket_len(path: &Path) -> Result<(), String> {
    let len = path.as_os_str().len();
    if len == 0 {
        return Err("empty path".into());
    }
    if len > UNIX_PATH_MAX {
        return Err(format!(
            "{}: {len} bytes is too long for a Unix socket path (max {UNIX_PATH_MAX})",
            path.display()
        ));
    }
    Ok(())
}

fn check_fs(f: &FsConfig) -> Result<(), ConfigError> {
    let field = "fs";
    let tag = &f.tag;
    crate::check_share_tag(tag).map_err(|e| err(field, e.to_string()))?;
    let q = f.queue_size;
    if !(1..=MAX_FS_QUEUE_SIZE).contains(&q) || !q.is_power_of_two() {
        return Err(err(
            field,
            format!(
                "queue_size {q} for tag '{tag}' is not a power of two in 1..={MAX_FS_QUEUE_SIZE}"
            ),
        ));
    }
    // The socket is virtiofsd's and may not exist yet: the device waits for
    // it (bounded) when the VM starts. Only what can never work is refused.
    if f.socket.as_os_str().is_empty() {
        return Err(err(field, format!("empty socket path for tag '{tag}'")));
    }
    check_socket_len(&f.socket).map_err(|e| err(field, format!("socket {e}")))
}

fn check_vsock(uds: &Path, cid: u64) -> Result<(), ConfigError> {
    if !(3..u64::from(u32::MAX)).contains(&cid) {
        return Err(err(
            "vsock-cid",
            format!("{cid} is reserved or too large (use 3..{})", u32::MAX),
        ));
    }
    let field = "vsock-uds";
    check_socket_len(uds).map_err(|e| err(field, e))?;
    if std::fs::symlink_metadata(uds).is_ok() {
        return Err(err(field, format!("{}: already exists", uds.display())));
    }
    let parent = match uds.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(err(
            field,
            format!(
                "{}: directory {} does not exist",
                uds.display(),
                parent.display()
            ),
        ));
    }
    Ok(())
}
