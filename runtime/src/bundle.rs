//! Reading an OCI bundle and turning its spec into what the microVM needs:
//! the guest's spec (bind sources moved into the virtio-fs share, hooks
//! kept on the host), the list of host paths to share, and the VM's size.
//!
//! Every error is one line naming the field (`mounts[3].source: ...`) or
//! the path.

use std::io;
use std::path::{Path, PathBuf};

use husk_protocol::oci;
use husk_vm_config::NetBackend;
use serde_json::Value;

use crate::state::resolve;

mod annotations;
mod size;
pub use annotations::{HostLimits, ENABLED_BY_DEFAULT, KNOWN as KNOWN_ANNOTATIONS};
use size::vm_size;
pub use size::{cpuset_highest, CpusetError};
/// A bundle that cannot run, naming its config.json and the field, or the
/// path, at fault.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// The spec does not decode: `msg` names the field
    /// (`process.args: invalid type ...`).
    #[error("{}: {msg}", path.display())]
    Spec { path: PathBuf, msg: String },
    /// A field husk cannot honour.
    #[error("{}: {field}: {msg}", path.display())]
    Field {
        path: PathBuf,
        field: String,
        msg: String,
    },
    /// The host's configuration, which says which annotations a bundle
    /// may set.
    #[error(transparent)]
    Host(#[from] crate::host_config::HostConfigError),
}

type Result<T, E = BundleError> = std::result::Result<T, E>;

/// The virtio-fs tag of a container's share, and the share's layout.
pub const SHARE_TAG: &str = "husk";
pub const ROOTFS_DIR: &str = "rootfs";

/// Guest memory when the spec sets no limit, and the least we boot with.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
pub const MIN_MEMORY_MIB: u64 = 128;
/// Added to a spec's memory limit: the guest kernel and agent.
pub const VM_OVERHEAD_MIB: u64 = 64;
pub use husk_vm_config::MAX_VCPUS;
/// The annotation that picks who serves the container's NICs: "virtio"
/// (husk-vmm, in user space) or "vhost" (the host kernel's vhost-net).
pub const NET_BACKEND_ANNOTATION: &str = "io.husk.net.backend";

/// One host path served to the guest through the share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    /// Absolute host path (file or directory).
    pub source: PathBuf,
    /// Name inside the share.
    pub name: String,
    pub is_dir: bool,
    /// The host's own view (the bind under the share directory) is
    /// read-only: an `ro` mount, a `root.readonly` rootfs. The guest's
    /// mount is read-only too, but a guest that mounts the share itself
    /// must not get around it.
    pub readonly: bool,
    /// The mounts under `source` come along (`rbind`, and the rootfs);
    /// a plain `bind` leaves them out.
    pub recursive: bool,
}

/// How a bind mount's `options` share its source: (read-only, recursive).
/// The last of `ro` and `rw` wins (rw without either); any `rbind` makes it
/// recursive, as with runc.
pub fn bind_mode(opts: &[String]) -> (bool, bool) {
    let readonly = opts
        .iter()
        .rev()
        .find_map(|o| match o.as_str() {
            "ro" => Some(true),
            "rw" => Some(false),
            _ => None,
        })
        .unwrap_or(false);
    (readonly, opts.iter().any(|o| o == "rbind"))
}

#[derive(Debug)]
pub struct Bundle {
    pub dir: PathBuf,
    /// The spec as written (hooks, annotations for the host side).
    pub spec: oci::Spec,
    /// The spec the agent gets.
    pub guest_spec: oci::Spec,
    pub rootfs: PathBuf,
    pub shares: Vec<Shared>,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// `process.terminal`.
    pub terminal: bool,
    /// The spec's network namespace on the host, which the monitor joins
    /// (and whose interfaces reach the VM): None = a new one, Some(path) =
    /// that one. A spec without one (the host's own) is refused.
    pub netns: Option<PathBuf>,
    /// Who serves the VM's NICs ([`NET_BACKEND_ANNOTATION`]); `None`: the
    /// host's default ([`default_net_backend`]).
    pub net_backend: Option<NetBackend>,
}

/// Reads and checks `<dir>/config.json`.
pub fn load(dir: &Path) -> Result<Bundle> {
    let dir = std::fs::canonicalize(dir).map_err(|source| BundleError::Dir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join("config.json");
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(source) => return Err(BundleError::Read { path, source }),
    };
    let v: Value = match serde_json::from_slice(&data) {
        Ok(v) => v,
        Err(source) => return Err(BundleError::Json { path, source }),
    };
    let host = HostLimits::of_this_host(&crate::host_config::HostConfig::load()?);
    from_value(&dir, v, &host)
}

fn spec_err(path: &Path, msg: String) -> BundleError {
    BundleError::Spec {
        path: path.to_path_buf(),
        msg,
    }
}

/// Errors about a bundle's config.json, naming the field.
struct At<'a>(&'a Path);

impl At<'_> {
    fn bad(&self, field: &str, msg: String) -> BundleError {
        BundleError::Field {
            path: self.0.to_path_buf(),
            field: field.to_string(),
            msg,
        }
    }
}

/// Checks the spec in `v` (the bundle `dir`'s config.json) and derives
/// what the microVM needs from it, on `host`.
pub fn from_value(dir: &Path, mut v: Value, host: &HostLimits) -> Result<Bundle> {
    let cfg = dir.join("config.json");
    let at = At(&cfg);
    let spec: oci::Spec =
        husk_protocol::decode_tracked(v.clone(), "").map_err(|e| spec_err(&cfg, e))?;
    let (terminal, rootfs) = process_and_root(&at, dir, &spec)?;
    let netns = netns_of(&at, &spec)?;
    annotations::check(&at, &spec, host)?;
    let (vcpus, memory_mib) = vm_size(&at, &spec, host)?;
    let net_backend = net_backend(&at, &spec)?;
    let root_ro = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let shares = share_mounts(&at, dir, &mut v, &rootfs, root_ro)?;
    scrub_for_guest(&mut v);
    let guest_spec: oci::Spec =
        husk_protocol::decode_tracked(v, "").map_err(|e| spec_err(&cfg, e))?;
    Ok(Bundle {
        dir: dir.to_path_buf(),
        spec,
        guest_spec,
        rootfs,
        shares,
        vcpus,
        memory_mib,
        terminal,
        netns,
        net_backend,
    })
}

/// The spec's version, `process.terminal` and root directory.
fn process_and_root(at: &At, dir: &Path, spec: &oci::Spec) -> Result<(bool, PathBuf)> {
    let ver = spec.version();
    if !ver.starts_with("1.") {
        return Err(at.bad(
            "ociVersion",
            format!("{ver:?} is not supported (husk reads 1.x specs)"),
        ));
    }
    let Some(process) = spec.process() else {
        return Err(at.bad("process", "missing".into()));
    };
    let terminal = process.terminal().unwrap_or(false);
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| at.bad("root", "missing".into()))?;
    let rootfs = resolve(dir, root.path());
    match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(at.bad(
                "root.path",
                format!("{} is not a directory", rootfs.display()),
            ))
        }
        Err(e) => return Err(at.bad("root.path", format!("{}: {e}", rootfs.display()))),
    }
    Ok((terminal, rootfs))
}

/// Namespaces: a VM has its own kernel, so a container cannot join a
/// namespace of the host — except the network one, which the host side
/// (the monitor) joins so that the daemon's network hooks see it. Without
/// a network namespace the container would share the host's network
/// stack (`--network host`), which a VM cannot.
fn netns_of(at: &At, spec: &oci::Spec) -> Result<Option<PathBuf>> {
    let mut netns = None;
    if let Some(nss) = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref()) {
        for (i, ns) in nss.iter().enumerate() {
            let t = ns.typ();
            if t == oci::LinuxNamespaceType::Network {
                netns = Some(ns.path().clone());
            } else if let Some(p) = ns.path() {
                return Err(at.bad(
                    &format!("linux.namespaces[{i}].path"),
                    format!(
                        "joining the host's {t} namespace ({}) is not possible from a microVM",
                        p.display()
                    ),
                ));
            }
        }
    }
    netns.ok_or_else(|| {
        at.bad(
            "linux.namespaces",
            "no network namespace: the container would use the host's network stack \
             (--network host), which a microVM cannot share; give it a network \
             namespace of its own (--network none for loopback only)"
                .into(),
        )
    })
}

/// The NICs' backend from the [`NET_BACKEND_ANNOTATION`] annotation, if
/// the spec names one.
fn net_backend(at: &At, spec: &oci::Spec) -> Result<Option<NetBackend>> {
    let Some(s) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(NET_BACKEND_ANNOTATION))
    else {
        return Ok(None);
    };
    s.parse()
        .map(Some)
        .map_err(|e| at.bad(&format!("annotations.{NET_BACKEND_ANNOTATION}"), e))
}

/// The backend of a container that names none: the kernel's vhost-net
/// where the host has it (about twice the throughput of husk-vmm's
/// user-space queues, see `husk bench network`), else user space.
pub fn default_net_backend() -> NetBackend {
    let vhost = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(husk_vm_config::VHOST_NET_PATH)
        .is_ok();
    if vhost {
        NetBackend::Vhost
    } else {
        NetBackend::Virtio
    }
}

/// Mounts: bind sources go into the share (the spec in `v` then names them
/// by their guest path); /dev/shm becomes guest tmpfs. Returns what the
/// share holds, the rootfs first.
/// Each mount gets a share entry of its own, so two mounts of one source
/// (one `ro`, one `rw`) keep their own modes.
fn share_mounts(
    at: &At,
    dir: &Path,
    v: &mut Value,
    rootfs: &Path,
    root_ro: bool,
) -> Result<Vec<Shared>> {
    let mut shares = vec![Shared {
        source: rootfs.to_path_buf(),
        name: ROOTFS_DIR.into(),
        is_dir: true,
        readonly: root_ro,
        recursive: true,
    }];
    let share_root = husk_protocol::container::share_path(SHARE_TAG);
    let Some(Value::Array(mounts)) = v.get_mut("mounts") else {
        return Ok(shares);
    };
    for (i, m) in mounts.iter_mut().enumerate() {
        let typ = m.get("type").and_then(Value::as_str).unwrap_or("");
        let opts: Vec<String> = m
            .get("options")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|o| o.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let is_bind = typ == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind");
        if !is_bind {
            continue;
        }
        let dest = m.get("destination").and_then(Value::as_str).unwrap_or("");
        if dest == "/dev/shm" {
            guest_shm(m, &opts);
            continue;
        }
        let field = format!("mounts[{i}].source");
        let src = m
            .get("source")
            .and_then(Value::as_str)
            .ok_or_else(|| at.bad(&field, "missing for a bind mount".into()))?;
        let src = resolve(dir, Path::new(src));
        let md = std::fs::metadata(&src)
            .map_err(|e| at.bad(&field, format!("{}: {e}", src.display())))?;
        if !md.is_dir() && !md.is_file() {
            return Err(at.bad(
                &field,
                format!(
                    "{}: only files and directories can be shared into a microVM",
                    src.display()
                ),
            ));
        }
        let name = format!("m{i}");
        m["source"] = Value::from(format!("{share_root}/{name}"));
        m["type"] = "bind".into();
        let (readonly, recursive) = bind_mode(&opts);
        shares.push(Shared {
            source: src,
            name,
            is_dir: md.is_dir(),
            readonly,
            recursive,
        });
    }
    Ok(shares)
}

/// The host's shm tmpfs cannot be shared usefully; the guest gets its own,
/// as Kata does, with the bind's restrictions.
fn guest_shm(m: &mut Value, opts: &[String]) {
    let keep: Vec<Value> = opts
        .iter()
        .filter(|o| ["nosuid", "noexec", "nodev", "ro"].contains(&o.as_str()))
        .map(|o| Value::from(o.as_str()))
        .chain(["mode=1777", "size=65536k"].map(Value::from))
        .collect();
    m["type"] = "tmpfs".into();
    m["source"] = "shm".into();
    m["options"] = Value::Array(keep);
}

/// The guest never sees host namespace paths or hooks, and gets plain
/// cgroup paths.
fn scrub_for_guest(v: &mut Value) {
    if let Some(Value::Array(nss)) = v.pointer_mut("/linux/namespaces") {
        for ns in nss.iter_mut() {
            if let Some(o) = ns.as_object_mut() {
                o.remove("path");
            }
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("hooks");
    }
    if let Some(cg) = v.pointer_mut("/linux/cgroupsPath") {
        if let Some(s) = cg.as_str() {
            *cg = Value::from(guest_cgroup_path(s));
        }
    }
}

/// systemd-style `slice:prefix:name` cgroup paths become plain paths in
/// the guest (which has no systemd): `/slice/prefix-name.scope`.
pub fn guest_cgroup_path(s: &str) -> String {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 3 && !s.starts_with('/') {
        let slice = if parts[0].is_empty() {
            "system.slice"
        } else {
            parts[0]
        };
        format!("/{slice}/{}-{}.scope", parts[1], parts[2])
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    /// A host of 4 CPUs and 8 GiB that enables the VM size annotations.
    fn test_host() -> HostLimits {
        HostLimits::with(4, 8192).enabling(&["io.husk.vcpus", "io.husk.memory_mib"])
    }

    fn bundle_dir(name: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("husk-bundle-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("rootfs")).unwrap();
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::write(d.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        Tmp(d)
    }
    fn spec() -> Value {
        json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "ro"]},
                {"destination": "/etc/hosts", "source": "hosts", "options": ["bind"]},
                {"destination": "/dev/shm", "type": "bind", "source": "/somewhere/shm", "options": ["rbind", "nosuid", "size=9k"]}
            ],
            "hooks": {"prestart": [{"path": "/bin/true"}]},
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/x"}],
                "cgroupsPath": "system.slice:docker:abc",
                "resources": {"memory": {"limit": 536870912}, "cpu": {"quota": 150000, "period": 100000}}
            }
        })
    }

    #[test]
    fn rewrites_mounts_and_sizes() {
        let t = bundle_dir("ok");
        let b = from_value(&t.0, spec(), &test_host()).unwrap();
        assert_eq!(b.rootfs, t.0.join("rootfs"));
        assert_eq!(
            b.vcpus,
            2.min(u32::try_from(std::thread::available_parallelism().unwrap().get()).unwrap())
        );
        assert_eq!(b.memory_mib, 512 + VM_OVERHEAD_MIB);
        assert_eq!(b.netns, Some(PathBuf::from("/run/netns/x")));
        let names: Vec<_> = b
            .shares
            .iter()
            .map(|s| (s.name.as_str(), s.is_dir))
            .collect();
        assert_eq!(names, [("rootfs", true), ("m1", true), ("m2", false)]);
        let g = serde_json::to_value(&b.guest_spec).unwrap();
        assert_eq!(g["mounts"][1]["source"], "/run/husk/shares/husk/m1");
        assert_eq!(g["mounts"][1]["options"], json!(["rbind", "ro"]));
        assert_eq!(g["mounts"][2]["source"], "/run/husk/shares/husk/m2");
        assert_eq!(g["mounts"][3]["type"], "tmpfs");
        assert_eq!(
            g["mounts"][3]["options"],
            json!(["nosuid", "mode=1777", "size=65536k"])
        );
        assert!(g.get("hooks").is_none());
        assert!(g["linux"]["namespaces"][1].get("path").is_none());
        assert_eq!(g["linux"]["cgroupsPath"], "/system.slice/docker-abc.scope");
        // the host-side spec keeps its hooks
        assert!(b.spec.hooks().is_some());
    }

    #[test]
    fn errors_name_the_field() {
        let t = bundle_dir("err");
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"ociVersion": "2.0.0"}),
                "ociVersion: \"2.0.0\" is not supported",
            ),
            (
                json!({"ociVersion": "1.0.0", "root": {"path": "rootfs"}}),
                "process: missing",
            ),
            (
                {
                    let mut s = spec();
                    s["root"]["path"] = "nope".into();
                    s
                },
                "root.path: ",
            ),
            (
                {
                    let mut s = spec();
                    s["mounts"][1]["source"] = "/no/such/dir".into();
                    s
                },
                "mounts[1].source: /no/such/dir: No such file",
            ),
            (
                {
                    let mut s = spec();
                    s["linux"]["namespaces"][0]["path"] = "/proc/1/ns/pid".into();
                    s
                },
                "linux.namespaces[0].path: joining the host's pid namespace",
            ),
            (
                {
                    let mut s = spec();
                    s["linux"]["namespaces"] = json!([{"type": "pid"}]);
                    s
                },
                "linux.namespaces: no network namespace: the container would use the host's network stack (--network host)",
            ),
            (
                {
                    let mut s = spec();
                    s["process"]["args"] = json!("sh");
                    s
                },
                "process.args: invalid type",
            ),
            (
                {
                    let mut s = spec();
                    s["annotations"] = json!({"io.husk.vcpus": "99"});
                    s
                },
                "annotations.io.husk.vcpus: \"99\"",
            ),
            (
                {
                    let mut s = spec();
                    s["annotations"] = json!({"io.husk.net.backend": "kernel"});
                    s
                },
                "annotations.io.husk.net.backend: \"kernel\" is not \"virtio\" or \"vhost\"",
            ),
        ];
        for (v, want) in cases {
            let e = from_value(&t.0, v, &test_host()).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
            assert!(e.contains("config.json"), "{e:?}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn each_share_has_its_mounts_mode() {
        let t = bundle_dir("modes");
        let mut s = spec();
        s["root"]["readonly"] = true.into();
        // The same source twice, read-only then read-write (the last of
        // `ro` and `rw` wins); a plain `bind` is not recursive.
        s["mounts"] = json!([
            {"destination": "/a", "type": "bind", "source": "data", "options": ["rbind", "rw", "ro"]},
            {"destination": "/b", "type": "bind", "source": "data", "options": ["ro", "bind", "rw"]},
            {"destination": "/c", "type": "bind", "source": "data"},
            {"destination": "/d", "source": "hosts", "options": ["rbind", "ro", "nosuid"]}
        ]);
        let b = from_value(&t.0, s, &test_host()).unwrap();
        let modes: Vec<_> = b
            .shares
            .iter()
            .map(|s| (s.name.as_str(), s.readonly, s.recursive))
            .collect();
        assert_eq!(
            modes,
            [
                ("rootfs", true, true),
                ("m0", true, true),
                ("m1", false, false),
                ("m2", false, false),
                ("m3", true, true)
            ]
        );
        let b = from_value(&t.0, spec(), &test_host()).unwrap();
        assert!(
            !b.shares[0].readonly,
            "root.readonly unset: a writable rootfs"
        );
    }

    #[test]
    fn defaults_and_helpers() {
        let t = bundle_dir("def");
        let mut s = spec();
        s["linux"]["resources"] = json!({});
        let b = from_value(&t.0, s, &test_host()).unwrap();
        assert_eq!((b.vcpus, b.memory_mib), (1, DEFAULT_MEMORY_MIB));
        assert_eq!(b.net_backend, None);
        assert_eq!(guest_cgroup_path("/docker/abc"), "/docker/abc");
    }

    #[test]
    fn net_backend_annotation() {
        let t = bundle_dir("netbackend");
        for (value, want) in [("vhost", NetBackend::Vhost), ("virtio", NetBackend::Virtio)] {
            let mut s = spec();
            s["annotations"] = json!({ NET_BACKEND_ANNOTATION: value });
            assert_eq!(
                from_value(&t.0, s, &test_host()).unwrap().net_backend,
                Some(want),
                "{value}"
            );
        }
        let mut s = spec();
        s["annotations"] = json!({"io.husk.vcpus": "1"});
        assert_eq!(from_value(&t.0, s, &test_host()).unwrap().net_backend, None);
        let mut s = spec();
        s["annotations"] = json!({ NET_BACKEND_ANNOTATION: "" });
        let e = from_value(&t.0, s, &test_host()).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "config.json: annotations.io.husk.net.backend: \"\" is not \"virtio\" or \"vhost\""
            ),
            "{e}"
        );
    }

    #[test]
    fn missing_and_invalid_config() {
        let t = bundle_dir("cfg");
        let e = load(&t.0).unwrap_err().to_string();
        assert!(e.contains("config.json: No such file"), "{e}");
        std::fs::write(t.0.join("config.json"), "{nope").unwrap();
        let e = load(&t.0).unwrap_err().to_string();
        assert!(e.contains("config.json: invalid JSON"), "{e}");
        let e = load(Path::new("/no/bundle")).unwrap_err().to_string();
        assert!(e.starts_with("bundle /no/bundle: "), "{e}");
    }
}
