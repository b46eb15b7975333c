//! The unvalidated configuration: husk-vmm's flags, its `--config` JSON, and
//! what hosts build to hand it over. Each flag's syntax is parsed here
//! (`FromStr`); values are checked by [`crate::VmConfig::from_input`].

use std::fmt;
use std::path::{Path, PathBuf};

use husk_protocol::net::MacAddr;
use serde::{Deserialize, Serialize};

use crate::{err, io_msg, ConfigError, DEFAULT_FS_QUEUE_SIZE, MAX_FS_QUEUE_SIZE};

/// A virtio-blk disk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
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
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
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

impl FsConfig {
    /// A share with the default queue size.
    pub fn new(tag: impl Into<String>, socket: impl Into<PathBuf>) -> FsConfig {
        FsConfig {
            tag: tag.into(),
            socket: socket.into(),
            queue_size: DEFAULT_FS_QUEUE_SIZE,
        }
    }
}

const FS_SYNTAX: &str = "expected tag=TAG,socket=PATH[,queue_size=N]";

impl std::str::FromStr for FsConfig {
    type Err = ConfigError;

    /// `tag=TAG,socket=PATH[,queue_size=N]`, keys in any order.
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

/// The host kernel's vhost-net device, which [`NetBackend::Vhost`] opens.
pub const VHOST_NET_PATH: &str = "/dev/vhost-net";

/// Who moves a NIC's frames between the tap and the guest's queues. JSON
/// and `--net`: `"virtio"` or `"vhost"`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetBackend {
    /// husk-vmm itself, in user space (its event loop reads and writes the
    /// tap). Needs nothing from the host.
    #[default]
    Virtio,
    /// The host kernel's vhost-net (`/dev/vhost-net`, module `vhost_net`):
    /// a kernel thread serves the queues on the tap; husk-vmm only sets it
    /// up and serves the config space.
    Vhost,
}

impl NetBackend {
    /// Whether this is the user-space device (the default).
    pub fn is_virtio(&self) -> bool {
        *self == NetBackend::Virtio
    }

    /// The name in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            NetBackend::Virtio => "virtio",
            NetBackend::Vhost => "vhost",
        }
    }
}

impl fmt::Display for NetBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NetBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "virtio" => Ok(NetBackend::Virtio),
            "vhost" => Ok(NetBackend::Vhost),
            _ => Err(format!("{s:?} is not \"virtio\" or \"vhost\"")),
        }
    }
}

/// A virtio-net device on a tap: either a descriptor husk-vmm inherits
/// (`tap_fd`, the usual way: the host opens the tap in the container's
/// network namespace and passes it without close-on-exec) or a tap husk-vmm
/// opens by name in its own network namespace (`tap_name`). Exactly one of
/// the two. JSON: `{"tap_fd": 3, "mac": "02:42:ac:11:00:02", "mtu": 1500,
/// "backend": "vhost"}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// An inherited descriptor of a tap opened with
    /// `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap_fd: Option<i32>,
    /// A tap to open (or create) by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap_name: Option<String>,
    /// The guest NIC's MAC (the host interface's, so the agent finds it).
    pub mac: MacAddr,
    /// The MTU the guest is told (`VIRTIO_NET_F_MTU`); none: the guest's
    /// default (1500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Who serves the queues; absent: [`NetBackend::Virtio`] (and left out
    /// when it is that).
    #[serde(default, skip_serializing_if = "NetBackend::is_virtio")]
    pub backend: NetBackend,
}

impl NetConfig {
    /// A device on the inherited tap descriptor `fd`.
    pub fn tap_fd(fd: i32, mac: MacAddr, mtu: Option<u32>) -> NetConfig {
        NetConfig {
            tap_fd: Some(fd),
            tap_name: None,
            mac,
            mtu,
            backend: NetBackend::default(),
        }
    }

    /// The same device served by `backend`.
    pub fn with_backend(self, backend: NetBackend) -> NetConfig {
        NetConfig { backend, ..self }
    }

    /// How errors name this device: `fd N` or `tap NAME`.
    pub fn describe(&self) -> String {
        match (&self.tap_fd, &self.tap_name) {
            (Some(fd), _) => format!("fd {fd}"),
            (None, Some(name)) => format!("tap {name}"),
            (None, None) => format!("mac {}", self.mac),
        }
    }
}

const NET_SYNTAX: &str =
    "expected fd=N,mac=MAC[,mtu=N][,backend=virtio|vhost] or tap=NAME,mac=MAC[,mtu=N][,backend=virtio|vhost]";

impl std::str::FromStr for NetConfig {
    type Err = ConfigError;

    /// `fd=N,mac=MAC[,mtu=N][,backend=B]` or
    /// `tap=NAME,mac=MAC[,mtu=N][,backend=B]` (B: `virtio` or `vhost`), keys
    /// in any order. Values are checked by [`crate::VmConfig::from_input`].
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (mut fd, mut tap, mut mac, mut mtu, mut backend) = (None, None, None, None, None);
        for item in s.split(',') {
            let Some((k, v)) = item.split_once('=') else {
                return Err(err(
                    "net",
                    format!("'{item}' in '{s}' is not KEY=VALUE ({NET_SYNTAX})"),
                ));
            };
            let slot = match k {
                "fd" => &mut fd,
                "tap" => &mut tap,
                "mac" => &mut mac,
                "mtu" => &mut mtu,
                "backend" => &mut backend,
                _ => {
                    return Err(err(
                        "net",
                        format!("unknown key '{k}' in '{s}' ({NET_SYNTAX})"),
                    ))
                }
            };
            if slot.replace(v).is_some() {
                return Err(err("net", format!("'{k}' given twice in '{s}'")));
            }
        }
        let Some(mac) = mac else {
            return Err(err("net", format!("no mac= in '{s}' ({NET_SYNTAX})")));
        };
        let mac = mac
            .parse()
            .map_err(|e: String| err("net", format!("{e} in '{s}'")))?;
        let tap_fd = fd.map(|v| net_number("fd", v, s)).transpose()?;
        let mtu = mtu.map(|v| net_number("mtu", v, s)).transpose()?;
        let backend = backend
            .map(|v| {
                v.parse()
                    .map_err(|e: String| err("net", format!("backend {e} in '{s}'")))
            })
            .transpose()?
            .unwrap_or_default();
        Ok(NetConfig {
            tap_fd,
            tap_name: tap.map(str::to_string),
            mac,
            mtu,
            backend,
        })
    }
}

/// `v`, the value of `key` in the `--net` spec `s`, as a number.
fn net_number<T: std::str::FromStr>(key: &str, v: &str, s: &str) -> Result<T, ConfigError> {
    v.parse()
        .map_err(|_| err("net", format!("{key} '{v}' in '{s}' is not a number")))
}

/// Where the guest's serial console goes. In JSON and on the command line
/// it is one string, `stdout`, `none` or `file:PATH`: its `Display` (what a
/// host puts in [`ConfigInput::serial`]) and `FromStr`.
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

impl fmt::Display for SerialConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerialConfig::Stdout => f.write_str("stdout"),
            SerialConfig::None => f.write_str("none"),
            SerialConfig::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// Every field optional: the JSON file, the flags given on the command
/// line, or what a host builds for husk-vmm (unset fields are left out of
/// the JSON and get husk-vmm's defaults).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// Replaces the base kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Added to the kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<DiskConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<Vec<FsConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<Vec<NetConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_uds: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_cid: Option<u64>,
    /// A [`SerialConfig`] as a string (`SerialConfig::File(p).to_string()`),
    /// parsed by [`crate::VmConfig::from_input`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

impl ConfigInput {
    pub fn from_json_file(path: &Path) -> Result<Self, ConfigError> {
        let field = "config";
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(field, format!("{}: {}", path.display(), io_msg(&e))))?;
        serde_json::from_str(&text).map_err(|e| err(field, format!("{}: {e}", path.display())))
    }

    /// The JSON `husk-vmm run --config` reads.
    pub fn to_json(&self) -> Result<String, ConfigError> {
        serde_json::to_string(self).map_err(|e| err("config", e.to_string()))
    }

    /// Writes [`Self::to_json`] to `path` (created or truncated), for
    /// `husk-vmm run --config PATH`.
    pub fn write_json_file(&self, path: &Path) -> Result<(), ConfigError> {
        std::fs::write(path, self.to_json()?)
            .map_err(|e| err("config", format!("{}: {}", path.display(), io_msg(&e))))
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
            net: over.net.or(self.net),
            vsock_uds: over.vsock_uds.or(self.vsock_uds),
            vsock_cid: over.vsock_cid.or(self.vsock_cid),
            serial: over.serial.or(self.serial),
        }
    }
}
