//! The namespace part of a spec: `linux.namespaces`, the id maps of a user
//! namespace, the uts names, `linux.sysctl` and `linux.timeOffsets`, each
//! checked against the namespaces the container gets.

use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespaceType, Spec};

use super::{abs, no_nul, path_str};
use crate::container::config::{IdMap, Ns, NsKind};
use crate::container::error::SpecError;

/// The validated namespace settings.
#[derive(Debug)]
pub struct NsPlan {
    /// User first: the others are then owned by it.
    pub namespaces: Vec<Ns>,
    pub uid_maps: Vec<IdMap>,
    pub gid_maps: Vec<IdMap>,
    /// Sorted by name.
    pub sysctls: Vec<(String, String)>,
    /// (clock, seconds, nanoseconds), sorted by clock.
    pub time_offsets: Vec<(String, i64, u32)>,
}

/// Whether `namespaces` has a new (not joined) one of `kind`.
fn has_new(namespaces: &[Ns], kind: NsKind) -> bool {
    namespaces
        .iter()
        .any(|n| n.kind == kind && n.path.is_none())
}

pub fn plan(spec: &Spec, linux: &Linux) -> Result<NsPlan, SpecError> {
    let mut namespaces = plan_namespaces(linux)?;
    match namespaces.iter().position(|n| n.kind == NsKind::Mount) {
        // No mount namespace: on a host the container would share the
        // runtime's. In the microVM that is the agent's, whose mounts (the
        // shares, /proc, the cgroup tree) the root switch would take away
        // from it; the container gets a new one instead. It sees the same
        // mounts either way (the agent's hold nothing of the host's), and
        // nothing it mounts can reach the agent.
        None => namespaces.push(Ns {
            kind: NsKind::Mount,
            path: None,
        }),
        Some(i) if namespaces[i].path.is_some() => {
            return Err(SpecError::invalid(
                "linux.namespaces",
                "joining a mount namespace by path is not supported: the container needs a new one",
            ))
        }
        Some(_) => {}
    }
    // User first: the others are then owned by it.
    namespaces.sort_by_key(|n| NsKind::ALL.iter().position(|k| *k == n.kind));
    let uid_maps = id_maps(linux.uid_mappings(), "linux.uidMappings")?;
    let gid_maps = id_maps(linux.gid_mappings(), "linux.gidMappings")?;
    if has_new(&namespaces, NsKind::User) {
        if uid_maps.is_empty() {
            return Err(SpecError::invalid(
                "linux.uidMappings",
                "required with a new user namespace",
            ));
        }
        if gid_maps.is_empty() {
            return Err(SpecError::invalid(
                "linux.gidMappings",
                "required with a new user namespace",
            ));
        }
    } else if !uid_maps.is_empty() || !gid_maps.is_empty() {
        return Err(SpecError::invalid(
            "linux.uidMappings",
            "set without a new user namespace",
        ));
    }
    let new_uts = has_new(&namespaces, NsKind::Uts);
    uts_name(spec.hostname().as_deref(), "hostname", new_uts)?;
    uts_name(spec.domainname().as_deref(), "domainname", new_uts)?;
    let sysctls = sysctls(linux, &namespaces)?;
    let time_offsets = time_offsets(linux, has_new(&namespaces, NsKind::Time))?;
    Ok(NsPlan {
        namespaces,
        uid_maps,
        gid_maps,
        sysctls,
        time_offsets,
    })
}

fn ns_kind(t: LinuxNamespaceType) -> NsKind {
    match t {
        LinuxNamespaceType::Mount => NsKind::Mount,
        LinuxNamespaceType::Cgroup => NsKind::Cgroup,
        LinuxNamespaceType::Uts => NsKind::Uts,
        LinuxNamespaceType::Ipc => NsKind::Ipc,
        LinuxNamespaceType::User => NsKind::User,
        LinuxNamespaceType::Pid => NsKind::Pid,
        LinuxNamespaceType::Network => NsKind::Net,
        LinuxNamespaceType::Time => NsKind::Time,
    }
}

/// `linux.namespaces`: each kind once; a path joins an existing one (in
/// the spec's order: [`plan`] sorts them).
fn plan_namespaces(linux: &Linux) -> Result<Vec<Ns>, SpecError> {
    let mut namespaces: Vec<Ns> = Vec::new();
    for (i, n) in linux.namespaces().iter().flatten().enumerate() {
        let field = format!("linux.namespaces[{i}]");
        let kind = ns_kind(n.typ());
        if namespaces.iter().any(|x| x.kind == kind) {
            return Err(SpecError::Twice {
                field: format!("{field}.type"),
                what: kind.proc_name().into(),
            });
        }
        let path = match n.path() {
            Some(p) => {
                let s = path_str(p, &format!("{field}.path"))?;
                abs(s, &format!("{field}.path"))?;
                Some(s.to_string())
            }
            None => None,
        };
        namespaces.push(Ns { kind, path });
    }
    Ok(namespaces)
}

/// The ranges of a uid or gid map (at most 340, as the kernel allows).
pub fn id_maps(maps: &Option<Vec<LinuxIdMapping>>, field: &str) -> Result<Vec<IdMap>, SpecError> {
    let maps = maps.as_deref().unwrap_or(&[]);
    if maps.len() > 340 {
        return Err(SpecError::invalid(field, "more than 340 ranges"));
    }
    let mut out = Vec::new();
    for (i, m) in maps.iter().enumerate() {
        if m.size() == 0 {
            return Err(SpecError::invalid(
                format!("{field}[{i}].size"),
                "must be > 0",
            ));
        }
        if m.container_id().checked_add(m.size()).is_none()
            || m.host_id().checked_add(m.size()).is_none()
        {
            return Err(SpecError::invalid(
                format!("{field}[{i}]"),
                "range overflows 32 bits",
            ));
        }
        out.push(IdMap {
            container: m.container_id(),
            host: m.host_id(),
            size: m.size(),
        });
    }
    Ok(out)
}

/// `hostname` or `domainname`: at most 64 bytes, needs a new uts namespace.
fn uts_name(name: Option<&str>, field: &str, new_uts: bool) -> Result<(), SpecError> {
    let Some(h) = name else { return Ok(()) };
    no_nul(h, field)?;
    if h.len() > 64 {
        return Err(SpecError::invalid(field, "longer than 64 bytes"));
    }
    if !new_uts {
        return Err(SpecError::NeedsNamespace {
            field: field.into(),
            ns: NsKind::Uts.proc_name(),
        });
    }
    Ok(())
}

/// Namespaced sysctls, as runc allows them: the namespace each needs.
pub fn sysctl_ns(key: &str) -> Option<NsKind> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(NsKind::Ipc)
    } else if key.starts_with("net.") {
        Some(NsKind::Net)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(NsKind::Uts)
    } else {
        None
    }
}

/// `linux.sysctl`, sorted by name: namespaced ones whose namespace is new.
fn sysctls(linux: &Linux, namespaces: &[Ns]) -> Result<Vec<(String, String)>, SpecError> {
    let mut sysctls: Vec<(String, String)> = linux
        .sysctl()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    sysctls.sort();
    for (k, v) in &sysctls {
        let field = format!("linux.sysctl.{k:?}");
        if k.is_empty()
            || k.starts_with('.')
            || k.contains("..")
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
        {
            return Err(SpecError::invalid(field, "not a sysctl name"));
        }
        no_nul(v, &field)?;
        match sysctl_ns(k) {
            Some(ns) if has_new(namespaces, ns) => {}
            // A joined network namespace takes them too, as runc allows:
            // the VM's sandbox namespace, which its containers share as a
            // pod's do (Docker sets net.ipv4.ip_unprivileged_port_start
            // and net.ipv4.ping_group_range for every container).
            Some(NsKind::Net) if namespaces.iter().any(|n| n.kind == NsKind::Net) => {}
            Some(ns) => {
                return Err(SpecError::NeedsNamespace {
                    field,
                    ns: ns.proc_name(),
                })
            }
            None => {
                return Err(SpecError::invalid(
                    field,
                    "not namespaced, so a container may not set it",
                ))
            }
        }
    }
    Ok(sysctls)
}

/// `linux.timeOffsets` (monotonic and boottime only), sorted by clock.
fn time_offsets(linux: &Linux, new_time: bool) -> Result<Vec<(String, i64, u32)>, SpecError> {
    let mut out = Vec::new();
    let Some(offs) = linux.time_offsets() else {
        return Ok(out);
    };
    if !new_time {
        return Err(SpecError::NeedsNamespace {
            field: "linux.timeOffsets".into(),
            ns: NsKind::Time.proc_name(),
        });
    }
    let mut offs: Vec<_> = offs.iter().collect();
    offs.sort_by(|a, b| a.0.cmp(b.0));
    for (clock, o) in offs {
        if clock != "monotonic" && clock != "boottime" {
            return Err(SpecError::invalid(
                format!("linux.timeOffsets.{clock}"),
                "only monotonic and boottime can be offset",
            ));
        }
        let ns = o.nanosecs().unwrap_or(0);
        if ns >= 1_000_000_000 {
            return Err(SpecError::invalid(
                format!("linux.timeOffsets.{clock}.nanosecs"),
                format!("{ns} >= 1e9"),
            ));
        }
        out.push((clock.clone(), o.secs().unwrap_or(0), ns));
    }
    Ok(out)
}
