//! VM configuration: from `husk-vmm run` flags and/or a JSON file (same
//! fields), validated into a [`VmConfig`]. Every error is one line naming the
//! offending field or path.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::arch::layout::MAX_VIRTIO_DEVICES;

pub const DEFAULT_KERNEL: &str = "/usr/share/husk/vmlinux";
pub const DEFAULT_INITRD: &str = "/usr/share/husk/initramfs.img";
pub const DEFAULT_VCPUS: u32 = 1;
pub const DEFAULT_MEMORY_MIB: u64 = 128;
pub const DEFAULT_VSOCK_CID: u64 = 3;
/// Default size of each virtio-fs queue (libvhost-user's, and so C
/// virtiofsd's, maximum).
pub const DEFAULT_FS_QUEUE_SIZE: u16 = 1024;
pub const MAX_FS_QUEUE_SIZE: u16 = 1024;
/// virtio-fs config space holds the tag in 36 bytes (spec §5.11.4).
pub const FS_TAG_MAX: usize = 36;
pub const MAX_VCPUS: u32 = 32;
pub const MIN_MEMORY_MIB: u64 = 64;
/// 256 GiB: far beyond what a husk sandbox needs; catches unit mistakes.
pub const MAX_MEMORY_MIB: u64 = 256 << 10;
/// `sun_path` is 108 bytes including the NUL.
const UNIX_PATH_MAX: usize = 107;

/// The default kernel command line (before virtio-mmio entries). Every
/// option here is on the boot-latency path:
/// - `console=ttyS0`, `8250.nr_uarts=1`: one UART, no probing of the others;
/// - `reboot=k`, `panic=-1`: reboot and panic reset through the i8042, which
///   ends the VMM;
/// - `pci=off`: no PCI scan on kernels built with PCI (`nomodule` is left
///   out: it is no kernel parameter and would end up in init's argv);
/// - `i8042.*`: no AUX/MUX probing, no keyboard LED/ID exchange;
/// - `tsc=reliable`, `no_timer_check`: skip the TSC watchdog and the IO-APIC
///   timer sanity check;
/// - `quiet`: every console byte is a VM exit.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 8250.nr_uarts=1 reboot=k panic=-1 pci=off \
     i8042.noaux i8042.nomux i8042.dumbkbd i8042.nopnp tsc=reliable no_timer_check quiet";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {msg}")]
pub struct ConfigError {
    pub field: String,
    pub msg: String,
}

fn err(field: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        msg: msg.into(),
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

impl std::str::FromStr for DiskConfig {
    type Err = ConfigError;

    /// `PATH` or `PATH,ro` / `PATH,rw`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (path, read_only) = match s.rsplit_once(',') {
            Some((p, "ro")) => (p, true),
            Some((p, "rw")) => (p, false),
            Some((_, opt)) => {
                return Err(err(
                    "disk",
                    format!("unknown option '{opt}' in '{s}' (expected PATH[,ro])"),
                ))
            }
            None => (s, false),
        };
        if path.is_empty() {
            return Err(err("disk", format!("empty path in '{s}'")));
        }
        Ok(DiskConfig {
            path: PathBuf::from(path),
            read_only,
        })
    }
}

/// A virtio-fs device served by a vhost-user backend (virtiofsd).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FsConfig {
    /// The tag the guest mounts (`mount -t virtiofs TAG DIR`).
    pub tag: String,
    /// The backend's vhost-user socket (virtiofsd `--socket-path`).
    pub socket: PathBuf,
    /// Size of each of the two queues.
    #[serde(default = "default_fs_queue_size")]
    pub queue_size: u16,
}

fn default_fs_queue_size() -> u16 {
    DEFAULT_FS_QUEUE_SIZE
}

const FS_SYNTAX: &str = "expected tag=TAG,socket=PATH[,queue_size=N]";

impl std::str::FromStr for FsConfig {
    type Err = ConfigError;

    /// `tag=TAG,socket=PATH[,queue_size=N]`, keys in any order. Values are
    /// checked by [`VmConfig::from_input`].
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (mut tag, mut socket, mut queue_size) = (None, None, None);
        for item in s.split(',') {
            let Some((k, v)) = item.split_once('=') else {
                return Err(err(
                    "fs",
                    format!("'{item}' in '{s}' is not KEY=VALUE ({FS_SYNTAX})"),
                ));
            };
            let slot = match k {
                "tag" => &mut tag,
                "socket" => &mut socket,
                "queue_size" => &mut queue_size,
                _ => {
                    return Err(err(
                        "fs",
                        format!("unknown key '{k}' in '{s}' ({FS_SYNTAX})"),
                    ))
                }
            };
            if slot.replace(v).is_some() {
                return Err(err("fs", format!("'{k}' given twice in '{s}'")));
            }
        }
        let (Some(tag), Some(socket)) = (tag, socket) else {
            let missing = if tag.is_none() { "tag" } else { "socket" };
            return Err(err("fs", format!("no {missing}= in '{s}' ({FS_SYNTAX})")));
        };
        let queue_size = match queue_size {
            None => DEFAULT_FS_QUEUE_SIZE,
            Some(q) => q.parse().map_err(|_| {
                err(
                    "fs",
                    format!("queue_size '{q}' in '{s}' is not a number in 1..={MAX_FS_QUEUE_SIZE}"),
                )
            })?,
        };
        Ok(FsConfig {
            tag: tag.to_string(),
            socket: PathBuf::from(socket),
            queue_size,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialConfig {
    Stdout,
    File(PathBuf),
    None,
}

impl std::str::FromStr for SerialConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "stdout" => Ok(SerialConfig::Stdout),
            "none" => Ok(SerialConfig::None),
            _ => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(SerialConfig::File(PathBuf::from(p))),
                _ => Err(err(
                    "serial",
                    format!("expected stdout, none or file:PATH, got '{s}'"),
                )),
            },
        }
    }
}

/// All fields optional: the JSON file, or the flags given on the command line.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigInput {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub append: Option<String>,
    pub vcpus: Option<u32>,
    /// MiB.
    pub memory: Option<u64>,
    pub disks: Option<Vec<DiskConfig>>,
    pub fs: Option<Vec<FsConfig>>,
    pub vsock_uds: Option<PathBuf>,
    pub vsock_cid: Option<u64>,
    pub serial: Option<String>,
}

impl ConfigInput {
    pub fn from_json_file(path: &Path) -> Result<Self, ConfigError> {
        let field = "config";
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(field, format!("{}: {}", path.display(), io_msg(&e))))?;
        serde_json::from_str(&text).map_err(|e| err(field, format!("{}: {e}", path.display())))
    }

    /// `self` with every field `over` sets replaced.
    pub fn merge(self, over: ConfigInput) -> ConfigInput {
        ConfigInput {
            kernel: over.kernel.or(self.kernel),
            initrd: over.initrd.or(self.initrd),
            cmdline: over.cmdline.or(self.cmdline),
            append: over.append.or(self.append),
            vcpus: over.vcpus.or(self.vcpus),
            memory: over.memory.or(self.memory),
            disks: over.disks.or(self.disks),
            fs: over.fs.or(self.fs),
            vsock_uds: over.vsock_uds.or(self.vsock_uds),
            vsock_cid: over.vsock_cid.or(self.vsock_cid),
            serial: over.serial.or(self.serial),
        }
    }
}

/// Short message for an I/O error ("not found", "permission denied", ...).
pub fn io_msg(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "not found".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

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

        let vcpus = input.vcpus.unwrap_or(DEFAULT_VCPUS);
        if !(1..=MAX_VCPUS).contains(&vcpus) {
            return Err(err(
                "vcpus",
                format!("{vcpus} is out of range 1..={MAX_VCPUS}"),
            ));
        }
        let memory_mib = input.memory.unwrap_or(DEFAULT_MEMORY_MIB);
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
            if let Some(c) = s.chars().find(|c| !(' '..='~').contains(c)) {
                return Err(err(
                    field,
                    format!("invalid character {c:?} (printable ASCII only)"),
                ));
            }
        }

        Ok(VmConfig {
            kernel,
            initrd,
            cmdline,
            append,
            vcpus: vcpus as u8,
            memory_mib,
            disks,
            fs,
            vsock,
            serial,
        })
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

fn check_fs(f: &FsConfig) -> Result<(), ConfigError> {
    let field = "fs";
    let tag = &f.tag;
    if tag.is_empty() || tag.len() > FS_TAG_MAX {
        return Err(err(
            field,
            format!("tag '{tag}' must be 1 to {FS_TAG_MAX} bytes long"),
        ));
    }
    if let Some(c) = tag.chars().find(|c| !c.is_ascii_graphic() || *c == ',') {
        return Err(err(
            field,
            format!("tag '{tag}': invalid character {c:?} (printable ASCII, no spaces or commas)"),
        ));
    }
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
    let len = f.socket.as_os_str().len();
    if len == 0 {
        return Err(err(field, format!("empty socket path for tag '{tag}'")));
    }
    if len > UNIX_PATH_MAX {
        return Err(err(
            field,
            format!(
                "socket {}: {len} bytes is too long for a Unix socket path (max {UNIX_PATH_MAX})",
                f.socket.display()
            ),
        ));
    }
    Ok(())
}

fn check_vsock(uds: &Path, cid: u64) -> Result<(), ConfigError> {
    if !(3..u32::MAX as u64).contains(&cid) {
        return Err(err(
            "vsock-cid",
            format!("{cid} is reserved or too large (use 3..{})", u32::MAX),
        ));
    }
    let field = "vsock-uds";
    let len = uds.as_os_str().len();
    if len == 0 {
        return Err(err(field, "empty path"));
    }
    if len > UNIX_PATH_MAX {
        return Err(err(
            field,
            format!(
                "{}: {len} bytes is too long for a Unix socket path (max {UNIX_PATH_MAX})",
                uds.display()
            ),
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("husk-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn cfg(input: ConfigInput) -> Result<VmConfig, String> {
        VmConfig::from_input(input, no_env).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = cfg(ConfigInput::default()).unwrap();
        assert_eq!(c.kernel, PathBuf::from(DEFAULT_KERNEL));
        assert_eq!(c.initrd, PathBuf::from(DEFAULT_INITRD));
        assert_eq!((c.vcpus, c.memory_mib), (1, 128));
        assert_eq!(c.cmdline, DEFAULT_CMDLINE);
        assert_eq!(c.serial, SerialConfig::Stdout);
        assert!(c.vsock.is_none() && c.disks.is_empty());
    }

    #[test]
    fn env_overrides_default_paths_but_not_explicit_ones() {
        let env = |k: &str| match k {
            "HUSK_KERNEL" => Some("/k".to_string()),
            "HUSK_INITRAMFS" => Some("/i".to_string()),
            _ => None,
        };
        let c = VmConfig::from_input(ConfigInput::default(), env).unwrap();
        assert_eq!(
            (c.kernel.to_str(), c.initrd.to_str()),
            (Some("/k"), Some("/i"))
        );
        let c = VmConfig::from_input(
            ConfigInput {
                kernel: Some("/x".into()),
                ..Default::default()
            },
            env,
        )
        .unwrap();
        assert_eq!(c.kernel.to_str(), Some("/x"));
    }

    #[test]
    fn range_errors_name_the_field() {
        let e = cfg(ConfigInput {
            memory: Some(32),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e, "memory: 32 MiB is below the minimum of 64 MiB");
        let e = cfg(ConfigInput {
            memory: Some(1 << 40),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.starts_with("memory: "), "{e}");
        assert!(cfg(ConfigInput {
            memory: Some(64),
            ..Default::default()
        })
        .is_ok());
        let e = cfg(ConfigInput {
            vcpus: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e, "vcpus: 0 is out of range 1..=32");
        let e = cfg(ConfigInput {
            vcpus: Some(33),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e, "vcpus: 33 is out of range 1..=32");
        assert_eq!(
            cfg(ConfigInput {
                vcpus: Some(32),
                ..Default::default()
            })
            .unwrap()
            .vcpus,
            32
        );
    }

    #[test]
    fn serial_specs() {
        assert_eq!("stdout".parse(), Ok(SerialConfig::Stdout));
        assert_eq!("none".parse(), Ok(SerialConfig::None));
        assert_eq!(
            "file:/tmp/x".parse(),
            Ok(SerialConfig::File("/tmp/x".into()))
        );
        for bad in ["file:", "tty", ""] {
            let e = bad.parse::<SerialConfig>().unwrap_err().to_string();
            assert!(
                e.starts_with("serial: expected stdout, none or file:PATH"),
                "{e}"
            );
        }
    }

    #[test]
    fn disk_specs() {
        let d: DiskConfig = "/a/b.img,ro".parse().unwrap();
        assert_eq!((d.path.to_str(), d.read_only), (Some("/a/b.img"), true));
        let d: DiskConfig = "/a/b.img".parse().unwrap();
        assert!(!d.read_only);
        let d: DiskConfig = "/a/b.img,rw".parse().unwrap();
        assert!(!d.read_only);
        let e = "/a,b".parse::<DiskConfig>().unwrap_err().to_string();
        assert_eq!(e, "disk: unknown option 'b' in '/a,b' (expected PATH[,ro])");
        assert!(",ro".parse::<DiskConfig>().is_err());
    }

    #[test]
    fn disk_paths_are_checked() {
        let d = tmpdir("disk");
        let img = d.join("disk.img");
        std::fs::write(&img, [0u8; 512]).unwrap();
        let ok = cfg(ConfigInput {
            disks: Some(vec![DiskConfig {
                path: img.clone(),
                read_only: true,
            }]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.disks.len(), 1);
        let missing = d.join("nope.img");
        let e = cfg(ConfigInput {
            disks: Some(vec![DiskConfig {
                path: missing.clone(),
                read_only: false,
            }]),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e, format!("disk: {}: not found", missing.display()));
        let e = cfg(ConfigInput {
            disks: Some(vec![DiskConfig {
                path: d.clone(),
                read_only: false,
            }]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.ends_with("not a regular file or block device"), "{e}");
        let e = cfg(ConfigInput {
            disks: Some(vec![
                DiskConfig {
                    path: img,
                    read_only: false
                };
                20
            ]),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e, "disk: 20 virtio devices requested, at most 19 fit");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn vsock_checks() {
        let d = tmpdir("vsock");
        let uds = d.join("v.sock");
        let c = cfg(ConfigInput {
            vsock_uds: Some(uds.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            c.vsock,
            Some(VsockConfig {
                uds: uds.clone(),
                cid: 3
            })
        );

        let e = cfg(ConfigInput {
            vsock_uds: Some(uds.clone()),
            vsock_cid: Some(2),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.starts_with("vsock-cid: 2 is reserved"), "{e}");
        let e = cfg(ConfigInput {
            vsock_cid: Some(5),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e, "vsock-cid: given without --vsock-uds");

        std::fs::write(&uds, b"").unwrap();
        let e = cfg(ConfigInput {
            vsock_uds: Some(uds.clone()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e, format!("vsock-uds: {}: already exists", uds.display()));

        let e = cfg(ConfigInput {
            vsock_uds: Some(d.join("no/such/dir/v.sock")),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.starts_with("vsock-uds: ") && e.contains("does not exist"),
            "{e}"
        );
        let long = d.join("x".repeat(120));
        let e = cfg(ConfigInput {
            vsock_uds: Some(long),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("too long for a Unix socket path"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn fs_specs() {
        let f: FsConfig = "tag=rootfs,socket=/run/v.sock".parse().unwrap();
        assert_eq!(
            f,
            FsConfig {
                tag: "rootfs".into(),
                socket: "/run/v.sock".into(),
                queue_size: DEFAULT_FS_QUEUE_SIZE
            }
        );
        let f: FsConfig = "socket=/s,queue_size=128,tag=x".parse().unwrap();
        assert_eq!((f.tag.as_str(), f.queue_size), ("x", 128));
        let bad = |s: &str| s.parse::<FsConfig>().unwrap_err().to_string();
        assert_eq!(
            bad("tag=a"),
            "fs: no socket= in 'tag=a' (expected tag=TAG,socket=PATH[,queue_size=N])"
        );
        assert_eq!(
            bad("socket=/s"),
            "fs: no tag= in 'socket=/s' (expected tag=TAG,socket=PATH[,queue_size=N])"
        );
        assert_eq!(
            bad("tag=a,socket=/s,cache=none"),
            "fs: unknown key 'cache' in 'tag=a,socket=/s,cache=none' \
             (expected tag=TAG,socket=PATH[,queue_size=N])"
        );
        assert_eq!(
            bad("tag=a,tag=b,socket=/s"),
            "fs: 'tag' given twice in 'tag=a,tag=b,socket=/s'"
        );
        assert!(bad("tag=a,/s").starts_with("fs: '/s' in 'tag=a,/s' is not KEY=VALUE"));
        assert!(bad("").starts_with("fs: '' in '' is not KEY=VALUE"));
        assert_eq!(
            bad("tag=a,socket=/s,queue_size=-1"),
            "fs: queue_size '-1' in 'tag=a,socket=/s,queue_size=-1' is not a number in 1..=1024"
        );
    }

    #[test]
    fn fs_values_are_checked() {
        let fs = |tag: &str, socket: &str, queue_size: u16| {
            cfg(ConfigInput {
                fs: Some(vec![FsConfig {
                    tag: tag.into(),
                    socket: socket.into(),
                    queue_size,
                }]),
                ..Default::default()
            })
        };
        // The socket need not exist yet: virtiofsd may still be starting.
        let c = fs("rootfs", "/nonexistent/v.sock", 1024).unwrap();
        assert_eq!(c.fs.len(), 1);
        assert!(c.shared_memory());
        assert_eq!(c.virtio_devices(), 1);
        assert!(!cfg(ConfigInput::default()).unwrap().shared_memory());
        assert!(fs(&"t".repeat(36), "/s", 1).is_ok());
        assert_eq!(
            fs(&"t".repeat(37), "/s", 128).unwrap_err(),
            format!("fs: tag '{}' must be 1 to 36 bytes long", "t".repeat(37))
        );
        assert_eq!(
            fs("", "/s", 128).unwrap_err(),
            "fs: tag '' must be 1 to 36 bytes long"
        );
        assert_eq!(
            fs("a b", "/s", 128).unwrap_err(),
            "fs: tag 'a b': invalid character ' ' (printable ASCII, no spaces or commas)"
        );
        assert!(fs("caf\u{e9}", "/s", 128).is_err());
        for q in [0, 3, 2048] {
            assert_eq!(
                fs("a", "/s", q).unwrap_err(),
                format!("fs: queue_size {q} for tag 'a' is not a power of two in 1..=1024")
            );
        }
        assert_eq!(
            fs("a", "", 128).unwrap_err(),
            "fs: empty socket path for tag 'a'"
        );
        let long = format!("/{}", "x".repeat(120));
        assert!(fs("a", &long, 128)
            .unwrap_err()
            .contains("too long for a Unix socket path"));
        let two = cfg(ConfigInput {
            fs: Some(vec![
                "tag=a,socket=/s1".parse().unwrap(),
                "tag=a,socket=/s2".parse().unwrap(),
            ]),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(two, "fs: tag 'a' is used twice");
        let many = cfg(ConfigInput {
            fs: Some(
                (0..20)
                    .map(|i| format!("tag=t{i},socket=/s{i}").parse().unwrap())
                    .collect(),
            ),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(many, "fs: 20 virtio devices requested, at most 19 fit");
    }

    #[test]
    fn fs_in_json() {
        let d = tmpdir("fsjson");
        let p = d.join("vm.json");
        std::fs::write(
            &p,
            r#"{"fs": [{"tag": "rootfs", "socket": "/run/a.sock"},
                       {"tag": "data", "socket": "/run/b.sock", "queue_size": 256}]}"#,
        )
        .unwrap();
        let f = ConfigInput::from_json_file(&p).unwrap();
        let fs = f.fs.clone().unwrap();
        assert_eq!(fs.len(), 2);
        assert_eq!(
            (fs[0].queue_size, fs[1].queue_size),
            (DEFAULT_FS_QUEUE_SIZE, 256)
        );
        assert_eq!(cfg(f).unwrap().fs, fs);
        std::fs::write(
            &p,
            r#"{"fs": [{"tag": "a", "socket": "/s", "cache": "none"}]}"#,
        )
        .unwrap();
        let e = ConfigInput::from_json_file(&p).unwrap_err().to_string();
        assert!(e.contains("unknown field `cache`"), "{e}");
        std::fs::write(
            &p,
            r#"{"fs": [{"tag": "a", "socket": "/s", "queue_size": 99999}]}"#,
        )
        .unwrap();
        let e = ConfigInput::from_json_file(&p).unwrap_err().to_string();
        assert!(e.starts_with("config: ") && e.contains("99999"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn cmdline_must_be_printable() {
        let e = cfg(ConfigInput {
            append: Some("a\nb".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e, "append: invalid character '\\n' (printable ASCII only)");
    }

    #[test]
    fn json_file_and_merge() {
        let d = tmpdir("json");
        let p = d.join("vm.json");
        std::fs::write(
            &p,
            r#"{"kernel": "/k", "vcpus": 2, "memory": 256,
                "disks": [{"path": "/d1", "read_only": true}, {"path": "/d2"}],
                "serial": "none", "append": "foo=1"}"#,
        )
        .unwrap();
        let f = ConfigInput::from_json_file(&p).unwrap();
        assert_eq!(f.vcpus, Some(2));
        assert_eq!(
            f.disks.as_deref(),
            Some(
                &[
                    DiskConfig {
                        path: "/d1".into(),
                        read_only: true
                    },
                    DiskConfig {
                        path: "/d2".into(),
                        read_only: false
                    }
                ][..]
            )
        );
        let m = f.merge(ConfigInput {
            vcpus: Some(4),
            ..Default::default()
        });
        assert_eq!(
            (m.vcpus, m.memory, m.serial.as_deref()),
            (Some(4), Some(256), Some("none"))
        );

        std::fs::write(&p, r#"{"memroy": 256}"#).unwrap();
        let e = ConfigInput::from_json_file(&p).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("config: {}: unknown field `memroy`", p.display())),
            "{e}"
        );
        std::fs::write(&p, r#"{"vcpus": "two"}"#).unwrap();
        let e = ConfigInput::from_json_file(&p).unwrap_err().to_string();
        assert!(e.contains("invalid type"), "{e}");
        let e = ConfigInput::from_json_file(&d.join("missing.json"))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("missing.json: not found"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
