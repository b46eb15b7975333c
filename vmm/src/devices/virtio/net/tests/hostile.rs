//! A misbehaving guest: malformed chains on both queues, indirect loops,
//! an avail index far past the ring, an rx ring left empty while the host
//! floods, resets mid-traffic, and random queue contents.

use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use vm_memory::Bytes;

use super::*;
use crate::devices::virtio::test_utils::MEM_SIZE;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
const FAR: GuestAddress = GuestAddress(0xffff_ffff_0000);

/// Makes descriptor `head` of queue `q` available (raw, as a hostile
/// driver would), without a kick.
fn push_head(g: &G, q: usize, head: u16) {
    let avail = g.drv.avail_addr(q);
    let idx = u16::from_le(
        g.drv
            .mem
            .read_obj::<u16>(GuestAddress(avail.0 + 2))
            .unwrap(),
    );
    let slot = GuestAddress(avail.0 + 4 + u64::from(idx % 256) * 2);
    g.drv.mem.write_obj(head.to_le(), slot).unwrap();
    g.drv
        .mem
        .write_obj(idx.wrapping_add(1).to_le(), GuestAddress(avail.0 + 2))
        .unwrap();
}

fn avail_idx(g: &G, q: usize) -> u16 {
    let avail = g.drv.avail_addr(q);
    u16::from_le(
        g.drv
            .mem
            .read_obj::<u16>(GuestAddress(avail.0 + 2))
            .unwrap(),
    )
}

#[test]
fn malformed_tx_chains_are_returned_unused_and_counted() {
    let mem = guest_memory();
    let mut g = G::new(&mem, ALL);
    let a = g.drv.alloc(40_000);
    let b = g.drv.alloc(40_000);
    g.drv.write_mem(a, &plain(200, 1));
    let end = GuestAddress(MEM_SIZE as u64 - 10);
    let bad: [&[(GuestAddress, u32, bool)]; 7] = [
        &[(a, 100, true)],
        &[(a, 50, false), (b, 50, true)],
        &[(a, 0, false)],
        &[(a, 8, false)],
        &[(a, 40_000, false), (b, 40_000, false)],
        &[(FAR, 100, false)],
        &[(end, 100, false)],
    ];
    for chain in bad {
        g.drv.add_chain(TX, chain);
    }
    g.drv.kick(TX);
    let mut used = Vec::new();
    assert!(g.drv.run_until(5, |d| {
        used.extend(d.take_used(TX));
        used.len() == 7
    }));
    assert!(used.iter().all(|&(_, len)| len == 0), "{used:?}");
    assert_eq!(count(&g.stats.tx_bad_chains), 7);
    assert!(g.try_host_recv(Duration::from_millis(20)).is_none());
    let f = plain(200, 2);
    g.guest_send(&f, 64);
    assert_eq!(g.host_recv(), f);
}

#[test]
fn malformed_rx_chains_are_returned_empty_and_the_frame_goes_on() {
    let mem = guest_memory();
    let mut g = G::new(&mem, 1 << VIRTIO_NET_F_MRG_RXBUF);
    let a = g.drv.alloc(RX_BUF);
    let bad: [&[(GuestAddress, u32, bool)]; 4] = [
        &[(a, RX_BUF, false)],
        &[(a, 8, true)],
        &[(FAR, RX_BUF, true)],
        &[(a, 0, true)],
    ];
    let heads: Vec<u16> = bad.iter().map(|c| g.drv.add_chain(RX, c)).collect();
    g.post_rx(1, RX_BUF);
    let f = plain(100, 1);
    g.host_send(&f);
    let used = g.used_rx(5);
    assert_eq!(
        used[..4],
        heads.iter().map(|&h| (h, 0)).collect::<Vec<_>>()[..]
    );
    assert_eq!(g.rx_bytes(used[4]), with_num_buffers(&f, 1));
    assert_eq!(count(&g.stats.rx_bad_chains), 4);

    // A bad chain in the middle of a merged frame: the buffers gathered
    // before it come back empty with it, the frame lands after.
    let good = g.drv.alloc(RX_BUF);
    let first = g.drv.add_chain(RX, &[(good, RX_BUF, true)]);
    let broken = g.drv.add_chain(RX, &[(FAR, RX_BUF, true)]);
    g.post_rx(20, RX_BUF);
    let big = plain(MAX_FRAME - HDR_LEN, 2);
    g.host_send(&big);
    let used = g.used_rx(2);
    assert_eq!(used, [(first, 0), (broken, 0)]);
    let n = MAX_FRAME.div_ceil(RX_BUF as usize);
    let all = g.used_rx(n);
    let mut got = Vec::new();
    for &u in &all {
        got.extend(g.rx_bytes(u));
    }
    assert_eq!(got, with_num_buffers(&big, u16::try_from(n).unwrap()));
}

#[test]
fn indirect_loops_and_nested_tables_end() {
    within(20, "indirect loops", || {
        let mem = guest_memory();
        let mut g = G::new(&mem, ALL);
        let data = g.drv.alloc(256);
        g.drv.write_mem(data, &plain(200, 1));
        for (q, write) in [(TX, 0), (RX, DESC_F_WRITE)] {
            // An indirect table whose entries point at each other in a
            // ring, and one that points at another indirect table.
            let table = g.drv.alloc(64);
            for i in 0..4u16 {
                let d = Descriptor::new(data.0, 64, DESC_F_NEXT | write, (i + 1) % 4);
                let raw = RawDescriptor::from(d);
                g.drv
                    .mem
                    .write_obj(raw, GuestAddress(table.0 + u64::from(i) * 16))
                    .unwrap();
            }
            let nested = g.drv.alloc(16);
            let d = Descriptor::new(table.0, 64, DESC_F_INDIRECT, 0);
            g.drv.mem.write_obj(RawDescriptor::from(d), nested).unwrap();
            let descs = &g.drv.queues[q].desc_table();
            for (i, (addr, len)) in [(table, 64), (nested, 16), (table, 0), (table, 60)]
                .into_iter()
                .enumerate()
            {
                let i = u16::try_from(200 + i).unwrap();
                let d = Descriptor::new(addr.0, len, DESC_F_INDIRECT, 0);
                descs.store(i, RawDescriptor::from(d)).unwrap();
            }
            // And a plain descriptor loop in the table itself.
            descs
                .store(
                    210,
                    RawDescriptor::from(Descriptor::new(data.0, 64, DESC_F_NEXT | write, 211)),
                )
                .unwrap();
            descs
                .store(
                    211,
                    RawDescriptor::from(Descriptor::new(data.0, 64, DESC_F_NEXT | write, 210)),
                )
                .unwrap();
            for head in [200, 201, 202, 203, 210] {
                push_head(&g, q, head);
            }
            g.drv.kick(q);
        }
        g.host_send(&plain(100, 2));
        let mut used = (0, 0);
        assert!(g.drv.run_until(5, |d| {
            used.0 += d.take_used(TX).len();
            used.1 += d.take_used(RX).len();
            used.0 == 5 && used.1 >= 1
        }));
        // Still serving: reset, and both ways work.
        assert!(g.drv.reset_and_activate(ALL));
        g.post_rx(4, RX_BUF);
        let f = plain(300, 3);
        g.host_send(&f);
        let mut got = g.guest_recv().0;
        while got != with_num_buffers(&f, 1) {
            got = g.guest_recv().0;
        }
        g.guest_send(&f, 100);
        while g.host_recv() != f {}
    });
}

#[test]
fn an_avail_index_far_past_the_ring_stalls_nothing() {
    within(20, "avail index far past the ring", || {
        let mem = guest_memory();
        let mut g = G::new(&mem, ALL);
        for q in [RX, TX] {
            let avail = g.drv.avail_addr(q);
            let idx = avail_idx(&g, q).wrapping_add(1000);
            g.drv
                .mem
                .write_obj(idx.to_le(), GuestAddress(avail.0 + 2))
                .unwrap();
            g.drv.kick(q);
        }
        for i in 0..50 {
            g.host_send(&plain(100, i));
        }
        g.drv.poll(10);
        assert!(g.drv.take_used(TX).is_empty() && g.drv.take_used(RX).is_empty());
        // The event loop is idle: the tap is not polled while rx waits.
        for _ in 0..5 {
            g.drv.poll(0);
        }
        assert_eq!(g.drv.em.run_with_timeout(50).unwrap(), 0);
        assert!(g.drv.reset_and_activate(ALL));
        g.post_rx(8, RX_BUF);
        let f = plain(64, 999);
        g.guest_send(&f, 64);
        assert_eq!(g.host_recv(), f);
        assert_eq!(g.guest_recv().0.len(), HDR_LEN + 100);
    });
}

/// The host floods while the guest posts no rx buffers: the device holds
/// one frame, stops polling the tap (the event loop goes idle instead of
/// spinning), keeps serving tx, and delivers every frame, in order, once
/// buffers come.
#[test]
fn an_empty_rx_ring_under_a_flood_holds_one_frame_and_recovers() {
    within(30, "rx flood with an empty ring", || {
        let mem = guest_memory();
        let mut g = G::new(&mem, ALL);
        let mut sent = Vec::new();
        for i in 0..10_000 {
            let f = plain(1000, i);
            match g.host.write(&f) {
                Ok(n) => assert_eq!(n, f.len()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("host write: {e}"),
            }
            sent.push(f);
            if i % 64 == 0 {
                g.drv.poll(0);
            }
        }
        assert!(sent.len() > 20, "only {} frames fit the socket", sent.len());
        for _ in 0..10 {
            g.drv.poll(5);
        }
        assert_eq!(
            g.drv.em.run_with_timeout(100).unwrap(),
            0,
            "busy event loop"
        );
        assert_eq!(count(&g.stats.rx_frames), 0);
        let f = plain(500, 77);
        g.guest_send(&f, 4096);
        assert_eq!(g.host_recv(), f, "tx stalled behind a blocked rx");
        g.post_rx(64, 2048);
        for (i, want) in sent.iter().enumerate() {
            let (got, n) = g.guest_recv();
            assert_eq!((got, n), (with_num_buffers(want, 1), 1), "frame {i}");
        }
        assert_eq!(count(&g.stats.rx_frames), sent.len() as u64);
        assert_eq!(
            count(&g.stats.rx_too_big) + count(&g.stats.rx_bad_frames),
            0
        );
    });
}

/// A reset while frames flow both ways, then a bring-up with fewer
/// offloads: nothing from before reaches the new driver with an offload it
/// did not ack, and both directions work.
#[test]
fn a_reset_mid_traffic_then_reactivation() {
    within(30, "reset mid-traffic", || {
        let mem = guest_memory();
        let mut g = G::new(&mem, ALL);
        g.post_rx(4, RX_BUF);
        let tcp4 = u8::try_from(VIRTIO_NET_HDR_GSO_TCPV4).unwrap();
        for i in 0..40 {
            let _ = g.host.write(&frame(1, tcp4, 20_000, i));
        }
        for i in 0..20 {
            g.guest_send(&plain(1000, i), 512);
        }
        g.drv.poll(0);
        // Mid-way: reset, and come back without TSO or checksum offload.
        let features = 1 << VIRTIO_NET_F_MRG_RXBUF;
        assert!(g.drv.reset_and_activate(features));
        g.post_rx(64, RX_BUF);
        let marker = plain(100, 1234);
        g.host_send(&marker);
        loop {
            let (got, _) = g.guest_recv();
            assert_eq!(got[1], 0, "a TSO frame for a driver without TSO");
            assert_eq!(got[0], 0, "a partial checksum without GUEST_CSUM");
            if got == with_num_buffers(&marker, 1) {
                break;
            }
        }
        let f = plain(100, 4321);
        g.guest_send(&f, 4096);
        while g.host_recv() != f {}
    });
}

/// A hostile guest at random: 1500 rounds of random descriptor tables and
/// avail rings on both queues, well-formed tx chains with random headers,
/// while the host sends random frames. Nothing panics, no kick stalls (60
/// s for the whole run), and every 50 rounds a reset and a clean bring-up
/// with random features give a device that carries frames both ways.
#[test]
fn hostile_queue_contents_never_stall_or_break_the_device() {
    within(60, "virtio-net under hostile queues", || {
        let mem = guest_memory();
        let mut g = G::new(&mem, ALL);
        let mut rng = Rng(0x6875_736b_4e45_5401);
        let rx_bufs: Vec<GuestAddress> = (0..16).map(|_| g.drv.alloc(RX_BUF)).collect();
        let tx_buf = g.drv.alloc(u32::try_from(MAX_FRAME).unwrap());
        let restart = |g: &mut G, rng: &mut Rng, round: usize| {
            let features = ALL & rng.next();
            assert!(g.drv.reset_and_activate(features), "bring-up after {round}");
            for &a in &rx_bufs {
                g.drv.add_chain(RX, &[(a, RX_BUF, true)]);
            }
            g.drv.kick(RX);
            features
        };
        restart(&mut g, &mut rng, 0);
        let mut answered = 0;
        for round in 0..1500 {
            for _ in 0..rng.below(4) {
                // Not empty: an empty message is the end of the "tap".
                let n = usize_from(rng.below(3000)) + 1;
                let mut f = rng.bytes(n);
                if f.len() > 2 {
                    // Mostly plain frames, some with offloads, some junk.
                    match rng.below(8) {
                        0..=4 => (f[0], f[1]) = (0, 0),
                        5 | 6 => {
                            f[0] &= 3;
                            f[1] = [0, 1, 3, 4, 0x81][usize_from(rng.below(5))];
                        }
                        _ => {}
                    }
                }
                let _ = g.host.write(&f);
            }
            for _ in 0..rng.below(4) {
                let len = usize_from(rng.below(4000));
                let mut f = rng.bytes(len);
                if rng.below(4) != 0 && f.len() > 2 {
                    f[0] = 0;
                    f[1] = 0;
                }
                g.drv.write_mem(tx_buf, &f);
                let len = u32::try_from(len).unwrap();
                g.drv.add_chain(TX, &[(tx_buf, len, rng.below(16) == 0)]);
            }
            let q = usize_from(rng.below(2));
            if rng.below(2) == 0 {
                g.drv.scribble(q, &mut rng);
            }
            let used = |g: &G| [RX, TX].map(|q| g.drv.queues[q].used().idx().load());
            let before = used(&g);
            g.drv.kick(q);
            g.drv.kick(TX);
            g.drv.poll(0);
            while g.try_host_recv(Duration::ZERO).is_some() {}
            if used(&g) != before {
                answered += 1;
            }
            if round % 50 == 49 {
                let features = restart(&mut g, &mut rng, round);
                check_both_ways(&mut g, features, round);
                restart(&mut g, &mut rng, round);
            } else if used(&g) == before && rng.below(4) == 0 {
                restart(&mut g, &mut rng, round);
            }
        }
        assert!(
            answered > 900,
            "only {answered} of 1500 rounds reached the device"
        );
    });
}

/// A frame each way after a clean bring-up with `features` (frames the
/// host queued before are skipped).
fn check_both_ways(g: &mut G, features: u64, round: usize) {
    let marker = plain(200, 0xfeed);
    g.host_send(&marker);
    let want = with_num_buffers(&marker, 1);
    let mut seen = 0;
    loop {
        let (got, _) = g.guest_recv();
        if got == want {
            break;
        }
        seen += 1;
        assert!(seen < 10_000, "no marker after round {round}");
    }
    let f = plain(300, 0xbeef);
    g.guest_send(&f, 128);
    let end = Instant::now() + Duration::from_secs(5);
    while g.host_recv() != f {
        assert!(
            Instant::now() < end,
            "tx after round {round} (features {features:#x})"
        );
    }
}
