//! Linux capabilities: names, bit sets, and applying the five OCI sets.

use std::io;

use oci_spec::runtime::{Capabilities, LinuxCapabilities};
use serde::{Deserialize, Serialize};

use super::error::SpecError;

/// Capability names by number (linux/capability.h, up to Linux 6.12).
pub const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Number of a capability name (`CAP_X`), if known.
pub fn number(name: &str) -> Option<u32> {
    NAMES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u32::try_from(i).ok())
}

/// The five capability sets of a process, as bit masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

fn mask(set: &Option<Capabilities>, field: &str) -> Result<u64, SpecError> {
    let mut m = 0u64;
    let Some(set) = set else { return Ok(0) };
    for cap in set {
        // oci-spec serializes a capability as its CAP_ name.
        let name = serde_json::to_value(cap)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        match number(&name) {
            Some(n) => m |= 1 << n,
            None => {
                return Err(SpecError::invalid(
                    field,
                    format!("unknown capability {name:?}"),
                ))
            }
        }
    }
    Ok(m)
}

impl CapSets {
    /// The sets of `process.capabilities`; absent sets are empty (OCI: a
    /// capability not listed is not granted).
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> Result<CapSets, SpecError> {
        let Some(c) = c else {
            return Ok(CapSets::default());
        };
        let f = "process.capabilities";
        Ok(CapSets {
            bounding: mask(c.bounding(), &format!("{f}.bounding"))?,
            effective: mask(c.effective(), &format!("{f}.effective"))?,
            permitted: mask(c.permitted(), &format!("{f}.permitted"))?,
            inheritable: mask(c.inheritable(), &format!("{f}.inheritable"))?,
            ambient: mask(c.ambient(), &format!("{f}.ambient"))?,
        })
    }
}

/// Highest capability number of the running kernel.
pub fn last_cap() -> u32 {
    crate::sysinfo::read_bounded(std::path::Path::new("/proc/sys/kernel/cap_last_cap"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
        .min(63)
}

/// Drops every capability not in `bounding` from the bounding set (needs
/// CAP_SETPCAP, so call before changing uid).
pub fn apply_bounding(bounding: u64) -> io::Result<()> {
    for cap in 0..=last_cap() {
        if bounding & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Sets the effective, permitted and inheritable sets, then the ambient set.
pub fn apply_sets(c: &CapSets) -> io::Result<()> {
    let last = last_cap();
    let valid = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    husk_sys::caps::capset(
        c.effective & valid,
        c.permitted & valid,
        c.inheritable & valid,
    )?;
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    for cap in 0..=last {
        if c.ambient & (1 << cap) != 0 {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if rc != 0 {
                return Err(io::Error::other(format!(
                    "raise ambient {}: {}",
                    NAMES.get(cap as usize).copied().unwrap_or("?"),
                    io::Error::last_os_error()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sets() {
        assert_eq!(number("CAP_CHOWN"), Some(0));
        assert_eq!(number("CAP_NET_ADMIN"), Some(12));
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_NOPE"), None);
        let c: LinuxCapabilities = serde_json::from_str(
            r#"{"bounding":["CAP_NET_ADMIN","CAP_KILL"],"effective":["CAP_KILL"]}"#,
        )
        .unwrap();
        let s = CapSets::from_spec(Some(&c)).unwrap();
        assert_eq!(s.bounding, (1 << 12) | (1 << 5));
        assert_eq!(s.effective, 1 << 5);
        assert_eq!(s.permitted, 0);
        assert_eq!(CapSets::from_spec(None).unwrap(), CapSets::default());
    }
}
