//! Device tests: a test guest drives the device through its queues while
//! the tests play the host over the Unix sockets.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::tempdir::TempDir;

use super::connection::CONN_BUF_SIZE;
use super::device::{RX, TX};
use super::handshake::parse_connect_line;
use super::muxer::FIRST_HOST_PORT;
use super::packet::*;
use super::{Vsock, VsockError};
use crate::cast::usize_from;
use crate::devices::virtio::test_utils::{guest_memory, low16, low32, within, Driver, Rng};
use crate::devices::virtio::TYPE_VSOCK;

mod credit;
mod guest;
mod host;
mod hostile;

const GUEST_CID: u64 = 3;
const RX_BUF: u32 = 4096 + HDR_SIZE_U32;
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
        h.len = u32::try_from(payload.len()).unwrap();
        let ha = self.tx_alloc(HDR_SIZE as u64);
        self.drv.write_mem(ha, &h.to_bytes());
        if payload.is_empty() {
            self.drv.add_chain(TX, &[(ha, HDR_SIZE_U32, false)]);
        } else {
            let pa = self.tx_alloc(payload.len() as u64);
            self.drv.write_mem(pa, payload);
            self.drv
                .add_chain(TX, &[(ha, HDR_SIZE_U32, false), (pa, h.len, false)]);
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
            if size < HDR_SIZE_U32 {
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
