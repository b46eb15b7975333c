//! The rtnetlink messages that configure the guest's network: find a link
//! by MAC, rename, set its MTU, move it, bring it up or down, add
//! addresses and routes. Each returns the kernel's refusal (its errno and
//! explanation); the caller names the interface and the step. Additions
//! create and never replace: an address or route that is there already is
//! an error (`EEXIST`). Routes are appended (`NLM_F_CREATE | NLM_F_APPEND`,
//! as CNI adds them): a second default route through another NIC at the
//! same metric, which a container on two Podman networks has, is added
//! after the first rather than refused.
//!
//! The agent sends and reads its few messages through types of its own
//! ([`Rt`], [`Link`]) rather than `RouteNetlinkMessage`: that enum brings
//! in the parsers and emitters of every rtnetlink message (traffic
//! control, bridges, tunnels, ...), about 0.6 MB of agent binary, which
//! every VM's initramfs carries.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use husk_protocol::net::{IpNet, MacAddr, Route};
use husk_sys::netlink::{Netlink, NetlinkError};
use netlink_packet_core::{
    parse_string, parse_u32, DecodeError, Emitable, NetlinkDeserializable, NetlinkHeader,
    NetlinkSerializable, NlaBuffer, NlasIterator, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkHeader, LinkMessage};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;

/// The requests the agent sends.
#[derive(Debug, Clone)]
pub enum Rt {
    /// As a dump request, with an empty message: every link.
    GetLink(LinkMessage),
    SetLink(LinkMessage),
    NewAddress(AddressMessage),
    NewRoute(RouteMessage),
}

impl Rt {
    fn body(&self) -> &dyn Emitable {
        match self {
            Rt::GetLink(m) | Rt::SetLink(m) => m,
            Rt::NewAddress(m) => m,
            Rt::NewRoute(m) => m,
        }
    }
}

impl NetlinkSerializable for Rt {
    fn message_type(&self) -> u16 {
        match self {
            Rt::GetLink(_) => libc::RTM_GETLINK,
            Rt::SetLink(_) => libc::RTM_SETLINK,
            Rt::NewAddress(_) => libc::RTM_NEWADDR,
            Rt::NewRoute(_) => libc::RTM_NEWROUTE,
        }
    }

    fn buffer_len(&self) -> usize {
        self.body().buffer_len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        self.body().emit(buffer);
    }
}

/// A link as a dump shows it (only what the agent reads of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    pub up: bool,
}

/// `struct ifinfomsg`, before the attributes.
const IFINFOMSG_LEN: usize = 16;

impl NetlinkDeserializable for Link {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Link, DecodeError> {
        if header.message_type != libc::RTM_NEWLINK {
            return Err(format!("message type {} in a link dump", header.message_type).into());
        }
        let h = LinkHeader::parse(payload)?;
        let mut l = Link {
            index: h.index,
            name: String::new(),
            mac: None,
            mtu: None,
            up: h.flags.contains(LinkFlags::Up),
        };
        for nla in NlasIterator::new(payload.get(IFINFOMSG_LEN..).unwrap_or(&[])) {
            let nla: NlaBuffer<&[u8]> = nla?;
            match nla.kind() {
                libc::IFLA_IFNAME => l.name = parse_string(nla.value())?,
                libc::IFLA_ADDRESS => l.mac = <[u8; 6]>::try_from(nla.value()).ok().map(MacAddr),
                libc::IFLA_MTU => l.mtu = Some(parse_u32(nla.value())?),
                _ => {}
            }
        }
        Ok(l)
    }
}

/// Most links one dump may bring (a guest has a handful).
pub const MAX_LINKS: usize = 4096;

/// Every link of the socket's namespace.
pub fn links(nl: &mut Netlink) -> Result<Vec<Link>, NetlinkError> {
    nl.dump(Rt::GetLink(LinkMessage::default()), MAX_LINKS)
}

/// A change of link `index` (by name when `index` is 0 and `attrs` has
/// `IfName`).
fn set_link(nl: &mut Netlink, index: u32, attrs: Vec<LinkAttribute>) -> Result<(), NetlinkError> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes = attrs;
    nl.request(Rt::SetLink(m), 0)
}

/// Brings link `index` up or down.
pub fn set_up(nl: &mut Netlink, index: u32, up: bool) -> Result<(), NetlinkError> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = if up {
        LinkFlags::Up
    } else {
        LinkFlags::empty()
    };
    m.header.change_mask = LinkFlags::Up;
    nl.request(Rt::SetLink(m), 0)
}

/// Brings up the link named `name` (`lo`).
pub fn set_up_by_name(nl: &mut Netlink, name: &str) -> Result<(), NetlinkError> {
    let mut m = LinkMessage::default();
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m.attributes.push(LinkAttribute::IfName(name.into()));
    nl.request(Rt::SetLink(m), 0)
}

pub fn rename(nl: &mut Netlink, index: u32, name: &str) -> Result<(), NetlinkError> {
    set_link(nl, index, vec![LinkAttribute::IfName(name.into())])
}

pub fn set_mtu(nl: &mut Netlink, index: u32, mtu: u32) -> Result<(), NetlinkError> {
    set_link(nl, index, vec![LinkAttribute::Mtu(mtu)])
}

/// Moves link `index` into the network namespace `ns`, named `name` there.
pub fn move_to(
    nl: &mut Netlink,
    index: u32,
    ns: BorrowedFd<'_>,
    name: &str,
) -> Result<(), NetlinkError> {
    set_link(
        nl,
        index,
        vec![
            LinkAttribute::NetNsFd(ns.as_raw_fd()),
            LinkAttribute::IfName(name.into()),
        ],
    )
}

fn family(a: IpAddr) -> AddressFamily {
    match a {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The broadcast address of an IPv4 subnet (none for /31 and /32).
fn broadcast(a: Ipv4Addr, prefix: u8) -> Option<Ipv4Addr> {
    if prefix >= 31 {
        return None;
    }
    let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    Some(Ipv4Addr::from(u32::from(a) | host_bits))
}

/// Adds `net` to link `index` (IPv6 without duplicate address detection,
/// so that it is usable at once: the host checked the address on its side).
pub fn add_address(nl: &mut Netlink, index: u32, net: IpNet) -> Result<(), NetlinkError> {
    let mut m = AddressMessage::default();
    m.header.family = family(net.addr);
    m.header.prefix_len = net.prefix;
    m.header.index = index;
    m.header.scope = AddressScope::Universe;
    match net.addr {
        IpAddr::V4(a) => {
            m.attributes.push(AddressAttribute::Local(net.addr));
            m.attributes.push(AddressAttribute::Address(net.addr));
            if let Some(b) = broadcast(a, net.prefix) {
                m.attributes.push(AddressAttribute::Broadcast(b));
            }
        }
        IpAddr::V6(_) => {
            m.header.flags = AddressHeaderFlags::Nodad;
            m.attributes.push(AddressAttribute::Address(net.addr));
        }
    }
    nl.request(Rt::NewAddress(m), NLM_F_CREATE | NLM_F_EXCL)
}

/// The route message for `r` through link `oif`, in the main table.
pub fn route_message(r: &Route, oif: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    let fam_addr = r.dest.map(|d| d.addr).or(r.gateway);
    m.header.address_family = fam_addr.map_or(AddressFamily::Inet, family);
    m.header.destination_prefix_length = r.dest.map_or(0, |d| d.prefix);
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = if r.gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    m.header.kind = RouteType::Unicast;
    if let Some(d) = r.dest {
        m.attributes
            .push(RouteAttribute::Destination(d.addr.into()));
    }
    if let Some(g) = r.gateway {
        m.attributes.push(RouteAttribute::Gateway(g.into()));
    }
    m.attributes.push(RouteAttribute::Oif(oif));
    if let Some(p) = r.metric {
        m.attributes.push(RouteAttribute::Priority(p));
    }
    m
}

pub fn add_route(nl: &mut Netlink, r: &Route, oif: u32) -> Result<(), NetlinkError> {
    nl.request(
        Rt::NewRoute(route_message(r, oif)),
        NLM_F_CREATE | NLM_F_APPEND,
    )
}

/// How a route reads in an error: `default via 172.17.0.1`, `10.0.0.0/8`.
pub fn describe_route(r: &Route) -> String {
    let mut s = match r.dest {
        Some(d) => d.to_string(),
        None => "default".into(),
    };
    if let Some(g) = r.gateway {
        s.push_str(&format!(" via {g}"));
    }
    if let Some(m) = r.metric {
        s.push_str(&format!(" metric {m}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_addresses() {
        let a: Ipv4Addr = "172.17.0.2".parse().unwrap();
        assert_eq!(broadcast(a, 16), Some("172.17.255.255".parse().unwrap()));
        assert_eq!(broadcast(a, 0), Some(Ipv4Addr::BROADCAST));
        assert_eq!(broadcast(a, 31), None);
        assert_eq!(broadcast(a, 32), None);
    }

    #[test]
    fn routes_read_as_ip_route_shows_them() {
        let r = Route {
            dest: None,
            gateway: Some("172.17.0.1".parse().unwrap()),
            device: "eth0".into(),
            metric: Some(5),
        };
        assert_eq!(describe_route(&r), "default via 172.17.0.1 metric 5");
        let m = route_message(&r, 3);
        assert_eq!(m.header.address_family, AddressFamily::Inet);
        assert_eq!(m.header.destination_prefix_length, 0);
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert!(m.attributes.contains(&RouteAttribute::Oif(3)));
        assert!(m.attributes.contains(&RouteAttribute::Priority(5)));
        let r = Route {
            dest: Some("fd00:1::/64".parse().unwrap()),
            gateway: None,
            device: "eth0".into(),
            metric: None,
        };
        assert_eq!(describe_route(&r), "fd00:1::/64");
        let m = route_message(&r, 3);
        assert_eq!(m.header.address_family, AddressFamily::Inet6);
        assert_eq!(m.header.destination_prefix_length, 64);
        assert_eq!(m.header.scope, RouteScope::Link);
    }
}
