//! Tests of spec validation: good specs, and errors that name the field.

use super::*;
use oci_spec::runtime::Spec;

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
    plan_create("c1", &spec, Path::new("/rootfs"), &env()).map_err(|e| e.to_string())
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
            Box::new(|v| {
                v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "mount", "path": "/proc/1/ns/mnt"}])
            }),
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
            Box::new(|v| v["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"})),
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
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("id:"), "{e}");
    let e = plan_create(
        "c",
        &serde_json::from_value(base()).unwrap(),
        Path::new("rootfs"),
        &env(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("root.path:"), "{e}");
}

#[test]
fn bad_namespace_type_fails_to_parse_with_its_path() {
    let mut v = base();
    v["linux"]["namespaces"][0]["type"] = "bogus".into();
    let e = crate::container::parse_spec(&serde_json::to_vec(&v).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("linux.namespaces[0].type:"), "{e}");
}

#[test]
fn trailing_garbage_is_an_error() {
    let mut b = serde_json::to_vec(&base()).unwrap();
    b.push(b'}');
    let e = crate::container::parse_spec(&b).unwrap_err().to_string();
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

#[test]
fn net_sysctls_go_with_a_joined_network_namespace() {
    let mut v = base();
    v["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_unprivileged_port_start": "0"});
    v["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "network", "path": "/run/husk-net/sandbox"}));
    let p = plan(v).unwrap();
    assert_eq!(
        p.init.sysctls,
        vec![(
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "0".to_string()
        )]
    );
}

#[test]
fn every_rootfs_propagation_mode_is_taken() {
    use libc::{MS_PRIVATE, MS_REC, MS_SHARED, MS_SLAVE, MS_UNBINDABLE};
    let propagation = |mode: Option<&str>| {
        let mut v = base();
        if let Some(m) = mode {
            v["linux"]["rootfsPropagation"] = m.into();
        }
        plan(v).map(|p| p.init.rootfs.unwrap().propagation)
    };
    assert_eq!(propagation(None), Ok(MS_SLAVE | MS_REC));
    for (mode, flags) in [
        ("private", MS_PRIVATE),
        ("rprivate", MS_PRIVATE | MS_REC),
        ("shared", MS_SHARED),
        ("rshared", MS_SHARED | MS_REC),
        ("slave", MS_SLAVE),
        ("rslave", MS_SLAVE | MS_REC),
        ("unbindable", MS_UNBINDABLE),
        ("runbindable", MS_UNBINDABLE | MS_REC),
    ] {
        assert_eq!(propagation(Some(mode)), Ok(flags), "{mode}");
    }
    let e = propagation(Some("bogus")).unwrap_err();
    assert!(
        e.starts_with("linux.rootfsPropagation: \"bogus\" is not a propagation mode"),
        "{e}"
    );
}

/// A spec without a mount namespace runs: the container gets a new one in
/// the guest (the guest's own is the agent's), and exec'd processes join it.
#[test]
fn a_spec_without_a_mount_namespace_gets_a_new_one() {
    let mut v = base();
    v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "uts"}]);
    let p = plan(v).unwrap();
    assert!(p.init.new_ns(NsKind::Mount), "{:?}", p.init.namespaces);
    assert!(p.init.rootfs.is_some());
    let e = plan_exec(&p.init, 42, p.init.process.clone());
    assert!(e
        .namespaces
        .iter()
        .any(|n| n.kind == NsKind::Mount && n.path.as_deref() == Some("/proc/42/ns/mnt")));
}
