//! Guest-initiated connections and shutdown.

use super::*;

#[test]
fn guest_initiated_connection() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut g = G::new(&mem, Vsock::new(GUEST_CID, &path).unwrap());
    g.post_rx(16);
    let listener = UnixListener::bind(format!("{}_5000", path.display())).unwrap();

    g.send(hdr(OP_REQUEST, 7000, 5000), &[]);
    let (resp, _) = g.packet();
    assert_eq!(
        (resp.op, resp.src_port, resp.dst_port),
        (OP_RESPONSE, 5000, 7000)
    );
    let (mut s, _) = listener.accept().unwrap();

    g.send(hdr(OP_RW, 7000, 5000), b"ping");
    assert_eq!(g.host_read(&mut s, 4), b"ping");
    s.write_all(b"pong").unwrap();
    assert_eq!(g.guest_read(5000, 7000, 4), b"pong");

    // Guest half-close: the host sees EOF but can still send.
    let mut sd = hdr(OP_SHUTDOWN, 7000, 5000);
    sd.flags = SHUTDOWN_SEND;
    g.send(sd, &[]);
    assert!(g.host_eof(&mut s));
    s.write_all(b"after").unwrap();
    assert_eq!(g.guest_read(5000, 7000, 5), b"after");

    // Host closes: the guest is told neither side will send or receive.
    drop(s);
    let (h, _) = g.packet();
    assert_eq!((h.op, h.flags), (OP_SHUTDOWN, SHUTDOWN_SEND | SHUTDOWN_RCV));
    g.send(hdr(OP_RST, 7000, 5000), &[]);
    assert!(g.drain(50).is_empty());

    // No listener for the port: RST.
    g.send(hdr(OP_REQUEST, 7001, 5001), &[]);
    let (h, _) = g.packet();
    assert_eq!((h.op, h.src_port, h.dst_port), (OP_RST, 5001, 7001));
}

#[test]
fn guest_full_shutdown_flushes_then_resets() {
    let mem = guest_memory();
    let (_dir, path) = tmp();
    let mut g = G::new(&mem, Vsock::new(GUEST_CID, &path).unwrap());
    g.post_rx(8);
    let (mut host, hp) = g.host_connect(&path, 1024, b"");
    g.send(hdr(OP_RW, 1024, hp), b"last words");
    let mut sd = hdr(OP_SHUTDOWN, 1024, hp);
    sd.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
    g.send(sd, &[]);
    let (h, _) = g.packet();
    assert_eq!((h.op, h.src_port, h.dst_port), (OP_RST, hp, 1024));
    assert_eq!(g.host_read(&mut host, 100), b"last words");
    assert!(g.host_eof(&mut host));
}
