//! One tap per interface, joined to it with tc: an ingress qdisc on each
//! and a filter matching every frame whose action redirects it to the
//! other device's egress (`mirred egress redirect`), so frames pass both
//! ways untouched and the interface's addresses stay unused on the host.
//!
//! The filter is u32 with one key of mask 0 ("match u8 0 0"), which every
//! frame matches. matchall would say the same more plainly, but it is a
//! separate option (`CONFIG_NET_CLS_MATCHALL`) that some kernels lack,
//! while u32 is in every kernel that has tc filters: one code path that
//! works everywhere.

use std::os::fd::OwnedFd;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterU32Option, TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key,
    TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::scan::ScannedInterface;
use super::{route_socket, NetError};
use husk_sys::netlink::Netlink;

/// Name prefix of husk's taps (`husk-tap0`, ...); [`super::scan`] skips them.
pub const TAP_PREFIX: &str = "husk-tap";
/// The ingress qdisc's handle (`ffff:`), and the parent of its filters.
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
/// The filters' priority.
const FILTER_PRIO: u32 = 1;
/// `ETH_P_ALL`: the filters see frames of every protocol.
const ETH_P_ALL: u16 = 0x0003;

/// A tap joined to an interface.
#[derive(Debug)]
pub struct TapLink {
    /// The tap's descriptor (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`), for
    /// husk-vmm; the tap goes away with its last descriptor.
    pub fd: OwnedFd,
    pub tap_name: String,
    pub tap_index: u32,
    pub interface: String,
    pub interface_index: u32,
}

/// Creates tap `husk-tap{index}` with `itf`'s MTU, sets both up and joins
/// them with tc redirects both ways. On error nothing it made is left: the
/// tap goes with its descriptor, the interface's ingress qdisc is removed.
/// An interface that already has an ingress qdisc is refused (`File
/// exists`): its filters are someone else's.
pub fn connect_tap(itf: &ScannedInterface, index: usize) -> Result<TapLink, NetError> {
    let want = format!("{TAP_PREFIX}{index}");
    let (fd, tap_name) =
        husk_sys::tun::open_tap(&want).map_err(|source| NetError::Tap { name: want, source })?;
    let mut nl = route_socket()?;
    let tap_index = link_index(&mut nl, &tap_name)?;
    set_link(&mut nl, tap_index, &tap_name, Some(itf.mtu))?;
    if !itf.up {
        set_link(&mut nl, itf.index, &itf.name, None)?;
    }
    add_ingress(&mut nl, itf.index, &itf.name)?;
    let joined = (|| {
        inject("interface qdisc")?;
        add_ingress(&mut nl, tap_index, &tap_name)?;
        add_redirect(&mut nl, (itf.index, &itf.name), tap_index)?;
        inject("interface filter")?;
        add_redirect(&mut nl, (tap_index, &tap_name), itf.index)
    })();
    if let Err(e) = joined {
        let _ = del_ingress(&mut nl, itf.index, &itf.name);
        return Err(e);
    }
    Ok(TapLink {
        fd,
        tap_name,
        tap_index,
        interface: itf.name.clone(),
        interface_index: itf.index,
    })
}

/// Removes the ingress qdisc (and so the redirect) from `interface`; the
/// tap goes away with its last descriptor. A missing interface or qdisc is
/// not an error.
pub fn disconnect(interface: &str) -> Result<(), NetError> {
    let mut nl = route_socket()?;
    let index = match link_index(&mut nl, interface) {
        Ok(i) => i,
        Err(NetError::Op { source, .. }) if source.errno() == Some(libc::ENODEV) => return Ok(()),
        Err(e) => return Err(e),
    };
    if !ingress_qdiscs(&mut nl, index, interface)?.is_empty() {
        match del_ingress(&mut nl, index, interface) {
            Err(NetError::Op { source, .. })
                if matches!(source.errno(), Some(libc::ENOENT | libc::ENODEV)) => {}
            r => r?,
        }
    }
    Ok(())
}

/// Test hook: fails the named step of [`connect_tap`] when a test asks
/// (on its own thread), to check the undoing.
#[cfg(test)]
fn inject(step: &'static str) -> Result<(), NetError> {
    if super::tests::FAIL_AT.with(|f| f.get()) == Some(step) {
        return Err(NetError::Device {
            dev: step.into(),
            msg: "injected failure".into(),
        });
    }
    Ok(())
}

#[cfg(not(test))]
#[inline(always)]
fn inject(_step: &'static str) -> Result<(), NetError> {
    Ok(())
}

fn tc_index(index: u32, dev: &str) -> Result<i32, NetError> {
    i32::try_from(index).map_err(|_| NetError::Device {
        dev: dev.into(),
        msg: format!("interface index {index} is out of range"),
    })
}

/// The index of the link named `name`.
pub(crate) fn link_index(nl: &mut Netlink, name: &str) -> Result<u32, NetError> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.into()));
    let replies = nl
        .request_replies(RouteNetlinkMessage::GetLink(m), 0, 1)
        .map_err(NetError::op("rtnetlink: get link", name))?;
    match replies.as_slice() {
        [RouteNetlinkMessage::NewLink(l)] => Ok(l.header.index),
        _ => Err(NetError::Device {
            dev: name.into(),
            msg: "rtnetlink: get link: no link in the answer".into(),
        }),
    }
}

/// Sets link `index` up, and its MTU if given.
fn set_link(nl: &mut Netlink, index: u32, dev: &str, mtu: Option<u32>) -> Result<(), NetError> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    let op = if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
        "rtnetlink: set MTU and up"
    } else {
        "rtnetlink: set up"
    };
    nl.request(RouteNetlinkMessage::SetLink(m), 0)
        .map_err(NetError::op(op, dev))
}

fn ingress_message(index: i32) -> TcMessage {
    let mut m = TcMessage::with_index(index);
    m.header.parent = TcHandle::INGRESS;
    m.header.handle = INGRESS_HANDLE;
    m.attributes.push(TcAttribute::Kind("ingress".into()));
    m
}

fn add_ingress(nl: &mut Netlink, index: u32, dev: &str) -> Result<(), NetError> {
    let m = ingress_message(tc_index(index, dev)?);
    nl.request(
        RouteNetlinkMessage::NewQueueDiscipline(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .map_err(NetError::op("tc: add ingress qdisc", dev))
}

fn del_ingress(nl: &mut Netlink, index: u32, dev: &str) -> Result<(), NetError> {
    let m = ingress_message(tc_index(index, dev)?);
    nl.request(RouteNetlinkMessage::DelQueueDiscipline(m), 0)
        .map_err(NetError::op("tc: delete ingress qdisc", dev))
}

/// The ingress qdiscs of link `index` (none or one).
pub(crate) fn ingress_qdiscs(
    nl: &mut Netlink,
    index: u32,
    dev: &str,
) -> Result<Vec<TcMessage>, NetError> {
    let all: Vec<RouteNetlinkMessage> = nl
        .dump(
            RouteNetlinkMessage::GetQueueDiscipline(TcMessage::with_index(tc_index(index, dev)?)),
            super::MAX_DUMP,
        )
        .map_err(NetError::op("tc: list qdiscs", dev))?;
    Ok(all
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewQueueDiscipline(q)
                if i64::from(q.header.index) == i64::from(index)
                    && q.attributes.contains(&TcAttribute::Kind("ingress".into())) =>
            {
                Some(q)
            }
            _ => None,
        })
        .collect())
}

/// The filter on `from`'s ingress that redirects every frame to the
/// egress of link `to`.
pub(crate) fn redirect_filter(from: i32, to: u32) -> TcMessage {
    let mut m = TcMessage::with_index(from);
    m.header.parent = INGRESS_HANDLE;
    // tcm_info: the priority in the upper half, the protocol (in network
    // byte order, as a 16-bit field) in the lower.
    m.header.info = (FILTER_PRIO << 16) | u32::from(u16::from_ne_bytes(ETH_P_ALL.to_be_bytes()));
    let mut key = TcU32Key::default();
    key.mask = 0;
    key.val = 0;
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![key];
    let mut mirror = TcMirror::default();
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = to;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    m.attributes = vec![
        TcAttribute::Kind("u32".into()),
        TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::Selector(sel)),
            TcOption::U32(TcFilterU32Option::Action(vec![action])),
        ]),
    ];
    m
}

fn add_redirect(nl: &mut Netlink, (from, dev): (u32, &str), to: u32) -> Result<(), NetError> {
    let m = redirect_filter(tc_index(from, dev)?, to);
    nl.request(
        RouteNetlinkMessage::NewTrafficFilter(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .map_err(NetError::op("tc: add redirect filter", dev))
}
