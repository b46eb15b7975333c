//! Tap to guest: one frame at a time is read from the tap into a bounded
//! buffer and copied into the guest's rx buffers, over several chains with
//! `num_buffers` when `VIRTIO_NET_F_MRG_RXBUF` is acked, else into one
//! chain that must hold it all.
//!
//! When the ring runs dry the frame stays in the buffer and the device
//! stops reading the tap ([`Rx::blocked`]) until the guest adds buffers
//! and notifies the queue: the host side waits in the tap's own bounded
//! queue (the kernel drops there), never in husk-vmm's memory.

use std::io;
use std::sync::atomic::Ordering;

use log::debug;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_queue::{QueueOwnedT, QueueT};

use super::features::{bit, check_header, Dir, HDR_LEN, MAX_FRAME, NUM_BUFFERS_OFFSET};
use super::tap::Tap;
use super::{Active, LogOnce, NetCounters, LOG_BAD_RX_CHAIN, LOG_BAD_RX_FRAME, LOG_RX_ERROR};
use crate::devices::virtio::chain::{self, Chain};

/// Frames read from the tap per event before the event loop serves others.
pub(super) const MAX_FRAMES_PER_EVENT: usize = 256;
/// rx chains popped per event (a frame may take many; bad ones are
/// returned), so a guest that keeps moving its avail index cannot hold
/// the event loop.
const MAX_CHAINS_PER_EVENT: usize = 1024;

/// Why a run stopped.
#[derive(Debug)]
pub(super) enum RxEnd {
    /// The tap has nothing more for now.
    Drained,
    /// A frame waits for guest buffers ([`Rx::blocked`] is set).
    Blocked,
    /// The per-event budget ran out with work left: run again soon.
    Budget,
    /// The tap reached end of file or failed for good.
    Closed(Option<io::Error>),
}

/// What became of the pending frame.
enum Delivery {
    Done,
    NoBuffers,
    TooBig,
    OutOfBudget,
}

/// The rx side's state: the frame buffer and whether it waits for the
/// guest.
pub(super) struct Rx {
    buf: Vec<u8>,
    /// Length of the frame in `buf` not yet delivered (0: none).
    pending: usize,
    /// The guest's rx ring had no room for the pending frame: the tap is
    /// not read until the guest notifies the rx queue.
    pub blocked: bool,
    /// Chains gathered for the current frame (kept to reuse the memory).
    chains: Vec<(u16, Chain)>,
}

impl Rx {
    pub fn new() -> Rx {
        Rx {
            buf: vec![0; MAX_FRAME],
            pending: 0,
            blocked: false,
            chains: Vec::new(),
        }
    }

    /// Drops the pending frame (a reset: it was meant for the old driver).
    pub fn clear(&mut self) {
        self.pending = 0;
        self.blocked = false;
        self.chains.clear();
    }

    /// Moves frames from the tap to the guest within the per-event budget.
    pub fn run(
        &mut self,
        a: &mut Active,
        tap: &Tap,
        stats: &NetCounters,
        logged: &mut LogOnce,
    ) -> RxEnd {
        let mut used_any = false;
        let mut chains = MAX_CHAINS_PER_EVENT;
        let end = self.run_frames(a, tap, stats, logged, &mut used_any, &mut chains);
        if used_any {
            a.interrupt.signal_used_queue();
        }
        end
    }

    fn run_frames(
        &mut self,
        a: &mut Active,
        tap: &Tap,
        stats: &NetCounters,
        logged: &mut LogOnce,
        used_any: &mut bool,
        chains: &mut usize,
    ) -> RxEnd {
        for _ in 0..MAX_FRAMES_PER_EVENT {
            if self.pending == 0 {
                match tap.read_frame(&mut self.buf) {
                    Ok(0) => return RxEnd::Closed(None),
                    Ok(n) => {
                        if let Err(why) = check_header(&mut self.buf[..n], a.features, Dir::Rx) {
                            stats.rx_bad_frames.fetch_add(1, Ordering::Relaxed);
                            if logged.first(LOG_BAD_RX_FRAME) {
                                debug!("virtio-net: dropping a {n}-byte frame from the tap: {why}");
                            }
                            continue;
                        }
                        self.pending = n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return RxEnd::Drained,
                    Err(e) if is_fatal(&e) => return RxEnd::Closed(Some(e)),
                    Err(e) => {
                        stats.rx_errors.fetch_add(1, Ordering::Relaxed);
                        if logged.first(LOG_RX_ERROR) {
                            debug!("virtio-net: tap read: {e}");
                        }
                        continue;
                    }
                }
            }
            match self.deliver(a, stats, logged, used_any, chains) {
                Delivery::Done => {
                    stats.rx_frames.fetch_add(1, Ordering::Relaxed);
                    stats
                        .rx_bytes
                        .fetch_add(self.pending as u64, Ordering::Relaxed);
                    self.pending = 0;
                }
                Delivery::TooBig => {
                    stats.rx_too_big.fetch_add(1, Ordering::Relaxed);
                    self.pending = 0;
                }
                Delivery::NoBuffers => {
                    self.blocked = true;
                    return RxEnd::Blocked;
                }
                Delivery::OutOfBudget => return RxEnd::Budget,
            }
        }
        RxEnd::Budget
    }

    /// Copies the pending frame into the guest's rx buffers.
    fn deliver(
        &mut self,
        a: &mut Active,
        stats: &NetCounters,
        logged: &mut LogOnce,
        used_any: &mut bool,
        budget: &mut usize,
    ) -> Delivery {
        let len = self.pending;
        let max_chains = if a.features & bit(VIRTIO_NET_F_MRG_RXBUF) != 0 {
            usize::from(a.rxq.size())
        } else {
            1
        };
        self.chains.clear();
        let mut room = 0u64;
        while room < len as u64 {
            if self.chains.len() == max_chains {
                self.put_back(a);
                return Delivery::TooBig;
            }
            if *budget == 0 {
                self.put_back(a);
                return Delivery::OutOfBudget;
            }
            *budget -= 1;
            let Some(desc_chain) = a.rxq.pop_descriptor_chain(&a.mem) else {
                self.put_back(a);
                return Delivery::NoBuffers;
            };
            let (head, flat) = chain::collect(desc_chain);
            match flat {
                Ok(c) if c.readable.is_empty() && c.writable_len() >= HDR_LEN as u64 => {
                    room += c.writable_len();
                    self.chains.push((head, c));
                }
                bad => {
                    stats.rx_bad_chains.fetch_add(1, Ordering::Relaxed);
                    if logged.first(LOG_BAD_RX_CHAIN) {
                        match bad {
                            Err(e) => debug!("virtio-net: bad rx descriptor chain: {e}"),
                            Ok(_) => debug!(
                                "virtio-net: rx buffer not device-writable or under {HDR_LEN} bytes"
                            ),
                        }
                    }
                    // A merged frame's buffers are consecutive in the used
                    // ring: the ones gathered before this go back empty too.
                    for (h, _) in self.chains.drain(..) {
                        add_used(a, h, 0);
                    }
                    add_used(a, head, 0);
                    *used_any = true;
                    room = 0;
                }
            }
        }
        // At most the queue size (256) chains.
        let n = u16::try_from(self.chains.len()).unwrap_or(u16::MAX);
        self.buf[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2].copy_from_slice(&n.to_le_bytes());
        let mut off = 0usize;
        for (head, c) in self.chains.drain(..) {
            let take = usize::try_from(c.writable_len())
                .unwrap_or(usize::MAX)
                .min(len - off);
            let done = chain::write_bytes(&a.mem, &c.writable, 0, &self.buf[off..off + take]);
            // At most MAX_FRAME bytes.
            add_used(a, head, u32::try_from(done).unwrap_or(u32::MAX));
            off += take;
        }
        *used_any = true;
        Delivery::Done
    }

    /// Hands the gathered chains back to the ring, unused.
    fn put_back(&mut self, a: &mut Active) {
        for _ in self.chains.drain(..) {
            a.rxq.go_to_previous_position();
        }
    }
}

fn add_used(a: &mut Active, head: u16, len: u32) {
    if let Err(e) = a.rxq.add_used(&a.mem, head, len) {
        debug!("virtio-net: cannot return rx descriptor {head}: {e}");
    }
}

/// Errors after which the descriptor gives nothing more: the tap's
/// interface is gone (EBADFD), or the descriptor is broken.
fn is_fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADFD | libc::EBADF | libc::EIO | libc::ENXIO)
    )
}
