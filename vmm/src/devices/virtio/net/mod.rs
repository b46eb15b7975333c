//! virtio-net (virtio 1.2 §5.1) served in user space on a tap descriptor.
//!
//! * Two queues, rx (0) and tx (1), of 256; no control queue, one queue
//!   pair. Every frame carries the 12-byte `virtio_net_hdr_v1`, on the
//!   queues and on the tap alike (`TUNSETVNETHDRSZ` 12), so checksum and
//!   segmentation offloads pass through untouched: the guest's TSO frames
//!   go to the tap whole, and the tap hands over 64 KiB frames that
//!   `VIRTIO_NET_F_MRG_RXBUF` spreads over several rx buffers.
//! * Offered: VERSION_1, INDIRECT_DESC, MAC, MTU (when configured), CSUM,
//!   GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN, HOST_TSO4/6, HOST_ECN,
//!   MRG_RXBUF. Not offered: STATUS (the link is always up), CTRL_VQ/MQ,
//!   UFO/USO, EVENT_IDX (the transport serves no event index for devices
//!   it runs). On activation the tap gets the offloads the guest acked
//!   (`TUNSETOFFLOAD`), so it never hands over a frame the guest cannot
//!   take; each frame's header is checked against them anyway.
//! * The tap is polled only while the device is active and the guest has
//!   room ([`rx`]); tx frames are written as the guest queues them ([`tx`]).
//! * A hostile guest: every chain is validated (`chain::collect`), bad
//!   ones are returned unused and counted ([`NetCounters`]), logged once
//!   at debug; work per event is bounded; host memory is two frame buffers.
//!
//! [`VhostNet`] is the same device with the host kernel's vhost-net
//! serving the queues ([`vhost`]); it shares the config space, the
//! offered offloads and the tap set-up with this one.
//!
//! Not done: multiqueue.

mod features;
mod rx;
mod tap;
mod tx;
mod vhost;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events};
use husk_protocol::net::MacAddr;
use log::{debug, error, warn};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use self::features::{effective, offered, tun_offloads, MAX_FRAME};
use self::rx::{Rx, RxEnd};
pub use self::tap::NetError;
use self::tap::Tap;
pub use self::vhost::{VhostError, VhostNet, VHOST_NET_PATH};
use super::{ActivateError, Interrupt, VirtioDevice, TYPE_NET};

const QUEUE_SIZE: u16 = 256;
pub(super) const RX: usize = 0;
pub(super) const TX: usize = 1;
/// Size of `struct virtio_net_config` up to `mtu`: mac (6), status (2),
/// max_virtqueue_pairs (2), mtu (2).
const CONFIG_LEN: usize = 12;
const CONFIG_MTU_OFFSET: usize = 10;

// epoll data of the device's own fds (the transport dispatches by fd).
const TAP_DATA: u32 = 0;
const KICK_DATA: u32 = 1;

// Things logged once per device (at debug), as bits of [`LogOnce`].
const LOG_BAD_RX_CHAIN: u32 = 1;
const LOG_BAD_RX_FRAME: u32 = 2;
const LOG_RX_ERROR: u32 = 4;
const LOG_BAD_TX_CHAIN: u32 = 8;
const LOG_TX_ERROR: u32 = 16;

/// The config space both backends serve: `mac`, `status` 0 (no
/// `VIRTIO_NET_F_STATUS`), one queue pair, and `mtu` (read only with
/// `VIRTIO_NET_F_MTU`, offered when it is set).
fn config_space(mac: MacAddr, mtu: Option<u16>) -> [u8; CONFIG_LEN] {
    let mut config = [0u8; CONFIG_LEN];
    config[..6].copy_from_slice(&mac.0);
    if let Some(m) = mtu {
        config[CONFIG_MTU_OFFSET..].copy_from_slice(&m.to_le_bytes());
    }
    config
}

/// What happened to frames, for logs and tests. Every field counts since
/// the device was created.
#[derive(Debug, Default)]
pub struct NetCounters {
    pub rx_frames: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Frames larger than the guest's buffers could take (one chain
    /// without MRG_RXBUF, the whole ring with it).
    pub rx_too_big: AtomicU64,
    /// Frames from the tap too short or with offloads the guest did not ack.
    pub rx_bad_frames: AtomicU64,
    /// rx chains outside guest memory, not device-writable or too small.
    pub rx_bad_chains: AtomicU64,
    /// Tap read errors (not counting EAGAIN).
    pub rx_errors: AtomicU64,
    pub tx_frames: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Malformed tx chains: outside memory, device-writable, too short or
    /// too long, offloads not acked.
    pub tx_bad_chains: AtomicU64,
    /// Frames dropped because the tap could not take them (EAGAIN).
    pub tx_dropped: AtomicU64,
    /// Tap write errors other than EAGAIN.
    pub tx_errors: AtomicU64,
    /// The `TUN_F_*` offloads set on the tap at the last activation.
    pub tap_offloads: AtomicU32,
}

impl NetCounters {
    /// A counter's value now.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Which one-time messages were logged.
#[derive(Debug, Default)]
struct LogOnce(u32);

impl LogOnce {
    /// Whether `what` is logged for the first time (and marks it).
    fn first(&mut self, what: u32) -> bool {
        let first = self.0 & what == 0;
        self.0 |= what;
        first
    }
}

/// The guest's side of an activated device.
struct Active {
    mem: GuestMemoryMmap,
    rxq: Queue,
    txq: Queue,
    interrupt: Arc<Interrupt>,
    /// The acked features, dependencies enforced.
    features: u64,
}

/// A virtio-net device on a tap.
pub struct Net {
    tap: Tap,
    /// `fd N` or `tap NAME`, for logs.
    name: String,
    config: [u8; CONFIG_LEN],
    avail_features: u64,
    queue_sizes: [u16; 2],
    active: Option<Active>,
    rx: Rx,
    tx_buf: Vec<u8>,
    /// Written to run rx again after a run that stopped on its budget.
    kick: EventFd,
    /// Whether the tap is in the event loop (polled for frames).
    tap_polled: bool,
    /// The tap reached end of file or failed: never polled again.
    tap_closed: bool,
    counters: Arc<NetCounters>,
    logged: LogOnce,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("name", &self.name)
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl Net {
    /// A device on the tap descriptor `fd` husk-vmm inherited (opened by
    /// its parent with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, passed without
    /// close-on-exec). The guest NIC gets `mac` and, if set, `mtu`.
    pub fn from_tap_fd(fd: RawFd, mac: MacAddr, mtu: Option<u16>) -> Result<Net, NetError> {
        let tap = Tap::from_inherited(fd)?;
        Net::with_tap(tap, format!("fd {fd}"), mac, mtu)
    }

    /// A device on tap `name`, opened (or created) in husk-vmm's network
    /// namespace.
    pub fn from_tap_name(name: &str, mac: MacAddr, mtu: Option<u16>) -> Result<Net, NetError> {
        let tap = Tap::open(name)?;
        Net::with_tap(tap, format!("tap {name}"), mac, mtu)
    }

    /// A device on a `SOCK_SEQPACKET` socket whose peer plays the tap
    /// (one message per frame, each with its 12-byte virtio-net header):
    /// for the unit tests and, with the `fuzzing` feature, the fuzz
    /// targets (`fuzz/`), which have no tap.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn with_socket(
        fd: std::os::fd::OwnedFd,
        mac: MacAddr,
        mtu: Option<u16>,
    ) -> Result<Net, NetError> {
        Net::with_tap(Tap::socket(fd)?, "test socket".into(), mac, mtu)
    }

    fn with_tap(tap: Tap, name: String, mac: MacAddr, mtu: Option<u16>) -> Result<Net, NetError> {
        let kick = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| NetError::Setup {
            fd: tap.as_raw_fd(),
            what: "eventfd",
            source,
        })?;
        Ok(Net {
            tap,
            name,
            config: config_space(mac, mtu),
            avail_features: offered(mtu.is_some()),
            queue_sizes: [QUEUE_SIZE; 2],
            active: None,
            rx: Rx::new(),
            tx_buf: vec![0; MAX_FRAME],
            kick,
            tap_polled: false,
            tap_closed: false,
            counters: Arc::new(NetCounters::default()),
            logged: LogOnce::default(),
        })
    }

    /// The device's counters (shared: they stay readable once the device
    /// is behind its transport).
    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }

    /// Moves frames from the tap to the guest (a bounded amount).
    fn run_rx(&mut self) {
        if self.tap_closed || self.rx.blocked {
            return;
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        match self
            .rx
            .run(active, &self.tap, &self.counters, &mut self.logged)
        {
            RxEnd::Drained | RxEnd::Blocked => {}
            RxEnd::Budget => {
                if let Err(e) = self.kick.write(1) {
                    error!("virtio-net {}: cannot reschedule rx: {e}", self.name);
                }
            }
            RxEnd::Closed(e) => {
                match e {
                    Some(e) => error!("virtio-net {}: tap read failed: {e}", self.name),
                    None => warn!("virtio-net {}: tap closed", self.name),
                }
                self.tap_closed = true;
            }
        }
    }

    /// Polls the tap exactly when frames can go somewhere: active, not
    /// waiting for guest buffers, not closed.
    fn sync(&mut self, ops: &mut EventOps) {
        let want = self.active.is_some() && !self.rx.blocked && !self.tap_closed;
        if want == self.tap_polled {
            return;
        }
        let ev = Events::with_data(&self.tap, TAP_DATA, EventSet::IN);
        let r = if want { ops.add(ev) } else { ops.remove(ev) };
        match r {
            Ok(()) => self.tap_polled = want,
            Err(e) => error!(
                "virtio-net {}: cannot {} the tap: {e}",
                self.name,
                if want { "poll" } else { "stop polling" }
            ),
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::block::read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        let got = queues.len();
        let mut queues = queues.into_iter();
        let (Some(rxq), Some(txq), None) = (queues.next(), queues.next(), queues.next()) else {
            return Err(ActivateError::QueueCount { expected: 2, got });
        };
        let features = effective(acked_features);
        if features != acked_features {
            debug!(
                "virtio-net {}: acked features {acked_features:#x} lack prerequisites; using {features:#x}",
                self.name
            );
        }
        // One ioctl, no waiting: fine on a vCPU thread.
        let offloads = tun_offloads(features);
        match self.tap.set_offloads(offloads) {
            Ok(()) => self
                .counters
                .tap_offloads
                .store(offloads, Ordering::Relaxed),
            // The tap then hands over only whole, checksummed frames, which
            // every guest takes.
            Err(e) => warn!("virtio-net {}: TUNSETOFFLOAD {offloads:#x}: {e}", self.name),
        }
        self.rx.clear();
        self.active = Some(Active {
            mem,
            rxq,
            txq,
            interrupt,
            features,
        });
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.rx.clear();
    }

    fn after_reset(&mut self, ops: &mut EventOps) {
        self.sync(ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(&self.kick, KICK_DATA, EventSet::IN)) {
            error!("virtio-net {}: cannot register its eventfd: {e}", self.name);
        }
    }

    fn process_queue(&mut self, index: usize, ops: &mut EventOps) -> bool {
        let more = match index {
            RX => {
                // The guest added buffers: a waiting frame may fit now.
                self.rx.blocked = false;
                self.run_rx();
                false
            }
            TX => match self.active.as_mut() {
                Some(a) => tx::run(
                    a,
                    &self.tap,
                    &mut self.tx_buf,
                    &self.counters,
                    &mut self.logged,
                ),
                None => false,
            },
            _ => false,
        };
        self.sync(ops);
        more
    }

    fn process_event(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.kick.as_raw_fd() {
            let _ = self.kick.read();
            self.run_rx();
        } else if fd == self.tap.as_raw_fd() {
            self.run_rx();
        }
        self.sync(ops);
    }
}

#[cfg(test)]
mod tests;
