//! The guest's network, as the host hands it to the agent
//! ([`crate::Request::ConfigureNetwork`]).
//!
//! The host (the monitor) reads the container's network namespace on the
//! host: each interface there (a veth a daemon or CNI plugin made) gets a
//! tap and a virtio-net device whose MAC is the interface's, joined to it
//! by tc redirect. The agent finds each guest NIC by that MAC, gives it the
//! host interface's name, MTU and addresses, moves it into the sandbox
//! network namespace the containers join, and adds the routes.
//!
//! Every list is bounded and every field checked ([`Network::validate`]):
//! a host bug or a forged message is refused with one line naming the
//! field, never half-applied.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Host vsock port the agent's DNS forwarder connects to (behind husk-vmm's
/// Unix-socket backend: `<uds>_53`). One connection per query, carrying the
/// query and then the answer each as DNS over TCP does (RFC 1035 §4.2.2: a
/// 2-byte big-endian length, then the message).
pub const DNS_PORT: u32 = 53;
/// Largest DNS message relayed (a TCP DNS message's limit).
pub const MAX_DNS_MESSAGE: usize = 65535;

/// Where, in the guest, the agent bind-mounts the sandbox network
/// namespace ([`crate::Request::ConfigureNetwork`] sets it up): the host
/// writes this path into a container spec's network namespace entry, so
/// the container joins it as any namespace path is joined.
pub const SANDBOX_NETNS: &str = "/run/husk-net/sandbox";

/// Most interfaces per sandbox (husk-vmm has room for 19 virtio devices).
pub const MAX_INTERFACES: usize = 8;
/// Most addresses per interface.
pub const MAX_ADDRESSES: usize = 32;
/// Most routes.
pub const MAX_ROUTES: usize = 128;
/// Longest interface name (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
/// Smallest and largest MTU accepted (IPv4's minimum; a 64 KiB frame).
pub const MIN_MTU: u32 = 68;
pub const MAX_MTU: u32 = 65535;

/// The sandbox's network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Answer DNS queries sent to this address (UDP port 53) in the sandbox
    /// network namespace by forwarding them to the host over vsock port
    /// [`DNS_PORT`]: Docker's embedded resolver (127.0.0.11) lives in the
    /// host-side namespace, where the guest cannot reach it.
    #[serde(default)]
    pub dns_forward: Option<IpAddr>,
}

/// One interface, as it is on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// Its name on the host (`eth0`); the guest NIC gets it.
    pub name: String,
    /// Its MAC; the virtio-net device carries the same one.
    pub mac: MacAddr,
    pub mtu: u32,
    #[serde(default)]
    pub addresses: Vec<IpNet>,
}

/// A route in the main table. `dest: None` is the default route of the
/// gateway's address family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub dest: Option<IpNet>,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// The interface's name (one of [`Network::interfaces`]).
    pub device: String,
    #[serde(default)]
    pub metric: Option<u32>,
}

/// An Ethernet address, `aa:bb:cc:dd:ee:ff` in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// An address with its prefix length, `10.0.0.2/24` in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Why a [`Network`] was refused: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network.{field}: {msg}")]
pub struct NetworkError {
    pub field: String,
    pub msg: String,
}

fn bad(field: impl Into<String>, msg: impl Into<String>) -> NetworkError {
    NetworkError {
        field: field.into(),
        msg: msg.into(),
    }
}

/// Checks an interface name as the kernel does (`dev_valid_name`), and
/// also refuses characters a shell or a log line would misread.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Err(format!("'{name}' is not 1..={IFNAME_MAX} bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("'{name}' is not an interface name"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
    {
        return Err(format!(
            "'{}' has characters other than [A-Za-z0-9._@-]",
            name.escape_debug()
        ));
    }
    Ok(())
}

impl Network {
    /// Checks bounds and consistency: names, MTUs, unicast MACs, prefix
    /// lengths, routes naming a configured interface, no duplicates.
    pub fn validate(&self) -> Result<(), NetworkError> {
        if self.interfaces.len() > MAX_INTERFACES {
            return Err(bad(
                "interfaces",
                format!(
                    "{} interfaces, at most {MAX_INTERFACES}",
                    self.interfaces.len()
                ),
            ));
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(bad(
                "routes",
                format!("{} routes, at most {MAX_ROUTES}", self.routes.len()),
            ));
        }
        for (i, itf) in self.interfaces.iter().enumerate() {
            let f = |s: &str| format!("interfaces[{i}].{s}");
            check_ifname(&itf.name).map_err(|m| bad(f("name"), m))?;
            if itf.name == "lo" {
                return Err(bad(f("name"), "'lo' is the guest's own"));
            }
            if !(MIN_MTU..=MAX_MTU).contains(&itf.mtu) {
                return Err(bad(
                    f("mtu"),
                    format!("{} is not in {MIN_MTU}..={MAX_MTU}", itf.mtu),
                ));
            }
            if itf.mac.0[0] & 1 != 0 || itf.mac.0 == [0; 6] {
                return Err(bad(
                    f("mac"),
                    format!("{} is not a unicast address", itf.mac),
                ));
            }
            if itf.addresses.len() > MAX_ADDRESSES {
                return Err(bad(
                    f("addresses"),
                    format!("{} addresses, at most {MAX_ADDRESSES}", itf.addresses.len()),
                ));
            }
            let earlier = &self.interfaces[..i];
            if earlier.iter().any(|o| o.name == itf.name) {
                return Err(bad(f("name"), format!("'{}' given twice", itf.name)));
            }
            if earlier.iter().any(|o| o.mac == itf.mac) {
                return Err(bad(f("mac"), format!("{} given twice", itf.mac)));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let f = |s: &str| format!("routes[{i}].{s}");
            if !self.interfaces.iter().any(|itf| itf.name == r.device) {
                return Err(bad(
                    f("device"),
                    format!("'{}' is not one of the interfaces", r.device.escape_debug()),
                ));
            }
            if let (Some(d), Some(g)) = (r.dest, r.gateway) {
                if d.addr.is_ipv4() != g.is_ipv4() {
                    return Err(bad(
                        f("gateway"),
                        format!("{g} is not of the family of {d}"),
                    ));
                }
            }
            if r.dest.is_none() && r.gateway.is_none() {
                return Err(bad(f("gateway"), "a default route needs a gateway"));
            }
        }
        Ok(())
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut mac {
            let p = parts.next().filter(|p| p.len() == 2);
            *b = p
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| {
                    format!(
                        "'{}' is not a MAC address (aa:bb:cc:dd:ee:ff)",
                        s.escape_debug()
                    )
                })?;
        }
        if parts.next().is_some() {
            return Err(format!(
                "'{}' is not a MAC address (aa:bb:cc:dd:ee:ff)",
                s.escape_debug()
            ));
        }
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Debug for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let e = || format!("'{}' is not ADDRESS/PREFIX", s.escape_debug());
        let (a, p) = s.split_once('/').ok_or_else(e)?;
        let addr: IpAddr = a.parse().map_err(|_| e())?;
        let prefix: u8 = p.parse().map_err(|_| e())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!(
                "'{}': prefix {prefix} is over {max}",
                s.escape_debug()
            ));
        }
        Ok(IpNet { addr, prefix })
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(MacAddr);
serde_via_str!(IpNet);

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Network {
        Network {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:42:ac:11:00:02".parse().unwrap(),
                mtu: 1500,
                addresses: vec![
                    "172.17.0.2/16".parse().unwrap(),
                    "fd00::2/64".parse().unwrap(),
                ],
            }],
            routes: vec![Route {
                dest: None,
                gateway: Some("172.17.0.1".parse().unwrap()),
                device: "eth0".into(),
                metric: None,
            }],
            dns_forward: None,
        }
    }

    #[test]
    fn json_round_trip_uses_the_usual_notations() {
        let n = net();
        let j = serde_json::to_string(&n).unwrap();
        assert!(j.contains(r#""mac":"02:42:ac:11:00:02""#), "{j}");
        assert!(j.contains(r#""172.17.0.2/16""#), "{j}");
        let back: Network = serde_json::from_str(&j).unwrap();
        assert_eq!(back, n);
        n.validate().unwrap();
    }

    #[test]
    fn bad_notations_are_refused() {
        for s in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "zz:42:ac:11:00:02",
            "2:42:ac:11:00:02",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s}");
        }
        for s in ["10.0.0.1", "10.0.0.1/33", "::1/129", "x/3", "10.0.0.1/-1"] {
            assert!(s.parse::<IpNet>().is_err(), "{s}");
        }
    }

    #[test]
    fn validate_names_the_field() {
        let mut n = net();
        n.interfaces[0].name = "eth0; rm".into();
        assert_eq!(n.validate().unwrap_err().field, "interfaces[0].name");
        let mut n = net();
        n.interfaces[0].mtu = 10;
        assert_eq!(n.validate().unwrap_err().field, "interfaces[0].mtu");
        let mut n = net();
        n.interfaces[0].mac = "01:00:5e:00:00:01".parse().unwrap();
        assert_eq!(n.validate().unwrap_err().field, "interfaces[0].mac");
        let mut n = net();
        n.routes[0].device = "eth9".into();
        assert_eq!(
            n.validate().unwrap_err().to_string(),
            "network.routes[0].device: 'eth9' is not one of the interfaces"
        );
        let mut n = net();
        n.routes[0].gateway = None;
        assert_eq!(n.validate().unwrap_err().field, "routes[0].gateway");
        let mut n = net();
        n.interfaces.push(n.interfaces[0].clone());
        assert_eq!(n.validate().unwrap_err().field, "interfaces[1].name");
        let mut n = net();
        n.interfaces = vec![n.interfaces[0].clone(); MAX_INTERFACES + 1];
        assert_eq!(n.validate().unwrap_err().field, "interfaces");
        let mut n = net();
        n.routes[0].dest = Some("fd00::/64".parse().unwrap());
        assert_eq!(n.validate().unwrap_err().field, "routes[0].gateway");
    }
}
