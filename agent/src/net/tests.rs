//! The configuration on real links, as root: each test runs on a thread
//! that unshares a network and a mount namespace of its own (so neither
//! the host's links nor its mounts are touched), where veth pairs stand in
//! for the guest NICs; the sandbox namespace is bind-mounted under a
//! temporary directory. Without root (or when unsharing is refused) the
//! tests print why and pass.

use std::fs::File;
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use husk_protocol::net::{Interface, IpNet, MacAddr, Network, Route};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::RouteNetlinkMessage;

use super::*;

/// Runs `f` with a fresh temporary directory on a thread in new network
/// and mount namespaces; returns without running it when that is not
/// permitted.
fn in_fresh_namespaces(name: &str, f: impl FnOnce(&Path) + Send) {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped {name}: not root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("husk-net-{}-{name}", std::process::id()));
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare with constant flags; it changes only this
            // thread's namespaces (and those of the threads it starts).
            if unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) } < 0 {
                eprintln!("skipped {name}: unshare: {}", io::Error::last_os_error());
                return;
            }
            // SAFETY: a mount flag change with constant, NUL-terminated
            // arguments: nothing mounted here propagates to the host.
            let rc = unsafe {
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            };
            assert_eq!(rc, 0, "make / private: {}", io::Error::last_os_error());
            fs_reset(&dir);
            f(&dir);
            unmount_all(&dir);
        })
        .join()
        .unwrap_or_else(|p| {
            unmount_all(&dir);
            std::panic::resume_unwind(p)
        });
    });
}

fn fs_reset(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
}

fn unmount_all(dir: &Path) {
    for p in ["netns/sandbox", "sandbox"] {
        let c = std::ffi::CString::new(dir.join(p).as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: umount2 of a NUL-terminated path (not mounted: EINVAL).
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A veth pair standing in for a guest NIC: `name` with `mac`, its peer
/// up (so that the NIC gets a carrier once it is up).
fn veth(nl: &mut Netlink, name: &str, m: MacAddr, peer: &str) {
    let mut p = LinkMessage::default();
    p.attributes.push(LinkAttribute::IfName(peer.into()));
    let mut l = LinkMessage::default();
    l.attributes = vec![
        LinkAttribute::IfName(name.into()),
        LinkAttribute::Address(m.0.to_vec()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]),
    ];
    nl.request(RouteNetlinkMessage::NewLink(l), NLM_F_CREATE | NLM_F_EXCL)
        .unwrap();
    links::set_up_by_name(nl, peer).unwrap();
}

/// A netlink socket in the namespace bind-mounted on `path`, opened as a
/// container joins it (open the path, setns).
fn join(path: &Path) -> Netlink {
    let f = File::open(path).unwrap();
    netns::run_in(f.as_fd(), "join", Netlink::route).unwrap()
}

fn addresses(nl: &mut Netlink, index: u32) -> Vec<IpNet> {
    let all: Vec<RouteNetlinkMessage> = nl
        .dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            1024,
        )
        .unwrap();
    let mut out = Vec::new();
    for m in all {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        if a.header.index != index {
            continue;
        }
        for attr in &a.attributes {
            if let AddressAttribute::Address(ip) = attr {
                out.push(IpNet {
                    addr: *ip,
                    prefix: a.header.prefix_len,
                });
            }
        }
    }
    out
}

/// The main table's routes as (dest, gateway, oif, metric).
type RouteRow = (Option<IpNet>, Option<IpAddr>, u32, Option<u32>);

fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn routes(nl: &mut Netlink) -> Vec<RouteRow> {
    let all: Vec<RouteNetlinkMessage> = nl
        .dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()), 1024)
        .unwrap();
    let mut out = Vec::new();
    for m in all {
        let RouteNetlinkMessage::NewRoute(r) = m else {
            continue;
        };
        if r.header.table != RouteHeader::RT_TABLE_MAIN {
            continue;
        }
        let mut row: RouteRow = (None, None, 0, None);
        for a in &r.attributes {
            match a {
                RouteAttribute::Destination(d) => {
                    row.0 = ip(d).map(|addr| IpNet {
                        addr,
                        prefix: r.header.destination_prefix_length,
                    });
                }
                RouteAttribute::Gateway(g) => row.1 = ip(g),
                RouteAttribute::Oif(i) => row.2 = *i,
                RouteAttribute::Priority(p) => row.3 = Some(*p),
                _ => {}
            }
        }
        out.push(row);
    }
    out
}

use netlink_packet_route::route::RouteHeader;

/// Two NICs whose kernel names are each other's host names (eth0 has the
/// MAC of the host's eth1, and the other way round).
fn two_nics() -> Network {
    Network {
        interfaces: vec![
            Interface {
                name: "eth0".into(),
                mac: mac("02:42:ac:11:00:02"),
                mtu: 1400,
                addresses: vec![net("172.17.0.2/16"), net("fd00::2/64")],
            },
            Interface {
                name: "eth1".into(),
                mac: mac("02:42:0a:01:00:05"),
                mtu: 9000,
                addresses: vec![net("10.1.0.5/24")],
            },
        ],
        routes: vec![
            Route {
                dest: None,
                gateway: Some("172.17.0.1".parse().unwrap()),
                device: "eth0".into(),
                metric: Some(10),
            },
            Route {
                dest: Some(net("10.2.0.0/16")),
                gateway: Some("10.1.0.1".parse().unwrap()),
                device: "eth1".into(),
                metric: None,
            },
            // A second default route at the same metric (two Podman
            // networks): appended, not refused.
            Route {
                dest: None,
                gateway: Some("10.1.0.1".parse().unwrap()),
                device: "eth1".into(),
                metric: Some(10),
            },
            Route {
                dest: Some(net("fd01::/64")),
                gateway: None,
                device: "eth0".into(),
                metric: None,
            },
            Route {
                dest: None,
                gateway: Some("fd00::1".parse().unwrap()),
                device: "eth0".into(),
                metric: None,
            },
        ],
        dns_forward: Some("127.0.0.11".parse().unwrap()),
    }
}

fn make_nics(n: &Network) -> Netlink {
    let mut root = Netlink::route().unwrap();
    // The kernel's names, swapped.
    veth(&mut root, "eth1", n.interfaces[0].mac, "peer0");
    veth(&mut root, "eth0", n.interfaces[1].mac, "peer1");
    // One is up already: it is brought down to be renamed.
    let l = links::links(&mut root).unwrap();
    let up = l.iter().find(|l| l.name == "eth0").unwrap().index;
    links::set_up(&mut root, up, true).unwrap();
    root
}

#[test]
fn nics_are_configured_in_the_sandbox_namespace() {
    in_fresh_namespaces("configure", |dir| {
        let n = two_nics();
        let mut root = make_nics(&n);
        let path = dir.join("netns/sandbox");
        let sb = Sandbox::new(path.clone());
        sb.configure(&n).unwrap();
        assert!(sb.is_configured());
        // Gone from the agent's namespace.
        let left: Vec<String> = links::links(&mut root)
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert!(!left.iter().any(|l| l.starts_with("eth")), "{left:?}");
        // A container joining the path sees them.
        let mut nl = join(&path);
        let all = links::links(&mut nl).unwrap();
        let lo = all.iter().find(|l| l.name == "lo").unwrap();
        assert!(lo.up);
        let mut index = Vec::new();
        for itf in &n.interfaces {
            let l = all.iter().find(|l| l.name == itf.name).unwrap();
            assert_eq!((l.mac, l.mtu, l.up), (Some(itf.mac), Some(itf.mtu), true));
            let mut got = addresses(&mut nl, l.index);
            got.retain(|a| !matches!(a.addr, IpAddr::V6(v6) if v6.segments()[0] == 0xfe80));
            assert_eq!(got, itf.addresses, "{}", itf.name);
            index.push(l.index);
        }
        let rs = routes(&mut nl);
        let want: Vec<RouteRow> = vec![
            (
                None,
                Some("172.17.0.1".parse().unwrap()),
                index[0],
                Some(10),
            ),
            (
                Some(net("10.2.0.0/16")),
                Some("10.1.0.1".parse().unwrap()),
                index[1],
                None,
            ),
            (None, Some("10.1.0.1".parse().unwrap()), index[1], Some(10)),
            (Some(net("fd01::/64")), None, index[0], Some(1024)),
            (None, Some("fd00::1".parse().unwrap()), index[0], Some(1024)),
        ];
        for w in &want {
            assert!(rs.contains(w), "{w:?} not in {rs:?}");
        }
        // The forwarder holds 127.0.0.11:53 in the sandbox.
        let f = File::open(&path).unwrap();
        let e = netns::run_in(f.as_fd(), "bind", || UdpSocket::bind("127.0.0.11:53")).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        // Once only.
        let again = sb.configure(&n).unwrap_err();
        assert!(matches!(again, NetError::Configured));
        assert_eq!(again.code(), ErrorCode::InvalidState);
        sb.stop_dns();
    });
}

#[test]
fn a_dns_address_on_no_interface_is_added_to_lo() {
    in_fresh_namespaces("dns-lo", |dir| {
        let mut n = two_nics();
        n.dns_forward = Some("10.9.9.9".parse().unwrap());
        make_nics(&n);
        let path = dir.join("sandbox");
        let sb = Sandbox::new(path.clone());
        sb.configure(&n).unwrap();
        let mut nl = join(&path);
        let lo = links::links(&mut nl)
            .unwrap()
            .into_iter()
            .find(|l| l.name == "lo")
            .unwrap();
        assert!(addresses(&mut nl, lo.index).contains(&net("10.9.9.9/32")));
        sb.stop_dns();
    });
}

#[test]
fn failures_name_the_interface_and_the_step() {
    in_fresh_namespaces("failures", |dir| {
        let mut n = two_nics();
        n.dns_forward = None;
        n.interfaces[0].addresses.push(net("172.17.0.2/16"));
        make_nics(&n);
        let sb = Sandbox::new(dir.join("sandbox"));
        let e = sb.configure(&n).unwrap_err();
        // The kernel's explanation, where it gives one, follows the errno.
        let msg = e.to_string();
        assert!(
            msg.starts_with("eth0: add address 172.17.0.2/16: File exists (os error 17)"),
            "{msg}"
        );
        assert!(
            matches!(&e, NetError::Op { source, .. } if source.errno() == Some(libc::EEXIST)),
            "{e:?}"
        );
        assert_eq!(e.code(), ErrorCode::Internal);
        // No second try, even after a failure.
        assert!(matches!(sb.configure(&n), Err(NetError::Configured)));
    });
}

#[test]
fn a_missing_nic_is_waited_for_then_named() {
    in_fresh_namespaces("missing", |dir| {
        let n = two_nics();
        let mut sb = Sandbox::new(dir.join("sandbox"));
        sb.nic_wait = Duration::from_millis(200);
        let t0 = Instant::now();
        let e = sb.configure(&n).unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(200));
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "network.interfaces[0] (eth0): no guest NIC has MAC 02:42:ac:11:00:02 (waited "
            ),
            "{msg}"
        );
    });
}

#[test]
fn requests_are_validated_first() {
    let mut n = two_nics();
    n.interfaces[1].mtu = 1;
    let sb = Sandbox::new(PathBuf::from("/nonexistent/husk-net-test"));
    let e = sb.configure(&n).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest);
    assert_eq!(
        e.to_string(),
        "network.interfaces[1].mtu: 1 is not in 68..=65535"
    );
    // A refused request leaves the sandbox unconfigured.
    assert!(!sb.is_configured());
    assert!(matches!(*sb.lock(), State::Unconfigured));
}

#[test]
fn only_the_sandbox_path_needs_the_network() {
    let spec: husk_protocol::oci::Spec = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "linux": {"namespaces": [{"type": "network", "path": "/proc/1/ns/net"}]}
    }))
    .unwrap();
    assert!(check_spec(&spec, false).is_ok());
}
