//! What the container's network namespace holds: its Ethernet interfaces
//! with their addresses, and the main table's routes through them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use husk_protocol::net::{
    check_ifname, Interface, IpNet, MacAddr, Network, Route, MAX_ADDRESSES, MAX_INTERFACES,
    MAX_ROUTES,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage, State,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::tap::TAP_PREFIX;
use super::{route_socket, NetError, MAX_DUMP};

/// The namespace's interfaces and routes, ready for
/// [`Scan::to_network`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub interfaces: Vec<ScannedInterface>,
    /// Main-table routes through [`Scan::interfaces`], routes without a
    /// gateway first (a gateway must be reachable when its route is added).
    pub routes: Vec<Route>,
    /// Links and routes left out, and why (links without an Ethernet
    /// address: ipip, wireguard, ...).
    pub skipped: Vec<Skipped>,
}

/// One Ethernet interface of the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedInterface {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    pub oper_state: OperState,
    /// The link's kind (`veth`, `macvlan`, ...), when it has one.
    pub kind: Option<String>,
    /// Global-scope addresses, IPv4 and IPv6, with prefix lengths.
    pub addresses: Vec<IpNet>,
}

/// A link's operational state (RFC 2863, `IF_OPER_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperState {
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
}

/// A link or route [`scan`] left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The link's name, or the route (`10.1.0.0/16`).
    pub what: String,
    pub reason: String,
}

impl Scan {
    /// The network to hand the agent, checked by [`Network::validate`].
    pub fn to_network(&self, dns_forward: Option<IpAddr>) -> Result<Network, NetError> {
        let network = Network {
            interfaces: self
                .interfaces
                .iter()
                .map(|i| Interface {
                    name: i.name.clone(),
                    mac: i.mac,
                    mtu: i.mtu,
                    addresses: i.addresses.clone(),
                })
                .collect(),
            routes: self.routes.clone(),
            dns_forward,
        };
        network.validate()?;
        Ok(network)
    }
}

/// Reads the calling thread's network namespace: every link except `lo`
/// and husk's own taps, with an Ethernet address, its global addresses and
/// the main table's routes through it (not the kernel's own subnet routes,
/// which the guest kernel adds itself).
pub fn scan() -> Result<Scan, NetError> {
    let mut nl = route_socket()?;
    let dump = |what| move |source| NetError::Dump { what, source };
    let links = nl
        .dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            MAX_DUMP,
        )
        .map_err(dump("links"))?;
    let addrs = nl
        .dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            MAX_DUMP,
        )
        .map_err(dump("addresses"))?;
    let mut rq = RouteMessage::default();
    rq.header.table = RouteHeader::RT_TABLE_MAIN;
    let routes = nl
        .dump(RouteNetlinkMessage::GetRoute(rq), MAX_DUMP)
        .map_err(dump("routes"))?;
    let pick = |v: Vec<RouteNetlinkMessage>| v.into_iter();
    assemble(
        pick(links).filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        }),
        pick(addrs).filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => Some(a),
            _ => None,
        }),
        pick(routes).filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => Some(r),
            _ => None,
        }),
    )
}

/// Builds a [`Scan`] from the dumps' messages (pure, for tests).
pub(crate) fn assemble(
    links: impl IntoIterator<Item = LinkMessage>,
    addrs: impl IntoIterator<Item = AddressMessage>,
    routes: impl IntoIterator<Item = RouteMessage>,
) -> Result<Scan, NetError> {
    let mut scan = Scan::default();
    for l in links {
        match interface(&l) {
            Ok(Some(itf)) => scan.interfaces.push(itf),
            Ok(None) => {}
            Err(s) => scan.skipped.push(s),
        }
    }
    if scan.interfaces.len() > MAX_INTERFACES {
        return Err(too_many(
            "interfaces",
            scan.interfaces.len(),
            MAX_INTERFACES,
        ));
    }
    for a in addrs {
        let Some(itf) = scan
            .interfaces
            .iter_mut()
            .find(|i| i.index == a.header.index)
        else {
            continue;
        };
        if let Some(net) = address(&a) {
            if !itf.addresses.contains(&net) {
                itf.addresses.push(net);
            }
        }
        if itf.addresses.len() > MAX_ADDRESSES {
            let what = format!("addresses on {}", itf.name);
            return Err(too_many(&what, itf.addresses.len(), MAX_ADDRESSES));
        }
    }
    let mut found = Vec::new();
    for r in routes {
        match route(&r, &scan.interfaces) {
            Ok(Some(route)) => found.push(route),
            Ok(None) => {}
            Err(s) => scan.skipped.push(s),
        }
    }
    if found.len() > MAX_ROUTES {
        return Err(too_many("routes", found.len(), MAX_ROUTES));
    }
    // Routes without a gateway (the ones a gateway is reached by) first.
    found.sort_by_key(|r| r.gateway.is_some());
    scan.routes = found;
    Ok(scan)
}

fn too_many(what: &str, count: usize, max: usize) -> NetError {
    NetError::TooMany {
        what: what.to_string(),
        count,
        max,
    }
}

/// The interface a link is, `None` for `lo` and husk's taps, `Err` for a
/// link left out for a reason worth telling.
fn interface(l: &LinkMessage) -> Result<Option<ScannedInterface>, Skipped> {
    let mut name = None;
    let mut mac = None;
    let mut mtu = None;
    let mut oper = OperState::Unknown;
    let mut kind = None;
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(m) => mac = <[u8; 6]>::try_from(m.as_slice()).ok(),
            LinkAttribute::Mtu(m) => mtu = Some(*m),
            LinkAttribute::OperState(s) => oper = oper_state(*s),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    let name = name.unwrap_or_else(|| format!("link #{}", l.header.index));
    if name == "lo" || l.header.link_layer_type == LinkLayerType::Loopback {
        return Ok(None);
    }
    if name.starts_with(TAP_PREFIX) {
        return Ok(None);
    }
    let skip = |reason: String| Skipped {
        what: name.clone(),
        reason,
    };
    let kind_text = kind.as_deref().unwrap_or("no kind");
    let Some(mac) = mac.filter(|_| l.header.link_layer_type == LinkLayerType::Ether) else {
        return Err(skip(format!(
            "no Ethernet address (link type {}, {kind_text})",
            l.header.link_layer_type
        )));
    };
    if let Err(e) = check_ifname(&name) {
        return Err(skip(format!("its name is not one husk passes on: {e}")));
    }
    let Some(mtu) = mtu else {
        return Err(skip("no MTU reported".into()));
    };
    Ok(Some(ScannedInterface {
        name,
        index: l.header.index,
        mac: MacAddr(mac),
        mtu,
        up: l.header.flags.contains(LinkFlags::Up),
        oper_state: oper,
        kind,
        addresses: Vec::new(),
    }))
}

fn oper_state(s: State) -> OperState {
    match s {
        State::NotPresent => OperState::NotPresent,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Testing => OperState::Testing,
        State::Dormant => OperState::Dormant,
        State::Up => OperState::Up,
        _ => OperState::Unknown,
    }
}

/// A global-scope address with its prefix length; `None` for others
/// (link-local, host, failed duplicate detection).
fn address(a: &AddressMessage) -> Option<IpNet> {
    if a.header.scope != AddressScope::Universe {
        return None;
    }
    let mut local = None;
    let mut peer = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => peer = Some(*ip),
            AddressAttribute::Flags(f) if f.contains(AddressFlags::Dadfailed) => return None,
            _ => {}
        }
    }
    // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on a
    // point-to-point link, and the address where there is no IFA_LOCAL.
    let addr = local.or(peer)?;
    let family_ok = match (a.header.family, addr) {
        (AddressFamily::Inet, IpAddr::V4(_)) => a.header.prefix_len <= 32,
        (AddressFamily::Inet6, IpAddr::V6(v6)) => {
            a.header.prefix_len <= 128 && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
        _ => false,
    };
    family_ok.then_some(IpNet {
        addr,
        prefix: a.header.prefix_len,
    })
}

/// A main-table unicast route through one of `itfs`; `None` for routes
/// of other tables, kinds or devices, and the kernel's own; `Err` for
/// routes through `itfs` husk cannot pass on.
fn route(r: &RouteMessage, itfs: &[ScannedInterface]) -> Result<Option<Route>, Skipped> {
    let h = &r.header;
    let v4 = match h.address_family {
        AddressFamily::Inet => true,
        AddressFamily::Inet6 => false,
        _ => return Ok(None),
    };
    let mut table = u32::from(h.table);
    let (mut dest, mut gateway, mut oif, mut metric) = (None, None, None, None);
    let mut unsupported = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dest = ip_of(d),
            RouteAttribute::Gateway(g) => gateway = ip_of(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::MultiPath(_) => unsupported = Some("a multipath route"),
            RouteAttribute::Via(_) => unsupported = Some("a gateway of the other family"),
            RouteAttribute::Encap(_) => unsupported = Some("an encapsulating route"),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || h.kind != RouteType::Unicast
        || h.protocol == RouteProtocol::Kernel
    {
        return Ok(None);
    }
    let unspecified = if v4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    let shown = IpNet {
        addr: dest.unwrap_or(unspecified),
        prefix: h.destination_prefix_length,
    };
    let skip = |reason: &str| Skipped {
        what: format!("route {shown}"),
        reason: reason.to_string(),
    };
    if let Some(why) = unsupported {
        return Err(skip(why));
    }
    let Some(itf) = oif.and_then(|o| itfs.iter().find(|i| i.index == o)) else {
        return Ok(None);
    };
    if h.source_prefix_length != 0 {
        return Err(skip("a source-specific route"));
    }
    if dest.is_some_and(|d| d.is_ipv4() != v4) || gateway.is_some_and(|g| g.is_ipv4() != v4) {
        return Err(skip("addresses of the other family"));
    }
    // A default route is `dest: None` with its gateway; one without a
    // gateway (`default dev eth0`) keeps its 0.0.0.0/0 or ::/0.
    let dest = (shown.prefix != 0 || gateway.is_none()).then_some(shown);
    Ok(Some(Route {
        dest,
        gateway,
        device: itf.name.clone(),
        metric,
    }))
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
