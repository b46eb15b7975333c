//! A well-behaved guest: config space, features, frames both ways,
//! mergeable buffers, offload negotiation.

use super::super::features::{effective, offered, tun_offloads};
use super::*;
use husk_sys::tun::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

#[test]
fn config_space_and_features() {
    let mem = guest_memory();
    let (dev, _host) = socket_pair();
    let drv = Driver::new(
        &mem,
        Box::new(Net::with_socket(dev, super::super::MacAddr(MAC), Some(9000)).unwrap()),
    );
    assert_eq!(drv.read32(0x8), TYPE_NET);
    assert_eq!(drv.read_config(0, 6), MAC);
    assert_eq!(drv.read_config(10, 2), 9000u16.to_le_bytes());
    // Byte reads, as Linux reads the MAC.
    assert_eq!(drv.read_config(3, 1), [MAC[3]]);
    assert_eq!(drv.read_config(12, 4), [0; 4], "past the end reads as zero");
    let f = drv.device_features();
    for b in [
        VIRTIO_F_VERSION_1,
        VIRTIO_RING_F_INDIRECT_DESC,
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_MTU,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_NET_F_MRG_RXBUF,
    ] {
        assert_ne!(f & bit(b), 0, "feature {b} not offered");
    }
    for b in [
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_NET_F_CTRL_VQ,
        VIRTIO_NET_F_MQ,
        VIRTIO_NET_F_GUEST_UFO,
        VIRTIO_NET_F_HOST_UFO,
        VIRTIO_NET_F_STATUS,
    ] {
        assert_eq!(f & bit(b), 0, "feature {b} offered");
    }
    assert_eq!(offered(false) & bit(VIRTIO_NET_F_MTU), 0);
    let (dev, _host) = socket_pair();
    let drv = Driver::new(
        &mem,
        Box::new(Net::with_socket(dev, super::super::MacAddr(MAC), None).unwrap()),
    );
    assert_eq!(drv.device_features() & bit(VIRTIO_NET_F_MTU), 0);
    assert_eq!(drv.read_config(10, 2), [0, 0]);
}

#[test]
fn a_host_frame_reaches_one_rx_buffer() {
    let mem = guest_memory();
    for features in [ALL, 1 << VIRTIO_NET_F_MAC] {
        let mut g = G::new(&mem, features);
        g.post_rx(4, 2048);
        let f = plain(100, 1);
        g.host_send(&f);
        let used = g.used_rx(1);
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].1, 112);
        assert_eq!(g.rx_bytes(used[0]), with_num_buffers(&f, 1));
        assert_eq!(count(&g.stats.rx_frames), 1);
        assert_eq!(count(&g.stats.rx_bytes), 112);
    }
}

#[test]
fn a_64k_frame_spreads_over_several_buffers_with_mrg_rxbuf() {
    let mem = guest_memory();
    let mut g = G::new(&mem, ALL);
    g.post_rx(32, RX_BUF);
    let gso = u8::try_from(VIRTIO_NET_HDR_GSO_TCPV4).unwrap();
    let big = frame(1, gso, MAX_FRAME - HDR_LEN, 7);
    g.host_send(&big);
    let (got, n) = g.guest_recv();
    let want_n = MAX_FRAME.div_ceil(RX_BUF as usize);
    assert_eq!(n, want_n);
    assert_eq!(got, with_num_buffers(&big, u16::try_from(want_n).unwrap()));
    // Small frames after it each take one buffer.
    for seed in 0..3 {
        let f = plain(60, seed);
        g.host_send(&f);
        assert_eq!(g.guest_recv(), (with_num_buffers(&f, 1), 1));
    }
}

#[test]
fn without_mrg_rxbuf_a_frame_must_fit_one_chain() {
    let mem = guest_memory();
    let mut g = G::new(&mem, 1 << VIRTIO_NET_F_MAC);
    g.post_rx(1, 1526);
    g.host_send(&plain(4000, 1));
    assert!(g.drv.run_until(5, |_| count(&g.stats.rx_too_big) == 1));
    assert!(
        g.drv.take_used(RX).is_empty(),
        "the buffer stays with the device"
    );
    // The next frame that fits takes that same buffer.
    let f = plain(1514, 2);
    g.host_send(&f);
    let used = g.used_rx(1);
    assert_eq!(g.rx_bytes(used[0]), with_num_buffers(&f, 1));
    // One chain of many descriptors (Linux's "big packets") holds 64 KiB.
    let pages: Vec<_> = (0..17)
        .map(|_| (g.drv.alloc(RX_BUF), RX_BUF, true))
        .collect();
    g.drv.add_chain(RX, &pages);
    g.drv.kick(RX);
    let big = plain(MAX_FRAME - HDR_LEN, 3);
    g.host_send(&big);
    let used = g.used_rx(1);
    assert_eq!(used[0].1, u32::try_from(MAX_FRAME).unwrap());
    assert_eq!(g.rx_bytes(used[0]), with_num_buffers(&big, 1));
    assert_eq!(count(&g.stats.rx_frames), 2);
}

#[test]
fn a_guest_tx_chain_reaches_the_host_intact() {
    let mem = guest_memory();
    let mut g = G::new(&mem, ALL);
    for (len, piece) in [(14, 14), (1500, 1500), (1500, 100), (9000, 4096)] {
        let f = plain(len, len as u64);
        g.guest_send(&f, piece);
        assert_eq!(g.host_recv(), f, "frame of {len} in pieces of {piece}");
    }
    // A TSO frame with a partial checksum: acked, so it goes as it is.
    let gso = u8::try_from(VIRTIO_NET_HDR_GSO_TCPV6).unwrap();
    let f = frame(1, gso, MAX_FRAME - HDR_LEN, 9);
    g.guest_send(&f, 4096);
    assert_eq!(g.host_recv(), f);
    assert!(g.drv.run_until(5, |d| d.take_used(TX).len() == 5));
    assert_eq!(count(&g.stats.tx_frames), 5);
    assert_eq!(count(&g.stats.tx_bad_chains), 0);
}

#[test]
fn offloads_follow_the_acked_features() {
    let csum = bit(VIRTIO_NET_F_GUEST_CSUM);
    let tso4 = bit(VIRTIO_NET_F_GUEST_TSO4);
    let tso6 = bit(VIRTIO_NET_F_GUEST_TSO6);
    let ecn = bit(VIRTIO_NET_F_GUEST_ECN);
    assert_eq!(tun_offloads(effective(0)), 0);
    assert_eq!(tun_offloads(effective(csum)), TUN_F_CSUM);
    assert_eq!(
        tun_offloads(effective(csum | tso4 | tso6 | ecn)),
        TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
    );
    // Prerequisites missing: TSO without checksums, ECN without TSO.
    assert_eq!(effective(tso4 | tso6 | ecn), 0);
    assert_eq!(tun_offloads(effective(csum | ecn)), TUN_F_CSUM);
    let host = bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_ECN);
    assert_eq!(effective(host), 0);
    assert_eq!(
        effective(host | bit(VIRTIO_NET_F_CSUM)),
        host | bit(VIRTIO_NET_F_CSUM)
    );
    // Activation hands the tap what the guest acked.
    let mem = guest_memory();
    let g = G::new(&mem, ALL);
    assert_eq!(
        g.stats
            .tap_offloads
            .load(std::sync::atomic::Ordering::Relaxed),
        TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
    );
    let mut g = G::new(&mem, csum | tso4);
    assert_eq!(
        g.stats
            .tap_offloads
            .load(std::sync::atomic::Ordering::Relaxed),
        TUN_F_CSUM | TUN_F_TSO4
    );
    assert!(g.drv.reset_and_activate(0));
    assert_eq!(
        g.stats
            .tap_offloads
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn frames_with_offloads_not_acked_are_dropped() {
    let mem = guest_memory();
    let features = (1 << VIRTIO_NET_F_MRG_RXBUF) | (1 << VIRTIO_NET_F_GUEST_CSUM);
    let mut g = G::new(&mem, features);
    g.post_rx(8, RX_BUF);
    let tcp4 = u8::try_from(VIRTIO_NET_HDR_GSO_TCPV4).unwrap();
    let udp = u8::try_from(VIRTIO_NET_HDR_GSO_UDP).unwrap();
    g.host_send(&frame(1, tcp4, 3000, 1)); // TSO4 not acked
    g.host_send(&frame(1, udp, 3000, 2)); // UFO never offered
    g.host_send(&plain(5, 3)); // shorter than an Ethernet header
    let ok = frame(1, 0, 100, 4); // a partial checksum: acked
    g.host_send(&ok);
    assert_eq!(g.guest_recv(), (with_num_buffers(&ok, 1), 1));
    assert_eq!(count(&g.stats.rx_bad_frames), 3);

    // Without GUEST_CSUM: a partial checksum is refused, DATA_VALID cleared.
    let mut g = G::new(&mem, 1 << VIRTIO_NET_F_MRG_RXBUF);
    g.post_rx(8, RX_BUF);
    g.host_send(&frame(1, 0, 100, 5));
    let valid = frame(2, 0, 100, 6);
    g.host_send(&valid);
    assert_eq!(
        g.guest_recv(),
        (with_num_buffers(&frame(0, 0, 100, 6), 1), 1)
    );
    assert_eq!(count(&g.stats.rx_bad_frames), 1);

    // tx: a TSO frame or a partial checksum the device did not agree to.
    g.guest_send(&frame(0, tcp4, 3000, 7), 4096);
    g.guest_send(&frame(1, 0, 100, 8), 4096);
    let f = plain(100, 9);
    g.guest_send(&f, 4096);
    assert_eq!(g.host_recv(), f);
    assert!(g.try_host_recv(Duration::from_millis(50)).is_none());
    assert_eq!(count(&g.stats.tx_bad_chains), 2);
}

#[test]
fn tx_to_a_full_tap_is_dropped_and_counted() {
    within(30, "tx to a full tap", || {
        let mem = guest_memory();
        let mut g = G::new(&mem, ALL);
        let f = plain(60_000, 1);
        let a = g.drv.alloc(u32::try_from(f.len()).unwrap());
        g.drv.write_mem(a, &f);
        let len = u32::try_from(f.len()).unwrap();
        // The host never reads: the socket fills, then frames are dropped.
        let mut used = 0;
        for round in 1..=64 {
            for _ in 0..16 {
                g.drv.add_chain(TX, &[(a, len, false)]);
            }
            g.drv.kick(TX);
            assert!(g.drv.run_until(5, |d| {
                used += d.take_used(TX).len();
                used == 16 * round
            }));
        }
        assert_eq!(used, 1024, "every chain comes back");
        let sent = count(&g.stats.tx_frames);
        assert!(sent > 0 && count(&g.stats.tx_dropped) == 1024 - sent);
        // Once the host reads, frames flow again.
        while g.try_host_recv(Duration::ZERO).is_some() {}
        g.guest_send(&plain(100, 2), 4096);
        assert_eq!(g.host_recv(), plain(100, 2));
    });
}
