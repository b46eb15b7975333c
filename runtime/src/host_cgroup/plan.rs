//! What the host cgroup of a container is, as pure functions: its path
//! from `linux.cgroupsPath` (as runc resolves it) and its limits from
//! `linux.resources` and the microVM's size.

use husk_protocol::oci;

use super::CgroupError;

/// The host's processes of a container that are not the guest's RAM:
/// husk-vmm's own heap, stacks and virtqueue buffers, virtiofsd's and the
/// monitor's memory, and what the kernel charges them (KVM's page tables,
/// socket buffers). Measured in the lab at about 60 MiB for the three
/// together (`memory.peak` of a busybox container's cgroup, guest RAM
/// excluded); twice that leaves the margin that keeps the host's OOM
/// killer off a guest that stays within its own limit. The page cache
/// virtiofsd fills is charged too, but it is reclaimed, not OOM-killed.
pub const HOST_OVERHEAD_MIB: u64 = 128;

/// The CPU time of husk-vmm's and virtiofsd's I/O threads and the guest
/// kernel's own work, beyond the container's quota, in hundredths of a
/// CPU: the guest's vCPUs are throttled to the quota inside the VM, its
/// devices are served on top of it.
pub const HOST_CPU_OVERHEAD_PERCENT: u64 = 25;

/// Tasks (threads) of the monitor: its signal, wait and log threads, the
/// DNS relay and the hooks a `run` starts.
pub const MONITOR_TASKS: u64 = 32;
/// Tasks of virtiofsd: QEMU's C virtiofsd has a pool of 64 threads by
/// default, plus one per queue; the Rust one fewer.
pub const VIRTIOFSD_TASKS: u64 = 128;
/// Tasks of husk-vmm besides its vCPU threads: the event loop and the
/// device workers.
pub const VMM_TASKS: u64 = 16;

/// What the spec names as the cgroup of the container, resolved against
/// `own` (the caller's cgroup, as in /proc/self/cgroup) the way runc's
/// cgroupfs driver does; returns the cgroup's path from the root of the
/// cgroup v2 hierarchy (`/docker/<id>`).
///
/// - `/a/b` is that path (Docker's cgroupfs driver: `/docker/<id>`,
///   Podman's: `/libpod_parent/libpod-<id>`, containerd: `/<ns>/<id>`);
/// - `slice:prefix:name` (systemd style) is `<slice path>/<prefix>-<name>.scope`,
///   the slice expanded as systemd does (`a-b.slice` is
///   `/a.slice/a-b.slice`; an empty slice is `system.slice`), or
///   `<slice path>/<name>` when `name` is itself a slice;
/// - a relative path, and no path at all (then `id`), is below the
///   parent of the caller's cgroup: the caller's own cgroup most probably
///   has processes in it, so none can be enabled for children of it.
///
/// `..` is refused rather than cleaned away: a bundle that names it is not
/// one a daemon wrote.
pub fn resolve(cgroups_path: Option<&str>, id: &str, own: &str) -> Result<String, CgroupError> {
    let s = cgroups_path.unwrap_or("").trim();
    let bad = |why: &'static str| CgroupError::BadPath {
        path: s.to_string(),
        why,
    };
    let base = || {
        let own = clean(own).ok_or_else(|| bad("the caller's cgroup has `..` in it"))?;
        Ok::<_, CgroupError>(match own.rsplit_once('/') {
            Some((parent, _)) if !parent.is_empty() => parent.to_string(),
            _ => String::new(),
        })
    };
    let path = if s.is_empty() {
        format!("{}/{}", base()?, id)
    } else if let Some((slice, prefix, name)) = systemd_style(s) {
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        let slice_path = |sl: &str| expand_slice(sl).ok_or_else(|| bad("not a systemd slice name"));
        if name.ends_with(".slice") {
            // A slice's place follows from its name alone.
            slice_path(name)?
        } else if prefix.is_empty() {
            format!("{}/{name}.scope", slice_path(slice)?)
        } else {
            format!("{}/{prefix}-{name}.scope", slice_path(slice)?)
        }
    } else if s.starts_with('/') {
        s.to_string()
    } else {
        format!("{}/{}", base()?, s)
    };
    let path = clean(&path).ok_or_else(|| bad("`..` is not allowed"))?;
    if path.is_empty() {
        return Err(bad("names the root cgroup"));
    }
    Ok(path)
}

/// `slice:prefix:name`: three fields, not a path.
fn systemd_style(s: &str) -> Option<(&str, &str, &str)> {
    if s.starts_with('/') {
        return None;
    }
    let mut it = s.split(':');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(a), Some(b), Some(c), None) if !c.is_empty() => Some((a, b, c)),
        _ => None,
    }
}

/// systemd's slice path: `a-b-c.slice` is `/a.slice/a-b.slice/a-b-c.slice`,
/// `-.slice` the root (`""`).
fn expand_slice(slice: &str) -> Option<String> {
    let stem = slice.strip_suffix(".slice")?;
    if slice == "-.slice" {
        return Some(String::new());
    }
    if stem.is_empty() || stem.contains('/') || stem.starts_with('-') || stem.contains("--") {
        return None;
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if part.is_empty() {
            return None;
        }
        prefix = if prefix.is_empty() {
            part.to_string()
        } else {
            format!("{prefix}-{part}")
        };
        path = format!("{path}/{prefix}.slice");
    }
    Some(path)
}

/// `/a//b/./c/` as `/a/b/c` (`""` for the root); `None` with a `..`.
fn clean(p: &str) -> Option<String> {
    let mut out = String::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    Some(out)
}

/// The host cgroup's limits; `None` leaves the kernel's default (`max`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    /// memory.max, bytes.
    pub memory_max: Option<u64>,
    /// pids.max: the host's tasks of the container, never the guest's
    /// (the spec's pids limit is the guest's, applied in the VM).
    pub pids_max: Option<u64>,
    /// cpu.max: quota and period, µs.
    pub cpu_max: Option<(u64, u64)>,
    /// cpu.weight (1..=10000).
    pub cpu_weight: Option<u64>,
}

/// The limits of a container's host cgroup: with a memory limit in the
/// spec, the VM's RAM (`memory_mib`, sized from that limit) plus
/// [`HOST_OVERHEAD_MIB`]; with a CPU quota, the quota plus
/// [`HOST_CPU_OVERHEAD_PERCENT`] of a CPU; cpu.weight from the shares
/// (runc's conversion). pids.max always, bounded by what the host side
/// runs for `vcpus` vCPUs. Without limits in the spec the cgroup only
/// accounts.
pub fn limits(res: Option<&oci::LinuxResources>, vcpus: u32, memory_mib: u64) -> Limits {
    let mem = res.and_then(|r| r.memory().as_ref());
    let cpu = res.and_then(|r| r.cpu().as_ref());
    let memory_max = mem.and_then(|m| m.limit()).filter(|l| *l > 0).map(|_| {
        memory_mib
            .saturating_add(HOST_OVERHEAD_MIB)
            .saturating_mul(1 << 20)
    });
    let cpu_max = match cpu.map(|c| (c.quota(), c.period())) {
        Some((Some(q), p)) if q > 0 => {
            let period = p.filter(|p| *p > 0).unwrap_or(100_000);
            let extra = period * HOST_CPU_OVERHEAD_PERCENT / 100;
            Some((u64::try_from(q).unwrap_or(0).saturating_add(extra), period))
        }
        _ => None,
    };
    let cpu_weight = cpu
        .and_then(|c| c.shares())
        .filter(|s| *s > 0)
        .map(shares_to_weight);
    Limits {
        memory_max,
        pids_max: Some(MONITOR_TASKS + VIRTIOFSD_TASKS + VMM_TASKS + u64::from(vcpus)),
        cpu_max,
        cpu_weight,
    }
}

/// cgroup v1 shares (2..=262144) as a v2 weight (1..=10000), as runc and
/// crun convert them.
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_as_runc_resolves_them() {
        let r = |p: Option<&str>, own: &str| resolve(p, "c1", own);
        assert_eq!(r(Some("/docker/abc"), "/").unwrap(), "/docker/abc");
        assert_eq!(
            r(Some("/libpod_parent/libpod-abc"), "/libpod_parent/conmon").unwrap(),
            "/libpod_parent/libpod-abc"
        );
        assert_eq!(r(Some("//a/./b/"), "/").unwrap(), "/a/b");
        // Relative and absent: below the parent of the caller's cgroup.
        assert_eq!(r(None, "/").unwrap(), "/c1");
        assert_eq!(
            r(Some(""), "/user.slice/s.scope").unwrap(),
            "/user.slice/c1"
        );
        assert_eq!(r(Some("x/y"), "/a/b").unwrap(), "/a/x/y");
        assert_eq!(r(Some("x"), "/a").unwrap(), "/x");
        // systemd style.
        assert_eq!(
            r(Some("system.slice:docker:abc"), "/").unwrap(),
            "/system.slice/docker-abc.scope"
        );
        assert_eq!(
            r(Some(":libpod:abc"), "/").unwrap(),
            "/system.slice/libpod-abc.scope"
        );
        assert_eq!(
            r(Some("machine-libpod_pod_1.slice:libpod:abc"), "/").unwrap(),
            "/machine.slice/machine-libpod_pod_1.slice/libpod-abc.scope"
        );
        assert_eq!(r(Some("a.slice::n"), "/").unwrap(), "/a.slice/n.scope");
        assert_eq!(
            r(Some("a.slice:p:a-b.slice"), "/").unwrap(),
            "/a.slice/a-b.slice"
        );
        assert_eq!(r(Some("-.slice:p:n"), "/").unwrap(), "/p-n.scope");
    }

    #[test]
    fn bad_paths_are_refused_naming_the_field() {
        for p in ["/a/../b", "../x", "/", "//.", "a-.slice:p:n", "bad:p:n"] {
            let e = resolve(Some(p), "c1", "/").unwrap_err().to_string();
            assert!(e.starts_with("linux.cgroupsPath"), "{p}: {e}");
        }
        assert!(resolve(None, "c1", "/a/../b").is_err());
    }

    fn res(v: serde_json::Value) -> oci::LinuxResources {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn limits_are_the_vms_plus_the_host_overhead() {
        let base = MONITOR_TASKS + VIRTIOFSD_TASKS + VMM_TASKS;
        // No limits in the spec: accounting only (and a bounded pids.max).
        let l = limits(None, 1, 256);
        assert_eq!(
            l,
            Limits {
                pids_max: Some(base + 1),
                ..Default::default()
            }
        );
        let r = res(json!({
            "memory": {"limit": 268435456},
            "cpu": {"quota": 150000, "period": 100000, "shares": 1024},
            "pids": {"limit": 5}
        }));
        let l = limits(Some(&r), 2, 256 + 64);
        assert_eq!(l.memory_max, Some((256 + 64 + HOST_OVERHEAD_MIB) << 20));
        assert_eq!(l.cpu_max, Some((150_000 + 25_000, 100_000)));
        assert_eq!(l.cpu_weight, Some(39));
        // The spec's pids limit is the guest's.
        assert_eq!(l.pids_max, Some(base + 2));
        // A quota without a period: the kernel's default period.
        let l = limits(Some(&res(json!({"cpu": {"quota": 50000}}))), 1, 256);
        assert_eq!(l.cpu_max, Some((75_000, 100_000)));
        // Unlimited values are no limits.
        let r = res(json!({"memory": {"limit": -1}, "cpu": {"quota": -1, "shares": 0}}));
        assert_eq!(limits(Some(&r), 1, 256).memory_max, None);
        assert_eq!(limits(Some(&r), 1, 256).cpu_max, None);
        assert_eq!(limits(Some(&r), 1, 256).cpu_weight, None);
    }

    #[test]
    fn shares_convert_as_runc_does() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(1), 1);
    }
}
