//! Wiring the virtio-mmio devices (disks first, then vsock, then file
//! systems) into the VM:
//! MMIO window on the bus, queue-notify ioeventfds, irqfd, event loop.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use kvm_ioctls::IoEventAddress;
use vm_memory::GuestMemoryMmap;

use crate::arch::layout::{virtio_slot, VIRTIO_MMIO_SIZE};
use crate::bus::{self, Bus};
use crate::config::VmConfig;
use crate::devices::virtio::{
    Block, BlockError, Fs, FsError, VirtioDevice, VirtioMmioDevice, Vsock, VsockError,
};
use crate::vm::Subscriber;
use crate::vstate::vcpu::ExitState;
use crate::vstate::vm::KvmVm;

/// Offset of the virtio-mmio QueueNotify register.
const QUEUE_NOTIFY: u64 = 0x50;

/// Why one virtio device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Block(BlockError),
    #[error(transparent)]
    Vsock(VsockError),
    #[error(transparent)]
    Fs(FsError),
    #[error("virtio-mmio: {0}")]
    Transport(std::io::Error),
    #[error("KVM_IOEVENTFD (queue {queue}): {source}")]
    QueueNotify {
        queue: usize,
        source: kvm_ioctls::Error,
    },
    #[error("KVM_IRQFD (GSI {gsi}): {source}")]
    Irqfd { gsi: u32, source: kvm_ioctls::Error },
    #[error("MMIO bus: {0}")]
    Bus(bus::Error),
}

/// Virtio device `index` (in attach order: disks, vsock, file systems) could
/// not be set up; `name` says which ("disk: PATH", "vsock-uds: PATH",
/// "fs: tag TAG").
#[derive(Debug, thiserror::Error)]
#[error("{name}: {source}")]
pub struct AttachError {
    pub index: usize,
    pub name: String,
    pub source: DeviceError,
}

/// A device and its name for errors ("disk: PATH", ...).
type NamedDevice = (String, Box<dyn VirtioDevice>);

/// The configured devices, in attach order, each with its name for errors.
fn create_devices(
    config: &VmConfig,
    exit: &Arc<ExitState>,
) -> Result<Vec<NamedDevice>, AttachError> {
    let mut devices: Vec<NamedDevice> = Vec::new();
    let mut add = |name: String, dev: Result<Box<dyn VirtioDevice>, DeviceError>| {
        let index = devices.len();
        match dev {
            Ok(d) => {
                devices.push((name, d));
                Ok(())
            }
            Err(source) => Err(AttachError {
                index,
                name,
                source,
            }),
        }
    };
    for d in &config.disks {
        let dev = Block::new(&d.path, d.read_only);
        add(
            format!("disk: {}", d.path.display()),
            dev.map(|b| Box::new(b) as _).map_err(DeviceError::Block),
        )?;
    }
    if let Some(v) = &config.vsock {
        let dev = Vsock::new(v.cid, &v.uds);
        add(
            format!("vsock-uds: {}", v.uds.display()),
            dev.map(|s| Box::new(s) as _).map_err(DeviceError::Vsock),
        )?;
    }
    for f in &config.fs {
        let dev = Fs::new(
            &f.tag,
            &f.socket,
            f.queue_size,
            exit.clone(),
            crate::devices::virtio::FS_CONNECT_TIMEOUT,
        );
        add(
            format!("fs: tag {}", f.tag),
            dev.map(|d| Box::new(d) as _).map_err(DeviceError::Fs),
        )?;
    }
    Ok(devices)
}

/// Puts `dev` in virtio-mmio slot `index`: its register window on the MMIO
/// bus, one ioeventfd per queue, its irqfd, and the event loop.
fn attach_one(
    vm: &KvmVm,
    mem: &GuestMemoryMmap,
    index: usize,
    dev: Box<dyn VirtioDevice>,
    mmio: &mut Bus,
    em: &mut EventManager<Subscriber>,
) -> Result<(), DeviceError> {
    let (base, gsi) = virtio_slot(index);
    let d = VirtioMmioDevice::new(mem.clone(), dev).map_err(DeviceError::Transport)?;
    for (queue, evt) in d.queue_evts().iter().enumerate() {
        let datamatch = u32::try_from(queue).expect("a virtio device has at most 65536 queues");
        vm.fd()
            .register_ioevent(evt, &IoEventAddress::Mmio(base + QUEUE_NOTIFY), datamatch)
            .map_err(|source| DeviceError::QueueNotify { queue, source })?;
    }
    vm.fd()
        .register_irqfd(d.irq_evt(), gsi)
        .map_err(|source| DeviceError::Irqfd { gsi, source })?;
    let d = Arc::new(Mutex::new(d));
    mmio.insert(base, VIRTIO_MMIO_SIZE, d.clone())
        .map_err(DeviceError::Bus)?;
    em.add_subscriber(d);
    Ok(())
}

/// Creates the configured virtio devices and attaches each to the VM.
pub fn attach(
    vm: &KvmVm,
    mem: &GuestMemoryMmap,
    config: &VmConfig,
    mmio: &mut Bus,
    em: &mut EventManager<Subscriber>,
    exit: &Arc<ExitState>,
) -> Result<(), AttachError> {
    for (index, (name, dev)) in create_devices(config, exit)?.into_iter().enumerate() {
        attach_one(vm, mem, index, dev, mmio, em).map_err(|source| AttachError {
            index,
            name,
            source,
        })?;
    }
    Ok(())
}
