//! Validation of an OCI runtime spec into an [`InitConfig`] and cgroup
//! settings. Pure: nothing is created here, so a bad spec leaves nothing
//! behind. Every error is one line that starts with the spec field
//! (`mounts[2].type: ...`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxDeviceType, LinuxNamespaceType, Mount, PosixRlimitType, Process, Spec,
};

use super::caps::CapSets;
use super::cgroup::{self, Write1};
use super::config::*;
use super::seccomp;

/// Longest container or exec id.
pub const MAX_ID: usize = 64;

/// Container and exec ids: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most [`MAX_ID`] bytes.
pub fn check_id(id: &str, field: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        let mut shown = id.to_string();
        husk_protocol::truncate_utf8(&mut shown, MAX_ID);
        Err(format!(
            "{field}: {shown:?} is not a valid id ([A-Za-z0-9][A-Za-z0-9_.-]*, at most {MAX_ID} bytes)"
        ))
    }
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

fn abs(p: &str, field: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{field}: {p:?} must be an absolute path"));
    }
    if p.contains('\0') {
        return Err(format!("{field}: contains a NUL byte"));
    }
    Ok(())
}

fn path_str<'a>(p: &'a Path, field: &str) -> Result<&'a str, String> {
    p.to_str().ok_or_else(|| format!("{field}: not UTF-8"))
}

fn no_nul(s: &str, field: &str) -> Result<(), String> {
    if s.contains('\0') {
        Err(format!("{field}: contains a NUL byte"))
    } else {
        Ok(())
    }
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

#[allow(clippy::unnecessary_cast)] // RLIMIT_* are c_int on musl
fn rlimit_resource(t: PosixRlimitType) -> u32 {
    (match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as u32
}

/// Validates a process (`process` of the spec, or an exec's).
pub fn plan_process(
    p: &Process,
    f: &str,
    warnings: &mut Vec<String>,
) -> Result<ProcessConfig, String> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(format!("{f}.args: must name a program"));
    }
    for (i, a) in args.iter().enumerate() {
        no_nul(a, &format!("{f}.args[{i}]"))?;
    }
    if args[0].is_empty() {
        return Err(format!("{f}.args[0]: empty program name"));
    }
    let env = p.env().clone().unwrap_or_default();
    for (i, e) in env.iter().enumerate() {
        no_nul(e, &format!("{f}.env[{i}]"))?;
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => return Err(format!("{f}.env[{i}]: {e:?} is not NAME=VALUE")),
        }
    }
    let cwd = path_str(p.cwd(), &format!("{f}.cwd"))?.to_string();
    abs(&cwd, &format!("{f}.cwd"))?;
    let user = p.user();
    let umask = user.umask().unwrap_or(0o022);
    if umask > 0o7777 {
        return Err(format!(
            "{f}.user.umask: {umask:#o} is not a file mode mask"
        ));
    }
    let additional_gids = user.additional_gids().clone().unwrap_or_default();
    if additional_gids.len() > 65536 {
        return Err(format!("{f}.user.additionalGids: more than 65536 groups"));
    }
    if user.username().is_some() {
        warnings.push(format!("{f}.user.username ignored (Windows only)"));
    }
    let mut caps = CapSets::from_spec(p.capabilities().as_ref())?;
    // Ambient needs permitted and inheritable; runc drops the others too.
    caps.ambient &= caps.permitted & caps.inheritable;
    let mut rlimits = Vec::new();
    let mut seen = HashSet::new();
    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        let field = format!("{f}.rlimits[{i}]");
        if !seen.insert(rlimit_resource(r.typ())) {
            return Err(format!("{field}.type: {:?} given twice", r.typ()));
        }
        if r.soft() > r.hard() {
            return Err(format!(
                "{field}: soft limit {} is above hard limit {}",
                r.soft(),
                r.hard()
            ));
        }
        rlimits.push(Rlimit {
            resource: rlimit_resource(r.typ()),
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    if let Some(adj) = p.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(format!("{f}.oomScoreAdj: {adj} is outside -1000..1000"));
        }
    }
    let io_priority = match p.io_priority() {
        None => None,
        Some(io) => {
            use oci_spec::runtime::IOPriorityClass as C;
            let class = match io.class() {
                C::IoprioClassRt => 1,
                C::IoprioClassBe => 2,
                C::IoprioClassIdle => 3,
            };
            let prio = io.priority();
            if !(0..=7).contains(&prio) {
                return Err(format!("{f}.ioPriority.priority: {prio} is outside 0..7"));
            }
            Some((class, prio as u32))
        }
    };
    for (name, set) in [
        ("apparmorProfile", p.apparmor_profile().is_some()),
        ("selinuxLabel", p.selinux_label().is_some()),
        ("scheduler", p.scheduler().is_some()),
        ("execCPUAffinity", p.exec_cpu_affinity().is_some()),
        ("commandLine", p.command_line().is_some()),
    ] {
        if set {
            warnings.push(format!(
                "{f}.{name} ignored: not supported in the husk guest"
            ));
        }
    }
    Ok(ProcessConfig {
        args,
        env,
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids,
        umask,
        caps,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        rlimits,
        terminal: p.terminal().unwrap_or(false),
        console_size: p.console_size().map(|b| {
            (
                b.height().min(u16::MAX as u64) as u16,
                b.width().min(u16::MAX as u64) as u16,
            )
        }),
        oom_score_adj: p.oom_score_adj(),
        io_priority,
    })
}

/// MS_* flags of mount options; `Some(true)` sets, `Some(false)` clears.
fn mount_flag(o: &str) -> Option<(bool, u64)> {
    Some(match o {
        "ro" => (true, libc::MS_RDONLY),
        "rw" => (false, libc::MS_RDONLY),
        "nosuid" => (true, libc::MS_NOSUID),
        "suid" => (false, libc::MS_NOSUID),
        "nodev" => (true, libc::MS_NODEV),
        "dev" => (false, libc::MS_NODEV),
        "noexec" => (true, libc::MS_NOEXEC),
        "exec" => (false, libc::MS_NOEXEC),
        "sync" => (true, libc::MS_SYNCHRONOUS),
        "async" => (false, libc::MS_SYNCHRONOUS),
        "dirsync" => (true, libc::MS_DIRSYNC),
        "remount" => (true, libc::MS_REMOUNT),
        "mand" => (true, libc::MS_MANDLOCK),
        "nomand" => (false, libc::MS_MANDLOCK),
        "atime" => (false, libc::MS_NOATIME),
        "noatime" => (true, libc::MS_NOATIME),
        "diratime" => (false, libc::MS_NODIRATIME),
        "nodiratime" => (true, libc::MS_NODIRATIME),
        "relatime" => (true, libc::MS_RELATIME),
        "norelatime" => (false, libc::MS_RELATIME),
        "strictatime" => (true, libc::MS_STRICTATIME),
        "nostrictatime" => (false, libc::MS_STRICTATIME),
        "lazytime" => (true, libc::MS_LAZYTIME),
        "nolazytime" => (false, libc::MS_LAZYTIME),
        "silent" => (true, libc::MS_SILENT),
        "loud" => (false, libc::MS_SILENT),
        _ => return None,
    })
}

fn propagation_flag(o: &str) -> Option<u64> {
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

fn plan_mount(
    i: usize,
    m: &Mount,
    env: &Env,
    warnings: &mut Vec<String>,
) -> Result<MountConfig, String> {
    let field = format!("mounts[{i}]");
    let dest = path_str(m.destination(), &format!("{field}.destination"))?.to_string();
    abs(&dest, &format!("{field}.destination"))?;
    if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
        return Err(format!("{field}: idmapped mounts are not supported"));
    }
    let mut flags = 0u64;
    let mut propagation = Vec::new();
    let mut data = Vec::new();
    let mut bind = None;
    for (j, o) in m.options().iter().flatten().enumerate() {
        no_nul(o, &format!("{field}.options[{j}]"))?;
        if let Some((set, fl)) = mount_flag(o) {
            if set {
                flags |= fl;
            } else {
                flags &= !fl;
            }
        } else if let Some(p) = propagation_flag(o) {
            propagation.push(p);
        } else if o == "bind" || o == "rbind" {
            bind = Some(o == "rbind");
        } else if o == "tmpcopyup" || o == "idmap" || o == "ridmap" || o.starts_with("rro") {
            return Err(format!("{field}.options[{j}]: {o:?} is not supported"));
        } else {
            data.push(o.clone());
        }
    }
    let typ = m.typ().clone().unwrap_or_default();
    no_nul(&typ, &format!("{field}.type"))?;
    let source = match m.source() {
        Some(s) => path_str(s, &format!("{field}.source"))?.to_string(),
        None => String::new(),
    };
    no_nul(&source, &format!("{field}.source"))?;
    let kind = if typ == "bind" || bind.is_some() {
        if source.is_empty() {
            return Err(format!("{field}.source: a bind mount needs a source"));
        }
        let source = if source.starts_with('/') {
            source
        } else if let Some(b) = &env.bundle {
            b.join(&source).to_string_lossy().into_owned()
        } else {
            return Err(format!(
                "{field}.source: {source:?} must be an absolute guest path"
            ));
        };
        MountKind::Bind {
            source,
            recursive: bind.unwrap_or(false),
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        MountKind::Cgroup
    } else if typ.is_empty() {
        return Err(format!("{field}.type: missing (and not a bind mount)"));
    } else if !env.filesystems.contains(&typ) {
        return Err(format!("{field}.type: unknown file system type {typ:?}"));
    } else {
        MountKind::Fs {
            fstype: typ,
            source: if source.is_empty() {
                "none".into()
            } else {
                source
            },
        }
    };
    if flags & libc::MS_REMOUNT != 0 && !matches!(kind, MountKind::Bind { .. }) {
        warnings.push(format!("{field}.options: remount of a new mount ignored"));
        flags &= !libc::MS_REMOUNT;
    }
    Ok(MountConfig {
        dest,
        kind,
        flags,
        propagation,
        data: data.join(","),
        field,
    })
}

/// Namespaced sysctls, as runc allows them: (prefix, namespace needed).
fn sysctl_ns(key: &str) -> Option<NsKind> {
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

fn id_maps(
    maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>,
    field: &str,
) -> Result<Vec<IdMap>, String> {
    let maps = maps.as_deref().unwrap_or(&[]);
    if maps.len() > 340 {
        return Err(format!("{field}: more than 340 ranges"));
    }
    let mut out = Vec::new();
    for (i, m) in maps.iter().enumerate() {
        if m.size() == 0 {
            return Err(format!("{field}[{i}].size: must be > 0"));
        }
        if m.container_id().checked_add(m.size()).is_none()
            || m.host_id().checked_add(m.size()).is_none()
        {
            return Err(format!("{field}[{i}]: range overflows 32 bits"));
        }
        out.push(IdMap {
            container: m.container_id(),
            host: m.host_id(),
            size: m.size(),
        });
    }
    Ok(out)
}

/// Validates `spec` for container `id` whose root file system is the guest
/// directory `rootfs`.
pub fn plan_create(id: &str, spec: &Spec, rootfs: &Path, env: &Env) -> Result<CreatePlan, String> {
    check_id(id, "id")?;
    let mut warnings = Vec::new();
    let process = spec.process().as_ref().ok_or("process: missing")?;
    let mut process = plan_process(process, "process", &mut warnings)?;
    let linux = spec.linux().as_ref().ok_or("linux: missing")?;
    let rootfs_s = path_str(rootfs, "root.path")?.to_string();
    abs(&rootfs_s, "root.path")?;

    // Namespaces.
    let mut namespaces = Vec::new();
    for (i, n) in linux.namespaces().iter().flatten().enumerate() {
        let field = format!("linux.namespaces[{i}]");
        let kind = ns_kind(n.typ());
        if namespaces.iter().any(|x: &Ns| x.kind == kind) {
            return Err(format!("{field}.type: {} given twice", kind.proc_name()));
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
    // User first: the others are then owned by it.
    namespaces.sort_by_key(|n| NsKind::ALL.iter().position(|k| *k == n.kind));
    let has_new = |k: NsKind| namespaces.iter().any(|n| n.kind == k && n.path.is_none());
    let has = |k: NsKind| namespaces.iter().any(|n| n.kind == k);
    if !has_new(NsKind::Mount) {
        return Err("linux.namespaces: a new mount namespace is required".into());
    }
    let uid_maps = id_maps(linux.uid_mappings(), "linux.uidMappings")?;
    let gid_maps = id_maps(linux.gid_mappings(), "linux.gidMappings")?;
    if has_new(NsKind::User) {
        if uid_maps.is_empty() {
            return Err("linux.uidMappings: required with a new user namespace".into());
        }
        if gid_maps.is_empty() {
            return Err("linux.gidMappings: required with a new user namespace".into());
        }
    } else if !uid_maps.is_empty() || !gid_maps.is_empty() {
        return Err("linux.uidMappings: set without a new user namespace".into());
    }

    // Hostname and sysctls.
    if let Some(h) = spec.hostname() {
        no_nul(h, "hostname")?;
        if h.len() > 64 {
            return Err("hostname: longer than 64 bytes".into());
        }
        if !has_new(NsKind::Uts) {
            return Err("hostname: needs a new uts namespace".into());
        }
    }
    if let Some(h) = spec.domainname() {
        no_nul(h, "domainname")?;
        if h.len() > 64 {
            return Err("domainname: longer than 64 bytes".into());
        }
        if !has_new(NsKind::Uts) {
            return Err("domainname: needs a new uts namespace".into());
        }
    }
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
            return Err(format!("{field}: not a sysctl name"));
        }
        no_nul(v, &field)?;
        match sysctl_ns(k) {
            Some(ns) if has_new(ns) => {}
            Some(ns) => return Err(format!("{field}: needs a new {} namespace", ns.proc_name())),
            None => {
                return Err(format!(
                    "{field}: not namespaced, so a container may not set it"
                ))
            }
        }
    }

    let mut time_offsets = Vec::new();
    if let Some(offs) = linux.time_offsets() {
        if !has_new(NsKind::Time) {
            return Err("linux.timeOffsets: needs a new time namespace".into());
        }
        let mut offs: Vec<_> = offs.iter().collect();
        offs.sort_by(|a, b| a.0.cmp(b.0));
        for (clock, o) in offs {
            if clock != "monotonic" && clock != "boottime" {
                return Err(format!(
                    "linux.timeOffsets.{clock}: only monotonic and boottime can be offset"
                ));
            }
            let ns = o.nanosecs().unwrap_or(0);
            if ns >= 1_000_000_000 {
                return Err(format!("linux.timeOffsets.{clock}.nanosecs: {ns} >= 1e9"));
            }
            time_offsets.push((clock.clone(), o.secs().unwrap_or(0), ns));
        }
    }

    // Root file system.
    let readonly = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") => libc::MS_SLAVE | libc::MS_REC,
        Some(p) => match propagation_flag(p) {
            Some(f) if f & libc::MS_UNBINDABLE == 0 || f & libc::MS_REC != 0 => f,
            _ => {
                return Err(format!(
                    "linux.rootfsPropagation: {p:?} is not a propagation mode"
                ))
            }
        },
    };
    let mut mounts = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        mounts.push(plan_mount(i, m, env, &mut warnings)?);
    }
    let default_dev = !mounts
        .iter()
        .any(|m| m.dest.trim_end_matches('/') == "/dev");
    let mut devices = Vec::new();
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        let field = format!("linux.devices[{i}]");
        let path = path_str(d.path(), &format!("{field}.path"))?.to_string();
        abs(&path, &format!("{field}.path"))?;
        if !path.starts_with("/dev/") {
            return Err(format!("{field}.path: {path:?} is not under /dev"));
        }
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => return Err(format!("{field}.type: \"a\" is not a device type")),
        };
        if d.major() < 0 || d.minor() < 0 || d.major() > 0xfff || d.minor() > 0xfffff {
            return Err(format!(
                "{field}: device {}:{} out of range",
                d.major(),
                d.minor()
            ));
        }
        devices.push(DeviceConfig {
            path,
            kind,
            major: d.major() as u64,
            minor: d.minor() as u64,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    let mut masked = Vec::new();
    for (i, p) in linux.masked_paths().iter().flatten().enumerate() {
        abs(p, &format!("linux.maskedPaths[{i}]"))?;
        masked.push(p.clone());
    }
    let mut readonly_paths = Vec::new();
    for (i, p) in linux.readonly_paths().iter().flatten().enumerate() {
        abs(p, &format!("linux.readonlyPaths[{i}]"))?;
        readonly_paths.push(p.clone());
    }

    // cgroup.
    let cgroup_rel =
        cgroup::rel_path(linux.cgroups_path().as_deref(), id).map_err(|e| e.to_string())?;
    let cgroup_writes = match linux.resources() {
        Some(r) => cgroup::resource_writes(r, &mut warnings).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };

    let seccomp = match linux.seccomp() {
        Some(s) => Some(seccomp::compile(s, &mut warnings)?),
        None => None,
    };
    let personality = match linux.personality() {
        None => None,
        Some(p) => {
            use oci_spec::runtime::LinuxPersonalityDomain as D;
            if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
                return Err("linux.personality.flags: not supported".into());
            }
            Some(match p.domain() {
                D::PerLinux => 0,
                D::PerLinux32 => 0x0008,
            })
        }
    };
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
    if !has(NsKind::Pid) {
        warnings.push(
            "linux.namespaces: no pid namespace: the container sees the guest's processes".into(),
        );
    }
    if process.terminal && process.console_size.is_none() {
        process.console_size = Some((24, 80));
    }

    let cgroupns = has(NsKind::Cgroup);
    Ok(CreatePlan {
        init: InitConfig {
            namespaces,
            rootfs: Some(RootfsConfig {
                path: rootfs_s,
                readonly,
                propagation,
                mounts,
                default_dev,
                devices,
                masked,
                readonly_paths,
                cgroup_dir: format!("{}/{}", cgroup::ROOT, cgroup_rel),
                cgroupns,
            }),
            hostname: spec.hostname().clone(),
            domainname: spec.domainname().clone(),
            sysctls,
            time_offsets,
            personality,
            seccomp,
            process,
        },
        cgroup_rel,
        cgroup_writes,
        uid_maps,
        gid_maps,
        warnings,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            filesystems: [
                "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup2", "ext4",
            ]
            .map(String::from)
            .to_vec(),
            bundle: None,
        }
    }

    pub fn base() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                        "env": ["PATH=/bin"],
                        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                                          "permitted": ["CAP_KILL"]}},
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "box",
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=1m"]}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}],
                      "resources": {"memory": {"limit": 33554432}, "pids": {"limit": 10}},
                      "maskedPaths": ["/proc/kcore"]}
        })
    }

    fn plan(v: serde_json::Value) -> Result<CreatePlan, String> {
        let spec: Spec = serde_json::from_value(v).map_err(|e| e.to_string())?;
        plan_create("c1", &spec, Path::new("/rootfs"), &env())
    }

    #[test]
    fn good_spec() {
        let p = plan(base()).unwrap();
        assert_eq!(p.cgroup_rel, "husk/c1");
        assert!(p.init.new_ns(NsKind::Pid) && p.init.new_ns(NsKind::Mount));
        let r = p.init.rootfs.as_ref().unwrap();
        assert!(r.readonly && r.default_dev);
        assert_eq!(r.mounts[1].flags, libc::MS_NOSUID);
        assert_eq!(r.mounts[1].data, "size=1m");
        assert_eq!(p.init.process.caps.bounding, 1 << 5);
        assert_eq!(p.init.hostname.as_deref(), Some("box"));
        assert_eq!(p.cgroup_writes.len(), 2);
    }

    fn err_of(mutate: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v = base();
        mutate(&mut v);
        plan(v).unwrap_err()
    }

    #[test]
    fn malformed_specs_name_the_field() {
        type Mutate = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: Vec<(Mutate, &str)> = vec![
            (
                Box::new(|v| v["linux"]["resources"]["memory"]["limit"] = (-5).into()),
                "linux.resources.memory.limit:",
            ),
            (
                Box::new(|v| v["linux"]["resources"]["pids"]["limit"] = (-2).into()),
                "linux.resources.pids.limit:",
            ),
            (
                Box::new(|v| v["mounts"][1]["type"] = "nosuchfs".into()),
                "mounts[1].type:",
            ),
            (
                Box::new(|v| v["mounts"][0]["destination"] = "proc".into()),
                "mounts[0].destination:",
            ),
            (
                Box::new(|v| v["process"]["cwd"] = "tmp".into()),
                "process.cwd:",
            ),
            (
                Box::new(|v| v["process"]["args"] = serde_json::json!([])),
                "process.args:",
            ),
            (
                Box::new(|v| v["process"]["env"] = serde_json::json!(["NOEQUALS"])),
                "process.env[0]:",
            ),
            (
                Box::new(|v| v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}])),
                "linux.namespaces:",
            ),
            (
                Box::new(|v| v["linux"]["namespaces"][2]["type"] = "pid".into()),
                "linux.namespaces[2].type:",
            ),
            (
                Box::new(|v| v["linux"]["namespaces"][2]["type"] = "ipc".into()),
                "hostname:",
            ),
            (
                Box::new(|v| v["linux"]["sysctl"] = serde_json::json!({"vm.swappiness": "1"})),
                "linux.sysctl.\"vm.swappiness\":",
            ),
            (
                Box::new(|v| {
                    v["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"})
                }),
                "linux.sysctl.\"net.ipv4.ip_forward\":",
            ),
            (
                Box::new(|v| v["linux"]["maskedPaths"] = serde_json::json!(["proc/kcore"])),
                "linux.maskedPaths[0]:",
            ),
            (
                Box::new(|v| v["linux"]["cgroupsPath"] = "/a/../../b".into()),
                "linux.cgroupsPath:",
            ),
            (
                Box::new(|v| {
                    v["process"]["rlimits"] =
                        serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}])
                }),
                "process.rlimits[0]:",
            ),
            (
                Box::new(|v| {
                    v["mounts"].as_array_mut().unwrap().push(serde_json::json!({"destination": "/x", "type": "bind", "source": "rel/dir", "options": ["rbind"]}))
                }),
                "mounts[2].source:",
            ),
            (
                Box::new(|v| {
                    v["linux"]["namespaces"]
                        .as_array_mut()
                        .unwrap()
                        .push(serde_json::json!({"type": "user"}))
                }),
                "linux.uidMappings:",
            ),
            (
                Box::new(
                    |v| v["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 9, "value": 0, "op": "SCMP_CMP_EQ"}]}]}),
                ),
                "linux.seccomp.syscalls[0].args[0].index:",
            ),
        ];
        for (mutate, field) in cases {
            let e = err_of(mutate);
            assert!(e.starts_with(field), "want {field} got {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = plan_create(
            "../x",
            &serde_json::from_value(base()).unwrap(),
            Path::new("/r"),
            &env(),
        )
        .unwrap_err();
        assert!(e.starts_with("id:"), "{e}");
        let e = plan_create(
            "c",
            &serde_json::from_value(base()).unwrap(),
            Path::new("rootfs"),
            &env(),
        )
        .unwrap_err();
        assert!(e.starts_with("root.path:"), "{e}");
    }

    #[test]
    fn bad_namespace_type_fails_to_parse_with_its_path() {
        let mut v = base();
        v["linux"]["namespaces"][0]["type"] = "bogus".into();
        let e = crate::container::parse_spec(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.starts_with("linux.namespaces[0].type:"), "{e}");
    }

    #[test]
    fn trailing_garbage_is_an_error() {
        let mut b = serde_json::to_vec(&base()).unwrap();
        b.push(b'}');
        let e = crate::container::parse_spec(&b).unwrap_err();
        assert!(e.starts_with("spec:"), "{e}");
    }

    #[test]
    fn ignored_fields_are_reported() {
        let mut v = base();
        v["process"]["apparmorProfile"] = "x".into();
        v["process"]["selinuxLabel"] = "y".into();
        v["linux"]["mountLabel"] = "z".into();
        let p = plan(v).unwrap();
        for f in [
            "process.apparmorProfile",
            "process.selinuxLabel",
            "linux.mountLabel",
        ] {
            assert!(
                p.warnings.iter().any(|w| w.starts_with(f)),
                "{f}: {:?}",
                p.warnings
            );
        }
    }

    #[test]
    fn ids() {
        assert!(check_id("a-b_c.1", "id").is_ok());
        for bad in ["", "-a", "a/b", "a b", ".", "..", &"x".repeat(65)] {
            assert!(check_id(bad, "id").is_err(), "{bad}");
        }
    }

    #[test]
    fn exec_joins_the_container() {
        let p = plan(base()).unwrap();
        let e = plan_exec(&p.init, 42, p.init.process.clone());
        assert!(e.rootfs.is_none());
        assert!(e
            .namespaces
            .iter()
            .all(|n| n.path.as_deref() == Some(&*format!("/proc/42/ns/{}", n.kind.proc_name()))));
        assert_eq!(e.namespaces.len(), 3);
    }
}
