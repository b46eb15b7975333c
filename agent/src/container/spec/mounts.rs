//! The file-system part of a spec: `root`, `linux.rootfsPropagation`,
//! `mounts`, `linux.devices`, `linux.maskedPaths` and
//! `linux.readonlyPaths`.

use oci_spec::runtime::{Linux, LinuxDevice, LinuxDeviceType, Mount, Spec};

use super::{abs, no_nul, path_str, Env};
use crate::container::config::{DeviceConfig, MountConfig, MountKind, RootfsConfig};
use crate::container::error::SpecError;

/// The root file system's settings (`cgroup_dir` and `cgroupns` are left
/// for the caller, which knows the cgroup and namespaces).
pub fn plan_rootfs(
    spec: &Spec,
    linux: &Linux,
    path: String,
    env: &Env,
    warnings: &mut Vec<String>,
) -> Result<RootfsConfig, SpecError> {
    let readonly = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let propagation = rootfs_propagation(linux.rootfs_propagation().as_deref())?;
    let mut mounts = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        mounts.push(plan_mount(i, m, env, warnings)?);
    }
    let default_dev = !mounts
        .iter()
        .any(|m| m.dest.trim_end_matches('/') == "/dev");
    let mut devices = Vec::new();
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        devices.push(plan_device(i, d)?);
    }
    Ok(RootfsConfig {
        path,
        readonly,
        propagation,
        mounts,
        default_dev,
        devices,
        masked: paths(linux.masked_paths(), "linux.maskedPaths")?,
        readonly_paths: paths(linux.readonly_paths(), "linux.readonlyPaths")?,
        cgroup_dir: String::new(),
        cgroupns: false,
    })
}

/// `linux.rootfsPropagation`: the MS_* flags for the container's "/"
/// (rslave when unset, as runc).
pub fn rootfs_propagation(p: Option<&str>) -> Result<u64, SpecError> {
    match p {
        None | Some("") => Ok(libc::MS_SLAVE | libc::MS_REC),
        Some(p) => propagation_flag(p).ok_or_else(|| {
            SpecError::invalid(
                "linux.rootfsPropagation",
                format!(
                    "{p:?} is not a propagation mode ([r]private, [r]shared, [r]slave, [r]unbindable)"
                ),
            )
        }),
    }
}

/// A list of absolute paths.
fn paths(list: &Option<Vec<String>>, field: &str) -> Result<Vec<String>, SpecError> {
    let mut out = Vec::new();
    for (i, p) in list.iter().flatten().enumerate() {
        abs(p, &format!("{field}[{i}]"))?;
        out.push(p.clone());
    }
    Ok(out)
}

pub use husk_sys::mount::mount_flag;

pub fn propagation_flag(o: &str) -> Option<u64> {
    Some(match o {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// The options of one mount, sorted out.
#[derive(Default)]
struct Options {
    flags: u64,
    propagation: Vec<u64>,
    data: Vec<String>,
    /// `Some(recursive)` for bind and rbind.
    bind: Option<bool>,
}

fn options(m: &Mount, field: &str) -> Result<Options, SpecError> {
    let mut o = Options::default();
    for (j, opt) in m.options().iter().flatten().enumerate() {
        no_nul(opt, &format!("{field}.options[{j}]"))?;
        if let Some((set, fl)) = mount_flag(opt) {
            if set {
                o.flags |= fl;
            } else {
                o.flags &= !fl;
            }
        } else if let Some(p) = propagation_flag(opt) {
            o.propagation.push(p);
        } else if opt == "bind" || opt == "rbind" {
            o.bind = Some(opt == "rbind");
        } else if opt == "tmpcopyup" || opt == "idmap" || opt == "ridmap" || opt.starts_with("rro")
        {
            return Err(SpecError::invalid(
                format!("{field}.options[{j}]"),
                format!("{opt:?} is not supported"),
            ));
        } else {
            o.data.push(opt.clone());
        }
    }
    Ok(o)
}

/// `mounts[i]`.
pub fn plan_mount(
    i: usize,
    m: &Mount,
    env: &Env,
    warnings: &mut Vec<String>,
) -> Result<MountConfig, SpecError> {
    let field = format!("mounts[{i}]");
    let dest = path_str(m.destination(), &format!("{field}.destination"))?.to_string();
    abs(&dest, &format!("{field}.destination"))?;
    if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
        return Err(SpecError::invalid(
            field,
            "idmapped mounts are not supported",
        ));
    }
    let mut o = options(m, &field)?;
    let typ = m.typ().clone().unwrap_or_default();
    no_nul(&typ, &format!("{field}.type"))?;
    let source = match m.source() {
        Some(s) => path_str(s, &format!("{field}.source"))?.to_string(),
        None => String::new(),
    };
    no_nul(&source, &format!("{field}.source"))?;
    let kind = mount_kind(&field, typ, source, o.bind, env)?;
    if o.flags & libc::MS_REMOUNT != 0 && !matches!(kind, MountKind::Bind { .. }) {
        warnings.push(format!("{field}.options: remount of a new mount ignored"));
        o.flags &= !libc::MS_REMOUNT;
    }
    Ok(MountConfig {
        dest,
        kind,
        flags: o.flags,
        propagation: o.propagation,
        data: o.data.join(","),
        field,
    })
}

/// What kind of mount `type`, `source` and the bind options make.
fn mount_kind(
    field: &str,
    typ: String,
    source: String,
    bind: Option<bool>,
    env: &Env,
) -> Result<MountKind, SpecError> {
    if typ == "bind" || bind.is_some() {
        let sfield = format!("{field}.source");
        if source.is_empty() {
            return Err(SpecError::invalid(sfield, "a bind mount needs a source"));
        }
        let source = if source.starts_with('/') {
            source
        } else if let Some(b) = &env.bundle {
            b.join(&source).to_string_lossy().into_owned()
        } else {
            return Err(SpecError::invalid(
                sfield,
                format!("{source:?} must be an absolute guest path"),
            ));
        };
        Ok(MountKind::Bind {
            source,
            recursive: bind.unwrap_or(false),
        })
    } else if typ == "cgroup" || typ == "cgroup2" {
        Ok(MountKind::Cgroup)
    } else if typ.is_empty() {
        Err(SpecError::invalid(
            format!("{field}.type"),
            "missing (and not a bind mount)",
        ))
    } else if !env.filesystems.contains(&typ) {
        Err(SpecError::invalid(
            format!("{field}.type"),
            format!("unknown file system type {typ:?}"),
        ))
    } else {
        Ok(MountKind::Fs {
            fstype: typ,
            source: if source.is_empty() {
                "none".into()
            } else {
                source
            },
        })
    }
}

/// `linux.devices[i]`: a node under /dev.
fn plan_device(i: usize, d: &LinuxDevice) -> Result<DeviceConfig, SpecError> {
    let field = format!("linux.devices[{i}]");
    let path = path_str(d.path(), &format!("{field}.path"))?.to_string();
    abs(&path, &format!("{field}.path"))?;
    if !path.starts_with("/dev/") {
        return Err(SpecError::invalid(
            format!("{field}.path"),
            format!("{path:?} is not under /dev"),
        ));
    }
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
        LinuxDeviceType::B => libc::S_IFBLK,
        LinuxDeviceType::P => libc::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(SpecError::invalid(
                format!("{field}.type"),
                "\"a\" is not a device type",
            ))
        }
    };
    let (Ok(major), Ok(minor)) = (u64::try_from(d.major()), u64::try_from(d.minor())) else {
        return Err(out_of_range(&field, d));
    };
    if major > 0xfff || minor > 0xfffff {
        return Err(out_of_range(&field, d));
    }
    Ok(DeviceConfig {
        path,
        kind,
        major,
        minor,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

fn out_of_range(field: &str, d: &LinuxDevice) -> SpecError {
    SpecError::invalid(
        field,
        format!("device {}:{} out of range", d.major(), d.minor()),
    )
}
