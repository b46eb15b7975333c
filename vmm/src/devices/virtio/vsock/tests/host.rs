//! Host-initiated connections: the CONNECT handshake, its refusals and
//! deadlines, the connection limit, device reset and the socket file.

use super::*;

#[test]
fn host_initiated_connection_end_to_end() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut g = G::new(&mem, Vsock::new(GUEST_CID, &path).unwrap());
    g.post_rx(16);

    // Bytes written right behind the CONNECT line are data for the guest.
    let (mut host, hp) = g.host_connect(&path, 1024, b"early");
    assert_eq!(g.guest_read(hp, 1024, 5), b"early");

    host.write_all(b"hello guest").unwrap();
    assert_eq!(g.guest_read(hp, 1024, 11), b"hello guest");

    let mut rw = hdr(OP_RW, 1024, hp);
    rw.fwd_cnt = 16;
    g.send(rw, b"hello host");
    assert_eq!(g.host_read(&mut host, 10), b"hello host");

    // A second connection to the same guest port gets its own host port.
    let (mut host2, hp2) = g.host_connect(&path, 1024, b"");
    assert_ne!(hp, hp2);
    g.send(hdr(OP_RW, 1024, hp2), b"two");
    assert_eq!(g.host_read(&mut host2, 3), b"two");

    // Guest RST closes the host socket.
    g.send(hdr(OP_RST, 1024, hp), &[]);
    assert!(g.host_eof(&mut host));
    // The other connection is unaffected.
    host2.write_all(b"still here").unwrap();
    assert_eq!(g.guest_read(hp2, 1024, 10), b"still here");
}

#[test]
fn guest_refusing_a_host_connection_closes_it() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut g = G::new(&mem, Vsock::new(GUEST_CID, &path).unwrap());
    g.post_rx(4);
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"CONNECT 9\n").unwrap();
    let (req, _) = g.packet();
    assert_eq!(req.op, OP_REQUEST);
    g.send(hdr(OP_RST, 9, req.src_port), &[]);
    // The host is told why before the socket closes.
    assert_eq!(g.host_read_to_eof(&mut s), b"ERR reset\n");
}

#[test]
fn guest_silent_on_a_request_times_out_with_a_reason() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut vsock = Vsock::new(GUEST_CID, &path).unwrap();
    vsock.mux.response_timeout = Duration::from_millis(300);
    let mut g = G::new(&mem, vsock);
    g.post_rx(4);
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"CONNECT 1024\n").unwrap();
    let (req, _) = g.packet();
    assert_eq!(req.op, OP_REQUEST);
    let t = Instant::now();
    assert_eq!(g.host_read_to_eof(&mut s), b"ERR timeout\n");
    assert!(t.elapsed() >= Duration::from_millis(200));
    // The guest is told to drop the half-open connection.
    let (rst, _) = g.packet();
    assert_eq!(
        (rst.op, rst.src_port, rst.dst_port),
        (OP_RST, req.src_port, 1024)
    );
    // A RESPONSE that comes too late is answered with RST, not an OK.
    g.send(hdr(OP_RESPONSE, 1024, req.src_port), &[]);
    let (rst, _) = g.packet();
    assert_eq!(rst.op, OP_RST);
}

#[test]
fn a_response_queued_before_the_deadline_wins_over_the_timer() {
    // After a host stall the loop can wake with both the timer expired and
    // the guest's RESPONSE on the tx ring: the RESPONSE counts.
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut vsock = Vsock::new(GUEST_CID, &path).unwrap();
    vsock.mux.response_timeout = Duration::from_millis(100);
    let mut g = G::new(&mem, vsock);
    g.post_rx(4);
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"CONNECT 1024\n").unwrap();
    let (req, _) = g.packet();
    // Queue the RESPONSE without kicking, let the deadline pass, then let
    // the loop see the timer first.
    let mut h = hdr(OP_RESPONSE, 1024, req.src_port);
    h.len = 0;
    let a = g.tx_alloc(HDR_SIZE as u64);
    g.drv.write_mem(a, &h.to_bytes());
    g.drv.add_chain(TX, &[(a, HDR_SIZE_U32, false)]);
    std::thread::sleep(Duration::from_millis(400));
    let ok = g.host_read(&mut s, format!("OK {}\n", req.src_port).len());
    assert_eq!(
        String::from_utf8(ok).unwrap(),
        format!("OK {}\n", req.src_port)
    );
}

#[test]
fn a_connection_the_host_closed_ends_though_the_guest_never_answers() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut vsock = Vsock::new(GUEST_CID, &path).unwrap();
    vsock.mux.close_timeout = Duration::from_millis(300);
    let mut g = G::new(&mem, vsock);
    g.post_rx(8);
    let (host, hp) = g.host_connect(&path, 1024, b"");
    drop(host);
    // The guest is told the host will neither send nor read...
    let (sd, _) = g.packet();
    assert_eq!(
        (sd.op, sd.flags, sd.src_port),
        (OP_SHUTDOWN, SHUTDOWN_SEND | SHUTDOWN_RCV, hp)
    );
    // ...and, when it stays silent, gets a RST after the close timeout:
    // the connection is gone, so later packets on it are refused.
    let t = Instant::now();
    let (rst, _) = g.packet();
    assert_eq!((rst.op, rst.src_port, rst.dst_port), (OP_RST, hp, 1024));
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    g.send(hdr(OP_RW, 1024, hp), b"late");
    let (rst, _) = g.packet();
    assert_eq!((rst.op, rst.dst_port), (OP_RST, 1024));
}

#[test]
fn request_waits_for_rx_buffers() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut g = G::new(&mem, Vsock::new(GUEST_CID, &path).unwrap());
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"CONNECT 77\n").unwrap();
    assert!(g.drain(200).is_empty());
    g.post_rx(1);
    let (req, _) = g.packet();
    assert_eq!((req.op, req.dst_port), (OP_REQUEST, 77));
}

#[test]
fn bad_connect_lines_close_the_host_socket() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut vsock = Vsock::new(GUEST_CID, &path).unwrap();
    vsock.mux.handshake_timeout = Duration::from_millis(300);
    let mut g = G::new(&mem, vsock);
    g.post_rx(8);
    for line in [
        &b"HELLO\n"[..],
        b"CONNECT\n",
        b"CONNECT \n",
        b"CONNECT -1\n",
        b"CONNECT 99999999999\n",
        b"CONNECT 1024 \n",
        b"connect 1024\n",
        &[b'A'; 40][..],
    ] {
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(line).unwrap();
        assert_eq!(
            g.host_read_to_eof(&mut s),
            b"ERR bad-connect\n",
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
    // Silent host: closed after the handshake deadline.
    let mut s = UnixStream::connect(&path).unwrap();
    let t = Instant::now();
    assert!(g.host_eof(&mut s));
    assert!(t.elapsed() >= Duration::from_millis(250));
    // Half a line, then silence.
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"CONN").unwrap();
    assert!(g.host_eof(&mut s));
    // Nothing reached the guest.
    assert!(g.drain(50).is_empty());
    assert_eq!(parse_connect_line(b"CONNECT 4294967295\n"), Some(u32::MAX));
    assert_eq!(parse_connect_line(b"CONNECT 4294967296\n"), None);
}

#[test]
fn host_eof_sends_shutdown_and_connection_limit_applies() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut vsock = Vsock::new(GUEST_CID, &path).unwrap();
    vsock.mux.max_connections = 2;
    let mut g = G::new(&mem, vsock);
    g.post_rx(16);
    let (host1, hp1) = g.host_connect(&path, 1, b"");
    let (_host2, _) = g.host_connect(&path, 2, b"");
    // Third host connection: refused, saying why.
    let mut s = UnixStream::connect(&path).unwrap();
    let _ = s.write_all(b"CONNECT 3\n");
    assert_eq!(g.host_read_to_eof(&mut s), b"ERR limit\n");
    // Third guest connection: RST.
    let _l = UnixListener::bind(format!("{}_6000", path.display())).unwrap();
    g.send(hdr(OP_REQUEST, 9, 6000), &[]);
    let (h, _) = g.packet();
    assert_eq!(h.op, OP_RST);

    // Host half-close: SHUTDOWN(SEND) only.
    host1.shutdown(std::net::Shutdown::Write).unwrap();
    let (h, _) = g.packet();
    assert_eq!(
        (h.op, h.flags, h.src_port),
        (OP_SHUTDOWN, SHUTDOWN_SEND, hp1)
    );
    // Guest's reply data still reaches the host.
    g.send(hdr(OP_RW, 1, hp1), b"bye");
    let mut host1 = host1;
    assert_eq!(g.host_read(&mut host1, 3), b"bye");
    // Guest closes: RST back, slot freed.
    let mut sd = hdr(OP_SHUTDOWN, 1, hp1);
    sd.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
    g.send(sd, &[]);
    let (h, _) = g.packet();
    assert_eq!(h.op, OP_RST);
    let (_host3, _) = g.host_connect(&path, 3, b"");
}

#[test]
fn device_reset_closes_host_connections() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut g = G::new(&mem, Vsock::new(GUEST_CID, &path).unwrap());
    g.post_rx(8);
    let (mut host, _) = g.host_connect(&path, 1024, b"");
    // A connection still waiting for the guest's answer is told.
    let mut waiting = UnixStream::connect(&path).unwrap();
    waiting.write_all(b"CONNECT 1025\n").unwrap();
    let (req, _) = g.packet();
    assert_eq!(req.op, OP_REQUEST);
    g.drv.write32(0x70, 0);
    assert!(g.host_eof(&mut host));
    assert_eq!(g.host_read_to_eof(&mut waiting), b"ERR device-reset\n");
    // The listener survives a reset.
    g.drv.reinit_queues();
    g.pending.clear();
    assert!(g.drv.activate(0));
    g.post_rx(4);
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"CONNECT 5\n").unwrap();
    let (h, _) = g.packet();
    assert_eq!(h.op, OP_REQUEST);
}

#[test]
fn uds_path_lifecycle() {
    let (_dir, path) = tmp();
    for cid in [0, 1, 2, u64::from(u32::MAX), u64::MAX] {
        assert!(matches!(
            Vsock::new(cid, &path),
            Err(VsockError::InvalidCid(_))
        ));
    }
    // Not a socket: refuse, naming the path.
    std::fs::write(&path, b"x").unwrap();
    let err = Vsock::new(GUEST_CID, &path).unwrap_err();
    assert!(matches!(err, VsockError::PathExists(_)));
    assert!(err.to_string().contains(path.to_str().unwrap()));
    std::fs::remove_file(&path).unwrap();
    // A live listener: refuse.
    let l = UnixListener::bind(&path).unwrap();
    assert!(matches!(
        Vsock::new(GUEST_CID, &path),
        Err(VsockError::PathInUse(_))
    ));
    // Stale socket file: replaced.
    drop(l);
    assert!(path.exists());
    let v = Vsock::new(GUEST_CID, &path).unwrap();
    assert!(UnixStream::connect(&path).is_ok());
    drop(v);
    assert!(!path.exists(), "socket file not removed on drop");
}
