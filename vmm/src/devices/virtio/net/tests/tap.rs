//! The device on a real tap, in a network namespace the test's own thread
//! unshares (the host's namespace is never touched). Skipped, with the
//! reason printed, when not root or without /dev/net/tun.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};

use husk_sys::tun::{
    open_tap, IFF_NO_PI, IFF_TAP, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN,
};

use super::super::NetError;
use super::*;

pub(super) const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub(super) const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

/// Runs `f` on a thread in a fresh network namespace; prints why and
/// returns if that cannot be had.
pub(super) fn in_netns(what: &str, f: impl FnOnce() + Send + 'static) {
    let r = std::thread::spawn(move || {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".to_string());
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            return Err("no /dev/net/tun".to_string());
        }
        // SAFETY: unshare(2) with a flag; it affects only this thread.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!("unshare: {}", std::io::Error::last_os_error()));
        }
        f();
        Ok(())
    })
    .join();
    match r {
        Ok(Ok(())) => {}
        Ok(Err(why)) => eprintln!("{what}: skipped: {why}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// `struct ifreq` with its union as raw bytes.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> IfReq {
        let mut r = IfReq {
            name: [0; 16],
            data: [0; 24],
        };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        r
    }

    fn inet(name: &str, ip: Ipv4Addr) -> IfReq {
        let mut r = IfReq::new(name);
        let family = u16::try_from(libc::AF_INET).unwrap();
        r.data[..2].copy_from_slice(&family.to_ne_bytes());
        r.data[4..8].copy_from_slice(&ip.octets());
        r
    }
}

/// One socket ioctl taking a `struct ifreq`.
fn ifreq_ioctl(sock: &UdpSocket, req: libc::c_ulong, r: &mut IfReq) {
    // SAFETY: the request reads or writes one `struct ifreq` (40 bytes),
    // which `r` is.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req, std::ptr::from_mut(r)) };
    assert_eq!(rc, 0, "ioctl {req:#x}: {}", std::io::Error::last_os_error());
}

/// Gives tap `name` the address 10.99.0.1/24 and brings it up.
pub(super) fn configure(name: &str) {
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    ifreq_ioctl(&sock, libc::SIOCSIFADDR, &mut IfReq::inet(name, HOST_IP));
    let mask = Ipv4Addr::new(255, 255, 255, 0);
    ifreq_ioctl(&sock, libc::SIOCSIFNETMASK, &mut IfReq::inet(name, mask));
    let mut r = IfReq::new(name);
    ifreq_ioctl(&sock, libc::SIOCGIFFLAGS, &mut r);
    let up = i16::try_from(libc::IFF_UP).unwrap();
    let flags = i16::from_ne_bytes([r.data[0], r.data[1]]) | up;
    r.data[..2].copy_from_slice(&flags.to_ne_bytes());
    ifreq_ioctl(&sock, libc::SIOCSIFFLAGS, &mut r);
}

/// A tun descriptor attached with `flags` (TUNSETIFF), for taps of the
/// wrong kind.
fn open_with_flags(name: &str, flags: u16) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap();
    let mut r = IfReq::new(name);
    r.data[..2].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF (_IOW('T', 202, int)) reads and writes one
    // `struct ifreq`, which `r` is.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), 0x4004_54ca, std::ptr::from_mut(&mut r)) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    f
}

#[test]
fn what_is_not_a_suitable_tap_is_refused_naming_the_fd() {
    let mac = super::super::MacAddr(MAC);
    let e = Net::from_tap_fd(1_000_000, mac, None).unwrap_err();
    assert!(matches!(e, NetError::NotOpen { fd: 1_000_000 }), "{e}");
    assert_eq!(
        e.to_string(),
        "fd 1000000 is not open (pass the tap descriptor without close-on-exec)"
    );
    let null = std::fs::File::open("/dev/null").unwrap();
    let fd = null.as_raw_fd();
    let e = Net::from_tap_fd(fd, mac, None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("fd {fd} is not a tap descriptor (TUNGETIFF: ")),
        "{e}"
    );
    // /dev/null is still open: a refused descriptor is left alone.
    assert!(null.metadata().is_ok());
    in_netns("tap flags", move || {
        let wrong = open_with_flags("husknet9", IFF_TAP | IFF_NO_PI);
        let fd = wrong.as_raw_fd();
        let e = Net::from_tap_fd(fd, mac, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "fd {fd}: tap husknet9 has flags 0x1002, not IFF_TAP | IFF_NO_PI | IFF_VNET_HDR"
            )
        );
        let (tap, _) = open_tap("husknet0").unwrap();
        let net = Net::from_tap_fd(tap.as_raw_fd(), mac, Some(1500)).unwrap();
        drop(tap);
        // The device's own duplicate keeps the tap.
        assert_eq!(
            husk_sys::tun::tap_info(net.tap.as_fd()).unwrap().0,
            "husknet0"
        );
        let net = Net::from_tap_name("husknet1", mac, None).unwrap();
        assert_eq!(
            husk_sys::tun::tap_info(net.tap.as_fd()).unwrap().0,
            "husknet1"
        );
        let e = Net::from_tap_name("a-name-too-long-", mac, None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot open tap a-name-too-long-: "),
            "{e}"
        );
    });
}

/// The RFC 1071 checksum of `b`.
fn ip_checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap()
}

/// An Ethernet/IPv4/UDP frame from the guest to `dst_mac`, HOST_IP:`port`,
/// with a partial checksum for the tap to finish.
pub(super) fn udp_frame(dst_mac: &[u8], port: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HDR_LEN];
    f[0] = 1; // NEEDS_CSUM
    f[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start: the UDP header
    f[8..10].copy_from_slice(&6u16.to_le_bytes()); // csum_offset: its checksum
    f.extend_from_slice(dst_mac);
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let udp_len = u16::try_from(8 + payload.len()).unwrap();
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(udp_len + 20).to_be_bytes());
    ip.extend_from_slice(&GUEST_IP.octets());
    ip.extend_from_slice(&HOST_IP.octets());
    let sum = ip_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&4000u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    // The pseudo-header sum, not complemented, as a partial checksum has.
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&GUEST_IP.octets());
    pseudo.extend_from_slice(&HOST_IP.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&(!ip_checksum(&pseudo)).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A frame each way through a real tap: the kernel's ARP request for the
/// guest reaches a guest rx buffer, and a guest UDP datagram with a
/// partial checksum (finished by the tap, as acked) reaches a host socket.
/// Activation gives the tap the acked offloads, and fewer after a reset.
#[test]
fn frames_cross_a_real_tap_both_ways() {
    in_netns("a real tap", || {
        let (tap, _) = open_tap("husknet0").unwrap();
        let net = Net::from_tap_fd(tap.as_raw_fd(), super::super::MacAddr(MAC), None).unwrap();
        let stats = net.counters();
        let mem = guest_memory();
        let mut g = G {
            drv: Driver::new(&mem, Box::new(net)),
            host: socket_pair().1,
            stats,
            used: VecDeque::new(),
        };
        assert!(g.drv.activate(ALL));
        let all = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
        let offloads = |g: &G| {
            g.stats
                .tap_offloads
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!(offloads(&g), all, "TUNSETOFFLOAD refused");
        g.post_rx(64, RX_BUF);
        exchange_with_host(&mut g, "husknet0");
        assert_eq!(count(&g.stats.tx_errors), 0);
        // A driver without offloads: the tap is told so.
        assert!(g.drv.reset_and_activate(1 << VIRTIO_NET_F_MRG_RXBUF));
        assert_eq!(offloads(&g), 0);
        drop(tap);
    });
}

/// Over the tap `name` (configured here, the guest's rx buffers posted):
/// a host datagram to the guest's address makes the host ARP for it, and
/// that request reaches the guest; the guest's UDP datagram to the host,
/// sent to the MAC it came from, reaches a host socket from the guest's
/// address.
pub(super) fn exchange_with_host(g: &mut G, name: &str) {
    configure(name);
    let host = UdpSocket::bind((HOST_IP, 0)).unwrap();
    host.send_to(b"who is there", (GUEST_IP, 9)).unwrap();
    // IPv6 router solicitations and the like may come first.
    let end = Instant::now() + Duration::from_secs(5);
    let arp = loop {
        let (f, _) = g.guest_recv();
        let eth = &f[HDR_LEN..];
        if eth[12..14] == [0x08, 0x06] && eth[38..42] == GUEST_IP.octets() {
            break f;
        }
        assert!(Instant::now() < end, "no ARP request for the guest");
    };
    let tap_mac = arp[HDR_LEN + 6..HDR_LEN + 12].to_vec();
    let port = host.local_addr().unwrap().port();
    g.guest_send(&udp_frame(&tap_mac, port, b"hello from the guest"), 4096);
    host.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let mut got = None;
    assert!(
        g.drv.run_until(5, |_| {
            got = host.recv_from(&mut buf).ok();
            got.is_some()
        }),
        "no datagram from the guest (tx errors: {})",
        g.stats.tx_errors.load(std::sync::atomic::Ordering::Relaxed)
    );
    let (n, from) = got.unwrap();
    assert_eq!(&buf[..n], b"hello from the guest");
    assert_eq!(from.ip(), GUEST_IP);
}
