//! Payload types of the container requests.
//!
//! # Standard streams
//!
//! A process's stdin, stdout and stderr (or, with `process.terminal`, one
//! pty stream) travel on connections of their own: the host opens a new
//! connection to the agent port, sends one [`crate::Request::AttachStdio`]
//! frame, gets [`crate::Response::Ok`], and from then on the connection
//! carries raw bytes: agent-to-host for stdout/stderr (closed by the agent
//! at EOF), host-to-agent for stdin (the host's shutdown(WR) closes the
//! process's stdin), both ways for the pty. Flow control is the transport's:
//! a host that does not read blocks the process's writes (a pipe holds 64 KiB).
//!
//! Exits are reported ([`crate::Response::Exited`] to `Wait`, and the
//! [`Event::Exit`] event) only after every attached output stream has
//! reached EOF and its bytes were handed to the transport. An output stream
//! that is piped but not attached is waited for too, unless it is empty and
//! has no writer left.

use serde::{Deserialize, Serialize};

/// Where a container's root file system comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RootfsSource {
    /// A directory in the guest (absolute path).
    Path { path: String },
    /// A virtio-blk device (`/dev/vdX`), mounted by the agent.
    Block {
        device: String,
        #[serde(default = "default_fstype")]
        fstype: String,
        #[serde(default)]
        readonly: bool,
        /// File-system options (`-o`), comma separated.
        #[serde(default)]
        options: String,
    },
    /// A virtio-fs share, by its tag. The agent mounts the share once at
    /// [`share_path`]`(tag)` (shared by every container that names it) and
    /// uses `subdir` inside it (absent: the share's root) as the root file
    /// system. Spec mounts may name files of the share by that path: the
    /// host runtime puts a container's bind-mount sources into its share.
    VirtioFs {
        tag: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subdir: Option<String>,
    },
}

/// Where the agent mounts virtio-fs shares in the guest.
pub const SHARE_DIR: &str = "/run/husk/shares";

/// The guest path of the virtio-fs share `tag` (see [`RootfsSource::VirtioFs`]).
pub fn share_path(tag: &str) -> String {
    format!("{SHARE_DIR}/{tag}")
}

/// Longest virtio-fs tag: the device's config space holds it in 36 bytes
/// (virtio spec 5.11.4).
pub const SHARE_TAG_MAX: usize = 36;

/// A virtio-fs tag that breaks [`check_share_tag`]'s rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareTagError {
    #[error("tag {0:?} must be 1 to {SHARE_TAG_MAX} bytes long")]
    Length(String),
    #[error("tag {tag:?}: invalid character {c:?} (printable ASCII, no spaces, commas or '/')")]
    Char { tag: String, c: char },
    #[error("tag {0:?} must not be '.' or '..' (it names a directory in the guest)")]
    Dots(String),
}

/// The rule for a virtio-fs tag, the same for husk-vmm (which puts it in
/// the device) and the agent (which mounts the share at
/// [`share_path`]`(tag)`): 1 to [`SHARE_TAG_MAX`] printable ASCII bytes, no
/// ',' (it separates `husk-vmm --fs` options), no '/' and not `.` or `..`
/// (it is a path component in the guest).
pub fn check_share_tag(tag: &str) -> Result<(), ShareTagError> {
    if tag.is_empty() || tag.len() > SHARE_TAG_MAX {
        return Err(ShareTagError::Length(tag.to_string()));
    }
    if let Some(c) = tag
        .chars()
        .find(|c| !c.is_ascii_graphic() || *c == ',' || *c == '/')
    {
        return Err(ShareTagError::Char {
            tag: tag.to_string(),
            c,
        });
    }
    if tag == "." || tag == ".." {
        return Err(ShareTagError::Dots(tag.to_string()));
    }
    Ok(())
}

/// Whether `tag` passes [`check_share_tag`].
pub fn valid_share_tag(tag: &str) -> bool {
    check_share_tag(tag).is_ok()
}

fn default_fstype() -> String {
    "ext4".into()
}

/// Which of a process's standard streams are pipes the host attaches to
/// (the others are /dev/null). Ignored with `process.terminal`: then there
/// is one [`StdioStream::Pty`] stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioConfig {
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdout: bool,
    #[serde(default)]
    pub stderr: bool,
}

/// One standard stream of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdioStream {
    Stdin,
    Stdout,
    Stderr,
    Pty,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Shell convention: `code`, or 128 + `signal`.
    pub status: i32,
    /// The container's cgroup saw an OOM kill while the process ran.
    pub oom_killed: bool,
}

impl ExitInfo {
    pub fn exited(code: i32) -> ExitInfo {
        ExitInfo {
            code: Some(code),
            signal: None,
            status: code,
            oom_killed: false,
        }
    }

    pub fn killed(signal: i32) -> ExitInfo {
        ExitInfo {
            code: None,
            signal: Some(signal),
            status: 128 + signal,
            oom_killed: false,
        }
    }
}

/// Life-cycle state of a container (OCI's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    Created,
    Running,
    Paused,
    Stopped,
}

/// One exec'd process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecState {
    pub exec_id: String,
    pub pid: i32,
    pub exit: Option<ExitInfo>,
}

/// Answer to [`crate::Request::State`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub status: ContainerStatus,
    /// Guest pid of the container's init.
    pub pid: i32,
    pub exit: Option<ExitInfo>,
    /// The container's cgroup, relative to the guest's cgroup root.
    pub cgroup: String,
    pub execs: Vec<ExecState>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuStats {
    pub usage_usec: u64,
    pub user_usec: u64,
    pub system_usec: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_usec: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// memory.current, bytes.
    pub current: u64,
    /// memory.max; `None` is unlimited.
    pub max: Option<u64>,
    pub swap_current: u64,
    /// memory.stat anon and file, bytes.
    pub anon: u64,
    pub file: u64,
    /// memory.events oom and oom_kill.
    pub oom: u64,
    pub oom_kill: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidsStats {
    pub current: u64,
    /// pids.max; `None` is unlimited.
    pub max: Option<u64>,
}

/// One device line of io.stat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoDeviceStats {
    pub major: u32,
    pub minor: u32,
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
}

/// Answer to [`crate::Request::Stats`]: the container's cgroup v2 counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
    pub io: Vec<IoDeviceStats>,
}

/// Something the agent reports unprompted on an events connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A container's init (`exec_id: None`) or an exec'd process exited
    /// (after its output was delivered).
    Exit {
        id: String,
        exec_id: Option<String>,
        exit: ExitInfo,
    },
    /// The kernel OOM-killed a process in the container's cgroup.
    Oom { id: String, oom_kills: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_tags() {
        for ok in ["husk", "a", &"x".repeat(36), "tag-1_2.3"] {
            assert!(valid_share_tag(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "t\u{e9}",
            &"x".repeat(37),
            "a\0",
            "a,b",
        ] {
            assert!(!valid_share_tag(bad), "{bad:?}");
        }
        assert_eq!(
            check_share_tag("a b").unwrap_err().to_string(),
            "tag \"a b\": invalid character ' ' (printable ASCII, no spaces, commas or '/')"
        );
        assert_eq!(
            check_share_tag("").unwrap_err().to_string(),
            "tag \"\" must be 1 to 36 bytes long"
        );
        assert_eq!(share_path("husk"), "/run/husk/shares/husk");
    }
}
