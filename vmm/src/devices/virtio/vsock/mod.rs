//! virtio-vsock (spec §5.10) with a Firecracker-style Unix-socket backend.
//!
//! * Host-initiated: a host process connects to `uds_path` and writes
//!   `CONNECT <port>\n`; the device sends the guest a REQUEST from a fresh
//!   host port to `<port>`; on the guest's RESPONSE the host reads
//!   `OK <host port>\n` and the socket becomes a byte stream to the guest.
//!   A connection that cannot be set up is closed after one line saying
//!   why, `ERR <reason>\n` (see [`Refusal`]), so the host can tell a guest
//!   that refused (nothing listening, backlog full) from one that did not
//!   answer in time.
//! * Guest-initiated: a REQUEST to host port P connects to `<uds_path>_P`.
//!
//! Flow control is the virtio-vsock credit scheme: we never send the guest
//! more than it advertised (`buf_alloc`/`fwd_cnt`), and we advertise a
//! per-connection buffer of [`CONN_BUF_SIZE`] bytes, which bounds what we
//! hold for a host socket that is slow to read. A guest that overruns its
//! credit gets the connection reset.

mod packet;
mod unix;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_manager::{EventOps, EventSet, Events};
use log::{debug, error, warn};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::timerfd::TimerFd;

use super::chain::{self, Chain};
use super::{ActivateError, Interrupt, VirtioDevice, TYPE_VSOCK};
use packet::*;

pub use packet::HOST_CID;

/// The guest driver fills the whole rx ring with 4 KiB buffers at probe
/// time, so the ring size is boot time and guest memory: 128 (vhost-vsock's
/// size) still lets 512 KiB of host-to-guest data be in flight.
const QUEUE_SIZE: u16 = 128;
const RX: usize = 0;
const TX: usize = 1;
const EVT: usize = 2;

/// Buffer space we advertise to the guest per connection (`buf_alloc`), and
/// the most we ever hold for a host socket that does not keep up.
pub const CONN_BUF_SIZE: u32 = 256 * 1024;
/// Tell the guest about freed buffer space once its view of our free space
/// drops below this.
const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_SIZE / 2;
/// Most concurrent connections (including ones still in handshake).
pub const MAX_CONNECTIONS: usize = 1024;
/// Most RST packets for unknown connections waiting for an rx buffer.
const MAX_PENDING_RSTS: usize = 1024;
/// Longest `CONNECT <port>\n` line.
const MAX_CONNECT_LINE: usize = 32;
/// Packets handled per queue notification before yielding the event loop.
const MAX_PACKETS_PER_KICK: usize = 1024;
/// Connections accepted per listener event.
const MAX_ACCEPTS_PER_EVENT: usize = 64;
/// First host port handed out to host-initiated connections.
const FIRST_HOST_PORT: u32 = 1 << 30;

const LISTENER_DATA: u32 = 0;
const TIMER_DATA: u32 = 1;
const FIRST_CONN_DATA: u32 = 2;
const MAX_CONN_DATA: u32 = 0x7fff_ffff;

/// Why a vsock device could not be created.
#[derive(Debug)]
pub enum VsockError {
    /// CIDs 0-2 and `u32::MAX` are reserved.
    InvalidCid(u64),
    /// Something that is not a socket already exists at the UDS path.
    PathExists(PathBuf),
    /// A live listener already owns the UDS path.
    PathInUse(PathBuf),
    /// Inspecting, removing or binding the UDS path failed.
    Bind(PathBuf, io::Error),
    /// Creating the timer failed.
    Timer(io::Error),
}

impl std::fmt::Display for VsockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VsockError::InvalidCid(c) => write!(f, "invalid vsock guest CID {c}"),
            VsockError::PathExists(p) => {
                write!(
                    f,
                    "vsock socket path {} exists and is not a socket",
                    p.display()
                )
            }
            VsockError::PathInUse(p) => write!(
                f,
                "vsock socket path {} is in use by another process",
                p.display()
            ),
            VsockError::Bind(p, e) => write!(f, "cannot bind vsock socket {}: {e}", p.display()),
            VsockError::Timer(e) => write!(f, "cannot create vsock timer: {e}"),
        }
    }
}

impl std::error::Error for VsockError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Host connected to the UDS; reading its `CONNECT <port>\n` line.
    HostHandshake,
    /// REQUEST sent (or queued) to the guest; waiting for RESPONSE.
    AwaitingResponse,
    Established,
}

/// Why a host connection was closed before its `OK` line: the `ERR` line
/// the host reads. The words are part of the host interface
/// (husk_protocol::client parses them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// The guest answered the REQUEST with RST (no listener on the port, or
    /// its accept backlog is full).
    Reset,
    /// No RESPONSE from the guest within the response timeout.
    Timeout,
    /// The CONNECT line was malformed or did not come in time.
    BadConnect,
    /// The device holds [`MAX_CONNECTIONS`] connections already.
    Limit,
    /// The guest reset its vsock device (a reboot, a driver reload).
    DeviceReset,
}

impl Refusal {
    fn line(self) -> &'static [u8] {
        match self {
            Refusal::Reset => b"ERR reset\n",
            Refusal::Timeout => b"ERR timeout\n",
            Refusal::BadConnect => b"ERR bad-connect\n",
            Refusal::Limit => b"ERR limit\n",
            Refusal::DeviceReset => b"ERR device-reset\n",
        }
    }

    /// Tells the host, best effort: nothing was written to the socket yet,
    /// so the short line fits its buffer; a host that left gets nothing.
    fn tell(self, stream: &UnixStream) {
        let _ = unix::send(stream, self.line());
    }
}

struct Conn {
    data: u32,
    stream: UnixStream,
    state: State,
    host_port: u32,
    guest_port: u32,
    /// Close (with RST) if still in this state by then.
    deadline: Option<Instant>,
    handshake: Vec<u8>,

    // Control packets owed to the guest.
    send_request: bool,
    send_response: bool,
    send_credit_update: bool,
    /// Set once a CREDIT_REQUEST went out; cleared when credit arrives.
    credit_requested: bool,

    // host -> guest
    /// epoll said the host socket is readable and we have not drained it.
    host_readable: bool,
    host_eof: bool,
    host_hup: bool,
    /// We told the guest we will send no more (SHUTDOWN flags sent).
    shutdown_sent: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    tx_cnt: Wrapping<u32>,

    // guest -> host
    to_host: VecDeque<u8>,
    /// Leading bytes of `to_host` that are ours (the `OK` line), not the
    /// guest's.
    to_host_ctrl: usize,
    rx_cnt: Wrapping<u32>,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    peer_shutdown: u32,
    host_write_shut: bool,

    // event loop bookkeeping
    registered: Option<EventSet>,
    in_ready: bool,
    dirty: bool,
}

impl Conn {
    fn new(data: u32, stream: UnixStream, state: State) -> Conn {
        Conn {
            data,
            stream,
            state,
            host_port: 0,
            guest_port: 0,
            deadline: None,
            handshake: Vec::new(),
            send_request: false,
            send_response: false,
            send_credit_update: false,
            credit_requested: false,
            host_readable: false,
            host_eof: false,
            host_hup: false,
            shutdown_sent: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            tx_cnt: Wrapping(0),
            to_host: VecDeque::new(),
            to_host_ctrl: 0,
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            peer_shutdown: 0,
            host_write_shut: false,
            registered: None,
            in_ready: false,
            dirty: false,
        }
    }

    /// How many more bytes the guest can take.
    fn peer_credit(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Guest data waiting for the host socket.
    fn buffered_guest_bytes(&self) -> usize {
        self.to_host.len() - self.to_host_ctrl
    }

    fn may_send_data(&self) -> bool {
        self.state == State::Established && !self.host_eof && self.peer_shutdown & SHUTDOWN_RCV == 0
    }

    /// Whether the connection has a packet for the guest right now.
    fn has_rx_work(&self) -> bool {
        self.send_request
            || self.send_response
            || self.send_credit_update
            || (self.may_send_data() && self.host_readable && self.peer_credit() > 0)
            || (self.may_send_data()
                && self.host_readable
                && self.peer_credit() == 0
                && !self.credit_requested)
    }

    fn wanted_events(&self) -> EventSet {
        match self.state {
            State::HostHandshake => EventSet::IN,
            State::AwaitingResponse => EventSet::empty(),
            State::Established => {
                let mut s = EventSet::empty();
                if self.may_send_data() && !self.host_readable && self.peer_credit() > 0 {
                    s |= EventSet::IN;
                }
                if !self.to_host.is_empty() {
                    s |= EventSet::OUT;
                }
                s
            }
        }
    }

    fn header(&self, op: u16, guest_cid: u64) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: self.host_port,
            dst_port: self.guest_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: CONN_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// Ask for a CREDIT_UPDATE if the guest's view of our free buffer space
    /// is low and we have freed some since we last told it.
    fn check_credit_update(&mut self) {
        let guest_view_used = (self.rx_cnt - self.last_fwd_cnt_sent).0;
        let guest_view_free = CONN_BUF_SIZE.saturating_sub(guest_view_used);
        if guest_view_free < CREDIT_UPDATE_THRESHOLD && self.fwd_cnt != self.last_fwd_cnt_sent {
            self.send_credit_update = true;
        }
    }

    /// Write as much of `to_host` as the socket takes.
    fn flush_to_host(&mut self) -> io::Result<()> {
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            let front_len = front.len();
            let n = match unix::send(&self.stream, front) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            self.to_host.drain(..n);
            let ctrl = n.min(self.to_host_ctrl);
            self.to_host_ctrl -= ctrl;
            self.fwd_cnt += Wrapping((n - ctrl) as u32);
            if n < front_len {
                break;
            }
        }
        Ok(())
    }
}

/// What producing an rx packet for a connection did.
enum Produced {
    /// Nothing to send after all.
    Nothing,
    /// A packet of this many bytes (header included) was written.
    Packet(u32),
    /// An RST was written; the connection is finished.
    Reset(u32),
}

struct Active {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    interrupt: Arc<Interrupt>,
}

/// Connections and the host-side sockets.
struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    timer: TimerFd,
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
    handshake_timeout: Duration,
    response_timeout: Duration,
    close_timeout: Duration,
    max_connections: usize,
}

/// A virtio-vsock device whose host side is a Unix socket.
pub struct Vsock {
    mux: Muxer,
    /// (dev, ino) of the socket file we created, to remove it on drop.
    uds_id: Option<(u64, u64)>,
    config: [u8; 8],
    queue_sizes: [u16; 3],
    active: Option<Active>,
}

impl std::fmt::Debug for Vsock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vsock")
            .field("guest_cid", &self.mux.guest_cid)
            .field("uds_path", &self.mux.uds_path)
            .field("connections", &self.mux.conns.len())
            .finish_non_exhaustive()
    }
}

impl Vsock {
    /// Create the device and bind its host listener at `uds_path`. A stale
    /// socket file at the path is replaced; anything else there is an error.
    /// The socket file is removed when the device is dropped.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Vsock, VsockError> {
        if guest_cid <= HOST_CID || guest_cid >= u64::from(u32::MAX) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        let path = uds_path.to_path_buf();
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => match unix::connect_nonblocking(&path) {
                Ok(_) => return Err(VsockError::PathInUse(path)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(VsockError::PathInUse(path))
                }
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    debug!("vsock: removing stale socket {}", path.display());
                    std::fs::remove_file(&path).map_err(|e| VsockError::Bind(path.clone(), e))?;
                }
                Err(e) => return Err(VsockError::Bind(path, e)),
            },
            Ok(_) => return Err(VsockError::PathExists(path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(VsockError::Bind(path, e)),
        }
        let listener = UnixListener::bind(&path).map_err(|e| VsockError::Bind(path.clone(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| VsockError::Bind(path.clone(), e))?;
        let uds_id = std::fs::symlink_metadata(&path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let timer = TimerFd::new().map_err(|e| VsockError::Timer(e.into()))?;

        Ok(Vsock {
            mux: Muxer {
                guest_cid,
                uds_path: path,
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
            },
            uds_id,
            config: guest_cid.to_le_bytes(),
            queue_sizes: [QUEUE_SIZE; 3],
            active: None,
        })
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.mux.guest_cid
    }

    /// The host-side listening socket path.
    pub fn uds_path(&self) -> &Path {
        &self.mux.uds_path
    }

    /// Handle tx packets, then fill rx. Returns whether tx work is left.
    fn run_queues(&mut self, tx: bool) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mut more = false;
        if tx {
            more = self.mux.process_tx(active);
        }
        self.mux.fill_rx(active);
        more
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        let path = &self.mux.uds_path;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if Some((meta.dev(), meta.ino())) == self.uds_id {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        1u64 << VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::block::read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        _acked_features: u64,
    ) -> Result<(), ActivateError> {
        static ACTIVATED: AtomicBool = AtomicBool::new(false);
        crate::timing::mark_once(&ACTIVATED, "guest: vsock driver up");
        if queues.len() != 3 {
            return Err(ActivateError::QueueCount {
                expected: 3,
                got: queues.len(),
            });
        }
        self.active = Some(Active {
            mem,
            queues,
            interrupt,
        });
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.mux.drop_all_connections();
    }

    fn after_reset(&mut self, ops: &mut EventOps) {
        self.mux.sync(ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            &self.mux.listener,
            LISTENER_DATA,
            EventSet::IN,
        )) {
            error!("vsock: cannot register listener: {e}");
        }
        if let Err(e) = ops.add(Events::with_data(&self.mux.timer, TIMER_DATA, EventSet::IN)) {
            error!("vsock: cannot register timer: {e}");
        }
    }

    fn process_queue(&mut self, index: usize, ops: &mut EventOps) -> bool {
        self.mux.sync(ops);
        let more = match index {
            RX => self.run_queues(false),
            TX => self.run_queues(true),
            // We never post events; the buffers stay with us.
            EVT => false,
            _ => false,
        };
        self.mux.sync(ops);
        more
    }

    fn process_event(&mut self, events: Events, ops: &mut EventOps) {
        // Deregister connections dropped by a reset first, so no stale
        // event is acted upon.
        self.mux.sync(ops);
        match events.data() {
            LISTENER_DATA if events.fd() == self.mux.listener.as_raw_fd() => self.mux.accept(),
            TIMER_DATA if events.fd() == self.mux.timer.as_raw_fd() => {
                // Packets the guest already queued count before deadlines
                // are judged: after a host stall the timer and the guest's
                // RESPONSE can wake the loop together.
                self.run_queues(true);
                self.mux.sync(ops);
                self.mux.timer_tick();
            }
            data => self.mux.conn_event(data, events),
        }
        self.run_queues(false);
        self.mux.sync(ops);
    }
}

impl Muxer {
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

    fn drop_all_connections(&mut self) {
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
    fn sync(&mut self, ops: &mut EventOps) {
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

    fn accept(&mut self) {
        for _ in 0..MAX_ACCEPTS_PER_EVENT {
            let stream = match self.listener.accept() {
                Ok((s, _)) => {
                    static FIRST: AtomicBool = AtomicBool::new(false);
                    crate::timing::mark_once(&FIRST, "host: first vsock connection");
                    s
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("vsock: accept on {}: {e}", self.uds_path.display());
                    return;
                }
            };
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

    fn conn_event(&mut self, data: u32, events: Events) {
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
            }
        }
        self.mark(data);
    }

    fn read_handshake(&mut self, data: u32) {
        let Some(c) = self.conns.get_mut(&data) else {
            return;
        };
        let mut buf = [0u8; MAX_CONNECT_LINE];
        let room = MAX_CONNECT_LINE - c.handshake.len();
        let n = match unix::peek(&c.stream, &mut buf[..room]) {
            Ok(0) => return self.kill(data, false),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => return self.kill(data, false),
        };
        // Consume the line only: what follows it is data for the guest.
        let newline = buf[..n].iter().position(|&b| b == b'\n');
        let take = newline.map_or(n, |i| i + 1);
        match c.stream.read(&mut buf[..take]) {
            Ok(k) if k == take => {}
            _ => return self.kill(data, false),
        }
        c.handshake.extend_from_slice(&buf[..take]);
        if newline.is_none() {
            if c.handshake.len() >= MAX_CONNECT_LINE {
                debug!("vsock: CONNECT line too long");
                self.refuse(data, Refusal::BadConnect, false);
            }
            return;
        }
        let Some(port) = parse_connect_line(&c.handshake) else {
            debug!(
                "vsock: bad handshake {:?}",
                String::from_utf8_lossy(&c.handshake)
            );
            return self.refuse(data, Refusal::BadConnect, false);
        };
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

    fn timer_tick(&mut self) {
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

    /// Handle up to MAX_PACKETS_PER_KICK tx packets. Returns whether more
    /// may be pending.
    fn process_tx(&mut self, active: &mut Active) -> bool {
        let mut used_any = false;
        let mut more = false;
        for n in 0.. {
            if n == MAX_PACKETS_PER_KICK {
                more = true;
                break;
            }
            let Some(desc_chain) = active.queues[TX].pop_descriptor_chain(&active.mem) else {
                break;
            };
            let (head, flat) = chain::collect(desc_chain);
            match flat {
                Ok(flat) => self.handle_tx_chain(&active.mem, &flat),
                Err(e) => debug!("vsock: bad tx descriptor chain: {e}"),
            }
            if let Err(e) = active.queues[TX].add_used(&active.mem, head, 0) {
                debug!("vsock: cannot return tx descriptor {head}: {e}");
                continue;
            }
            used_any = true;
        }
        if used_any {
            active.interrupt.signal_used_queue();
        }
        more
    }

    fn handle_tx_chain(&mut self, mem: &GuestMemoryMmap, flat: &Chain) {
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
            (State::AwaitingResponse, OP_RESPONSE) => {
                static FIRST: AtomicBool = AtomicBool::new(false);
                crate::timing::mark_once(&FIRST, "guest: first vsock connection accepted");
                c.state = State::Established;
                c.deadline = None;
                let line = format!("OK {}\n", c.host_port);
                c.to_host_ctrl = line.len();
                c.to_host.extend(line.as_bytes());
                return self.flush(data);
            }
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

    fn guest_data(&mut self, mem: &GuestMemoryMmap, flat: &Chain, hdr: &Header, data: u32) {
        let c = self.conns.get_mut(&data).expect("caller checked");
        if c.peer_shutdown & SHUTDOWN_SEND != 0 {
            debug!("vsock: data after SHUTDOWN(SEND); resetting");
            return self.kill(data, true);
        }
        let len = hdr.len as usize;
        if c.buffered_guest_bytes() + len > CONN_BUF_SIZE as usize {
            debug!(
                "vsock: guest overran its credit on port {}; resetting",
                c.host_port
            );
            return self.kill(data, true);
        }
        c.rx_cnt += Wrapping(hdr.len);
        let mut sent = 0usize;
        if c.to_host.is_empty() && len > 0 {
            match chain::send_from(mem, &flat.readable, HDR_SIZE as u64, len as u64, &c.stream) {
                Ok(n) => sent = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    debug!("vsock: host socket for port {} closed: {e}", c.host_port);
                    return self.kill(data, true);
                }
            }
            c.fwd_cnt += Wrapping(sent as u32);
        }
        if sent < len {
            let mut rest = vec![0u8; len - sent];
            let got = chain::read_bytes(mem, &flat.readable, (HDR_SIZE + sent) as u64, &mut rest);
            rest.truncate(got);
            c.to_host.extend(rest);
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

    /// Put pending packets into rx buffers.
    fn fill_rx(&mut self, active: &mut Active) {
        let mut used_any = false;
        for _ in 0..MAX_PACKETS_PER_KICK {
            if self.pending_rsts.is_empty() && self.ready.is_empty() {
                break;
            }
            let Some(desc_chain) = active.queues[RX].pop_descriptor_chain(&active.mem) else {
                break;
            };
            let (head, flat) = chain::collect(desc_chain);
            let flat = match flat {
                Ok(f) if f.readable.is_empty() && f.writable_len() >= HDR_SIZE as u64 => f,
                Ok(_) => {
                    debug!("vsock: rx buffer too small or not device-writable");
                    if active.queues[RX].add_used(&active.mem, head, 0).is_err() {
                        continue;
                    }
                    used_any = true;
                    continue;
                }
                Err(e) => {
                    debug!("vsock: bad rx descriptor chain: {e}");
                    if active.queues[RX].add_used(&active.mem, head, 0).is_err() {
                        continue;
                    }
                    used_any = true;
                    continue;
                }
            };
            let Some(len) = self.next_rx_packet(&active.mem, &flat) else {
                // Nothing to send after all: hand the buffer back to the queue.
                active.queues[RX].go_to_previous_position();
                break;
            };
            if let Err(e) = active.queues[RX].add_used(&active.mem, head, len) {
                debug!("vsock: cannot return rx descriptor {head}: {e}");
                continue;
            }
            used_any = true;
        }
        if used_any {
            active.interrupt.signal_used_queue();
        }
    }

    /// Write the next pending packet into `buf`; returns its length.
    fn next_rx_packet(&mut self, mem: &GuestMemoryMmap, buf: &Chain) -> Option<u32> {
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
            return Some(HDR_SIZE as u32);
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
            match produce(c, guest_cid, mem, buf) {
                Produced::Nothing => idle.push(data),
                Produced::Packet(len) => {
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

/// Produce one packet for `c` into `buf` (at least HDR_SIZE writable bytes).
fn produce(c: &mut Conn, guest_cid: u64, mem: &GuestMemoryMmap, buf: &Chain) -> Produced {
    let mut hdr;
    if c.send_request {
        c.send_request = false;
        hdr = c.header(OP_REQUEST, guest_cid);
    } else if c.send_response {
        c.send_response = false;
        hdr = c.header(OP_RESPONSE, guest_cid);
    } else if c.send_credit_update {
        c.send_credit_update = false;
        hdr = c.header(OP_CREDIT_UPDATE, guest_cid);
    } else if c.may_send_data() && c.host_readable {
        let credit = c.peer_credit();
        if credit == 0 {
            if c.credit_requested {
                return Produced::Nothing;
            }
            c.credit_requested = true;
            hdr = c.header(OP_CREDIT_REQUEST, guest_cid);
        } else {
            let room = buf.writable_len() - HDR_SIZE as u64;
            let max = room.min(u64::from(credit)).min(u64::from(MAX_PAYLOAD));
            if max == 0 {
                return Produced::Nothing;
            }
            match chain::read_into(mem, &buf.writable, HDR_SIZE as u64, max, &mut c.stream) {
                Ok(0) => {
                    // Host closed its sending side: tell the guest; if the
                    // host is gone entirely, it will not read either.
                    c.host_eof = true;
                    c.host_readable = false;
                    let mut flags = SHUTDOWN_SEND;
                    if c.host_hup {
                        flags |= SHUTDOWN_RCV;
                    }
                    c.shutdown_sent |= flags;
                    hdr = c.header(OP_SHUTDOWN, guest_cid);
                    hdr.flags = c.shutdown_sent;
                }
                Ok(n) => {
                    c.tx_cnt += Wrapping(n as u32);
                    hdr = c.header(OP_RW, guest_cid);
                    hdr.len = n as u32;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.host_readable = false;
                    return Produced::Nothing;
                }
                Err(e) => {
                    debug!("vsock: host socket for port {}: {e}", c.host_port);
                    let hdr = c.header(OP_RST, guest_cid);
                    chain::write_bytes(mem, &buf.writable, 0, &hdr.to_bytes());
                    return Produced::Reset(HDR_SIZE as u32);
                }
            }
        }
    } else {
        return Produced::Nothing;
    }
    c.last_fwd_cnt_sent = c.fwd_cnt;
    chain::write_bytes(mem, &buf.writable, 0, &hdr.to_bytes());
    Produced::Packet(HDR_SIZE as u32 + hdr.len)
}

/// Parse `CONNECT <port>\n` (decimal port, nothing else).
fn parse_connect_line(line: &[u8]) -> Option<u32> {
    let rest = line.strip_prefix(b"CONNECT ")?;
    let digits = rest.strip_suffix(b"\n")?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
