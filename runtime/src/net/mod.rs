//! The host side of the sandbox's network, as Kata does it: the monitor,
//! on a thread inside the container's network namespace, reads the
//! interfaces a daemon or CNI plugin made there ([`scan`]), makes one tap
//! per interface joined to it by tc redirects ([`connect_tap`], undone by
//! [`disconnect`]) for husk-vmm's virtio-net devices, and relays the
//! guest's DNS queries to the namespace's resolver ([`serve_dns`]).
//!
//! Every function acts on the network namespace of the calling thread: it
//! opens its netlink sockets (and the tap) on that thread.

pub mod dns;
mod scan;
mod tap;

use std::io;

use husk_protocol::net::NetworkError;

pub use dns::{dns_forward_address, serve_dns, DnsRelay};
pub use husk_sys::netlink::NetlinkError;
pub use scan::{scan, OperState, Scan, ScannedInterface, Skipped};
pub use tap::{connect_tap, disconnect, TapLink, TAP_PREFIX};

/// What a network operation failed at, naming the device and the netlink
/// operation (`tc: add ingress qdisc on eth0: Operation not permitted`).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("rtnetlink: open socket: {0}")]
    Open(#[source] NetlinkError),
    #[error("rtnetlink: dump {what}: {source}")]
    Dump {
        what: &'static str,
        #[source]
        source: NetlinkError,
    },
    #[error("{op} on {dev}: {source}")]
    Op {
        op: &'static str,
        dev: String,
        #[source]
        source: NetlinkError,
    },
    #[error("tap {name}: {source}")]
    Tap {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("{dev}: {msg}")]
    Device { dev: String, msg: String },
    #[error("too many {what}: {count}, at most {max}")]
    TooMany {
        what: String,
        count: usize,
        max: usize,
    },
    #[error("scanned network refused: {0}")]
    Invalid(#[from] NetworkError),
}

impl NetError {
    fn op(op: &'static str, dev: &str) -> impl FnOnce(NetlinkError) -> NetError {
        let dev = dev.to_string();
        move |source| NetError::Op { op, dev, source }
    }
}

/// Most messages one dump may bring (links, addresses, routes, qdiscs).
const MAX_DUMP: usize = 4096;

/// An rtnetlink socket in the calling thread's network namespace.
fn route_socket() -> Result<husk_sys::netlink::Netlink, NetError> {
    husk_sys::netlink::Netlink::route().map_err(NetError::Open)
}

#[cfg(test)]
mod tests;
