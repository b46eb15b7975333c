use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use vm_memory::GuestAddress;
use vmm_sys_util::tempdir::TempDir;

use super::super::test_utils::{guest_memory, within, Driver, Rng};
use super::*;

const GUEST_CID: u64 = 3;
const RX_BUF: u32 = 4096 + HDR_SIZE as u32;
const TX_ARENA: u64 = 16 << 20;
const TX_ARENA_SIZE: u64 = 8 << 20;

fn tmp() -> (TempDir, PathBuf) {
    let dir = TempDir::new_with_prefix("/tmp/husk-vsock-").unwrap();
    let path = dir.as_path().join("v.sock");
    (dir, path)
}

/// Test guest: a vsock driver on top of the generic virtio driver.
struct G<'a> {
    drv: Driver<'a>,
    pending: VecDeque<(Header, Vec<u8>)>,
    tx_pos: u64,
}

fn hdr(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 64 * 1024,
        fwd_cnt: 0,
    }
}

impl<'a> G<'a> {
    fn new(mem: &'a GuestMemoryMmap, vsock: Vsock) -> Self {
        let mut drv = Driver::new(mem, Box::new(vsock));
        assert_eq!(drv.read32(0x8), TYPE_VSOCK);
        assert_eq!(drv.read_config(0, 8), GUEST_CID.to_le_bytes());
        assert!(drv.activate(0));
        G {
            drv,
            pending: VecDeque::new(),
            tx_pos: TX_ARENA,
        }
    }

    fn post_rx(&mut self, n: usize) {
        for _ in 0..n {
            let a = self.drv.alloc(RX_BUF);
            self.drv.add_chain(RX, &[(a, RX_BUF, true)]);
        }
        self.drv.kick(RX);
    }

    fn tx_alloc(&mut self, len: u64) -> GuestAddress {
        if self.tx_pos + len > TX_ARENA + TX_ARENA_SIZE {
            self.tx_pos = TX_ARENA;
        }
        let a = self.tx_pos;
        self.tx_pos = (a + len + 15) & !15;
        GuestAddress(a)
    }

    /// Put a packet on the tx queue (header and payload in separate
    /// descriptors, as Linux does) and kick.
    fn send(&mut self, mut h: Header, payload: &[u8]) {
        h.len = payload.len() as u32;
        let ha = self.tx_alloc(HDR_SIZE as u64);
        self.drv.write_mem(ha, &h.to_bytes());
        if payload.is_empty() {
            self.drv.add_chain(TX, &[(ha, HDR_SIZE as u32, false)]);
        } else {
            let pa = self.tx_alloc(payload.len() as u64);
            self.drv.write_mem(pa, payload);
            self.drv.add_chain(
                TX,
                &[
                    (ha, HDR_SIZE as u32, false),
                    (pa, payload.len() as u32, false),
                ],
            );
        }
        self.drv.kick(TX);
    }

    /// Collect packets the device put on rx; recycle their buffers.
    fn collect(&mut self) {
        let used = self.drv.take_used(RX);
        if used.is_empty() {
            return;
        }
        for (head, len) in used {
            let bufs = self.drv.chains.get(&(RX, head)).unwrap().clone();
            let (addr, size, _) = bufs[0];
            if size < HDR_SIZE as u32 {
                // A buffer too small for a header comes back unused.
                assert_eq!(len, 0);
                continue;
            }
            assert!(len as usize >= HDR_SIZE && len <= size, "used len {len}");
            let bytes = self.drv.read_mem(addr, len as usize);
            let h = Header::from_bytes(bytes[..HDR_SIZE].try_into().unwrap());
            assert_eq!(h.len as usize, len as usize - HDR_SIZE, "{h:?}");
            assert_eq!(h.src_cid, HOST_CID);
            assert_eq!(h.dst_cid, GUEST_CID);
            assert_eq!(h.type_, TYPE_STREAM);
            if h.op != OP_RST {
                assert_eq!(h.buf_alloc, CONN_BUF_SIZE);
            }
            self.pending.push_back((h, bytes[HDR_SIZE..].to_vec()));
            self.drv.add_chain(RX, &[(addr, size, true)]);
        }
        self.drv.kick(RX);
    }

    fn try_packet(&mut self) -> Option<(Header, Vec<u8>)> {
        self.collect();
        self.pending.pop_front()
    }

    fn packet(&mut self) -> (Header, Vec<u8>) {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(p) = self.try_packet() {
                return p;
            }
            assert!(Instant::now() < end, "no packet from the device");
            self.drv.poll(10);
        }
    }

    /// Run the loop a while and return every packet that showed up.
    fn drain(&mut self, ms: u64) -> Vec<(Header, Vec<u8>)> {
        let end = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < end {
            self.drv.poll(10);
        }
        self.collect();
        self.pending.drain(..).collect()
    }

    /// Run the loop until the host socket yields `n` bytes (or EOF).
    fn host_read(&mut self, s: &mut UnixStream, n: usize) -> Vec<u8> {
        s.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        let end = Instant::now() + Duration::from_secs(5);
        while out.len() < n && Instant::now() < end {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.drv.poll(10),
                Err(e) => panic!("host read: {e}"),
            }
        }
        out
    }

    /// Run the loop until the host socket sees EOF (true) or 5 s pass.
    fn host_eof(&mut self, s: &mut UnixStream) -> bool {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.drv.poll(10),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(e) => panic!("host read: {e}"),
            }
        }
        false
    }

    /// Run the loop until the host socket sees EOF; returns what it read
    /// before (panics after 5 s).
    fn host_read_to_eof(&mut self, s: &mut UnixStream) -> Vec<u8> {
        s.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            match s.read(&mut buf) {
                Ok(0) => return out,
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.drv.poll(10),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
                Err(e) => panic!("host read: {e}"),
            }
        }
        panic!("host socket still open after 5 s");
    }

    /// Receive RW payload bytes for (host port, guest port) until `n` arrive.
    fn guest_read(&mut self, host_port: u32, guest_port: u32, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            let (h, p) = self.packet();
            assert_eq!((h.src_port, h.dst_port), (host_port, guest_port));
            if h.op == OP_RW {
                out.extend(p);
            } else {
                assert_eq!(h.op, OP_CREDIT_UPDATE, "unexpected {h:?}");
            }
        }
        out
    }

    /// Host connects with `CONNECT port\n` + `extra`, guest accepts.
    /// Returns (host stream, host port).
    fn host_connect(&mut self, path: &Path, port: u32, extra: &[u8]) -> (UnixStream, u32) {
        let mut s = UnixStream::connect(path).unwrap();
        let mut line = format!("CONNECT {port}\n").into_bytes();
        line.extend_from_slice(extra);
        s.write_all(&line).unwrap();
        let (req, p) = self.packet();
        assert_eq!(req.op, OP_REQUEST, "{req:?}");
        assert!(p.is_empty());
        assert_eq!(req.dst_port, port);
        assert!(req.src_port >= FIRST_HOST_PORT);
        let hp = req.src_port;
        self.send(hdr(OP_RESPONSE, port, hp), &[]);
        let ok = self.host_read(&mut s, format!("OK {hp}\n").len());
        assert_eq!(String::from_utf8(ok).unwrap(), format!("OK {hp}\n"));
        (s, hp)
    }
}

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
    g.drv.add_chain(TX, &[(a, HDR_SIZE as u32, false)]);
    std::thread::sleep(Duration::from_millis(400));
    let ok = g.host_read(&mut s, format!("OK {}\n", req.src_port).len());
    assert_eq!(
        String::from_utf8(ok).unwrap(),
        format!("OK {}\n", req.src_port)
    );
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
    g.drv.add_chain(TX, &[(a, HDR_SIZE as u32, false)]);
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
    let data: Vec<u8> = (0..total).map(|i| (i * 7 % 256) as u8).collect();
    let mut sent = 0usize;
    let mut peer_fwd = 0u32;
    let mut peer_alloc = CONN_BUF_SIZE;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 8192];
    let end = Instant::now() + Duration::from_secs(30);
    while received.len() < total {
        assert!(Instant::now() < end, "stalled at {} bytes", received.len());
        // Send what our credit allows, in packets of up to 16 KiB.
        let in_flight = sent as u32 - peer_fwd;
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
            assert!(sent as u32 - peer_fwd <= CONN_BUF_SIZE);
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
                    rng.below(9) as u16,
                    rng.below(2048) as u32,
                    rng.next() as u32,
                );
                if rng.below(2) == 0 {
                    (h.src_port, h.dst_port) = (1024, hp);
                }
                if rng.below(8) == 0 {
                    h.type_ = rng.next() as u16;
                    h.dst_cid = rng.next();
                }
                h.flags = rng.next() as u32;
                h.buf_alloc = rng.next() as u32;
                h.fwd_cnt = rng.next() as u32;
                // Only RW carries a payload; other ops mostly come without.
                let n = if h.op == OP_RW || rng.below(4) == 0 {
                    rng.below(300) as usize
                } else {
                    0
                };
                let payload = rng.bytes(n);
                g.send(h, &payload);
            }
            let q = rng.below(3) as usize;
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
            let n = rng.below(4096) as usize;
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
