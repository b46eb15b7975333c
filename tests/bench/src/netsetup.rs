//! The host side of the network section, as a container daemon prepares
//! it: a named network namespace (`ip netns add`: a bind mount under
//! /run/netns), a veth pair with one end in it (addressed, default route
//! to the host end) and the host end addressed in the root namespace; or,
//! for bare VMMs, a tap addressed in the root namespace. And a published
//! port: an iptables DNAT rule in `nat OUTPUT`, as Docker makes. Each is a
//! guard that undoes itself on drop, on every path.
//!
//! rtnetlink through husk-sys's client and netlink-packet-route (what the
//! runtime and agent use): the lab's L1 has busybox's `ip`, which has no
//! `netns` and no veth peers.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use husk_sys::netlink::Netlink;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// The host end's and the guest's addresses, in one /24.
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
pub const PREFIX: u8 = 24;
/// The guest's interface name (as Docker names it).
pub const GUEST_IF: &str = "eth0";

fn route_socket() -> Result<Netlink, String> {
    Netlink::route().map_err(|e| format!("rtnetlink socket: {e}"))
}

fn link_index(nl: &mut Netlink, name: &str) -> Result<u32, String> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.into()));
    let r: Vec<RouteNetlinkMessage> = nl
        .request_replies(RouteNetlinkMessage::GetLink(m), 0, 1)
        .map_err(|e| format!("{name}: get link: {e}"))?;
    match r.as_slice() {
        [RouteNetlinkMessage::NewLink(l)] => Ok(l.header.index),
        _ => Err(format!("{name}: get link: no answer")),
    }
}

fn set_up(nl: &mut Netlink, name: &str) -> Result<(), String> {
    let mut m = LinkMessage::default();
    m.header.index = link_index(nl, name)?;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    nl.request(RouteNetlinkMessage::SetLink(m), 0)
        .map_err(|e| format!("{name}: set up: {e}"))
}

fn add_address(nl: &mut Netlink, dev: &str, addr: Ipv4Addr) -> Result<(), String> {
    let mut a = AddressMessage::default();
    a.header.index = link_index(nl, dev)?;
    a.header.prefix_len = PREFIX;
    a.header.scope = AddressScope::Universe;
    a.header.family = AddressFamily::Inet;
    a.attributes.push(AddressAttribute::Local(addr.into()));
    a.attributes.push(AddressAttribute::Address(addr.into()));
    nl.request(
        RouteNetlinkMessage::NewAddress(a),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .map_err(|e| format!("{dev}: add address {addr}/{PREFIX}: {e}"))
}

fn add_default_route(nl: &mut Netlink, dev: &str, gw: Ipv4Addr) -> Result<(), String> {
    let mut r = RouteMessage::default();
    r.header.address_family = AddressFamily::Inet;
    r.header.table = RouteHeader::RT_TABLE_MAIN;
    r.header.protocol = RouteProtocol::Static;
    r.header.scope = RouteScope::Universe;
    r.header.kind = RouteType::Unicast;
    r.attributes
        .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    r.attributes.push(RouteAttribute::Oif(link_index(nl, dev)?));
    nl.request(RouteNetlinkMessage::NewRoute(r), NLM_F_CREATE | NLM_F_EXCL)
        .map_err(|e| format!("{dev}: default route via {gw}: {e}"))
}

fn del_link(name: &str) {
    if let Ok(mut nl) = route_socket() {
        if let Ok(index) = link_index(&mut nl, name) {
            let mut m = LinkMessage::default();
            m.header.index = index;
            let _ = nl.request(RouteNetlinkMessage::DelLink(m), 0);
        }
    }
}

/// Runs `f` on a thread of its own in the network namespace at `path`.
fn in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: setns(2) on a descriptor we own; it moves only this thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "setns {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        f()
    })
    .join()
    .map_err(|_| "a network-namespace thread panicked".to_string())?
}

/// A named network namespace, `/run/netns/NAME`, as `ip netns add` makes.
pub struct NetNs {
    pub path: PathBuf,
}

impl NetNs {
    pub fn create(name: &str) -> Result<NetNs, String> {
        let dir = Path::new("/run/netns");
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(name);
        std::fs::File::create_new(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let ns = NetNs { path };
        let target = ns.path.clone();
        std::thread::spawn(move || {
            // SAFETY: unshare(2) with one flag; it moves only this thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(format!(
                    "unshare(CLONE_NEWNET): {}",
                    std::io::Error::last_os_error()
                ));
            }
            // SAFETY: gettid(2) has no arguments and cannot fail.
            let tid = unsafe { libc::gettid() };
            let src = format!("/proc/self/task/{tid}/ns/net");
            bind_mount(Path::new(&src), &target)?;
            let mut nl = route_socket()?;
            set_up(&mut nl, "lo")
        })
        .join()
        .map_err(|_| "the netns thread panicked".to_string())??;
        Ok(ns)
    }
}

fn bind_mount(src: &Path, dst: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap_or_default();
    let (s, d) = (c(src), c(dst));
    // SAFETY: two NUL-terminated paths that outlive the call; no fs type
    // or data for a bind mount.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "bind mount {} on {}: {}",
            src.display(),
            dst.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

impl Drop for NetNs {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(c) = std::ffi::CString::new(self.path.as_os_str().as_bytes()) {
            // SAFETY: a NUL-terminated path that outlives the call.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A veth pair: `host` in the root namespace with [`HOST_ADDR`], its peer
/// [`GUEST_IF`] in `ns` with [`GUEST_ADDR`] and a default route to the
/// host end. Deleted on drop (both ends go).
pub struct Veth {
    host: String,
}

impl Veth {
    pub fn create(host: &str, ns: &NetNs) -> Result<Veth, String> {
        let nsf =
            std::fs::File::open(&ns.path).map_err(|e| format!("{}: {e}", ns.path.display()))?;
        let mut nl = route_socket()?;
        let mut peer = LinkMessage::default();
        peer.attributes.push(LinkAttribute::IfName(GUEST_IF.into()));
        peer.attributes
            .push(LinkAttribute::NetNsFd(nsf.as_fd().as_raw_fd()));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(host.into()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        nl.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| format!("veth {host}/{GUEST_IF}: {e}"))?;
        drop(nsf);
        let v = Veth { host: host.into() };
        add_address(&mut nl, host, HOST_ADDR)?;
        set_up(&mut nl, host)?;
        in_netns(&ns.path, || {
            let mut nl = route_socket()?;
            add_address(&mut nl, GUEST_IF, GUEST_ADDR)?;
            set_up(&mut nl, GUEST_IF)?;
            add_default_route(&mut nl, GUEST_IF, HOST_ADDR)
        })?;
        Ok(v)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        del_link(&self.host);
    }
}

/// A tap in the root namespace with [`HOST_ADDR`], for a bare VMM: the
/// descriptor is inherited by the VMM (not close-on-exec). The tap goes
/// with its last descriptor.
pub struct Tap {
    pub fd: OwnedFd,
}

impl Tap {
    pub fn create(name: &str) -> Result<Tap, String> {
        let (fd, name) = husk_sys::tun::open_tap(name).map_err(|e| format!("tap {name}: {e}"))?;
        // SAFETY: F_SETFD on a descriptor we own, clearing FD_CLOEXEC.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
            return Err(format!("tap {name}: {}", std::io::Error::last_os_error()));
        }
        let mut nl = route_socket()?;
        add_address(&mut nl, &name, HOST_ADDR)?;
        set_up(&mut nl, &name)?;
        Ok(Tap { fd })
    }
}

/// The arguments of `iptables` for the published-port rule: `op` is `-A`
/// (add) or `-D` (delete). Connections from the host to `host:port` go to
/// `guest:gport` (Docker's DNAT in `nat OUTPUT`, for the host's own
/// connections).
pub fn dnat_args(op: &str, host: Ipv4Addr, port: u16, guest: Ipv4Addr, gport: u16) -> Vec<String> {
    [
        "-w",
        "5",
        "-t",
        "nat",
        op,
        "OUTPUT",
        "-d",
        &format!("{host}/32"),
        "-p",
        "tcp",
        "--dport",
        &port.to_string(),
        "-j",
        "DNAT",
        "--to-destination",
        &format!("{guest}:{gport}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The published-port rule, deleted on drop.
pub struct Dnat {
    iptables: PathBuf,
    del: Vec<String>,
}

impl Dnat {
    pub fn add(
        iptables: &Path,
        host: Ipv4Addr,
        port: u16,
        guest: Ipv4Addr,
        gport: u16,
    ) -> Result<Dnat, String> {
        let add = dnat_args("-A", host, port, guest, gport);
        run(iptables, &add)?;
        Ok(Dnat {
            iptables: iptables.to_owned(),
            del: dnat_args("-D", host, port, guest, gport),
        })
    }
}

impl Drop for Dnat {
    fn drop(&mut self) {
        let _ = run(&self.iptables, &self.del);
    }
}

/// Runs `bin args` within 30 s; the error has its stderr.
pub fn run(bin: &Path, args: &[String]) -> Result<(), String> {
    crate::start::run_bounded(Command::new(bin).args(args), Duration::from_secs(30))
        .map_err(|e| format!("{} {}: {e}", bin.display(), args.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dnat_rule_is_dockers_and_deleted_by_the_same_spec() {
        let a = dnat_args("-A", HOST_ADDR, 18080, GUEST_ADDR, 8080).join(" ");
        assert_eq!(
            a,
            "-w 5 -t nat -A OUTPUT -d 10.201.0.1/32 -p tcp --dport 18080 -j DNAT --to-destination 10.201.0.2:8080"
        );
        let d = dnat_args("-D", HOST_ADDR, 18080, GUEST_ADDR, 8080).join(" ");
        assert_eq!(d, a.replace(" -A ", " -D "));
    }

    /// Namespaces, veth and tap against the kernel, all inside a network
    /// namespace this test unshares on its own thread (with a private
    /// mount namespace for /run/netns): never the host's.
    #[test]
    fn netns_veth_and_tap_come_and_go() {
        // SAFETY: geteuid(2) has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("netns_veth_and_tap_come_and_go: skipped: not root");
            return;
        }
        if !Path::new("/dev/net/tun").exists() {
            eprintln!("netns_veth_and_tap_come_and_go: skipped: no /dev/net/tun");
            return;
        }
        let r = std::thread::spawn(|| {
            // SAFETY: unshare(2) of this thread's network and mount
            // namespaces (mounts made private below, so none leak).
            if unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS | libc::CLONE_FS) }
                != 0
            {
                return Err(format!("unshare: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: MS_PRIVATE|MS_REC on /, no source, type or data.
            let rc = unsafe {
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_PRIVATE | libc::MS_REC,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(format!(
                    "make / private: {}",
                    std::io::Error::last_os_error()
                ));
            }
            std::fs::create_dir_all("/run/netns").map_err(|e| e.to_string())?;
            // SAFETY: a tmpfs over /run/netns in this private mount
            // namespace: the host's /run/netns is not written.
            let rc = unsafe {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/run/netns".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(format!(
                    "tmpfs on /run/netns: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(Some(kernel_side()))
        })
        .join()
        .unwrap();
        match r {
            Err(e) => eprintln!("netns_veth_and_tap_come_and_go: skipped: {e}"),
            Ok(Some(Err(e))) => panic!("{e}"),
            Ok(_) => {}
        }
    }

    /// Threads spawned from here inherit this thread's namespaces.
    fn kernel_side() -> Result<(), String> {
        let ns = NetNs::create("hb-test")?;
        let veth = Veth::create("hb-test-h", &ns)?;
        let in_ns = in_netns(&ns.path, || {
            let mut nl = route_socket()?;
            link_index(&mut nl, GUEST_IF)
        })?;
        assert!(in_ns > 0);
        let mut n = route_socket()?;
        assert!(link_index(&mut n, "hb-test-h").is_ok());
        assert!(
            link_index(&mut n, GUEST_IF).is_err(),
            "eth0 is in the netns only"
        );
        drop(veth);
        assert!(link_index(&mut n, "hb-test-h").is_err());
        let path = ns.path.clone();
        drop(ns);
        assert!(!path.exists());
        let tap = Tap::create("hb-test-t")?;
        assert!(link_index(&mut n, "hb-test-t").is_ok());
        drop(tap);
        assert!(link_index(&mut n, "hb-test-t").is_err());
        Ok(())
    }
}
