//! A misbehaving guest: bad packets, unusable buffers, random queues.

use super::*;

#[test]
fn packets_for_unknown_connections_get_rst_and_bad_packets_are_dropped() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut g = G::new(&mem, Vsock::new(GUEST_CID, &path).unwrap());
    g.post_rx(8);
    g.send(hdr(OP_RW, 1, 2), b"x");
    let (h, _) = g.packet();
    assert_eq!((h.op, h.src_port, h.dst_port), (OP_RST, 2, 1));
    // No RST in answer to an RST.
    g.send(hdr(OP_RST, 1, 2), &[]);
    // Spoofed source CID, wrong destination, wrong type: dropped silently.
    let mut h = hdr(OP_REQUEST, 1, 2);
    h.src_cid = 7;
    g.send(h, &[]);
    let mut h = hdr(OP_REQUEST, 1, 2);
    h.dst_cid = 1;
    g.send(h, &[]);
    let mut h = hdr(OP_REQUEST, 1, 2);
    h.type_ = 2;
    g.send(h, &[]);
    // Header claims more payload than the chain has.
    let mut h = hdr(OP_RW, 1, 2);
    h.len = 100;
    let a = g.tx_alloc(HDR_SIZE as u64);
    g.drv.write_mem(a, &h.to_bytes());
    g.drv.add_chain(TX, &[(a, HDR_SIZE_U32, false)]);
    // Short chain, device-writable chain, chain outside memory.
    g.drv.add_chain(TX, &[(a, 10, false)]);
    g.drv.add_chain(TX, &[(a, 44, true)]);
    g.drv
        .add_chain(TX, &[(GuestAddress(0xffff_ffff_0000), 44, false)]);
    g.drv.kick(TX);
    assert!(g.drain(100).is_empty());
    let used = g.drv.take_used(TX);
    assert_eq!(used.len(), 9, "every tx chain is returned");
}

#[test]
fn unusable_rx_buffers_do_not_wedge_rx() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut g = G::new(&mem, Vsock::new(GUEST_CID, &path).unwrap());
    let small = g.drv.alloc(8);
    let ro = g.drv.alloc(RX_BUF);
    let small_head = g.drv.add_chain(RX, &[(small, 8, true)]);
    let ro_head = g.drv.add_chain(RX, &[(ro, RX_BUF, false)]);
    g.post_rx(1);
    g.send(hdr(OP_RW, 3, 4), b"y");
    assert!(g.drv.run_until(5, |d| d.take_used(TX).len() == 1));
    let mut used = Vec::new();
    assert!(g.drv.run_until(5, |d| {
        used.extend(d.take_used(RX));
        used.len() == 3
    }));
    assert_eq!(used[0], (small_head, 0));
    assert_eq!(used[1], (ro_head, 0));
    let bufs = g.drv.chains[&(RX, used[2].0)].clone();
    let h = Header::from_bytes(
        g.drv
            .read_mem(bufs[0].0, HDR_SIZE)
            .as_slice()
            .try_into()
            .unwrap(),
    );
    assert_eq!((h.op, h.src_port, h.dst_port), (OP_RST, 4, 3));
}

/// A hostile guest at random, with a host connection open: 1500 rounds of
/// well-formed tx chains carrying random headers (any op, type, ports,
/// flags, credit; lengths that lie), half of them for the live connection,
/// and random descriptor tables and avail rings on all three queues, while
/// the host writes. Nothing panics, no kick stalls (the whole run must end
/// within 60 s), and every 50 rounds a device reset and a clean bring-up
/// give a device that carries a new host connection both ways.
#[test]
fn hostile_queue_contents_never_stall_or_break_the_device() {
    within(60, "virtio-vsock under hostile queues", || {
        let mem = guest_memory();
        let (_dir, path) = tmp();
        let mut g = G::new(&mem, Vsock::new(GUEST_CID, &path).unwrap());
        let mut rng = Rng(0x6875_736b_50c4_0001);
        // A fresh bring-up with a live host connection on guest port 1024.
        let restart = |g: &mut G, round: usize| {
            assert!(g.drv.reset_and_activate(0), "bring-up after round {round}");
            g.pending.clear();
            g.post_rx(8);
            let (h, hp) = g.host_connect(&path, 1024, b"");
            h.set_nonblocking(true).unwrap();
            (h, hp)
        };
        let (mut host, mut hp) = restart(&mut g, 0);
        // Rounds in which the device used anything: the junk reached its
        // packet handling, not just the queue's checks.
        let mut answered = 0;
        for round in 0..1500 {
            for _ in 0..rng.below(8) {
                let mut h = hdr(
                    low16(rng.below(9)),
                    low32(rng.below(2048)),
                    low32(rng.next()),
                );
                if rng.below(2) == 0 {
                    (h.src_port, h.dst_port) = (1024, hp);
                }
                if rng.below(8) == 0 {
                    h.type_ = low16(rng.next());
                    h.dst_cid = rng.next();
                }
                h.flags = low32(rng.next());
                h.buf_alloc = low32(rng.next());
                h.fwd_cnt = low32(rng.next());
                // Only RW carries a payload; other ops mostly come without.
                let n = if h.op == OP_RW || rng.below(4) == 0 {
                    usize_from(rng.below(300))
                } else {
                    0
                };
                let payload = rng.bytes(n);
                g.send(h, &payload);
            }
            let q = usize_from(rng.below(3));
            if rng.below(2) == 0 {
                g.drv.scribble(q, &mut rng);
            }
            let used = |g: &G| {
                g.drv
                    .queues
                    .iter()
                    .map(|q| q.used().idx().load())
                    .collect::<Vec<_>>()
            };
            let before = used(&g);
            g.drv.kick(q);
            g.drv.kick(TX);
            let n = usize_from(rng.below(4096));
            let _ = host.write(&rng.bytes(n));
            g.drv.poll(0);
            if used(&g) != before {
                answered += 1;
            }
            if used(&g) == before || round % 50 == 49 {
                // A driver that sees no progress resets; every 50 rounds
                // the device must carry data both ways after a reset.
                (host, hp) = restart(&mut g, round);
                if round % 50 == 49 {
                    host.write_all(b"x").unwrap();
                    assert_eq!(g.guest_read(hp, 1024, 1), b"x", "after round {round}");
                    g.send(hdr(OP_RW, 1024, hp), b"pong");
                    assert_eq!(g.host_read(&mut host, 4), b"pong", "after round {round}");
                }
            }
        }
        assert!(
            answered > 1100,
            "only {answered} of 1500 rounds reached the device"
        );
    });
}
