//! One connection's state: where it is in its life ([`State`]), the
//! virtio-vsock credit accounting both ways, the packet it owes the guest
//! next ([`Conn::produce`]) and the guest data it still owes the host socket
//! ([`Conn::flush_to_host`]).
//!
//! Nothing here knows about other connections, the epoll registrations or
//! the queues: the muxer decides when a connection is looked at.

use std::collections::VecDeque;
use std::io;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use event_manager::EventSet;
use log::debug;
use vm_memory::GuestMemoryMmap;

use super::packet::{
    Header, HDR_SIZE, HDR_SIZE_U32, HOST_CID, MAX_PAYLOAD, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE,
    OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use super::unix;
use crate::devices::virtio::chain::{self, Chain};

/// Buffer space we advertise to the guest per connection (`buf_alloc`), and
/// the most we ever hold for a host socket that does not keep up.
pub const CONN_BUF_SIZE: u32 = 256 * 1024;
/// Tell the guest about freed buffer space once its view of our free space
/// drops below this.
const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_SIZE / 2;

/// `n` bytes as a step of a virtio-vsock byte counter (`fwd_cnt`, `tx_cnt`,
/// `rx_cnt`), which counts modulo 2^32 by definition.
#[allow(clippy::cast_possible_truncation)] // The counters wrap at 2^32 (virtio spec §5.10.6.3).
fn counter_step(n: usize) -> Wrapping<u32> {
    Wrapping(n as u32)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Host connected to the UDS; reading its `CONNECT <port>\n` line.
    HostHandshake,
    /// REQUEST sent (or queued) to the guest; waiting for RESPONSE.
    AwaitingResponse,
    Established,
}

/// What producing an rx packet for a connection did.
pub(super) enum Produced {
    /// Nothing to send after all.
    Nothing,
    /// A packet of this many bytes (header included) was written.
    Packet(u32),
    /// An RST was written; the connection is finished.
    Reset(u32),
}

pub(super) struct Conn {
    /// The connection's key in the muxer's table and its epoll data.
    pub data: u32,
    pub stream: UnixStream,
    pub state: State,
    pub host_port: u32,
    pub guest_port: u32,
    /// Close (with RST) if still in this state by then.
    pub deadline: Option<Instant>,
    /// The part of the `CONNECT <port>\n` line read so far.
    pub handshake: Vec<u8>,

    // Control packets owed to the guest.
    pub send_request: bool,
    pub send_response: bool,
    pub send_credit_update: bool,
    /// Set once a CREDIT_REQUEST went out; cleared when credit arrives.
    pub credit_requested: bool,

    // host -> guest
    /// epoll said the host socket is readable and we have not drained it.
    pub host_readable: bool,
    pub host_eof: bool,
    pub host_hup: bool,
    /// We told the guest we will send no more (SHUTDOWN flags sent).
    shutdown_sent: u32,
    pub peer_buf_alloc: u32,
    pub peer_fwd_cnt: Wrapping<u32>,
    tx_cnt: Wrapping<u32>,

    // guest -> host
    pub to_host: VecDeque<u8>,
    /// Leading bytes of `to_host` that are ours (the `OK` line), not the
    /// guest's.
    to_host_ctrl: usize,
    rx_cnt: Wrapping<u32>,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    pub peer_shutdown: u32,
    pub host_write_shut: bool,

    // event loop bookkeeping
    pub registered: Option<EventSet>,
    pub in_ready: bool,
    pub dirty: bool,
}

impl Conn {
    pub fn new(data: u32, stream: UnixStream, state: State) -> Conn {
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
    pub fn peer_credit(&self) -> u32 {
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
    pub fn has_rx_work(&self) -> bool {
        self.send_request
            || self.send_response
            || self.send_credit_update
            || (self.may_send_data() && self.host_readable && self.peer_credit() > 0)
            || (self.may_send_data()
                && self.host_readable
                && self.peer_credit() == 0
                && !self.credit_requested)
    }

    pub fn wanted_events(&self) -> EventSet {
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

    /// The guest accepted our REQUEST: the connection carries data from now
    /// on, and the host's first line is `OK <host port>\n` (queued ahead of
    /// any guest data; the caller flushes it).
    pub fn establish(&mut self) {
        self.state = State::Established;
        self.deadline = None;
        let line = format!("OK {}\n", self.host_port);
        self.to_host_ctrl = line.len();
        self.to_host.extend(line.as_bytes());
    }

    /// Ask for a CREDIT_UPDATE if the guest's view of our free buffer space
    /// is low and we have freed some since we last told it.
    pub fn check_credit_update(&mut self) {
        let guest_view_used = (self.rx_cnt - self.last_fwd_cnt_sent).0;
        let guest_view_free = CONN_BUF_SIZE.saturating_sub(guest_view_used);
        if guest_view_free < CREDIT_UPDATE_THRESHOLD && self.fwd_cnt != self.last_fwd_cnt_sent {
            self.send_credit_update = true;
        }
    }

    /// Take the payload of an RW packet (`hdr.len` bytes after the header in
    /// `flat`): straight to the host socket when nothing is queued before
    /// it, the rest into `to_host`. Returns false if the connection must be
    /// reset: the guest sent after its SHUTDOWN(SEND), overran the credit we
    /// gave it, or the host socket failed.
    pub fn take_guest_data(&mut self, mem: &GuestMemoryMmap, flat: &Chain, hdr: &Header) -> bool {
        if self.peer_shutdown & SHUTDOWN_SEND != 0 {
            debug!("vsock: data after SHUTDOWN(SEND); resetting");
            return false;
        }
        let len = hdr.len as usize;
        if self.buffered_guest_bytes() + len > CONN_BUF_SIZE as usize {
            debug!(
                "vsock: guest overran its credit on port {}; resetting",
                self.host_port
            );
            return false;
        }
        self.rx_cnt += Wrapping(hdr.len);
        let mut sent = 0usize;
        if self.to_host.is_empty() && len > 0 {
            let offset = HDR_SIZE as u64;
            match chain::send_from(mem, &flat.readable, offset, len as u64, &self.stream) {
                Ok(n) => sent = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    debug!("vsock: host socket for port {} closed: {e}", self.host_port);
                    return false;
                }
            }
            self.fwd_cnt += counter_step(sent);
        }
        if sent < len {
            let mut rest = vec![0u8; len - sent];
            let got = chain::read_bytes(mem, &flat.readable, (HDR_SIZE + sent) as u64, &mut rest);
            rest.truncate(got);
            self.to_host.extend(rest);
        }
        true
    }

    /// Write as much of `to_host` as the socket takes.
    pub fn flush_to_host(&mut self) -> io::Result<()> {
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
            self.fwd_cnt += counter_step(n - ctrl);
            if n < front_len {
                break;
            }
        }
        Ok(())
    }

    /// Produce one packet for the guest into `buf` (at least HDR_SIZE
    /// writable bytes): the control packet owed first, else data from the
    /// host socket within the guest's credit (or a CREDIT_REQUEST when it
    /// has none).
    pub fn produce(&mut self, guest_cid: u64, mem: &GuestMemoryMmap, buf: &Chain) -> Produced {
        let hdr = if self.send_request {
            self.send_request = false;
            self.header(OP_REQUEST, guest_cid)
        } else if self.send_response {
            self.send_response = false;
            self.header(OP_RESPONSE, guest_cid)
        } else if self.send_credit_update {
            self.send_credit_update = false;
            self.header(OP_CREDIT_UPDATE, guest_cid)
        } else if self.may_send_data() && self.host_readable {
            match self.produce_from_host(guest_cid, mem, buf) {
                Ok(hdr) => hdr,
                Err(done) => return done,
            }
        } else {
            return Produced::Nothing;
        };
        self.last_fwd_cnt_sent = self.fwd_cnt;
        chain::write_bytes(mem, &buf.writable, 0, &hdr.to_bytes());
        Produced::Packet(HDR_SIZE_U32 + hdr.len)
    }

    /// The data-carrying part of [`Conn::produce`]: reads host bytes into
    /// `buf` after the header and returns the header to write, or what the
    /// attempt came to if there is no packet to finish.
    fn produce_from_host(
        &mut self,
        guest_cid: u64,
        mem: &GuestMemoryMmap,
        buf: &Chain,
    ) -> Result<Header, Produced> {
        let credit = self.peer_credit();
        if credit == 0 {
            if self.credit_requested {
                return Err(Produced::Nothing);
            }
            self.credit_requested = true;
            return Ok(self.header(OP_CREDIT_REQUEST, guest_cid));
        }
        let room = buf.writable_len() - HDR_SIZE as u64;
        let max = room.min(u64::from(credit)).min(u64::from(MAX_PAYLOAD));
        if max == 0 {
            return Err(Produced::Nothing);
        }
        match chain::read_into(mem, &buf.writable, HDR_SIZE as u64, max, &mut self.stream) {
            Ok(0) => {
                // Host closed its sending side: tell the guest; if the
                // host is gone entirely, it will not read either.
                self.host_eof = true;
                self.host_readable = false;
                let mut flags = SHUTDOWN_SEND;
                if self.host_hup {
                    flags |= SHUTDOWN_RCV;
                }
                self.shutdown_sent |= flags;
                let mut hdr = self.header(OP_SHUTDOWN, guest_cid);
                hdr.flags = self.shutdown_sent;
                Ok(hdr)
            }
            Ok(n) => {
                let len = u32::try_from(n).expect("read_into reads at most MAX_PAYLOAD bytes");
                self.tx_cnt += Wrapping(len);
                let mut hdr = self.header(OP_RW, guest_cid);
                hdr.len = len;
                Ok(hdr)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.host_readable = false;
                Err(Produced::Nothing)
            }
            Err(e) => {
                debug!("vsock: host socket for port {}: {e}", self.host_port);
                let hdr = self.header(OP_RST, guest_cid);
                chain::write_bytes(mem, &buf.writable, 0, &hdr.to_bytes());
                Err(Produced::Reset(HDR_SIZE_U32))
            }
        }
    }
}
