//! Credit-based flow control in both directions.

use super::*;

#[test]
fn guest_credit_is_respected() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut g = G::new(&mem, Vsock::new(GUEST_CID, &path).unwrap());
    g.post_rx(16);
    let mut host = UnixStream::connect(&path).unwrap();
    host.write_all(b"CONNECT 1024\n").unwrap();
    let (req, _) = g.packet();
    let hp = req.src_port;
    let mut resp = hdr(OP_RESPONSE, 1024, hp);
    resp.buf_alloc = 100;
    g.send(resp, &[]);
    let ok = format!("OK {hp}\n");
    assert_eq!(g.host_read(&mut host, ok.len()), ok.as_bytes());

    host.write_all(&[7u8; 1000]).unwrap();
    let mut got = 0;
    let mut credit_requests = 0;
    for (h, p) in g.drain(300) {
        match h.op {
            OP_RW => got += p.len(),
            OP_CREDIT_REQUEST => credit_requests += 1,
            op => panic!("unexpected op {op}"),
        }
    }
    assert_eq!(got, 100, "device sent more than the guest's credit");
    assert_eq!(credit_requests, 1);

    // Guest consumed 60 bytes: 60 more may come.
    let mut cu = hdr(OP_CREDIT_UPDATE, 1024, hp);
    cu.buf_alloc = 100;
    cu.fwd_cnt = 60;
    g.send(cu, &[]);
    let mut got = 0;
    for (h, p) in g.drain(300) {
        if h.op == OP_RW {
            got += p.len();
        }
    }
    assert_eq!(got, 60);

    // A bigger window lets the rest through.
    cu.buf_alloc = 4096;
    cu.fwd_cnt = 160;
    g.send(cu, &[]);
    let mut got = 0;
    for (h, p) in g.drain(300) {
        if h.op == OP_RW {
            got += p.len();
        }
    }
    assert_eq!(got, 840);
}

#[test]
fn credit_request_is_answered() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut g = G::new(&mem, Vsock::new(GUEST_CID, &path).unwrap());
    g.post_rx(8);
    let (_host, hp) = g.host_connect(&path, 1024, b"");
    g.send(hdr(OP_CREDIT_REQUEST, 1024, hp), &[]);
    let (h, _) = g.packet();
    assert_eq!(h.op, OP_CREDIT_UPDATE);
    assert_eq!(h.buf_alloc, CONN_BUF_SIZE);
}

#[test]
fn bulk_guest_to_host_with_slow_reader_respects_our_credit() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut g = G::new(&mem, Vsock::new(GUEST_CID, &path).unwrap());
    g.post_rx(32);
    let (mut host, hp) = g.host_connect(&path, 1024, b"");
    host.set_nonblocking(true).unwrap();

    let total = 3 << 20;
    let data: Vec<u8> = (0..total)
        .map(|i| u8::try_from(i * 7 % 256).unwrap())
        .collect();
    let mut sent = 0usize;
    let mut peer_fwd = 0u32;
    let mut peer_alloc = CONN_BUF_SIZE;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 8192];
    let end = Instant::now() + Duration::from_secs(30);
    while received.len() < total {
        assert!(Instant::now() < end, "stalled at {} bytes", received.len());
        // Send what our credit allows, in packets of up to 16 KiB.
        let in_flight = u32::try_from(sent).unwrap() - peer_fwd;
        let room = peer_alloc.saturating_sub(in_flight) as usize;
        let n = room.min(16384).min(total - sent);
        if n > 0 {
            g.send(hdr(OP_RW, 1024, hp), &data[sent..sent + n]);
            sent += n;
        }
        g.drv.poll(1);
        while let Some((h, _)) = g.try_packet() {
            assert_ne!(h.op, OP_RST, "device reset a compliant connection");
            peer_fwd = h.fwd_cnt;
            peer_alloc = h.buf_alloc;
            assert!(u32::try_from(sent).unwrap() - peer_fwd <= CONN_BUF_SIZE);
        }
        // Slow reader: at most 8 KiB per round.
        match host.read(&mut buf) {
            Ok(0) => panic!("unexpected EOF"),
            Ok(k) => received.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(received == data, "stream corrupted");
}

#[test]
fn guest_overrunning_our_credit_is_reset() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut g = G::new(&mem, Vsock::new(GUEST_CID, &path).unwrap());
    g.post_rx(8);
    let (mut host, hp) = g.host_connect(&path, 1024, b"");
    // The host never reads. Ignore credit and keep sending.
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0usize;
    let mut reset = false;
    while sent < 8 << 20 {
        g.send(hdr(OP_RW, 1024, hp), &chunk);
        sent += chunk.len();
        g.drv.poll(1);
        if g.drain(0).iter().any(|(h, _)| h.op == OP_RST) {
            reset = true;
            break;
        }
    }
    assert!(reset, "no RST after {sent} bytes");
    // More than our advertised buffer was sent before the reset.
    assert!(sent > CONN_BUF_SIZE as usize);
    // Whatever was accepted is readable; then EOF.
    assert!(g.host_eof(&mut host));
}
