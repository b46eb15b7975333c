//! The guest side of the sandbox's network ([`Request::ConfigureNetwork`]).
//!
//! Once per VM: a new network namespace (the sandbox's) is made and
//! bind-mounted on [`SANDBOX_NETNS`], where container specs name it as
//! their network namespace; `lo` comes up there. Each guest NIC (a
//! virtio-net device whose MAC is the host interface's) is found by MAC in
//! the agent's own namespace, moved into the sandbox's, given the host
//! interface's name, MTU and addresses, and brought up; then the routes
//! are added, and the DNS forwarder ([`dns`]) started if asked for.
//!
//! A failure midway is reported as is (naming the interface and the step):
//! the host then stops the VM, which is the sandbox, so nothing is undone.
//!
//! Parts: [`links`] (the rtnetlink messages, sent with the netlink client
//! shared with the host side, [`husk_sys::netlink`]), [`netns`] (making
//! and entering the namespace), [`dns`].
//!
//! [`Request::ConfigureNetwork`]: husk_protocol::Request::ConfigureNetwork

pub mod dns;
pub mod links;
pub mod netns;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use husk_protocol::net::{Interface, IpNet, Network, NetworkError, SANDBOX_NETNS};
use husk_protocol::{oci, ErrorCode};
use husk_sys::netlink::{Netlink, NetlinkError};
use oci_spec::runtime::LinuxNamespaceType;
use thiserror::Error;

use self::links::Link;
use crate::container::SpecError;
use crate::log::{info, Phases};

/// Longest wait for a guest NIC to show up (the virtio-net devices are
/// probed at boot, normally long before the request).
pub const NIC_WAIT: Duration = Duration::from_secs(2);
const NIC_POLL: Duration = Duration::from_millis(20);
/// The DNS port the forwarder serves.
const DNS_SERVER_PORT: u16 = 53;

/// Why the network could not be configured.
#[derive(Debug, Error)]
pub enum NetError {
    /// The request itself is wrong.
    #[error(transparent)]
    Invalid(#[from] NetworkError),
    #[error("the sandbox network was configured already")]
    Configured,
    #[error(
        "network.interfaces[{index}] ({name}): no guest NIC has MAC {mac} \
         (waited {} ms)", waited.as_millis()
    )]
    NoNic {
        index: usize,
        name: String,
        mac: husk_protocol::net::MacAddr,
        waited: Duration,
    },
    /// A step failed: `what` names the interface and the step.
    #[error("{what}: {source}")]
    Op { what: String, source: StepError },
}

/// What a step failed with: a system call, or the kernel's answer to a
/// netlink request (its errno, and its explanation when it gave one).
#[derive(Debug, Error)]
pub enum StepError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

impl StepError {
    /// The errno of the failure (`EEXIST`, ...), whichever kind it is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            StepError::Io(e) => e.raw_os_error(),
            StepError::Netlink(e) => e.errno(),
        }
    }
}

impl NetError {
    /// Wraps an error of step `what`.
    pub fn op<E: Into<StepError>>(what: impl Into<String>) -> impl FnOnce(E) -> NetError {
        let what = what.into();
        move |source| NetError::Op {
            what,
            source: source.into(),
        }
    }

    /// The protocol's code for the error.
    pub fn code(&self) -> ErrorCode {
        match self {
            NetError::Invalid(_) => ErrorCode::BadRequest,
            NetError::Configured => ErrorCode::InvalidState,
            NetError::NoNic { .. } | NetError::Op { .. } => ErrorCode::Internal,
        }
    }
}

/// The sandbox's network as it is set up.
struct Configured {
    /// Keeps the namespace open (besides its bind mount).
    _ns: OwnedFd,
    dns: Option<dns::Forwarder>,
}

enum State {
    Unconfigured,
    /// A configure is running or failed: no second one.
    Taken,
    Configured(Configured),
}

/// The agent's sandbox network: configured at most once.
pub struct Sandbox {
    netns_path: PathBuf,
    nic_wait: Duration,
    state: Mutex<State>,
}

impl Default for Sandbox {
    fn default() -> Sandbox {
        Sandbox::new(PathBuf::from(SANDBOX_NETNS))
    }
}

impl Sandbox {
    /// A sandbox network to be bind-mounted on `netns_path` (tests pass
    /// one of their own).
    pub fn new(netns_path: PathBuf) -> Sandbox {
        Sandbox {
            netns_path,
            nic_wait: NIC_WAIT,
            state: Mutex::new(State::Unconfigured),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_configured(&self) -> bool {
        matches!(*self.lock(), State::Configured(_))
    }

    /// Validates `network` and sets it up; a second call is refused, also
    /// after a failed one (the host stops the VM then).
    pub fn configure(&self, network: &Network) -> Result<(), NetError> {
        network.validate()?;
        {
            let mut st = self.lock();
            if !matches!(*st, State::Unconfigured) {
                return Err(NetError::Configured);
            }
            *st = State::Taken;
        }
        let phases = Phases::start("configure network".into());
        let c = configure(network, self, &phases)?;
        phases.mark("done");
        *self.lock() = State::Configured(c);
        Ok(())
    }

    /// Stops the DNS forwarder (tests: its thread holds the namespace).
    pub fn stop_dns(&self) {
        if let State::Configured(c) = &mut *self.lock() {
            if let Some(f) = c.dns.take() {
                f.stop();
            }
        }
    }
}

/// Every step, in order.
fn configure(n: &Network, sb: &Sandbox, phases: &Phases) -> Result<Configured, NetError> {
    let ns = netns::create(&sb.netns_path)?;
    let mut sand = netns::run_in(ns.as_fd(), "open netlink in the sandbox", Netlink::route)?;
    links::set_up_by_name(&mut sand, "lo").map_err(NetError::op("lo: set up"))?;
    phases.mark("sandbox namespace made");
    let mut root = Netlink::route().map_err(NetError::op("open netlink"))?;
    let nics = wait_for_nics(&mut root, &n.interfaces, sb.nic_wait)?;
    phases.mark("NICs found");
    for (i, (itf, nic)) in n.interfaces.iter().zip(&nics).enumerate() {
        let f = |step: &str| format!("{}: {step}", itf.name);
        if nic.up {
            links::set_up(&mut root, nic.index, false).map_err(NetError::op(f("set down")))?;
        }
        let tmp = tmp_name(i);
        links::move_to(&mut root, nic.index, ns.as_fd(), &tmp).map_err(NetError::op(f(
            &format!("move {} into the sandbox network namespace", nic.name),
        )))?;
    }
    let moved = links::links(&mut sand).map_err(NetError::op("list the sandbox's links"))?;
    let mut index = Vec::new();
    for (i, itf) in n.interfaces.iter().enumerate() {
        let tmp = tmp_name(i);
        let Some(l) = moved.iter().find(|l| l.name == tmp) else {
            return Err(NetError::op(format!("{}: find {tmp}", itf.name))(
                io::Error::from(io::ErrorKind::NotFound),
            ));
        };
        set_up_interface(&mut sand, itf, l.index, &tmp)?;
        index.push((itf.name.as_str(), l.index));
    }
    phases.mark("interfaces up");
    add_routes(&mut sand, n, &index)?;
    let dns = match n.dns_forward {
        Some(addr) => Some(start_dns(ns.as_fd(), &mut sand, addr)?),
        None => None,
    };
    Ok(Configured { _ns: ns, dns })
}

/// The name of interface `i` between its move and its rename: the host's
/// names may be the kernel's names of other NICs ("eth1" is taken until
/// that NIC is renamed). The kernel accepts '+' in a name, the protocol
/// does not (`check_ifname`): no host name can clash with it.
fn tmp_name(i: usize) -> String {
    format!("husk+{i}")
}

/// Finds the NIC of each interface by MAC, waiting up to `wait` for them
/// to show up.
fn wait_for_nics(
    nl: &mut Netlink,
    itfs: &[Interface],
    wait: Duration,
) -> Result<Vec<Link>, NetError> {
    let t0 = Instant::now();
    loop {
        let all = links::links(nl).map_err(NetError::op("list the guest's links"))?;
        let found: Vec<Option<&Link>> = itfs
            .iter()
            .map(|itf| all.iter().find(|l| l.mac == Some(itf.mac)))
            .collect();
        let missing = found.iter().position(Option::is_none);
        match missing {
            None => return Ok(found.into_iter().flatten().cloned().collect()),
            Some(i) if t0.elapsed() >= wait => {
                return Err(NetError::NoNic {
                    index: i,
                    name: itfs[i].name.clone(),
                    mac: itfs[i].mac,
                    waited: t0.elapsed(),
                })
            }
            Some(_) => std::thread::sleep(NIC_POLL),
        }
    }
}

/// Names, sizes, addresses and brings up one moved NIC.
fn set_up_interface(
    nl: &mut Netlink,
    itf: &Interface,
    index: u32,
    tmp: &str,
) -> Result<(), NetError> {
    let f = |step: String| format!("{}: {step}", itf.name);
    links::rename(nl, index, &itf.name).map_err(NetError::op(f(format!("rename {tmp}"))))?;
    links::set_mtu(nl, index, itf.mtu).map_err(NetError::op(f(format!("set MTU {}", itf.mtu))))?;
    for a in &itf.addresses {
        links::add_address(nl, index, *a).map_err(NetError::op(f(format!("add address {a}"))))?;
    }
    links::set_up(nl, index, true).map_err(NetError::op(f("set up".into())))
}

/// Adds the routes: those without a gateway first (a gateway may be
/// reachable only through one of them), each group in the given order.
fn add_routes(nl: &mut Netlink, n: &Network, index: &[(&str, u32)]) -> Result<(), NetError> {
    let direct = n.routes.iter().filter(|r| r.gateway.is_none());
    let via = n.routes.iter().filter(|r| r.gateway.is_some());
    for r in direct.chain(via) {
        // Validation made sure the device is one of the interfaces.
        let oif = index
            .iter()
            .find(|(name, _)| *name == r.device)
            .map_or(0, |(_, i)| *i);
        links::add_route(nl, r, oif).map_err(NetError::op(format!(
            "{}: add route {}",
            r.device,
            links::describe_route(r)
        )))?;
    }
    Ok(())
}

/// Binds the forwarder's socket in the sandbox namespace and starts it.
/// An address that is on no interface (not loopback's 127/8 or ::1, not
/// one of the NICs') is added to `lo` as a host address first, so that
/// clients in the sandbox reach it locally.
fn start_dns(
    ns: BorrowedFd<'_>,
    nl: &mut Netlink,
    addr: IpAddr,
) -> Result<dns::Forwarder, NetError> {
    let sa = SocketAddr::new(addr, DNS_SERVER_PORT);
    let what = format!("dns_forward: bind {sa}");
    let bind = || netns::run_in(ns, &what, move || UdpSocket::bind(sa));
    let sock = match bind() {
        Err(NetError::Op {
            source: StepError::Io(e),
            ..
        }) if e.kind() == io::ErrorKind::AddrNotAvailable && !addr.is_loopback() => {
            let host = IpNet {
                addr,
                prefix: if addr.is_ipv4() { 32 } else { 128 },
            };
            let lo = links::links(nl)
                .map_err(NetError::op("dns_forward: list the sandbox's links"))?
                .into_iter()
                .find(|l| l.name == "lo")
                .map_or(1, |l| l.index);
            links::add_address(nl, lo, host)
                .map_err(NetError::op(format!("dns_forward: add {host} to lo")))?;
            info!("dns_forward: {addr} is on no interface; added it to lo");
            bind()?
        }
        r => r?,
    };
    dns::Forwarder::start(sock, dns::Relay::vsock())
        .map_err(NetError::op("dns_forward: start the forwarder"))
}

/// Checks that a spec naming the sandbox network namespace
/// ([`SANDBOX_NETNS`]) comes after the network was configured.
pub fn check_spec(spec: &oci::Spec, configured: bool) -> Result<(), SpecError> {
    if configured {
        return Ok(());
    }
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    for (i, n) in namespaces.into_iter().flatten().enumerate() {
        let sandbox = n
            .path()
            .as_ref()
            .is_some_and(|p| p.as_os_str() == SANDBOX_NETNS);
        if n.typ() == LinuxNamespaceType::Network && sandbox {
            return Err(SpecError::invalid(
                format!("linux.namespaces[{i}].path"),
                "the sandbox network is not configured",
            ));
        }
    }
    Ok(())
}
