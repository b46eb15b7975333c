//! [`assemble`] on synthetic dump messages.

use super::*;

use netlink_packet_route::link::InfoKind;
use netlink_packet_route::route::RouteScope;

const ETH0_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

fn link(index: u32, name: &str, kind: LinkLayerType, mac: Option<[u8; 6]>) -> LinkMessage {
    let mut l = LinkMessage::default();
    l.header.index = index;
    l.header.link_layer_type = kind;
    l.header.flags = LinkFlags::Up;
    l.attributes.push(LinkAttribute::IfName(name.into()));
    l.attributes.push(LinkAttribute::Mtu(1450));
    l.attributes.push(LinkAttribute::OperState(State::Up));
    if let Some(m) = mac {
        l.attributes.push(LinkAttribute::Address(m.to_vec()));
    }
    l
}

fn eth0() -> LinkMessage {
    let mut l = link(7, "eth0", LinkLayerType::Ether, Some(ETH0_MAC));
    l.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Veth,
        )]));
    l
}

fn addr(index: u32, net: &str, scope: AddressScope) -> AddressMessage {
    let net: IpNet = net.parse().unwrap();
    let mut a = AddressMessage::default();
    a.header.index = index;
    a.header.prefix_len = net.prefix;
    a.header.scope = scope;
    a.header.family = if net.addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    a.attributes.push(AddressAttribute::Address(net.addr));
    if net.addr.is_ipv4() {
        a.attributes.push(AddressAttribute::Local(net.addr));
    }
    a
}

fn route_msg(
    dest: Option<&str>,
    gw: Option<&str>,
    oif: u32,
    proto: RouteProtocol,
    v4: bool,
) -> RouteMessage {
    let mut r = RouteMessage::default();
    r.header.address_family = if v4 {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    r.header.table = RouteHeader::RT_TABLE_MAIN;
    r.header.kind = RouteType::Unicast;
    r.header.protocol = proto;
    r.header.scope = if gw.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    if let Some(d) = dest {
        let d: IpNet = d.parse().unwrap();
        r.header.destination_prefix_length = d.prefix;
        r.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(d.addr)));
    }
    if let Some(g) = gw {
        let g: IpAddr = g.parse().unwrap();
        r.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(g)));
    }
    r.attributes.push(RouteAttribute::Oif(oif));
    r.attributes.push(RouteAttribute::Priority(100));
    r
}

#[test]
fn a_docker_namespace_is_read_as_the_guest_needs_it() {
    let links = vec![
        link(1, "lo", LinkLayerType::Loopback, Some([0; 6])),
        eth0(),
        link(
            9,
            "husk-tap0",
            LinkLayerType::Ether,
            Some([2, 0, 0, 0, 0, 9]),
        ),
    ];
    let addrs = vec![
        addr(1, "127.0.0.1/8", AddressScope::Host),
        addr(7, "172.17.0.2/16", AddressScope::Universe),
        addr(7, "fd00::2/64", AddressScope::Universe),
        addr(7, "fe80::42:acff:fe11:2/64", AddressScope::Link),
        addr(9, "10.9.9.9/24", AddressScope::Universe),
    ];
    let routes = vec![
        route_msg(None, Some("172.17.0.1"), 7, RouteProtocol::Boot, true),
        route_msg(Some("172.17.0.0/16"), None, 7, RouteProtocol::Kernel, true),
        route_msg(Some("10.10.0.0/16"), None, 7, RouteProtocol::Static, true),
        route_msg(None, Some("fd00::1"), 7, RouteProtocol::Static, false),
        route_msg(Some("fe80::/64"), None, 7, RouteProtocol::Kernel, false),
        route_msg(Some("10.9.9.0/24"), None, 9, RouteProtocol::Static, true),
    ];
    let scan = assemble(links, addrs, routes).unwrap();
    assert_eq!(scan.skipped, vec![]);
    assert_eq!(scan.interfaces.len(), 1, "{scan:?}");
    let itf = &scan.interfaces[0];
    assert_eq!(itf.name, "eth0");
    assert_eq!(itf.index, 7);
    assert_eq!(itf.mac, MacAddr(ETH0_MAC));
    assert_eq!(itf.mtu, 1450);
    assert!(itf.up);
    assert_eq!(itf.oper_state, OperState::Up);
    assert_eq!(itf.kind.as_deref(), Some("veth"));
    let shown: Vec<String> = itf.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["172.17.0.2/16", "fd00::2/64"]);
    let shown: Vec<String> = scan
        .routes
        .iter()
        .map(|r| format!("{:?} {:?} {} {:?}", r.dest, r.gateway, r.device, r.metric))
        .collect();
    assert_eq!(
        shown,
        [
            "Some(10.10.0.0/16) None eth0 Some(100)",
            "None Some(172.17.0.1) eth0 Some(100)",
            "None Some(fd00::1) eth0 Some(100)",
        ]
    );
    let net = scan
        .to_network(Some("127.0.0.11".parse().unwrap()))
        .unwrap();
    assert_eq!(net.interfaces[0].addresses.len(), 2);
    assert_eq!(net.routes.len(), 3);
}

#[test]
fn links_without_an_ethernet_address_are_listed_as_skipped() {
    let mut wg = link(3, "wg0", LinkLayerType::None, None);
    wg.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Wireguard,
        )]));
    let ipip = link(4, "tunl0", LinkLayerType::Tunnel, Some([0, 0, 0, 0, 0, 0]));
    let scan = assemble(
        vec![eth0(), wg, ipip],
        vec![addr(3, "10.8.0.2/24", AddressScope::Universe)],
        vec![route_msg(
            Some("10.8.0.0/16"),
            None,
            3,
            RouteProtocol::Static,
            true,
        )],
    )
    .unwrap();
    assert_eq!(scan.interfaces.len(), 1);
    let what: Vec<&str> = scan.skipped.iter().map(|s| s.what.as_str()).collect();
    assert_eq!(what, ["wg0", "tunl0"]);
    assert!(
        scan.skipped[0].reason.contains("wireguard"),
        "{:?}",
        scan.skipped
    );
    assert!(scan.skipped[0].reason.contains("no Ethernet address"));
    assert!(
        scan.routes.is_empty(),
        "routes through skipped links stay out"
    );
}

#[test]
fn other_tables_kinds_and_multipath_routes_stay_out() {
    let mut local = route_msg(Some("172.17.0.2/32"), None, 7, RouteProtocol::Kernel, true);
    local.header.table = 255;
    local.header.kind = RouteType::Local;
    let mut other_table = route_msg(Some("10.1.0.0/16"), None, 7, RouteProtocol::Static, true);
    other_table.attributes.push(RouteAttribute::Table(1000));
    let mut unreachable = route_msg(Some("10.2.0.0/16"), None, 7, RouteProtocol::Static, true);
    unreachable.header.kind = RouteType::Unreachable;
    let mut multipath = route_msg(Some("10.3.0.0/16"), None, 7, RouteProtocol::Static, true);
    multipath.attributes.push(RouteAttribute::MultiPath(vec![]));
    let no_gw_default = route_msg(None, None, 7, RouteProtocol::Static, true);
    let scan = assemble(
        vec![eth0()],
        vec![],
        vec![local, other_table, unreachable, multipath, no_gw_default],
    )
    .unwrap();
    assert_eq!(scan.skipped.len(), 1, "{:?}", scan.skipped);
    assert_eq!(scan.skipped[0].what, "route 10.3.0.0/16");
    // `default dev eth0` keeps its 0.0.0.0/0: a default route without a
    // gateway has a destination for the protocol.
    assert_eq!(scan.routes.len(), 1);
    assert_eq!(scan.routes[0].dest, Some("0.0.0.0/0".parse().unwrap()));
    scan.to_network(None).unwrap();
}

#[test]
fn counts_over_the_protocols_bounds_are_refused_naming_what() {
    let links: Vec<LinkMessage> = (0..=u32::try_from(MAX_INTERFACES).unwrap())
        .map(|i| {
            link(
                10 + i,
                &format!("eth{i}"),
                LinkLayerType::Ether,
                Some([2, 0, 0, 0, 0, u8::try_from(i + 1).unwrap()]),
            )
        })
        .collect();
    let e = assemble(links, vec![], vec![]).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("too many interfaces: 9, at most {MAX_INTERFACES}")
    );

    let addrs =
        (0..=MAX_ADDRESSES).map(|i| addr(7, &format!("10.0.{i}.2/24"), AddressScope::Universe));
    let e = assemble(vec![eth0()], addrs, vec![]).unwrap_err();
    assert!(
        e.to_string().starts_with("too many addresses on eth0: 33"),
        "{e}"
    );

    let routes = (0..=MAX_ROUTES).map(|i| {
        route_msg(
            Some(&format!("10.{}.{}.0/24", i / 256, i % 256)),
            None,
            7,
            RouteProtocol::Static,
            true,
        )
    });
    let e = assemble(vec![eth0()], vec![], routes).unwrap_err();
    assert!(e.to_string().starts_with("too many routes: 129"), "{e}");
}

#[test]
fn a_name_the_protocol_refuses_is_skipped_not_fatal() {
    let odd = link(5, "eth 1", LinkLayerType::Ether, Some([2, 0, 0, 0, 0, 5]));
    let scan = assemble(vec![eth0(), odd], vec![], vec![]).unwrap();
    assert_eq!(scan.interfaces.len(), 1);
    assert_eq!(scan.skipped[0].what, "eth 1");
}
