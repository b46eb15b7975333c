//! virtio-mmio transport, version 2 (virtio 1.2 spec §4.2.2).

use std::os::fd::AsRawFd;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::{debug, error, warn};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{Interrupt, VirtioDevice, INT_USED_RING};
use crate::devices::BusDevice;

/// Size of the MMIO window of one device.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

const MMIO_MAGIC: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x4b53_5548; // "HUSK"

// Register offsets (spec §4.2.2, table "MMIO Device Register Layout").
const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const REG_SHM_SEL: u64 = 0x0ac;
const REG_SHM_LEN_LOW: u64 = 0x0b0;
const REG_SHM_LEN_HIGH: u64 = 0x0b4;
const REG_SHM_BASE_LOW: u64 = 0x0b8;
const REG_SHM_BASE_HIGH: u64 = 0x0bc;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
const REG_CONFIG: u64 = 0x100;

/// The status bits a driver may set.
const STATUS_MASK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE
    | VIRTIO_CONFIG_S_DRIVER
    | VIRTIO_CONFIG_S_DRIVER_OK
    | VIRTIO_CONFIG_S_FEATURES_OK
    | VIRTIO_CONFIG_S_NEEDS_RESET
    | VIRTIO_CONFIG_S_FAILED;

/// Event data the transport registers its own eventfds with. Dispatch is by
/// fd, so devices may use any data value for theirs.
const QUEUE_EVT_DATA_BASE: u32 = 0xffff_0000;
const RESET_EVT_DATA: u32 = 0xfffe_ffff;

/// A virtio device on the MMIO bus: the version 2 register window plus one
/// [`VirtioDevice`].
pub struct VirtioMmioDevice {
    mem: GuestMemoryMmap,
    device: Box<dyn VirtioDevice>,
    interrupt: Arc<Interrupt>,
    queue_evts: Vec<EventFd>,
    /// Written on reset so that the device's `after_reset` runs on the event
    /// loop.
    reset_evt: EventFd,
    /// Queue configuration as the driver programs it.
    queues: Vec<Queue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    status: u32,
    activated: bool,
    config_generation: u32,
}

impl std::fmt::Debug for VirtioMmioDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioMmioDevice")
            .field("device_type", &self.device.device_type())
            .field("status", &self.status)
            .field("activated", &self.activated)
            .finish_non_exhaustive()
    }
}

impl VirtioMmioDevice {
    /// Put `device` behind an MMIO transport. Fails if the device declares an
    /// invalid queue size or an eventfd cannot be created.
    pub fn new(mem: GuestMemoryMmap, mut device: Box<dyn VirtioDevice>) -> std::io::Result<Self> {
        let sizes = device.queue_max_sizes().to_vec();
        if sizes.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "virtio device declares no queues",
            ));
        }
        let mut queues = Vec::with_capacity(sizes.len());
        let mut queue_evts = Vec::with_capacity(sizes.len());
        for &size in &sizes {
            let q = Queue::new(size).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("virtio queue max size {size}: {e}"),
                )
            })?;
            queues.push(q);
            queue_evts.push(EventFd::new(libc::EFD_NONBLOCK)?);
        }
        if device.external_queues() {
            let clones = queue_evts
                .iter()
                .map(|e| e.try_clone())
                .collect::<std::io::Result<Vec<_>>>()?;
            device.set_queue_notifiers(clones);
        }
        Ok(VirtioMmioDevice {
            mem,
            device,
            interrupt: Arc::new(Interrupt::new()?),
            queue_evts,
            reset_evt: EventFd::new(libc::EFD_NONBLOCK)?,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            status: 0,
            activated: false,
            config_generation: 0,
        })
    }

    /// One eventfd per queue. The VMM registers each with `KVM_IOEVENTFD` at
    /// (mmio_base + 0x50, 4 bytes, datamatch = queue index as u32).
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The VMM registers this with KVM as an irqfd for the device's GSI.
    pub fn irq_evt(&self) -> &EventFd {
        self.interrupt.evt()
    }

    /// Whether the driver has brought the device up (DRIVER_OK accepted).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// Current device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers are writable after FEATURES_OK and before DRIVER_OK.
    fn queue_config_writable(&self) -> bool {
        !self.activated
            && self.status & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0
    }

    fn features_writable(&self) -> bool {
        self.status & VIRTIO_CONFIG_S_DRIVER != 0 && self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0
    }

    fn features_ok(&self) -> bool {
        let avail = self.device.avail_features();
        self.acked_features & !avail == 0 && self.acked_features & (1 << VIRTIO_F_VERSION_1) != 0
    }

    fn reset(&mut self) {
        if self.activated || self.status != 0 {
            debug!("virtio-mmio: device {} reset", self.device.device_type());
        }
        self.device.reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.status = 0;
        self.activated = false;
        self.interrupt.clear();
        if let Err(e) = self.reset_evt.write(1) {
            error!("virtio-mmio: failed to signal reset: {e}");
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        let mut new = value & STATUS_MASK;
        // Bits only ever get added (a reset is the only way back).
        if new & old != old {
            debug!("virtio-mmio: driver cleared status bits ({old:#x} -> {value:#x}); ignored");
            return;
        }
        let added = new & !old;
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && (new & VIRTIO_CONFIG_S_DRIVER == 0 || !self.features_ok())
        {
            debug!(
                "virtio-mmio: refusing FEATURES_OK (acked {:#x}, offered {:#x})",
                self.acked_features,
                self.device.avail_features()
            );
            new &= !VIRTIO_CONFIG_S_FEATURES_OK;
        }
        if added & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            if new & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
                debug!("virtio-mmio: DRIVER_OK without FEATURES_OK; ignored");
                new &= !VIRTIO_CONFIG_S_DRIVER_OK;
            } else if !self.activated {
                self.status = new;
                self.activate();
                return;
            }
        }
        self.status = new;
    }

    fn activate(&mut self) {
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter().enumerate() {
            if !q.is_valid(&self.mem) {
                warn!(
                    "virtio-mmio: device {} queue {i} is not ready or not valid; not activating",
                    self.device.device_type()
                );
                self.needs_reset();
                return;
            }
            match Queue::try_from(q.state()) {
                Ok(q) => queues.push(q),
                Err(e) => {
                    warn!("virtio-mmio: queue {i}: {e}");
                    self.needs_reset();
                    return;
                }
            }
        }
        match self.device.activate(
            self.mem.clone(),
            queues,
            self.interrupt.clone(),
            self.acked_features,
        ) {
            Ok(()) => {
                self.activated = true;
                // Let the device look at anything the driver queued before
                // DRIVER_OK (a spurious notification is harmless).
                for evt in &self.queue_evts {
                    let _ = evt.write(1);
                }
            }
            Err(e) => {
                warn!(
                    "virtio-mmio: device {} failed to activate: {e}",
                    self.device.device_type()
                );
                self.needs_reset();
            }
        }
    }

    fn needs_reset(&mut self) {
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
        self.interrupt.signal_config_change();
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            REG_MAGIC => MMIO_MAGIC,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => {
                let f = self.device.avail_features();
                match self.device_features_sel {
                    0 => (f & 0xffff_ffff) as u32,
                    1 => (f >> 32) as u32,
                    _ => 0,
                }
            }
            REG_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS if self.activated && self.device.external_queues() => {
                self.interrupt.status() | INT_USED_RING
            }
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status,
            // No shared memory regions: length reads as all ones (§4.2.2).
            REG_SHM_LEN_LOW | REG_SHM_LEN_HIGH | REG_SHM_BASE_LOW | REG_SHM_BASE_HIGH => u32::MAX,
            REG_CONFIG_GENERATION => self.config_generation,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            REG_DRIVER_FEATURES => {
                if !self.features_writable() {
                    debug!(
                        "virtio-mmio: DriverFeatures write in status {:#x}",
                        self.status
                    );
                    return;
                }
                match self.driver_features_sel {
                    0 => self.acked_features = (self.acked_features & !0xffff_ffff) | u64::from(v),
                    1 => {
                        self.acked_features =
                            (self.acked_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    _ => {}
                }
            }
            REG_QUEUE_SEL => self.queue_sel = v,
            REG_QUEUE_NOTIFY => {
                // Normally caught by KVM_IOEVENTFD; this is the slow path.
                if let Some(evt) = self.queue_evts.get(v as usize) {
                    if let Err(e) = evt.write(1) {
                        error!("virtio-mmio: failed to signal queue {v}: {e}");
                    }
                }
            }
            REG_INTERRUPT_ACK => self.interrupt.ack(v),
            REG_STATUS => self.set_status(v),
            REG_QUEUE_NUM
            | REG_QUEUE_READY
            | REG_QUEUE_DESC_LOW
            | REG_QUEUE_DESC_HIGH
            | REG_QUEUE_DRIVER_LOW
            | REG_QUEUE_DRIVER_HIGH
            | REG_QUEUE_DEVICE_LOW
            | REG_QUEUE_DEVICE_HIGH => {
                if !self.queue_config_writable() {
                    debug!(
                        "virtio-mmio: queue register {offset:#x} write in status {:#x}",
                        self.status
                    );
                    return;
                }
                let Some(q) = self.selected_queue() else {
                    return;
                };
                match offset {
                    // The driver must not change a live queue.
                    REG_QUEUE_NUM if !q.ready() => {
                        if let Ok(size) = u16::try_from(v) {
                            q.set_size(size);
                        }
                    }
                    REG_QUEUE_NUM => {}
                    REG_QUEUE_READY => q.set_ready(v == 1),
                    _ if q.ready() => {}
                    REG_QUEUE_DESC_LOW => q.set_desc_table_address(Some(v), None),
                    REG_QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(v)),
                    REG_QUEUE_DRIVER_LOW => q.set_avail_ring_address(Some(v), None),
                    REG_QUEUE_DRIVER_HIGH => q.set_avail_ring_address(None, Some(v)),
                    REG_QUEUE_DEVICE_LOW => q.set_used_ring_address(Some(v), None),
                    REG_QUEUE_DEVICE_HIGH => q.set_used_ring_address(None, Some(v)),
                    _ => {}
                }
            }
            REG_SHM_SEL => {}
            _ => debug!("virtio-mmio: write to unknown register {offset:#x}"),
        }
    }
}

impl BusDevice for VirtioMmioDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= REG_CONFIG {
            data.fill(0);
            if offset < MMIO_WINDOW_SIZE {
                self.device.read_config(offset - REG_CONFIG, data);
            }
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            debug!(
                "virtio-mmio: bad register read at {offset:#x} size {}",
                data.len()
            );
            data.fill(0);
            return;
        }
        let v = self.read_reg(offset);
        data.copy_from_slice(&v.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= REG_CONFIG {
            if offset < MMIO_WINDOW_SIZE {
                self.device.write_config(offset - REG_CONFIG, data);
            }
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            debug!(
                "virtio-mmio: bad register write at {offset:#x} size {}",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

impl MutEventSubscriber for VirtioMmioDevice {
    fn init(&mut self, ops: &mut EventOps) {
        // An external backend is the only reader of the queue eventfds.
        let own_queues = !self.device.external_queues();
        let queues = (QUEUE_EVT_DATA_BASE..).zip(&self.queue_evts).enumerate();
        for (i, (data, evt)) in queues.filter(|_| own_queues) {
            if let Err(e) = ops.add(Events::with_data(evt, data, EventSet::IN)) {
                error!("virtio-mmio: failed to register queue {i} eventfd: {e}");
            }
        }
        if let Err(e) = ops.add(Events::with_data(
            &self.reset_evt,
            RESET_EVT_DATA,
            EventSet::IN,
        )) {
            error!("virtio-mmio: failed to register reset eventfd: {e}");
        }
        self.device.init(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if let Some(index) = self.queue_evts.iter().position(|e| e.as_raw_fd() == fd) {
            // Drain the counter whether or not we can act on it.
            let _ = self.queue_evts[index].read();
            if self.activated && self.device.process_queue(index, ops) {
                let _ = self.queue_evts[index].write(1);
            }
            return;
        }
        if fd == self.reset_evt.as_raw_fd() {
            let _ = self.reset_evt.read();
            self.device.after_reset(ops);
            return;
        }
        self.device.process_event(events, ops);
    }
}

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;
