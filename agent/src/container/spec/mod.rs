//! Validation of an OCI runtime spec into an [`InitConfig`] and cgroup
//! settings. Pure: nothing is created here, so a bad spec leaves nothing
//! behind. Every error is a [`SpecError`]: one line that starts with the
//! spec field (`mounts[2].type: ...`).
//!
//! By part of the spec: [`process`] (`process`, also an exec's),
//! [`namespaces`] (namespaces, id maps, uts names, sysctls, time offsets),
//! [`mounts`] (the root, mounts, devices, masked and read-only paths);
//! `linux.resources` is translated by [`super::cgroup::resources`] and
//! `linux.seccomp` compiled by [`super::seccomp`].

pub mod mounts;
pub mod namespaces;
pub mod process;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Linux, Spec};

pub use self::process::plan_process;
use super::cgroup::{self, Write1};
use super::config::{IdMap, InitConfig, Ns, NsKind, ProcessConfig, RootfsConfig};
use super::error::SpecError;
use super::seccomp;

/// Longest container or exec id (the wire rule of `husk_protocol::id`).
pub const MAX_ID: usize = husk_protocol::id::MAX_GUEST_ID;

/// Container and exec ids: the wire rule the host's runtime also follows
/// (`husk_protocol::id::check_guest_id`).
pub fn check_id(id: &str, field: &str) -> Result<(), SpecError> {
    husk_protocol::id::check_guest_id(id, field).map_err(|e| match e {
        husk_protocol::id::IdError::Guest { field, shown } => SpecError::BadId {
            field,
            shown,
            max: MAX_ID,
        },
        other => SpecError::Invalid {
            field: field.into(),
            problem: other.to_string(),
        },
    })
}

/// What the planner needs to know about the machine.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// File system types the kernel knows (/proc/filesystems).
    pub filesystems: Vec<String>,
    /// Relative bind-mount sources are resolved against this (local mode).
    pub bundle: Option<PathBuf>,
}

impl Env {
    pub fn from_system(bundle: Option<PathBuf>) -> Env {
        let fs = crate::sysinfo::read_bounded(Path::new("/proc/filesystems")).unwrap_or_default();
        Env {
            filesystems: fs
                .lines()
                .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
                .collect(),
            bundle,
        }
    }
}

/// A validated container.
#[derive(Debug, Clone)]
pub struct CreatePlan {
    pub init: InitConfig,
    pub cgroup_rel: String,
    pub cgroup_writes: Vec<Write1>,
    pub uid_maps: Vec<IdMap>,
    pub gid_maps: Vec<IdMap>,
    /// Spec fields that were ignored, one line each.
    pub warnings: Vec<String>,
}

/// An absolute path without NUL bytes.
pub(crate) fn abs(p: &str, field: &str) -> Result<(), SpecError> {
    if !p.starts_with('/') {
        return Err(SpecError::NotAbsolute {
            field: field.into(),
            value: p.into(),
        });
    }
    no_nul(p, field)
}

/// A path that is UTF-8.
pub(crate) fn path_str<'a>(p: &'a Path, field: &str) -> Result<&'a str, SpecError> {
    p.to_str().ok_or_else(|| SpecError::NotUtf8 {
        field: field.into(),
    })
}

pub(crate) fn no_nul(s: &str, field: &str) -> Result<(), SpecError> {
    if s.contains('\0') {
        Err(SpecError::nul(field))
    } else {
        Ok(())
    }
}

/// Validates `spec` for container `id` whose root file system is the guest
/// directory `rootfs`.
pub fn plan_create(
    id: &str,
    spec: &Spec,
    rootfs: &Path,
    env: &Env,
) -> Result<CreatePlan, SpecError> {
    check_id(id, "id")?;
    let mut warnings = Vec::new();
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| SpecError::missing("process"))?;
    let mut process = plan_process(process, "process", &mut warnings)?;
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| SpecError::missing("linux"))?;
    let rootfs_s = path_str(rootfs, "root.path")?.to_string();
    abs(&rootfs_s, "root.path")?;

    let ns = namespaces::plan(spec, linux)?;
    let root = mounts::plan_rootfs(spec, linux, rootfs_s, env, &mut warnings)?;

    let cgroup_rel = cgroup::rel_path(linux.cgroups_path().as_deref(), id)?;
    let cgroup_writes = match linux.resources() {
        Some(r) => cgroup::resource_writes(r, &mut warnings)?,
        None => Vec::new(),
    };
    let seccomp = match linux.seccomp() {
        Some(s) => Some(seccomp::compile(s, &mut warnings)?),
        None => None,
    };
    let personality = personality(linux)?;
    unsupported(spec, linux, &mut warnings);
    if !ns.namespaces.iter().any(|n| n.kind == NsKind::Pid) {
        warnings.push(
            "linux.namespaces: no pid namespace: the container sees the guest's processes".into(),
        );
    }
    if process.terminal && process.console_size.is_none() {
        process.console_size = Some((24, 80));
    }
    let cgroupns = ns.namespaces.iter().any(|n| n.kind == NsKind::Cgroup);
    Ok(CreatePlan {
        init: InitConfig {
            namespaces: ns.namespaces,
            rootfs: Some(RootfsConfig {
                cgroup_dir: format!("{}/{}", cgroup::ROOT, cgroup_rel),
                cgroupns,
                ..root
            }),
            hostname: spec.hostname().clone(),
            domainname: spec.domainname().clone(),
            sysctls: ns.sysctls,
            time_offsets: ns.time_offsets,
            personality,
            seccomp,
            process,
        },
        cgroup_rel,
        cgroup_writes,
        uid_maps: ns.uid_maps,
        gid_maps: ns.gid_maps,
        warnings,
    })
}

/// `linux.personality`: the execution domain (flags are not supported).
fn personality(linux: &Linux) -> Result<Option<u64>, SpecError> {
    use oci_spec::runtime::LinuxPersonalityDomain as D;
    let Some(p) = linux.personality() else {
        return Ok(None);
    };
    if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(SpecError::invalid(
            "linux.personality.flags",
            "not supported",
        ));
    }
    Ok(Some(match p.domain() {
        D::PerLinux => 0,
        D::PerLinux32 => 0x0008,
    }))
}

/// Warns about the settings the guest ignores.
fn unsupported(spec: &Spec, linux: &Linux, warnings: &mut Vec<String>) {
    for (name, set) in [
        ("linux.mountLabel", linux.mount_label().is_some()),
        ("linux.intelRdt", linux.intel_rdt().is_some()),
        ("linux.memoryPolicy", linux.memory_policy().is_some()),
        ("linux.netDevices", linux.net_devices().is_some()),
        ("hooks", spec.hooks().is_some()),
    ] {
        if set {
            warnings.push(format!("{name} ignored: not supported in the husk guest"));
        }
    }
}

/// An exec into a running container whose init is `pid`: the container's
/// namespaces (joined), seccomp filter and personality, the new process.
pub fn plan_exec(container: &InitConfig, pid: i32, process: ProcessConfig) -> InitConfig {
    InitConfig {
        namespaces: container
            .namespaces
            .iter()
            .map(|n| Ns {
                kind: n.kind,
                path: Some(format!("/proc/{pid}/ns/{}", n.kind.proc_name())),
            })
            .collect(),
        rootfs: None,
        hostname: None,
        domainname: None,
        sysctls: Vec::new(),
        time_offsets: Vec::new(),
        personality: container.personality,
        seccomp: container.seccomp.clone(),
        process,
    }
}
