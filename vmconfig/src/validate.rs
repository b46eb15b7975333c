//! Validation of a [`ConfigInput`] into the [`VmConfig`] husk-vmm runs:
//! defaults filled in, ranges and paths checked, each error naming its
//! field.

use std::path::{Path, PathBuf};

use crate::{
    err, io_msg, ConfigError, ConfigInput, DiskConfig, FsConfig, NetConfig, SerialConfig,
    DEFAULT_CMDLINE, DEFAULT_INITRD, DEFAULT_KERNEL, DEFAULT_MEMORY_MIB, DEFAULT_VCPUS,
    DEFAULT_VSOCK_CID, MAX_FS_QUEUE_SIZE, MAX_MEMORY_MIB, MAX_VCPUS, MAX_VIRTIO_DEVICES,
    MIN_MEMORY_MIB, UNIX_PATH_MAX,
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
    /// virtio-net devices, attached after every other virtio device.
    pub net: Vec<NetConfig>,
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

    /// Number of virtio-mmio devices (disks, file systems, vsock, NICs).
    pub fn virtio_devices(&self) -> usize {
        self.disks.len() + self.fs.len() + usize::from(self.vsock.is_some()) + self.net.len()
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
        let net = input.net.unwrap_or_default();
        check_nets(&net)?;
        let devices = disks.len() + fs.len() + usize::from(vsock.is_some()) + net.len();
        if devices > MAX_VIRTIO_DEVICES {
            let field = match (net.is_empty(), fs.is_empty()) {
                (false, _) => "net",
                (true, false) => "fs",
                (true, true) => "disk",
            };
            return Err(err(
                field,
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
            net,
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

/// Each NIC's fields, and no tap descriptor, tap name or MAC twice.
fn check_nets(nets: &[NetConfig]) -> Result<(), ConfigError> {
    let field = "net";
    for (i, n) in nets.iter().enumerate() {
        let mac = n.mac;
        match (n.tap_fd, &n.tap_name) {
            (Some(_), Some(_)) => {
                return Err(err(
                    field,
                    format!("mac {mac}: both a tap fd and a tap name"),
                ))
            }
            (None, None) => return Err(err(field, format!("mac {mac}: no tap fd or tap name"))),
            (Some(fd), None) if fd < 3 => {
                return Err(err(
                    field,
                    format!("fd {fd} is not an inherited descriptor (3 or above)"),
                ))
            }
            (Some(_), None) => {}
            (None, Some(name)) => husk_protocol::net::check_ifname(name)
                .map_err(|e| err(field, format!("tap name {e}")))?,
        }
        if mac.0[0] & 1 != 0 || mac.0 == [0; 6] {
            return Err(err(field, format!("mac {mac} is not a unicast address")));
        }
        use husk_protocol::net::{MAX_MTU, MIN_MTU};
        if let Some(mtu) = n.mtu.filter(|m| !(MIN_MTU..=MAX_MTU).contains(m)) {
            return Err(err(
                field,
                format!("mtu {mtu} for mac {mac} is not in {MIN_MTU}..={MAX_MTU}"),
            ));
        }
        let earlier = &nets[..i];
        if n.tap_fd.is_some() && earlier.iter().any(|o| o.tap_fd == n.tap_fd) {
            return Err(err(field, format!("{} is given twice", n.describe())));
        }
        if n.tap_name.is_some() && earlier.iter().any(|o| o.tap_name == n.tap_name) {
            return Err(err(field, format!("{} is given twice", n.describe())));
        }
        if earlier.iter().any(|o| o.mac == mac) {
            return Err(err(field, format!("mac {mac} is given twice")));
        }
    }
    Ok(())
}
