//! The module against a real kernel, each test in a network namespace of
//! its own, unshared on a thread of its own (never the host's): a veth
//! pair `eth0`/`peer0` with addresses and default routes, then scan,
//! connect, frames through the tap, disconnect and the undoing on error.
//! Skipped, with the reason printed, when not root, when unshare is not
//! permitted or when /dev/net/tun is missing.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::{
    TcActionAttribute, TcActionMirrorOption, TcActionOption, TcAttribute, TcFilterU32Option,
    TcHandle, TcMessage, TcMirrorActionType, TcOption,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use husk_protocol::net::{IpNet, MacAddr};

use super::tap::{ingress_qdiscs, link_index};
use super::*;
use husk_sys::netlink::Netlink;

thread_local! {
    /// The step of `connect_tap` to fail on this thread (see `tap::inject`).
    pub(super) static FAIL_AT: Cell<Option<&'static str>> = const { Cell::new(None) };
}

const ETH0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];

/// Runs `f` on a thread in a fresh network namespace; prints why not and
/// returns when that cannot be had.
fn in_new_netns(name: &str, f: impl FnOnce() + Send + 'static) {
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{name}: skipped: not root");
        return;
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("{name}: skipped: no /dev/net/tun");
        return;
    }
    let ran = std::thread::spawn(move || {
        // SAFETY: unshare(2) with one flag; it moves only this thread.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        f();
        Ok(())
    })
    .join()
    .unwrap();
    if let Err(e) = ran {
        eprintln!("{name}: skipped: unshare(CLONE_NEWNET): {e}");
    }
}

fn nl() -> Netlink {
    route_socket().unwrap()
}

fn set_up(nl: &mut Netlink, name: &str) {
    let mut m = LinkMessage::default();
    m.header.index = link_index(nl, name).unwrap();
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    nl.request(RouteNetlinkMessage::SetLink(m), 0).unwrap();
}

/// `eth0` (MTU 1400) and `peer0`, both up.
fn add_veth(nl: &mut Netlink) {
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName("peer0".into()));
    peer.attributes
        .push(LinkAttribute::Address(PEER_MAC.to_vec()));
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName("eth0".into()));
    m.attributes.push(LinkAttribute::Address(ETH0_MAC.to_vec()));
    m.attributes.push(LinkAttribute::Mtu(1400));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    nl.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
        .unwrap();
    set_up(nl, "eth0");
    set_up(nl, "peer0");
}

fn add_address(nl: &mut Netlink, dev: &str, net: &str) {
    let net: IpNet = net.parse().unwrap();
    let mut a = AddressMessage::default();
    a.header.index = link_index(nl, dev).unwrap();
    a.header.prefix_len = net.prefix;
    a.header.scope = AddressScope::Universe;
    a.header.family = if net.addr.is_ipv4() {
        a.attributes.push(AddressAttribute::Local(net.addr));
        AddressFamily::Inet
    } else {
        a.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        AddressFamily::Inet6
    };
    a.attributes.push(AddressAttribute::Address(net.addr));
    nl.request(
        RouteNetlinkMessage::NewAddress(a),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .unwrap();
}

fn add_default_route(nl: &mut Netlink, dev: &str, gateway: &str) {
    let gw: std::net::IpAddr = gateway.parse().unwrap();
    let mut r = RouteMessage::default();
    r.header.address_family = if gw.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    r.header.table = RouteHeader::RT_TABLE_MAIN;
    r.header.protocol = RouteProtocol::Static;
    r.header.scope = RouteScope::Universe;
    r.header.kind = RouteType::Unicast;
    r.attributes
        .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    r.attributes
        .push(RouteAttribute::Oif(link_index(nl, dev).unwrap()));
    r.attributes.push(RouteAttribute::Priority(100));
    nl.request(RouteNetlinkMessage::NewRoute(r), NLM_F_CREATE | NLM_F_EXCL)
        .unwrap();
}

/// The namespace of the tests: the veth pair, eth0 with an IPv4 and an
/// IPv6 address and a default route of each family.
fn docker_like() -> ScannedInterface {
    let mut nl = nl();
    add_veth(&mut nl);
    add_address(&mut nl, "eth0", "10.0.0.2/24");
    add_address(&mut nl, "eth0", "fd00::2/64");
    add_default_route(&mut nl, "eth0", "10.0.0.1");
    add_default_route(&mut nl, "eth0", "fd00::1");
    let scan = scan().unwrap();
    scan.interfaces
        .into_iter()
        .find(|i| i.name == "eth0")
        .unwrap()
}

fn link_names(nl: &mut Netlink) -> Vec<String> {
    let all: Vec<RouteNetlinkMessage> = nl
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), 100)
        .unwrap();
    all.into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n),
                _ => None,
            }),
            _ => None,
        })
        .collect()
}

/// The targets of the mirred egress redirects on `dev`'s ingress.
fn redirects(nl: &mut Netlink, dev: &str) -> Vec<u32> {
    let index = link_index(nl, dev).unwrap();
    let mut q = TcMessage::with_index(i32::try_from(index).unwrap());
    q.header.parent = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    let all: Vec<RouteNetlinkMessage> = nl
        .dump(RouteNetlinkMessage::GetTrafficFilter(q), 100)
        .unwrap();
    let mut to = Vec::new();
    for m in all {
        let RouteNetlinkMessage::NewTrafficFilter(f) = m else {
            continue;
        };
        for a in f.attributes {
            let TcAttribute::Options(opts) = a else {
                continue;
            };
            for o in opts {
                let TcOption::U32(TcFilterU32Option::Action(acts)) = o else {
                    continue;
                };
                for act in acts {
                    for aa in act.attributes {
                        let TcActionAttribute::Options(aos) = aa else {
                            continue;
                        };
                        for ao in aos {
                            if let TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) = ao {
                                assert_eq!(p.eaction, TcMirrorActionType::EgressRedir);
                                to.push(p.ifindex);
                            }
                        }
                    }
                }
            }
        }
    }
    to
}

#[test]
fn scan_reads_a_veth_with_addresses_and_default_routes() {
    in_new_netns("scan", || {
        let eth0 = docker_like();
        assert_eq!(eth0.mac, MacAddr(ETH0_MAC));
        assert_eq!(eth0.mtu, 1400);
        assert!(eth0.up);
        assert_eq!(eth0.kind.as_deref(), Some("veth"));
        let addrs: Vec<String> = eth0.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["10.0.0.2/24", "fd00::2/64"]);

        let scan = scan().unwrap();
        let mut names: Vec<&str> = scan.interfaces.iter().map(|i| i.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["eth0", "peer0"], "lo is left out: {scan:?}");
        let routes: Vec<String> = scan
            .routes
            .iter()
            .map(|r| {
                format!(
                    "{:?} via {:?} dev {} metric {:?}",
                    r.dest, r.gateway, r.device, r.metric
                )
            })
            .collect();
        assert_eq!(
            routes,
            [
                "None via Some(10.0.0.1) dev eth0 metric Some(100)",
                "None via Some(fd00::1) dev eth0 metric Some(100)",
            ],
            "the kernel's subnet routes are left out"
        );
        let net = scan.to_network(None).unwrap();
        assert_eq!(net.interfaces.len(), 2);
    });
}

#[test]
fn connect_joins_veth_and_tap_and_disconnect_undoes_it() {
    in_new_netns("connect", || {
        let eth0 = docker_like();
        let link = connect_tap(&eth0, 0).unwrap();
        assert_eq!(link.tap_name, "husk-tap0");
        assert_eq!(link.interface_index, eth0.index);
        let mut nl = nl();
        assert_eq!(
            ingress_qdiscs(&mut nl, eth0.index, "eth0").unwrap().len(),
            1
        );
        assert_eq!(
            ingress_qdiscs(&mut nl, link.tap_index, "husk-tap0")
                .unwrap()
                .len(),
            1
        );
        assert_eq!(redirects(&mut nl, "eth0"), [link.tap_index]);
        assert_eq!(redirects(&mut nl, "husk-tap0"), [eth0.index]);
        let tap = scan().unwrap();
        assert!(tap.interfaces.iter().all(|i| i.name != "husk-tap0"));
        assert!(tap.skipped.is_empty(), "{:?}", tap.skipped);

        frames_pass_both_ways(&link);

        disconnect("eth0").unwrap();
        assert!(ingress_qdiscs(&mut nl, eth0.index, "eth0")
            .unwrap()
            .is_empty());
        disconnect("eth0").unwrap();
        disconnect("nosuchdev0").unwrap();
        drop(link);
        assert!(!link_names(&mut nl).contains(&"husk-tap0".to_string()));
        // The same index can be connected again.
        let again = connect_tap(&eth0, 0).unwrap();
        assert_eq!(redirects(&mut nl, "eth0"), [again.tap_index]);
    });
}

/// A frame written to the tap (behind a 12-byte vnet header) comes out of
/// `peer0`, and one sent on `peer0` is read from the tap.
fn frames_pass_both_ways(link: &TapLink) {
    husk_sys::tun::set_vnet_hdr_size(link.fd.as_fd(), 12).unwrap();
    let mut nl = nl();
    let peer = packet_socket(link_index(&mut nl, "peer0").unwrap());
    let frame = |src: [u8; 6], tag: &[u8]| {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
        f.extend_from_slice(tag);
        f.resize(60, 0);
        f
    };
    let out = frame([0x02, 0, 0, 0, 0, 0x10], b"from-the-guest");
    let mut with_hdr = vec![0u8; 12];
    with_hdr.extend_from_slice(&out);
    write_fd(&link.fd, &with_hdr);
    assert!(
        read_until(&peer, |f| f == out.as_slice()),
        "no frame on peer0"
    );

    let back = frame(PEER_MAC, b"to-the-guest");
    write_fd(&peer, &back);
    assert!(
        read_until(&link.fd, |f| f.len() > 12 && &f[12..] == back.as_slice()),
        "no frame on the tap"
    );
}

/// An AF_PACKET socket receiving every frame of link `index`.
fn packet_socket(index: u32) -> OwnedFd {
    let proto = u16::try_from(libc::ETH_P_ALL).unwrap().to_be();
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(proto)) };
    assert!(fd >= 0, "{}", io::Error::last_os_error());
    // SAFETY: fd is a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all zeros is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = u16::try_from(libc::AF_PACKET).unwrap();
    sll.sll_protocol = proto;
    sll.sll_ifindex = i32::try_from(index).unwrap();
    let len = u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap();
    // SAFETY: bind(2) reads `len` bytes of the sockaddr_ll that `sll` is.
    let r = unsafe { libc::bind(fd.as_raw_fd(), (&raw const sll).cast(), len) };
    assert_eq!(r, 0, "{}", io::Error::last_os_error());
    fd
}

fn write_fd(fd: &OwnedFd, buf: &[u8]) {
    // SAFETY: write(2) reads `buf.len()` bytes of `buf`.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    assert_eq!(
        usize::try_from(n).ok(),
        Some(buf.len()),
        "{}",
        io::Error::last_os_error()
    );
}

/// Reads frames from `fd` for at most 3 s until one passes `want`.
fn read_until(fd: &OwnedFd, want: impl Fn(&[u8]) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = vec![0u8; 65536];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: poll(2) on one pollfd that lives across the call.
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            continue;
        }
        // SAFETY: read(2) writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if let Ok(n) = usize::try_from(n) {
            if want(&buf[..n]) {
                return true;
            }
        }
    }
    false
}

#[test]
fn a_failed_connect_leaves_nothing_behind() {
    in_new_netns("connect errors", || {
        let eth0 = docker_like();
        let mut nl = nl();
        // A failure after the interface's qdisc and filter were added.
        for step in ["interface qdisc", "interface filter"] {
            FAIL_AT.with(|f| f.set(Some(step)));
            let e = connect_tap(&eth0, 1).unwrap_err();
            FAIL_AT.with(|f| f.set(None));
            assert!(e.to_string().contains("injected failure"), "{e}");
            assert!(
                ingress_qdiscs(&mut nl, eth0.index, "eth0")
                    .unwrap()
                    .is_empty(),
                "{step}"
            );
            assert!(
                !link_names(&mut nl).contains(&"husk-tap1".to_string()),
                "{step}"
            );
        }
        // A device that is gone.
        let mut gone = eth0.clone();
        gone.index = 9999;
        gone.name = "gone0".into();
        let e = connect_tap(&gone, 2).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tc: add ingress qdisc on gone0: "),
            "{e}"
        );
        assert!(!link_names(&mut nl).contains(&"husk-tap2".to_string()));
        // An interface with an ingress qdisc of someone else's: refused,
        // and that qdisc is left alone.
        let mut q = TcMessage::with_index(i32::try_from(eth0.index).unwrap());
        q.header.parent = TcHandle::INGRESS;
        q.header.handle = TcHandle {
            major: 0xffff,
            minor: 0,
        };
        q.attributes.push(TcAttribute::Kind("ingress".into()));
        nl.request(
            RouteNetlinkMessage::NewQueueDiscipline(q),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .unwrap();
        let e = connect_tap(&eth0, 3).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tc: add ingress qdisc on eth0: File exists"),
            "{e}"
        );
        assert_eq!(
            ingress_qdiscs(&mut nl, eth0.index, "eth0").unwrap().len(),
            1
        );
        assert!(!link_names(&mut nl).contains(&"husk-tap3".to_string()));
    });
}
