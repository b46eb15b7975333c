//! virtio-vsock (spec §5.10) with a Firecracker-style Unix-socket backend.
//!
//! * Host-initiated: a host process connects to `uds_path` and writes
//!   `CONNECT <port>\n`; the device sends the guest a REQUEST from a fresh
//!   host port to `<port>`; on the guest's RESPONSE the host reads
//!   `OK <host port>\n` and the socket becomes a byte stream to the guest.
//!   A connection that cannot be set up is closed after one line saying
//!   why, `ERR <reason>\n` (see [`Refusal`](handshake::Refusal)), so the
//!   host can tell a guest that refused (nothing listening, backlog full)
//!   from one that did not answer in time.
//! * Guest-initiated: a REQUEST to host port P connects to `<uds_path>_P`.
//!
//! Flow control is the virtio-vsock credit scheme: we never send the guest
//! more than it advertised (`buf_alloc`/`fwd_cnt`), and we advertise a
//! per-connection buffer of [`CONN_BUF_SIZE`](connection::CONN_BUF_SIZE)
//! bytes, which bounds what we hold for a host socket that is slow to read.
//! A guest that overruns its credit gets the connection reset.
//!
//! Rooms:
//! * `device`: the [`VirtioDevice`](super::VirtioDevice) — queues,
//!   activate/reset, dispatching queue kicks and fd events.
//! * `muxer`: the connection table — host listener and accept, the
//!   `CONNECT` handshake's state changes, deadlines, routing guest packets,
//!   rx scheduling.
//! * `connection`: one connection — its state, credit accounting, the next
//!   packet it owes the guest, flushing guest data to the host.
//! * `handshake`: the host's `CONNECT`/`OK`/`ERR` lines.
//! * `packet`: the wire header and its validation; `unix`: socket helpers.

mod connection;
mod device;
mod handshake;
mod muxer;
mod packet;
mod unix;

pub use device::{Vsock, VsockError};
pub use muxer::MAX_CONNECTIONS;

#[cfg(test)]
mod tests;
