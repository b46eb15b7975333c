//! Tests of the configuration: flag syntax, JSON, validation messages.

use std::path::PathBuf;

use crate::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("husk-config-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cfg(input: ConfigInput) -> Result<VmConfig, String> {
    VmConfig::from_input(input, no_env).map_err(|e| e.to_string())
}

#[test]
fn defaults() {
    let c = cfg(ConfigInput::default()).unwrap();
    assert_eq!(c.kernel, PathBuf::from(DEFAULT_KERNEL));
    assert_eq!(c.initrd, PathBuf::from(DEFAULT_INITRD));
    assert_eq!((c.vcpus, c.memory_mib), (1, 128));
    assert_eq!(c.cmdline, DEFAULT_CMDLINE);
    assert_eq!(c.serial, SerialConfig::Stdout);
    assert!(c.vsock.is_none() && c.disks.is_empty());
}

#[test]
fn env_overrides_default_paths_but_not_explicit_ones() {
    let env = |k: &str| match k {
        "HUSK_KERNEL" => Some("/k".to_string()),
        "HUSK_INITRAMFS" => Some("/i".to_string()),
        _ => None,
    };
    let c = VmConfig::from_input(ConfigInput::default(), env).unwrap();
    assert_eq!(
        (c.kernel.to_str(), c.initrd.to_str()),
        (Some("/k"), Some("/i"))
    );
    let c = VmConfig::from_input(
        ConfigInput {
            kernel: Some("/x".into()),
            ..Default::default()
        },
        env,
    )
    .unwrap();
    assert_eq!(c.kernel.to_str(), Some("/x"));
}

#[test]
fn range_errors_name_the_field() {
    let e = cfg(ConfigInput {
        memory: Some(32),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e, "memory: 32 MiB is below the minimum of 64 MiB");
    let e = cfg(ConfigInput {
        memory: Some(1 << 40),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.starts_with("memory: "), "{e}");
    assert!(cfg(ConfigInput {
        memory: Some(64),
        ..Default::default()
    })
    .is_ok());
    let e = cfg(ConfigInput {
        vcpus: Some(0),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e, "vcpus: 0 is out of range 1..=32");
    let e = cfg(ConfigInput {
        vcpus: Some(33),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e, "vcpus: 33 is out of range 1..=32");
    assert_eq!(
        cfg(ConfigInput {
            vcpus: Some(32),
            ..Default::default()
        })
        .unwrap()
        .vcpus,
        32
    );
}

#[test]
fn serial_specs() {
    assert_eq!("stdout".parse(), Ok(SerialConfig::Stdout));
    assert_eq!("none".parse(), Ok(SerialConfig::None));
    assert_eq!(
        "file:/tmp/x".parse(),
        Ok(SerialConfig::File("/tmp/x".into()))
    );
    for bad in ["file:", "tty", ""] {
        let e = bad.parse::<SerialConfig>().unwrap_err().to_string();
        assert!(
            e.starts_with("serial: expected stdout, none or file:PATH"),
            "{e}"
        );
    }
}

#[test]
fn disk_specs() {
    let d: DiskConfig = "/a/b.img,ro".parse().unwrap();
    assert_eq!((d.path.to_str(), d.read_only), (Some("/a/b.img"), true));
    let d: DiskConfig = "/a/b.img".parse().unwrap();
    assert!(!d.read_only);
    let d: DiskConfig = "/a/b.img,rw".parse().unwrap();
    assert!(!d.read_only);
    let e = "/a,b".parse::<DiskConfig>().unwrap_err().to_string();
    assert_eq!(e, "disk: unknown option 'b' in '/a,b' (expected PATH[,ro])");
    assert!(",ro".parse::<DiskConfig>().is_err());
}

#[test]
fn disk_paths_are_checked() {
    let d = tmpdir("disk");
    let img = d.join("disk.img");
    std::fs::write(&img, [0u8; 512]).unwrap();
    let ok = cfg(ConfigInput {
        disks: Some(vec![DiskConfig {
            path: img.clone(),
            read_only: true,
        }]),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(ok.disks.len(), 1);
    let missing = d.join("nope.img");
    let e = cfg(ConfigInput {
        disks: Some(vec![DiskConfig {
            path: missing.clone(),
            read_only: false,
        }]),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e, format!("disk: {}: not found", missing.display()));
    let e = cfg(ConfigInput {
        disks: Some(vec![DiskConfig {
            path: d.clone(),
            read_only: false,
        }]),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.ends_with("not a regular file or block device"), "{e}");
    let e = cfg(ConfigInput {
        disks: Some(vec![
            DiskConfig {
                path: img,
                read_only: false
            };
            20
        ]),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e, "disk: 20 virtio devices requested, at most 19 fit");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn vsock_checks() {
    let d = tmpdir("vsock");
    let uds = d.join("v.sock");
    let c = cfg(ConfigInput {
        vsock_uds: Some(uds.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        c.vsock,
        Some(VsockConfig {
            uds: uds.clone(),
            cid: 3
        })
    );

    let e = cfg(ConfigInput {
        vsock_uds: Some(uds.clone()),
        vsock_cid: Some(2),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.starts_with("vsock-cid: 2 is reserved"), "{e}");
    let e = cfg(ConfigInput {
        vsock_cid: Some(5),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e, "vsock-cid: given without --vsock-uds");

    std::fs::write(&uds, b"").unwrap();
    let e = cfg(ConfigInput {
        vsock_uds: Some(uds.clone()),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e, format!("vsock-uds: {}: already exists", uds.display()));

    let e = cfg(ConfigInput {
        vsock_uds: Some(d.join("no/such/dir/v.sock")),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        e.starts_with("vsock-uds: ") && e.contains("does not exist"),
        "{e}"
    );
    let long = d.join("x".repeat(120));
    let e = cfg(ConfigInput {
        vsock_uds: Some(long),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.contains("too long for a Unix socket path"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn fs_specs() {
    let f: FsConfig = "tag=rootfs,socket=/run/v.sock".parse().unwrap();
    assert_eq!(
        f,
        FsConfig {
            tag: "rootfs".into(),
            socket: "/run/v.sock".into(),
            queue_size: DEFAULT_FS_QUEUE_SIZE
        }
    );
    let f: FsConfig = "socket=/s,queue_size=128,tag=x".parse().unwrap();
    assert_eq!((f.tag.as_str(), f.queue_size), ("x", 128));
    let bad = |s: &str| s.parse::<FsConfig>().unwrap_err().to_string();
    assert_eq!(
        bad("tag=a"),
        "fs: no socket= in 'tag=a' (expected tag=TAG,socket=PATH[,queue_size=N])"
    );
    assert_eq!(
        bad("socket=/s"),
        "fs: no tag= in 'socket=/s' (expected tag=TAG,socket=PATH[,queue_size=N])"
    );
    assert_eq!(
        bad("tag=a,socket=/s,cache=none"),
        "fs: unknown key 'cache' in 'tag=a,socket=/s,cache=none' \
         (expected tag=TAG,socket=PATH[,queue_size=N])"
    );
    assert_eq!(
        bad("tag=a,tag=b,socket=/s"),
        "fs: 'tag' given twice in 'tag=a,tag=b,socket=/s'"
    );
    assert!(bad("tag=a,/s").starts_with("fs: '/s' in 'tag=a,/s' is not KEY=VALUE"));
    assert!(bad("").starts_with("fs: '' in '' is not KEY=VALUE"));
    assert_eq!(
        bad("tag=a,socket=/s,queue_size=-1"),
        "fs: queue_size '-1' in 'tag=a,socket=/s,queue_size=-1' is not a number in 1..=1024"
    );
}

#[test]
fn fs_values_are_checked() {
    let fs = |tag: &str, socket: &str, queue_size: u16| {
        cfg(ConfigInput {
            fs: Some(vec![FsConfig {
                tag: tag.into(),
                socket: socket.into(),
                queue_size,
            }]),
            ..Default::default()
        })
    };
    // The socket need not exist yet: virtiofsd may still be starting.
    let c = fs("rootfs", "/nonexistent/v.sock", 1024).unwrap();
    assert_eq!(c.fs.len(), 1);
    assert!(c.shared_memory());
    assert_eq!(c.virtio_devices(), 1);
    assert!(!cfg(ConfigInput::default()).unwrap().shared_memory());
    assert!(fs(&"t".repeat(36), "/s", 1).is_ok());
    assert_eq!(
        fs(&"t".repeat(37), "/s", 128).unwrap_err(),
        format!("fs: tag {:?} must be 1 to 36 bytes long", "t".repeat(37))
    );
    assert_eq!(
        fs("", "/s", 128).unwrap_err(),
        "fs: tag \"\" must be 1 to 36 bytes long"
    );
    assert_eq!(
        fs("a b", "/s", 128).unwrap_err(),
        "fs: tag \"a b\": invalid character ' ' (printable ASCII, no spaces, commas or '/')"
    );
    assert!(fs("caf\u{e9}", "/s", 128).is_err());
    for q in [0, 3, 2048] {
        assert_eq!(
            fs("a", "/s", q).unwrap_err(),
            format!("fs: queue_size {q} for tag 'a' is not a power of two in 1..=1024")
        );
    }
    assert_eq!(
        fs("a", "", 128).unwrap_err(),
        "fs: empty socket path for tag 'a'"
    );
    let long = format!("/{}", "x".repeat(120));
    assert!(fs("a", &long, 128)
        .unwrap_err()
        .contains("too long for a Unix socket path"));
    let two = cfg(ConfigInput {
        fs: Some(vec![
            "tag=a,socket=/s1".parse().unwrap(),
            "tag=a,socket=/s2".parse().unwrap(),
        ]),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(two, "fs: tag 'a' is used twice");
    let many = cfg(ConfigInput {
        fs: Some(
            (0..20)
                .map(|i| format!("tag=t{i},socket=/s{i}").parse().unwrap())
                .collect(),
        ),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(many, "fs: 20 virtio devices requested, at most 19 fit");
}

#[test]
fn fs_in_json() {
    let d = tmpdir("fsjson");
    let p = d.join("vm.json");
    std::fs::write(
        &p,
        r#"{"fs": [{"tag": "rootfs", "socket": "/run/a.sock"},
                   {"tag": "data", "socket": "/run/b.sock", "queue_size": 256}]}"#,
    )
    .unwrap();
    let f = ConfigInput::from_json_file(&p).unwrap();
    let fs = f.fs.clone().unwrap();
    assert_eq!(fs.len(), 2);
    assert_eq!(
        (fs[0].queue_size, fs[1].queue_size),
        (DEFAULT_FS_QUEUE_SIZE, 256)
    );
    assert_eq!(cfg(f).unwrap().fs, fs);
    std::fs::write(
        &p,
        r#"{"fs": [{"tag": "a", "socket": "/s", "cache": "none"}]}"#,
    )
    .unwrap();
    let e = ConfigInput::from_json_file(&p).unwrap_err().to_string();
    assert!(e.contains("unknown field `cache`"), "{e}");
    std::fs::write(
        &p,
        r#"{"fs": [{"tag": "a", "socket": "/s", "queue_size": 99999}]}"#,
    )
    .unwrap();
    let e = ConfigInput::from_json_file(&p).unwrap_err().to_string();
    assert!(e.starts_with("config: ") && e.contains("99999"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn cmdline_must_be_printable() {
    let e = cfg(ConfigInput {
        append: Some("a\nb".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e, "append: invalid character '\\n' (printable ASCII only)");
}

#[test]
fn json_file_and_merge() {
    let d = tmpdir("json");
    let p = d.join("vm.json");
    std::fs::write(
        &p,
        r#"{"kernel": "/k", "vcpus": 2, "memory": 256,
            "disks": [{"path": "/d1", "read_only": true}, {"path": "/d2"}],
            "serial": "none", "append": "foo=1"}"#,
    )
    .unwrap();
    let f = ConfigInput::from_json_file(&p).unwrap();
    assert_eq!(f.vcpus, Some(2));
    assert_eq!(
        f.disks.as_deref(),
        Some(
            &[
                DiskConfig {
                    path: "/d1".into(),
                    read_only: true
                },
                DiskConfig {
                    path: "/d2".into(),
                    read_only: false
                }
            ][..]
        )
    );
    let m = f.merge(ConfigInput {
        vcpus: Some(4),
        ..Default::default()
    });
    assert_eq!(
        (m.vcpus, m.memory, m.serial.as_deref()),
        (Some(4), Some(256), Some("none"))
    );

    std::fs::write(&p, r#"{"memroy": 256}"#).unwrap();
    let e = ConfigInput::from_json_file(&p).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("config: {}: unknown field `memroy`", p.display())),
        "{e}"
    );
    std::fs::write(&p, r#"{"vcpus": "two"}"#).unwrap();
    let e = ConfigInput::from_json_file(&p).unwrap_err().to_string();
    assert!(e.contains("invalid type"), "{e}");
    let e = ConfigInput::from_json_file(&d.join("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(e.ends_with("missing.json: not found"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_built_config_round_trips_through_json() {
    let built = ConfigInput {
        kernel: Some("/k".into()),
        initrd: Some("/i".into()),
        append: Some("husk.share=husk husk.debug".into()),
        vcpus: Some(2),
        memory: Some(320),
        fs: Some(vec![FsConfig::new("husk", "/run/husk-sock/x/fs.sock")]),
        vsock_uds: Some("/run/husk-sock/x/vsock".into()),
        serial: Some(SerialConfig::File("/root/c1/console.log".into()).to_string()),
        ..Default::default()
    };
    let json = built.to_json().unwrap();
    // Unset fields are left out, and the serial console is one string.
    assert!(
        !json.contains("cmdline") && !json.contains("disks"),
        "{json}"
    );
    assert!(
        json.contains(r#""serial":"file:/root/c1/console.log""#),
        "{json}"
    );
    let back: ConfigInput = serde_json::from_str(&json).unwrap();
    assert_eq!(back, built);

    let d = tmpdir("roundtrip");
    let p = d.join("vm.json");
    built.write_json_file(&p).unwrap();
    assert_eq!(ConfigInput::from_json_file(&p).unwrap(), built);
    let e = cfg(ConfigInput {
        serial: Some("tty".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e, "serial: expected stdout, none or file:PATH, got 'tty'");
    for s in [
        SerialConfig::Stdout,
        SerialConfig::None,
        SerialConfig::File("/x".into()),
    ] {
        assert_eq!(s.to_string().parse(), Ok(s));
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn share_tags_follow_the_protocols_rule() {
    let fs = |tag: &str| {
        cfg(ConfigInput {
            fs: Some(vec![FsConfig::new(tag, "/s")]),
            ..Default::default()
        })
    };
    for bad in ["a/b", "..", "a,b"] {
        assert!(fs(bad).unwrap_err().starts_with("fs: tag \""), "{bad}");
    }
    assert!(fs("husk").is_ok());
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

#[test]
fn net_specs() {
    let n: NetConfig = "fd=5,mac=02:42:ac:11:00:02".parse().unwrap();
    assert_eq!(n, NetConfig::tap_fd(5, mac("02:42:ac:11:00:02"), None));
    let n: NetConfig = "mtu=9000,mac=02:00:00:00:00:01,tap=tap0".parse().unwrap();
    assert_eq!(
        (n.tap_fd, n.tap_name.as_deref(), n.mtu),
        (None, Some("tap0"), Some(9000))
    );
    assert_eq!(n.describe(), "tap tap0");
    let bad = |s: &str| s.parse::<NetConfig>().unwrap_err().to_string();
    assert_eq!(
        bad("fd=3"),
        "net: no mac= in 'fd=3' (expected fd=N,mac=MAC[,mtu=N][,backend=virtio|vhost] \
         or tap=NAME,mac=MAC[,mtu=N][,backend=virtio|vhost])"
    );
    assert_eq!(
        bad("fd=3,mac=02:00:00:00:00:01,fd=4"),
        "net: 'fd' given twice in 'fd=3,mac=02:00:00:00:00:01,fd=4'"
    );
    assert!(bad("fd=3,mac=02:00:00:00:00:01,queues=2").starts_with("net: unknown key 'queues'"));
    assert!(bad("fd=3,mac").starts_with("net: 'mac' in 'fd=3,mac' is not KEY=VALUE"));
    assert_eq!(
        bad("fd=x,mac=02:00:00:00:00:01"),
        "net: fd 'x' in 'fd=x,mac=02:00:00:00:00:01' is not a number"
    );
    assert_eq!(
        bad("fd=3,mac=02:00:00:00:00:01,mtu=-1"),
        "net: mtu '-1' in 'fd=3,mac=02:00:00:00:00:01,mtu=-1' is not a number"
    );
    assert!(
        bad("fd=3,mac=02:00:00:00:01").contains("is not a MAC address"),
        "{}",
        bad("fd=3,mac=02:00:00:00:01")
    );
    let n: NetConfig = "fd=5,backend=vhost,mac=02:42:ac:11:00:02".parse().unwrap();
    assert_eq!(
        n,
        NetConfig::tap_fd(5, mac("02:42:ac:11:00:02"), None).with_backend(NetBackend::Vhost)
    );
    let n: NetConfig = "fd=5,backend=virtio,mac=02:42:ac:11:00:02".parse().unwrap();
    assert_eq!(n.backend, NetBackend::Virtio);
    assert_eq!(
        bad("fd=3,mac=02:00:00:00:00:01,backend=kernel"),
        "net: backend \"kernel\" is not \"virtio\" or \"vhost\" in \
         'fd=3,mac=02:00:00:00:00:01,backend=kernel'"
    );
    assert_eq!(
        bad("fd=3,mac=02:00:00:00:00:01,backend=vhost,backend=virtio"),
        "net: 'backend' given twice in 'fd=3,mac=02:00:00:00:00:01,backend=vhost,backend=virtio'"
    );
}

#[test]
fn net_backend_names() {
    for (b, name) in [(NetBackend::Virtio, "virtio"), (NetBackend::Vhost, "vhost")] {
        assert_eq!(b.to_string(), name);
        assert_eq!(name.parse::<NetBackend>().unwrap(), b);
        assert_eq!(serde_json::to_string(&b).unwrap(), format!("\"{name}\""));
    }
    assert_eq!(NetBackend::default(), NetBackend::Virtio);
    assert!("Vhost".parse::<NetBackend>().is_err());
}

#[test]
fn net_values_are_checked() {
    let net = |nets: Vec<NetConfig>| {
        cfg(ConfigInput {
            net: Some(nets),
            ..Default::default()
        })
    };
    let m = mac("02:42:ac:11:00:02");
    let c = net(vec![NetConfig::tap_fd(3, m, Some(1500))]).unwrap();
    assert_eq!(c.net, [NetConfig::tap_fd(3, m, Some(1500))]);
    assert_eq!(c.virtio_devices(), 1);
    assert!(!c.shared_memory());
    assert_eq!(
        net(vec![NetConfig::tap_fd(2, m, None)]).unwrap_err(),
        "net: fd 2 is not an inherited descriptor (3 or above)"
    );
    assert_eq!(
        net(vec![NetConfig::tap_fd(-1, m, None)]).unwrap_err(),
        "net: fd -1 is not an inherited descriptor (3 or above)"
    );
    for bad in [
        "01:00:5e:00:00:01",
        "ff:ff:ff:ff:ff:ff",
        "00:00:00:00:00:00",
    ] {
        assert_eq!(
            net(vec![NetConfig::tap_fd(3, mac(bad), None)]).unwrap_err(),
            format!("net: mac {bad} is not a unicast address")
        );
    }
    for mtu in [0, 67, 65536] {
        assert_eq!(
            net(vec![NetConfig::tap_fd(3, m, Some(mtu))]).unwrap_err(),
            format!("net: mtu {mtu} for mac {m} is not in 68..=65535")
        );
    }
    assert!(net(vec![NetConfig::tap_fd(3, m, Some(68))]).is_ok());
    assert!(net(vec![NetConfig::tap_fd(3, m, Some(65535))]).is_ok());
    let m2 = mac("02:42:ac:11:00:03");
    assert_eq!(
        net(vec![
            NetConfig::tap_fd(3, m, None),
            NetConfig::tap_fd(3, m2, None)
        ])
        .unwrap_err(),
        "net: fd 3 is given twice"
    );
    assert_eq!(
        net(vec![
            NetConfig::tap_fd(3, m, None),
            NetConfig::tap_fd(4, m, None)
        ])
        .unwrap_err(),
        format!("net: mac {m} is given twice")
    );
    let by_name = |name: &str, mac: MacAddr| NetConfig {
        tap_fd: None,
        tap_name: Some(name.into()),
        mac,
        mtu: None,
        backend: NetBackend::Vhost,
    };
    assert!(net(vec![by_name("tap0", m), NetConfig::tap_fd(3, m2, None)]).is_ok());
    assert_eq!(
        net(vec![by_name("tap0", m), by_name("tap0", m2)]).unwrap_err(),
        "net: tap tap0 is given twice"
    );
    assert_eq!(
        net(vec![by_name("a b", m)]).unwrap_err(),
        "net: tap name 'a b' has characters other than [A-Za-z0-9._@-]"
    );
    let mut both = by_name("tap0", m);
    both.tap_fd = Some(3);
    assert_eq!(
        net(vec![both]).unwrap_err(),
        format!("net: mac {m}: both a tap fd and a tap name")
    );
    let mut neither = by_name("tap0", m);
    neither.tap_name = None;
    assert_eq!(
        net(vec![neither]).unwrap_err(),
        format!("net: mac {m}: no tap fd or tap name")
    );
    // NICs count towards the virtio device limit.
    let many = (0..20)
        .map(|i| NetConfig::tap_fd(3 + i, MacAddr([2, 0, 0, 0, 0, low(i)]), None))
        .collect();
    assert_eq!(
        net(many).unwrap_err(),
        "net: 20 virtio devices requested, at most 19 fit"
    );
    let c = cfg(ConfigInput {
        fs: Some(vec![FsConfig::new("a", "/s")]),
        net: Some(vec![NetConfig::tap_fd(3, m, None)]),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(c.virtio_devices(), 2);
}

fn low(i: i32) -> u8 {
    u8::try_from(i).unwrap()
}

#[test]
fn net_in_json() {
    let d = tmpdir("netjson");
    let p = d.join("vm.json");
    std::fs::write(
        &p,
        r#"{"net": [{"tap_fd": 3, "mac": "02:42:ac:11:00:02", "mtu": 1500},
                    {"tap_name": "tap1", "mac": "02:42:ac:11:00:03"}]}"#,
    )
    .unwrap();
    let f = ConfigInput::from_json_file(&p).unwrap();
    let net = f.net.clone().unwrap();
    assert_eq!(
        net[0],
        NetConfig::tap_fd(3, mac("02:42:ac:11:00:02"), Some(1500))
    );
    assert_eq!(net[1].tap_name.as_deref(), Some("tap1"));
    assert_eq!(cfg(f).unwrap().net, net);
    // What a host writes: unset fields left out.
    let built = ConfigInput {
        net: Some(vec![NetConfig::tap_fd(7, mac("02:00:00:00:00:01"), None)]),
        ..Default::default()
    };
    let json = built.to_json().unwrap();
    assert_eq!(json, r#"{"net":[{"tap_fd":7,"mac":"02:00:00:00:00:01"}]}"#);
    assert_eq!(serde_json::from_str::<ConfigInput>(&json).unwrap(), built);
    let vhost = ConfigInput {
        net: Some(vec![
            NetConfig::tap_fd(7, mac("02:00:00:00:00:01"), None).with_backend(NetBackend::Vhost)
        ]),
        ..Default::default()
    };
    let json = vhost.to_json().unwrap();
    assert_eq!(
        json,
        r#"{"net":[{"tap_fd":7,"mac":"02:00:00:00:00:01","backend":"vhost"}]}"#
    );
    assert_eq!(serde_json::from_str::<ConfigInput>(&json).unwrap(), vhost);
    for (bad, what) in [
        (
            r#"{"net": [{"tap_fd": 3, "mac": "02:00:00:00:00:01", "queues": 2}]}"#,
            "unknown field `queues`",
        ),
        (r#"{"net": [{"tap_fd": 3}]}"#, "missing field `mac`"),
        (
            r#"{"net": [{"tap_fd": 3, "mac": "02:00:00:00:00:01", "backend": "kernel"}]}"#,
            "unknown variant `kernel`, expected `virtio` or `vhost`",
        ),
        (
            r#"{"net": [{"tap_fd": 3, "mac": "02:00:00:00:01"}]}"#,
            "is not a MAC address",
        ),
    ] {
        std::fs::write(&p, bad).unwrap();
        let e = ConfigInput::from_json_file(&p).unwrap_err().to_string();
        assert!(e.starts_with("config: ") && e.contains(what), "{e}");
    }
    let merged = ConfigInput {
        net: Some(vec![NetConfig::tap_fd(3, mac("02:00:00:00:00:02"), None)]),
        ..Default::default()
    }
    .merge(built.clone());
    assert_eq!(merged.net, built.net);
    std::fs::remove_dir_all(&d).unwrap();
}
