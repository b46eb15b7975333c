//! virtio devices over the virtio-mmio transport (virtio 1.2, modern only).
//!
//! * [`VirtioMmioDevice`] is the transport: the MMIO register window the
//!   guest's `virtio_mmio` driver programs, plus the event-loop side
//!   (queue notification eventfds, device backend fds).
//! * [`VirtioDevice`] is what a device implements to sit behind it:
//!   [`Block`] (virtio-blk on a raw file), [`Vsock`] (virtio-vsock with a
//!   Firecracker-style Unix-socket backend), [`Fs`] (virtio-fs, a
//!   vhost-user frontend: another process serves its queues), [`Net`]
//!   (virtio-net on a tap descriptor, served in user space) and
//!   [`VhostNet`] (the same, served by the kernel's vhost-net).
//!
//! Threading: the VMM wraps a `VirtioMmioDevice` in `Arc<Mutex<_>>`; vCPU
//! threads call the `BusDevice` methods (register accesses, activation, reset:
//! all O(1), no I/O), the event-loop thread calls the `MutEventSubscriber`
//! methods (all queue and backend work).

mod block;
mod chain;
mod fs;
mod mmio;
mod net;
#[cfg(test)]
mod test_utils;
mod vsock;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, Events};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use block::{Block, BlockError};
pub use fs::{Fs, FsError, CONNECT_TIMEOUT as FS_CONNECT_TIMEOUT};
pub use mmio::{VirtioMmioDevice, MMIO_WINDOW_SIZE};
pub use net::{Net, NetCounters, NetError, VhostError, VhostNet, VHOST_NET_PATH};
pub use vsock::{Vsock, VsockError, MAX_CONNECTIONS as VSOCK_MAX_CONNECTIONS};

/// virtio device id of a network device (spec §5.1).
pub const TYPE_NET: u32 = 1;
/// virtio device id of a block device (spec §5.2).
pub const TYPE_BLOCK: u32 = 2;
/// virtio device id of a socket device (spec §5.10).
pub const TYPE_VSOCK: u32 = 19;
/// virtio device id of a file system device (spec §5.11).
pub const TYPE_FS: u32 = 26;

/// `InterruptStatus` bit: the device used a buffer in at least one queue.
pub const INT_USED_RING: u32 = 1;
/// `InterruptStatus` bit: the device configuration changed.
pub const INT_CONFIG: u32 = 2;

/// The device's interrupt line: the `InterruptStatus` register plus the
/// eventfd the VMM registered with KVM as an irqfd.
///
/// Shared between the transport (which the guest reads/acks through MMIO) and
/// an activated device (which raises it from the event loop).
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    evt: EventFd,
}

impl Interrupt {
    fn new() -> std::io::Result<Self> {
        Ok(Interrupt {
            status: AtomicU32::new(0),
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// Tell the guest that buffers were added to a used ring.
    pub fn signal_used_queue(&self) {
        self.trigger(INT_USED_RING);
    }

    /// Tell the guest that the device configuration changed.
    pub fn signal_config_change(&self) {
        self.trigger(INT_CONFIG);
    }

    fn trigger(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.evt.write(1) {
            log::error!("virtio: failed to signal interrupt: {e}");
        }
    }

    /// Current `InterruptStatus` value.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }

    /// The irqfd.
    pub fn evt(&self) -> &EventFd {
        &self.evt
    }
}

/// Why a device refused to activate.
#[derive(Debug)]
pub enum ActivateError {
    /// The device was given a different number of queues than it declared.
    QueueCount { expected: usize, got: usize },
    /// Any other reason.
    Other(String),
}

impl ActivateError {
    /// `Ok` when a device that serves `expected` queues got as many, and,
    /// for a device the guest's kicks bypass (vhost), as many notifiers.
    pub fn check_queues(
        expected: usize,
        got: usize,
        notifiers: Option<usize>,
    ) -> Result<(), ActivateError> {
        if got != expected {
            return Err(ActivateError::QueueCount { expected, got });
        }
        if notifiers.is_some_and(|n| n != expected) {
            return Err(ActivateError::Other("no queue notifiers".into()));
        }
        Ok(())
    }
}

impl std::fmt::Display for ActivateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActivateError::QueueCount { expected, got } => {
                write!(f, "expected {expected} queues, got {got}")
            }
            ActivateError::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for ActivateError {}

/// A virtio device behind [`VirtioMmioDevice`].
///
/// Calls that come from a vCPU thread (`read_config`, `write_config`,
/// `activate`, `reset`) must be quick, must not block and must not touch the
/// event loop (they get no `EventOps`). Everything that does I/O happens in
/// `process_queue` / `process_event` on the event-loop thread.
pub trait VirtioDevice: Send {
    /// virtio device id (e.g. [`TYPE_BLOCK`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; also gives the number of queues. Each must
    /// be a power of two in 1..=32768.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver (must include `VIRTIO_F_VERSION_1`).
    fn avail_features(&self) -> u64;
    /// Guest read of the device config space. `offset` is relative to the
    /// start of config space; `data` may be any length. Bytes past the end of
    /// the config space read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Guest write of the device config space. Default: ignored.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK. `queues` has one entry per
    /// `queue_max_sizes()` entry, each ready and validated against `mem`.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        acked_features: u64,
    ) -> Result<(), ActivateError>;
    /// The driver reset the device (wrote 0 to Status). Drop the queues and
    /// return to the pre-activation state. Runs on a vCPU thread: backend fds
    /// must not be (de)registered here; [`VirtioDevice::after_reset`] follows
    /// on the event-loop thread.
    fn reset(&mut self);
    /// Event-loop follow-up of a reset. Default: nothing.
    fn after_reset(&mut self, _ops: &mut EventOps) {}
    /// Called once when the transport is added to the event manager: register
    /// backend fds. Default: nothing.
    fn init(&mut self, _ops: &mut EventOps) {}
    /// The driver notified queue `index`. Only called while activated.
    /// Devices bound the work done per call; returning `true` means "more is
    /// pending": the transport re-notifies the queue so that the event loop
    /// serves other sources in between.
    fn process_queue(&mut self, index: usize, ops: &mut EventOps) -> bool;
    /// An event on a fd the device registered itself. Default: nothing.
    fn process_event(&mut self, _events: Events, _ops: &mut EventOps) {}
    /// vhost-user devices: another process serves the queues. The transport
    /// then hands the device its queue-notify eventfds once (through
    /// [`VirtioDevice::set_queue_notifiers`]) and never reads them itself,
    /// and since the backend signals the irqfd directly, without setting
    /// `InterruptStatus`, the used-ring bit reads as always set while the
    /// device is active (the Linux driver only runs the vring callbacks when
    /// it sees that bit; a callback with nothing used is harmless).
    /// Default: false.
    fn external_queues(&self) -> bool {
        false
    }
    /// Clones of the transport's queue-notify eventfds, one per queue (only
    /// for devices with [`VirtioDevice::external_queues`]).
    fn set_queue_notifiers(&mut self, _evts: Vec<EventFd>) {}
}
