//! Wiring the virtio-mmio devices (disks first, then vsock, then file
//! systems) into the VM:
//! MMIO window on the bus, queue-notify ioeventfds, irqfd, event loop.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;

use crate::arch::layout::{virtio_slot, VIRTIO_MMIO_SIZE};
use crate::bus::Bus;
use crate::config::VmConfig;
use crate::devices::virtio::{Block, Fs, VirtioDevice, VirtioMmioDevice, Vsock};
use crate::vcpu::ExitState;
use crate::vm::Error;

/// Offset of the virtio-mmio QueueNotify register.
const QUEUE_NOTIFY: u64 = 0x50;

pub fn attach(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    config: &VmConfig,
    mmio: &mut Bus,
    em: &mut EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>,
    exit: &Arc<ExitState>,
) -> Result<(), Error> {
    let mut devices: Vec<(String, Box<dyn VirtioDevice>)> = Vec::new();
    for d in &config.disks {
        let name = format!("disk: {}", d.path.display());
        let b =
            Block::new(&d.path, d.read_only).map_err(|e| Error::Device(format!("{name}: {e}")))?;
        devices.push((name, Box::new(b)));
    }
    if let Some(v) = &config.vsock {
        let name = format!("vsock-uds: {}", v.uds.display());
        let s = Vsock::new(v.cid, &v.uds).map_err(|e| Error::Device(format!("{name}: {e}")))?;
        devices.push((name, Box::new(s)));
    }
    for f in &config.fs {
        let name = format!("fs: tag {}", f.tag);
        let d = Fs::new(
            &f.tag,
            &f.socket,
            f.queue_size,
            exit.clone(),
            crate::devices::virtio::FS_CONNECT_TIMEOUT,
        )
        .map_err(|e| Error::Device(format!("{name}: {e}")))?;
        devices.push((name, Box::new(d)));
    }
    for (i, (name, dev)) in devices.into_iter().enumerate() {
        let (base, gsi) = virtio_slot(i);
        let fail =
            |what: &str, e: &dyn std::fmt::Display| Error::Device(format!("{name}: {what}: {e}"));
        let d = VirtioMmioDevice::new(mem.clone(), dev).map_err(|e| fail("virtio-mmio", &e))?;
        for (q, evt) in d.queue_evts().iter().enumerate() {
            vm.register_ioevent(evt, &IoEventAddress::Mmio(base + QUEUE_NOTIFY), q as u32)
                .map_err(|e| fail("KVM_IOEVENTFD", &e))?;
        }
        vm.register_irqfd(d.irq_evt(), gsi)
            .map_err(|e| fail("KVM_IRQFD", &e))?;
        let d = Arc::new(Mutex::new(d));
        mmio.insert(base, VIRTIO_MMIO_SIZE, d.clone())
            .map_err(|e| fail("MMIO bus", &e))?;
        em.add_subscriber(d);
    }
    Ok(())
}
