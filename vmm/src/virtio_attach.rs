//! Wiring the virtio-mmio devices (disks first, then vsock, then file
//! systems, then NICs, so that adding a NIC moves no other device) into
//! the VM:
//! MMIO window on the bus, queue-notify ioeventfds, irqfd, event loop.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use kvm_ioctls::IoEventAddress;
use vm_memory::GuestMemoryMmap;

use crate::arch::layout::{virtio_slot, VIRTIO_MMIO_SIZE};
use crate::bus::{self, Bus};
use crate::config::{NetBackend, VmConfig};
use crate::devices::virtio::{
    Block, BlockError, Fs, FsError, Net, NetError, VhostNet, VirtioDevice, VirtioMmioDevice, Vsock,
    VsockError,
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
    #[error(transparent)]
    Net(NetError),
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

/// Virtio device `index` (in attach order: disks, vsock, file systems,
/// NICs) could not be set up; `name` says which ("disk: PATH",
/// "vsock-uds: PATH", "fs: tag TAG", "net: fd N", "net: tap NAME").
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
/// `mem` is the guest's RAM (vhost-net devices map it).
fn create_devices(
    config: &VmConfig,
    mem: &GuestMemoryMmap,
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
    for n in &config.net {
        // Validated: 68..=65535.
        let mtu = n.mtu.and_then(|m| u16::try_from(m).ok());
        let dev = match (n.backend, n.tap_fd, &n.tap_name) {
            (NetBackend::Virtio, Some(fd), _) => {
                Net::from_tap_fd(fd, n.mac, mtu).map(|d| Box::new(d) as _)
            }
            (NetBackend::Virtio, None, Some(name)) => {
                Net::from_tap_name(name, n.mac, mtu).map(|d| Box::new(d) as _)
            }
            (NetBackend::Vhost, Some(fd), _) => {
                VhostNet::from_tap_fd(fd, n.mac, mtu, mem).map(|d| Box::new(d) as _)
            }
            (NetBackend::Vhost, None, Some(name)) => {
                VhostNet::from_tap_name(name, n.mac, mtu, mem).map(|d| Box::new(d) as _)
            }
            (_, None, None) => unreachable!("validated: a NIC has a tap fd or a tap name"),
        };
        add(
            format!("net: {}", n.describe()),
            dev.map_err(DeviceError::Net),
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
    for (index, (name, dev)) in create_devices(config, mem, exit)?.into_iter().enumerate() {
        attach_one(vm, mem, index, dev, mmio, em).map_err(|source| AttachError {
            index,
            name,
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigInput, DiskConfig, NetConfig};
    use vmm_sys_util::tempfile::TempFile;

    fn config(disk: &TempFile, net: Vec<NetConfig>) -> VmConfig {
        let input = ConfigInput {
            disks: Some(vec![DiskConfig {
                path: disk.as_path().to_path_buf(),
                read_only: true,
            }]),
            net: Some(net),
            ..Default::default()
        };
        VmConfig::from_input(input, |_| None).unwrap()
    }

    #[test]
    fn a_nic_that_cannot_be_set_up_is_named_by_its_fd() {
        let disk = TempFile::new().unwrap();
        let exit = Arc::new(ExitState::new().unwrap());
        let mac = "02:42:ac:11:00:02".parse().unwrap();
        let c = config(&disk, vec![NetConfig::tap_fd(1_000_000, mac, None)]);
        let mem = GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), 1 << 20)]).unwrap();
        let Err(e) = create_devices(&c, &mem, &exit) else {
            panic!("a NIC on a closed fd was created")
        };
        // After the disk: NICs come last, so the other slots stay put.
        assert_eq!(e.index, 1);
        assert!(matches!(e.source, DeviceError::Net(_)));
        assert!(
            e.to_string()
                .starts_with("net: fd 1000000: fd 1000000 is not open"),
            "{e}"
        );
        // The same on the vhost-net backend: the tap is checked first.
        let nic = NetConfig::tap_fd(1_000_000, mac, None).with_backend(NetBackend::Vhost);
        let Err(e) = create_devices(&config(&disk, vec![nic]), &mem, &exit) else {
            panic!("a vhost-net NIC on a closed fd was created")
        };
        assert!(
            e.to_string()
                .starts_with("net: fd 1000000: fd 1000000 is not open"),
            "{e}"
        );
    }
}
