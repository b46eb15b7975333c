//! The connection table between the guest and the host's Unix sockets: the
//! host listener and its `CONNECT` handshake, guest-initiated connections,
//! deadlines, routing each guest packet to its connection, and choosing,
//! round-robin, which connection fills the next rx buffer.
//!
//! The muxer sees no queues: the device hands it one flattened tx chain at
//! a time ([`Muxer::handle_tx_chain`]) and asks it to fill one rx buffer at
//! a time ([`Muxer::next_rx_packet`]).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use event_manager::{EventOps, EventSet, Events};
use log::{debug, error, warn};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{Conn, Produced, State};
use super::handshake::{self, LineRead, Refusal};
use super::packet::{
    parse_tx, Header, HDR_SIZE, HDR_SIZE_U32, HOST_CID, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE,
    OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use super::unix;
use crate::devices::virtio::chain::{self, Chain};

/// Most concurrent connections (including ones still in handshake).
pub const MAX_CONNECTIONS: usize = 1024;
/// Most RST packets for unknown connections waiting for an rx buffer.
const MAX_PENDING_RSTS: usize = 1024;
/// Connections accepted per listener event.
const MAX_ACCEPTS_PER_EVENT: usize = 64;
/// First host port handed out to host-initiated connections.
pub(super) const FIRST_HOST_PORT: u32 = 1 << 30;

// epoll data of the muxer's fds: the listener, the timer, then one per
// connection (its key in the table).
pub(super) const LISTENER_DATA: u32 = 0;
pub(super) const TIMER_DATA: u32 = 1;
const FIRST_CONN_DATA: u32 = 2;
const MAX_CONN_DATA: u32 = 0x7fff_ffff;

/// Connections and the host-side sockets.
pub(super) struct Muxer {
    pub guest_cid: u64,
    pub uds_path: PathBuf,
    pub listener: UnixListener,
    pub timer: TimerFd,
    timer_armed: bool,
    conns: HashMap<u32, Conn>,
    /// (host port, guest port) -> connection.
    ports: HashMap<(u32, u32), u32>,
    next_data: u32,
    next_host_port: u32,
    /// Connections with something for the guest, round-robin.
    ready: VecDeque<u32>,
    /// RSTs (host port, guest port) owed for unknown or killed connections.
    pending_rsts: VecDeque<(u32, u32)>,
    dirty: Vec<u32>,
    /// Removed connections whose fds still need deregistering.
    doomed: Vec<Conn>,
    pub handshake_timeout: Duration,
    pub response_timeout: Duration,
    pub close_timeout: Duration,
    pub max_connections: usize,
}

impl Muxer {
    pub fn new(guest_cid: u64, uds_path: PathBuf, listener: UnixListener, timer: TimerFd) -> Self {
        Muxer {
            guest_cid,
            uds_path,
            listener,
            timer,
            timer_armed: false,
            conns: HashMap::new(),
            ports: HashMap::new(),
            next_data: FIRST_CONN_DATA,
            next_host_port: FIRST_HOST_PORT,
            ready: VecDeque::new(),
            pending_rsts: VecDeque::new(),
            dirty: Vec::new(),
            doomed: Vec::new(),
            handshake_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(8),
            max_connections: MAX_CONNECTIONS,
        }
    }

    /// Connections in the table, including ones still in handshake.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Whether a packet waits for an rx buffer.
    pub fn has_rx_pending(&self) -> bool {
        !self.pending_rsts.is_empty() || !self.ready.is_empty()
    }

    // ---- connection table ----------------------------------------------

    fn alloc_data(&mut self) -> u32 {
        loop {
            let d = self.next_data;
            self.next_data = if d >= MAX_CONN_DATA {
                FIRST_CONN_DATA
            } else {
                d + 1
            };
            if !self.conns.contains_key(&d) {
                return d;
            }
        }
    }

    fn alloc_host_port(&mut self, guest_port: u32) -> u32 {
        // At most MAX_CONNECTIONS ports are taken, so this ends quickly.
        loop {
            let p = self.next_host_port;
            self.next_host_port = p.checked_add(1).unwrap_or(FIRST_HOST_PORT);
            if !self.ports.contains_key(&(p, guest_port)) {
                return p;
            }
        }
    }

    fn mark(&mut self, data: u32) {
        let Some(c) = self.conns.get_mut(&data) else {
            return;
        };
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(data);
        }
        if !c.in_ready && c.has_rx_work() {
            c.in_ready = true;
            self.ready.push_back(data);
        }
    }

    fn insert(&mut self, conn: Conn) {
        let data = conn.data;
        if conn.state != State::HostHandshake {
            self.ports.insert((conn.host_port, conn.guest_port), data);
        }
        if conn.deadline.is_some() {
            self.arm_timer();
        }
        self.conns.insert(data, conn);
        self.mark(data);
    }

    /// Remove a connection, closing the host socket (once deregistered).
    /// With `rst`, the guest is told.
    fn kill(&mut self, data: u32, rst: bool) {
        let Some(conn) = self.conns.remove(&data) else {
            return;
        };
        if conn.state != State::HostHandshake {
            self.ports.remove(&(conn.host_port, conn.guest_port));
            if rst {
                self.queue_rst(conn.host_port, conn.guest_port);
            }
        }
        self.doomed.push(conn);
    }

    /// Close a connection that never got its `OK` line, telling the host
    /// why. With `rst`, the guest is told too.
    fn refuse(&mut self, data: u32, why: Refusal, rst: bool) {
        if let Some(c) = self.conns.get(&data) {
            debug_assert!(c.state != State::Established);
            why.tell(&c.stream);
        }
        self.kill(data, rst);
    }

    fn queue_rst(&mut self, host_port: u32, guest_port: u32) {
        if self.pending_rsts.len() < MAX_PENDING_RSTS {
            self.pending_rsts.push_back((host_port, guest_port));
        } else {
            debug!("vsock: too many pending resets; dropping one");
        }
    }

    /// The guest reset the device: every connection goes; the ones that
    /// never got their `OK` line are told why.
    pub fn drop_all_connections(&mut self) {
        for c in self.conns.values() {
            if c.state != State::Established {
                Refusal::DeviceReset.tell(&c.stream);
            }
        }
        self.doomed.extend(self.conns.drain().map(|(_, c)| c));
        self.ports.clear();
        self.ready.clear();
        self.dirty.clear();
        self.pending_rsts.clear();
    }

    fn arm_timer(&mut self) {
        if self.timer_armed {
            return;
        }
        let tick = Duration::from_millis(250);
        match self.timer.reset(tick, Some(tick)) {
            Ok(()) => self.timer_armed = true,
            Err(e) => error!("vsock: cannot arm timer: {e}"),
        }
    }

    /// Bring epoll registrations in line with connection state and close
    /// removed connections.
    pub fn sync(&mut self, ops: &mut EventOps) {
        let mut failed = Vec::new();
        for data in std::mem::take(&mut self.dirty) {
            let Some(c) = self.conns.get_mut(&data) else {
                continue;
            };
            c.dirty = false;
            let want = c.wanted_events();
            let res = match (c.registered, want.is_empty()) {
                (None, true) => Ok(()),
                (Some(_), true) => ops.remove(Events::empty(&c.stream)),
                (None, false) => ops.add(Events::with_data(&c.stream, data, want)),
                (Some(have), false) if have == want => Ok(()),
                (Some(_), false) => ops.modify(Events::with_data(&c.stream, data, want)),
            };
            match res {
                Ok(()) => c.registered = (!want.is_empty()).then_some(want),
                Err(e) => {
                    error!("vsock: epoll update for port {}: {e}", c.host_port);
                    failed.push(data);
                }
            }
        }
        for data in failed {
            self.kill(data, true);
        }
        for c in self.doomed.drain(..) {
            if c.registered.is_some() {
                if let Err(e) = ops.remove(Events::empty(&c.stream)) {
                    error!("vsock: epoll remove: {e}");
                }
            }
        }
    }

    // ---- host side -----------------------------------------------------

    /// Take the host connections the listener has waiting.
    pub fn accept(&mut self) {
        for _ in 0..MAX_ACCEPTS_PER_EVENT {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("vsock: accept on {}: {e}", self.uds_path.display());
                    return;
                }
            };
            // Connection setup, once per accepted host socket (never per
            // packet): the mark is a flag test after the first.
            static FIRST: AtomicBool = AtomicBool::new(false);
            crate::timing::mark_once(&FIRST, "host: first vsock connection");
            if self.conns.len() >= self.max_connections {
                warn!("vsock: connection limit reached; refusing host connection");
                Refusal::Limit.tell(&stream);
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                warn!("vsock: {e}");
                continue;
            }
            let data = self.alloc_data();
            let mut conn = Conn::new(data, stream, State::HostHandshake);
            conn.deadline = Some(Instant::now() + self.handshake_timeout);
            self.insert(conn);
        }
    }

    /// A connection's host socket is ready.
    pub fn conn_event(&mut self, data: u32, events: Events) {
        let Some(c) = self.conns.get_mut(&data) else {
            return;
        };
        if c.stream.as_raw_fd() != events.fd() {
            return;
        }
        let set = events.event_set();
        if set.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            c.host_hup = true;
        }
        match c.state {
            State::HostHandshake => self.read_handshake(data),
            State::AwaitingResponse => {}
            State::Established => {
                if set.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) {
                    c.host_readable = true;
                }
                if set.contains(EventSet::OUT) {
                    self.flush(data);
                }
                self.watch_close(data);
            }
        }
        self.mark(data);
    }

    /// Once the host side is gone entirely (hung up, and the guest told
    /// there is nothing more to read), the guest has `close_timeout` to
    /// answer with its RST; a guest that never does would otherwise keep
    /// the connection, and a slot of `max_connections`, for ever.
    fn watch_close(&mut self, data: u32) {
        let Some(c) = self.conns.get_mut(&data) else {
            return;
        };
        if c.host_hup && c.host_eof && c.deadline.is_none() {
            c.deadline = Some(Instant::now() + self.close_timeout);
            self.arm_timer();
        }
    }

    fn read_handshake(&mut self, data: u32) {
        let Some(c) = self.conns.get_mut(&data) else {
            return;
        };
        match handshake::read_connect_line(&c.stream, &mut c.handshake) {
            LineRead::Pending => {}
            LineRead::Closed => self.kill(data, false),
            LineRead::Malformed => self.refuse(data, Refusal::BadConnect, false),
            LineRead::Port(port) => self.request_guest(data, port),
        }
    }

    /// The host asked for guest port `port`: queue a REQUEST from a fresh
    /// host port and wait for the guest's answer until the deadline.
    fn request_guest(&mut self, data: u32, port: u32) {
        let host_port = self.alloc_host_port(port);
        let deadline = Instant::now() + self.response_timeout;
        let c = self.conns.get_mut(&data).expect("connection exists");
        c.handshake = Vec::new();
        c.guest_port = port;
        c.host_port = host_port;
        c.state = State::AwaitingResponse;
        c.send_request = true;
        c.deadline = Some(deadline);
        self.ports.insert((host_port, port), data);
        self.arm_timer();
        self.mark(data);
    }

    /// Flush buffered guest data to the host; finish shutdowns it enables.
    fn flush(&mut self, data: u32) {
        let Some(c) = self.conns.get_mut(&data) else {
            return;
        };
        if let Err(e) = c.flush_to_host() {
            debug!("vsock: host socket for port {} closed: {e}", c.host_port);
            return self.kill(data, true);
        }
        self.after_guest_data(data);
    }

    fn after_guest_data(&mut self, data: u32) {
        let Some(c) = self.conns.get_mut(&data) else {
            return;
        };
        if c.to_host.is_empty() {
            if c.peer_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND {
                // Everything delivered and the guest is done: close.
                return self.kill(data, true);
            }
            if c.peer_shutdown & SHUTDOWN_SEND != 0 && !c.host_write_shut {
                c.host_write_shut = true;
                let _ = c.stream.shutdown(Shutdown::Write);
            }
        }
        c.check_credit_update();
        self.mark(data);
    }

    /// The timer fired: close the connections whose deadline passed.
    pub fn timer_tick(&mut self) {
        // The timerfd is readable, so this does not block.
        let _ = self.timer.wait();
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut any = false;
        for (&data, c) in &self.conns {
            match c.deadline {
                Some(d) if d <= now => expired.push((data, c.state)),
                Some(_) => any = true,
                None => {}
            }
        }
        for (data, state) in expired {
            match state {
                State::HostHandshake => {
                    debug!("vsock: no CONNECT line in time; closing the host connection");
                    self.refuse(data, Refusal::BadConnect, false);
                }
                State::AwaitingResponse => {
                    let port = self.conns.get(&data).map_or(0, |c| c.guest_port);
                    warn!(
                        "vsock: the guest did not answer a connection to its port {port} within {} ms; closing it",
                        self.response_timeout.as_millis()
                    );
                    self.refuse(data, Refusal::Timeout, true);
                }
                State::Established => {
                    debug!("vsock: connection timed out while closing");
                    self.kill(data, true);
                }
            }
        }
        if !any {
            let _ = self.timer.clear();
            self.timer_armed = false;
        }
    }

    // ---- guest side ----------------------------------------------------

    /// Act on one packet from the guest's tx queue.
    pub fn handle_tx_chain(&mut self, mem: &GuestMemoryMmap, flat: &Chain) {
        let mut raw = [0u8; HDR_SIZE];
        let n = chain::read_bytes(mem, &flat.readable, 0, &mut raw);
        let hdr = match parse_tx(&raw[..n], flat.readable_len(), self.guest_cid) {
            Ok(h) => h,
            Err(e) => {
                debug!("vsock: dropping bad tx packet: {e}");
                if n == HDR_SIZE {
                    // A broken packet on a live connection desynchronises
                    // it: reset that connection.
                    let h = Header::from_bytes(&raw);
                    if let Some(&data) = self.ports.get(&(h.dst_port, h.src_port)) {
                        if h.src_cid == self.guest_cid {
                            self.kill(data, true);
                        }
                    }
                }
                return;
            }
        };
        let Some(&data) = self.ports.get(&(hdr.dst_port, hdr.src_port)) else {
            match hdr.op {
                OP_REQUEST => self.guest_connect(&hdr),
                OP_RST => {}
                _ => self.queue_rst(hdr.dst_port, hdr.src_port),
            }
            return;
        };
        let c = self.conns.get_mut(&data).expect("port map is consistent");
        c.peer_buf_alloc = hdr.buf_alloc;
        c.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if c.peer_credit() > 0 {
            c.credit_requested = false;
        }
        match (c.state, hdr.op) {
            (State::AwaitingResponse, OP_RST) => {
                debug!(
                    "vsock: the guest refused a connection to its port {}",
                    c.guest_port
                );
                return self.refuse(data, Refusal::Reset, false);
            }
            (_, OP_RST) => return self.kill(data, false),
            (State::AwaitingResponse, OP_RESPONSE) => return self.guest_accepted(data),
            (State::Established, OP_RW) => return self.guest_data(mem, flat, &hdr, data),
            (State::Established, OP_SHUTDOWN) => {
                c.peer_shutdown |= hdr.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                if c.peer_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND && !c.to_host.is_empty() {
                    c.deadline = Some(Instant::now() + self.close_timeout);
                    self.arm_timer();
                }
                return self.after_guest_data(data);
            }
            (State::Established, OP_CREDIT_UPDATE) => {}
            (State::Established, OP_CREDIT_REQUEST) => c.send_credit_update = true,
            (State::AwaitingResponse, op) => {
                debug!("vsock: unexpected op {op} instead of a RESPONSE; resetting");
                return self.refuse(data, Refusal::Reset, true);
            }
            (state, op) => {
                debug!("vsock: unexpected op {op} in state {state:?}; resetting");
                return self.kill(data, true);
            }
        }
        self.mark(data);
    }

    /// The guest answered our REQUEST with RESPONSE: tell the host `OK`.
    /// Connection setup, once per host-initiated connection (never per
    /// packet): the mark is a flag test after the first.
    fn guest_accepted(&mut self, data: u32) {
        static FIRST: AtomicBool = AtomicBool::new(false);
        crate::timing::mark_once(&FIRST, "guest: first vsock connection accepted");
        if let Some(c) = self.conns.get_mut(&data) {
            c.establish();
        }
        self.flush(data);
    }

    fn guest_data(&mut self, mem: &GuestMemoryMmap, flat: &Chain, hdr: &Header, data: u32) {
        let c = self.conns.get_mut(&data).expect("caller checked");
        if !c.take_guest_data(mem, flat, hdr) {
            return self.kill(data, true);
        }
        self.after_guest_data(data);
    }

    fn guest_connect(&mut self, hdr: &Header) {
        if self.conns.len() >= self.max_connections {
            debug!("vsock: connection limit reached; refusing guest connection");
            return self.queue_rst(hdr.dst_port, hdr.src_port);
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", hdr.dst_port));
        let stream = match unix::connect_nonblocking(Path::new(&path)) {
            Ok(s) => s,
            Err(e) => {
                debug!(
                    "vsock: guest connect to port {}: {}: {e}",
                    hdr.dst_port,
                    Path::new(&path).display()
                );
                return self.queue_rst(hdr.dst_port, hdr.src_port);
            }
        };
        let data = self.alloc_data();
        let mut conn = Conn::new(data, stream, State::Established);
        conn.host_port = hdr.dst_port;
        conn.guest_port = hdr.src_port;
        conn.peer_buf_alloc = hdr.buf_alloc;
        conn.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        conn.send_response = true;
        self.insert(conn);
    }

    // ---- rx scheduling -------------------------------------------------

    /// Write the next pending packet into `buf`; returns its length.
    pub fn next_rx_packet(&mut self, mem: &GuestMemoryMmap, buf: &Chain) -> Option<u32> {
        if let Some((host_port, guest_port)) = self.pending_rsts.pop_front() {
            let hdr = Header {
                src_cid: HOST_CID,
                dst_cid: self.guest_cid,
                src_port: host_port,
                dst_port: guest_port,
                type_: TYPE_STREAM,
                op: OP_RST,
                ..Default::default()
            };
            chain::write_bytes(mem, &buf.writable, 0, &hdr.to_bytes());
            return Some(HDR_SIZE_U32);
        }
        // Connections that turn out to have nothing sendable (e.g. the
        // buffer has no room for data) are re-marked only afterwards, so
        // this loop visits each at most once.
        let mut idle = Vec::new();
        let mut out = None;
        while let Some(data) = self.ready.pop_front() {
            let guest_cid = self.guest_cid;
            let Some(c) = self.conns.get_mut(&data) else {
                continue;
            };
            c.in_ready = false;
            match c.produce(guest_cid, mem, buf) {
                Produced::Nothing => idle.push(data),
                Produced::Packet(len) => {
                    self.watch_close(data);
                    self.mark(data);
                    out = Some(len);
                    break;
                }
                Produced::Reset(len) => {
                    self.kill(data, false);
                    out = Some(len);
                    break;
                }
            }
        }
        for data in idle {
            self.mark(data);
        }
        out
    }
}
