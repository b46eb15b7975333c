//! What the agent hands its container-init process: a validated, resolved
//! form of the OCI spec (built by `spec`, carried out by `nsinit`).

use serde::{Deserialize, Serialize};

use super::caps::CapSets;
use super::seccomp::Filter;

/// A namespace kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NsKind {
    User,
    Mount,
    Pid,
    Net,
    Ipc,
    Uts,
    Cgroup,
    Time,
}

impl NsKind {
    pub const ALL: [NsKind; 8] = [
        NsKind::User,
        NsKind::Mount,
        NsKind::Pid,
        NsKind::Net,
        NsKind::Ipc,
        NsKind::Uts,
        NsKind::Cgroup,
        NsKind::Time,
    ];

    pub fn flag(self) -> libc::c_int {
        match self {
            NsKind::User => libc::CLONE_NEWUSER,
            NsKind::Mount => libc::CLONE_NEWNS,
            NsKind::Pid => libc::CLONE_NEWPID,
            NsKind::Net => libc::CLONE_NEWNET,
            NsKind::Ipc => libc::CLONE_NEWIPC,
            NsKind::Uts => libc::CLONE_NEWUTS,
            NsKind::Cgroup => libc::CLONE_NEWCGROUP,
            NsKind::Time => libc::CLONE_NEWTIME,
        }
    }

    /// Name under /proc/PID/ns/ (the `_for_children` variants for pid and
    /// time are not needed: a container's init is in them).
    pub fn proc_name(self) -> &'static str {
        match self {
            NsKind::User => "user",
            NsKind::Mount => "mnt",
            NsKind::Pid => "pid",
            NsKind::Net => "net",
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
            NsKind::Cgroup => "cgroup",
            NsKind::Time => "time",
        }
    }
}

/// A namespace the process gets: a new one (`path: None`) or the one at `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ns {
    pub kind: NsKind,
    pub path: Option<String>,
}

/// How a mount is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A bind mount of `source` (a guest path).
    Bind { source: String, recursive: bool },
    /// cgroup2 (in a cgroup namespace) or a bind of the container's group.
    Cgroup,
    /// A file system of type `fstype`.
    Fs { fstype: String, source: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountConfig {
    /// Absolute path inside the container.
    pub dest: String,
    pub kind: MountKind,
    /// MS_* flags (propagation flags excluded).
    pub flags: u64,
    /// Propagation changes applied after the mount (MS_SHARED, ...).
    pub propagation: Vec<u64>,
    /// File-system specific options, comma separated.
    pub data: String,
    /// The spec field, for errors (`mounts[3]`).
    pub field: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    pub path: String,
    /// S_IFCHR, S_IFBLK or S_IFIFO.
    pub kind: u32,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsConfig {
    /// The root file system, a directory in the agent's mount namespace.
    pub path: String,
    pub readonly: bool,
    /// MS_PRIVATE, MS_SLAVE, MS_SHARED or MS_UNBINDABLE (| MS_REC) for "/".
    pub propagation: u64,
    pub mounts: Vec<MountConfig>,
    /// Add tmpfs /dev, devpts /dev/pts and tmpfs /dev/shm (the spec mounts
    /// nothing on /dev).
    pub default_dev: bool,
    pub devices: Vec<DeviceConfig>,
    pub masked: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// The container's cgroup directory, bound for `cgroup` mounts when the
    /// container has no cgroup namespace.
    pub cgroup_dir: String,
    pub cgroupns: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessConfig {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: u32,
    pub caps: CapSets,
    pub no_new_privileges: bool,
    pub rlimits: Vec<Rlimit>,
    pub terminal: bool,
    /// (rows, cols)
    pub console_size: Option<(u16, u16)>,
    pub oom_score_adj: Option<i32>,
    /// (class, level)
    pub io_priority: Option<(u32, u32)>,
}

/// Everything container-init needs, sent as one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitConfig {
    pub namespaces: Vec<Ns>,
    /// Set up a root file system (create); `None` joins an existing
    /// container's mount namespace (exec).
    pub rootfs: Option<RootfsConfig>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub sysctls: Vec<(String, String)>,
    /// (clock name: "monotonic" | "boottime", seconds, nanoseconds)
    pub time_offsets: Vec<(String, i64, u32)>,
    pub personality: Option<u64>,
    pub seccomp: Option<Filter>,
    pub process: ProcessConfig,
}

impl InitConfig {
    pub fn new_ns(&self, kind: NsKind) -> bool {
        self.namespaces
            .iter()
            .any(|n| n.kind == kind && n.path.is_none())
    }
}

/// One line of a uid or gid map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// The /proc/PID/{uid,gid}_map text of `maps`.
pub fn map_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
        .collect()
}
