//! Guest to tap: each tx chain (device-readable only, header included, at
//! most [`MAX_FRAME`] bytes) is copied into one buffer and written to the
//! tap as one frame. A chain that breaks a rule is returned unused and
//! counted; a tap that cannot take a frame now (EAGAIN) gets it dropped,
//! as a NIC with a full queue would.

use std::io;
use std::sync::atomic::Ordering;

use log::debug;
use virtio_queue::QueueT;

use super::features::{check_header, Dir, HDR_LEN, MAX_FRAME};
use super::tap::Tap;
use super::{Active, LogOnce, NetCounters, LOG_BAD_TX_CHAIN, LOG_TX_ERROR};
use crate::devices::virtio::chain::{self, Chain, ChainError};

/// tx chains served per queue notification before yielding the event loop.
pub(super) const MAX_FRAMES_PER_KICK: usize = 256;

/// Why a tx chain was refused.
#[derive(Debug)]
enum BadTx {
    Chain(ChainError),
    Writable,
    Short(u64),
    Long(u64),
    Unreadable,
    Header(&'static str),
}

impl std::fmt::Display for BadTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadTx::Chain(e) => write!(f, "bad descriptor chain: {e}"),
            BadTx::Writable => f.write_str("device-writable descriptor in a tx chain"),
            BadTx::Short(n) => write!(f, "{n} bytes, shorter than the {HDR_LEN}-byte header"),
            BadTx::Long(n) => write!(f, "{n} bytes, longer than {MAX_FRAME}"),
            BadTx::Unreadable => f.write_str("tx buffer not readable"),
            BadTx::Header(why) => write!(f, "frame header: {why}"),
        }
    }
}

/// Sends up to [`MAX_FRAMES_PER_KICK`] tx chains to the tap, using `buf`
/// (at least [`MAX_FRAME`] bytes) for the copy. Returns whether more may
/// be pending.
pub(super) fn run(
    a: &mut Active,
    tap: &Tap,
    buf: &mut [u8],
    stats: &NetCounters,
    logged: &mut LogOnce,
) -> bool {
    let mut used_any = false;
    let mut more = false;
    for n in 0.. {
        if n == MAX_FRAMES_PER_KICK {
            more = true;
            break;
        }
        let Some(desc_chain) = a.txq.pop_descriptor_chain(&a.mem) else {
            break;
        };
        let (head, flat) = chain::collect(desc_chain);
        let frame = flat
            .map_err(BadTx::Chain)
            .and_then(|c| take_frame(a, &c, buf));
        match frame {
            Ok(len) => send(tap, &buf[..len], stats, logged),
            Err(why) => {
                stats.tx_bad_chains.fetch_add(1, Ordering::Relaxed);
                if logged.first(LOG_BAD_TX_CHAIN) {
                    debug!("virtio-net: dropping a tx chain: {why}");
                }
            }
        }
        if let Err(e) = a.txq.add_used(&a.mem, head, 0) {
            debug!("virtio-net: cannot return tx descriptor {head}: {e}");
            continue;
        }
        used_any = true;
    }
    if used_any {
        a.interrupt.signal_used_queue();
    }
    more
}

/// Copies the frame `c` holds into `buf`; returns its length.
fn take_frame(a: &Active, c: &Chain, buf: &mut [u8]) -> Result<usize, BadTx> {
    if !c.writable.is_empty() {
        return Err(BadTx::Writable);
    }
    let len = c.readable_len();
    if len < HDR_LEN as u64 {
        return Err(BadTx::Short(len));
    }
    let Some(frame) = usize::try_from(len)
        .ok()
        .filter(|&n| n <= MAX_FRAME.min(buf.len()))
        .map(|n| &mut buf[..n])
    else {
        return Err(BadTx::Long(len));
    };
    if chain::read_bytes(&a.mem, &c.readable, 0, frame) != frame.len() {
        return Err(BadTx::Unreadable);
    }
    check_header(frame, a.features, Dir::Tx).map_err(BadTx::Header)?;
    Ok(frame.len())
}

fn send(tap: &Tap, frame: &[u8], stats: &NetCounters, logged: &mut LogOnce) {
    match tap.write_frame(frame) {
        Ok(_) => {
            stats.tx_frames.fetch_add(1, Ordering::Relaxed);
            stats
                .tx_bytes
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.tx_errors.fetch_add(1, Ordering::Relaxed);
            if logged.first(LOG_TX_ERROR) {
                debug!("virtio-net: tap write: {e}");
            }
        }
    }
}
