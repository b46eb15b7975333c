//! The container's network, on the monitor's side: the monitor sits in the
//! container's network namespace on the host, where the daemon (or its
//! hooks, or CNI) put the interfaces. Each one gets a tap joined to it by tc
//! redirect and a virtio-net device on that tap with the interface's MAC;
//! the agent gets the addresses and routes. Docker's embedded resolver,
//! reachable only in this namespace, is served to the guest over vsock.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use husk_protocol::net::{Network, DNS_PORT, SANDBOX_NETNS};
use husk_protocol::oci;
use husk_vm_config::{NetBackend, NetConfig};

use crate::bundle::Bundle;
use crate::error::{Error, Result};
use crate::net;

/// What the monitor set up for the VM's network.
#[derive(Default)]
pub(super) struct Plan {
    /// For the agent; None when the namespace has no interface (`--network
    /// none`): the container then gets a network namespace of its own in
    /// the guest with only lo.
    pub network: Option<Network>,
    /// The taps, for husk-vmm to inherit (the monitor closes its copies
    /// once husk-vmm runs, so the taps go away with it).
    pub taps: Vec<OwnedFd>,
    /// The interfaces joined to a tap, to let go of at the end.
    pub linked: Vec<String>,
    /// Who serves the NICs (the bundle's `io.husk.net.backend`).
    pub backend: NetBackend,
}

impl Plan {
    /// husk-vmm's virtio-net devices: one per tap, with the interface's MAC
    /// and MTU, on the chosen backend.
    pub(super) fn vm_devices(&self) -> Vec<NetConfig> {
        let Some(n) = &self.network else {
            return vec![];
        };
        n.interfaces
            .iter()
            .zip(&self.taps)
            .map(|(itf, tap)| {
                NetConfig::tap_fd(tap.as_raw_fd(), itf.mac, Some(itf.mtu))
                    .with_backend(self.backend)
            })
            .collect()
    }

    /// Removes the tc redirects (the taps go with husk-vmm; the interfaces
    /// are the daemon's).
    pub(super) fn teardown(&self) {
        for name in &self.linked {
            if let Err(e) = net::disconnect(name) {
                crate::warn!("network: {e}");
            }
        }
    }
}

/// Called in the joined namespace. The host's own namespace (Docker's
/// `--network host` names it: /var/run/docker/netns/default) cannot be
/// given to a VM. A namespace that already has a husk tap belongs to
/// another husk container (`--network container:OTHER`): its interfaces
/// are in that container's VM. Only a pod (one VM) can share them.
pub(super) fn refuse_shared(b: &Bundle) -> Result<()> {
    let Some(path) = &b.netns else {
        return Ok(());
    };
    if is_hosts_netns() {
        return Err(Error::HostNetns { path: path.clone() });
    }
    if crate::sys::net_interfaces()
        .iter()
        .any(|i| i.starts_with(net::TAP_PREFIX))
    {
        return Err(Error::SharedNetns { path: path.clone() });
    }
    Ok(())
}

/// Whether this thread's network namespace is the one of PID 1 (the
/// host's, or that of the container husk itself runs in).
fn is_hosts_netns() -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    match (id("/proc/thread-self/ns/net"), id("/proc/1/ns/net")) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Reads the namespace's interfaces and joins each to a new tap; decides
/// whether the guest's DNS queries are forwarded (the bundle's resolv.conf
/// names a loopback resolver, as on Docker's user-defined networks).
pub(super) fn prepare(id: &str, b: &Bundle) -> Result<Plan> {
    let scan = net::scan()?;
    for s in &scan.skipped {
        crate::warn!(
            "container {id}: network: {} not connected to the microVM: {}",
            s.what,
            s.reason
        );
    }
    let mut plan = Plan {
        backend: b
            .net_backend
            .unwrap_or_else(crate::bundle::default_net_backend),
        ..Plan::default()
    };
    if scan.interfaces.is_empty() {
        return Ok(plan);
    }
    let r = (|| {
        for (i, itf) in scan.interfaces.iter().enumerate() {
            let link = net::connect_tap(itf, i)?;
            plan.linked.push(itf.name.clone());
            plan.taps.push(link.fd);
        }
        let dns = resolv_conf(b).as_deref().and_then(net::dns_forward_address);
        Ok(scan.to_network(dns)?)
    })();
    match r {
        Ok(n) => {
            plan.network = Some(n);
            Ok(plan)
        }
        Err(e) => {
            plan.teardown();
            Err(e)
        }
    }
}

/// The resolv.conf the daemon gives the container (the source of the
/// bind mount on /etc/resolv.conf), if any.
fn resolv_conf(b: &Bundle) -> Option<String> {
    let m = b
        .spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new("/etc/resolv.conf"))?;
    let src = m.source().as_ref()?;
    let src = if src.is_absolute() {
        src.clone()
    } else {
        b.dir.join(src)
    };
    let mut s = std::fs::read_to_string(src).ok()?;
    s.truncate(64 << 10);
    Some(s)
}

/// Serves the guest's DNS queries (guest-initiated vsock connections to
/// port [`DNS_PORT`] land on `<vsock>_53`) from `resolver` in this
/// namespace, in a thread of its own for the monitor's lifetime.
pub(super) fn serve_dns(vsock: &Path, resolver: IpAddr) -> Result<()> {
    let mut path = vsock.as_os_str().to_owned();
    path.push(format!("_{DNS_PORT}"));
    let listener = UnixListener::bind(&path).map_err(|source| Error::DnsSocket {
        path: path.clone().into(),
        source,
    })?;
    // The jailed husk-vmm connects to it for the guest.
    super::sandbox::jail_owns(Path::new(&path))?;
    let resolver = SocketAddr::new(resolver, 53);
    std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || {
            // The monitor's lifetime: it never asks the relay to stop.
            let stop = std::sync::atomic::AtomicBool::new(false);
            if let Err(e) = net::serve_dns(listener, resolver, &stop) {
                crate::warn!("dns relay: {e}");
            }
        })
        .map_err(|source| Error::DnsSocket {
            path: path.into(),
            source,
        })?;
    Ok(())
}

/// The container joins the sandbox network namespace the agent made
/// (instead of an empty one of its own).
pub(super) fn join_sandbox_netns(spec: &mut oci::Spec) {
    let Some(linux) = spec.linux_mut() else {
        return;
    };
    let Some(nss) = linux.namespaces_mut() else {
        return;
    };
    for ns in nss.iter_mut() {
        if ns.typ() == oci::LinuxNamespaceType::Network {
            ns.set_path(Some(SANDBOX_NETNS.into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_protocol::net::Interface;

    #[test]
    fn every_nic_gets_the_plans_backend() {
        let itf = |name: &str, last: u8| Interface {
            name: name.into(),
            mac: husk_protocol::net::MacAddr([2, 0, 0, 0, 0, last]),
            mtu: 1500,
            addresses: vec![],
        };
        // Any descriptor stands in for a tap: only its number is used.
        let fd = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let mut plan = Plan {
            network: Some(Network {
                interfaces: vec![itf("eth0", 1), itf("eth1", 2)],
                ..Network::default()
            }),
            taps: vec![fd(), fd()],
            linked: vec![],
            backend: NetBackend::Vhost,
        };
        let devs = plan.vm_devices();
        assert_eq!(devs.len(), 2);
        for (d, tap) in devs.iter().zip(&plan.taps) {
            assert_eq!(d.backend, NetBackend::Vhost);
            assert_eq!((d.tap_fd, d.mtu), (Some(tap.as_raw_fd()), Some(1500)));
        }
        plan.backend = NetBackend::Virtio;
        assert!(plan
            .vm_devices()
            .iter()
            .all(|d| d.backend == NetBackend::Virtio));
        assert!(Plan::default().vm_devices().is_empty());
    }
}
