//! virtio-net served by the host kernel's vhost-net (`/dev/vhost-net`):
//! a kernel thread moves frames between the tap and the guest's queues,
//! so no frame passes through husk-vmm. husk-vmm keeps what the kernel
//! does not do: the config space (MAC, MTU, shared with the user-space
//! device), the feature bits about the tap's offloads, and the tap
//! settings that follow from them.
//!
//! * At creation (main thread): open `/dev/vhost-net`, `VHOST_SET_OWNER`
//!   (binds it to this process's memory), `VHOST_GET_FEATURES`.
//! * Offered: the user-space device's features plus `EVENT_IDX`, less the
//!   ring features vhost-net does not offer ([`KERNEL_FEATURES`] are the
//!   ones it acts on; the rest are the tap's or ours).
//! * On activation (vCPU thread; each step one ioctl, no waiting on
//!   anything but the kernel): `TUNSETOFFLOAD` for the acked offloads,
//!   `VHOST_SET_FEATURES`, `VHOST_SET_MEM_TABLE` (guest RAM as mapped
//!   here), then per queue `VHOST_SET_VRING_NUM/ADDR/BASE/CALL/KICK`, and
//!   last `VHOST_NET_SET_BACKEND` (the tap) for both. Kick is the
//!   queue-notify ioeventfd KVM signals, call the device's irqfd: the
//!   guest and the kernel talk without husk-vmm.
//! * The tap keeps its 12-byte vnet header (`TUNSETVNETHDRSZ`, set when it
//!   is opened): the transport requires `VIRTIO_F_VERSION_1`, with which
//!   the header is `virtio_net_hdr_v1` whatever else is acked, and
//!   `VHOST_NET_F_VIRTIO_NET_HDR` is never acked, so vhost-net passes the
//!   header between ring and tap untouched.
//! * Reset: `VHOST_NET_SET_BACKEND` -1 and `VHOST_GET_VRING_BASE` stop
//!   both queues; the next activation sets everything again.
//! * A hostile guest meets the kernel's checks (vhost's ring access
//!   checks, tun's header checks), not ours.

use std::fs::File;
use std::os::fd::RawFd;
use std::sync::Arc;

use husk_protocol::net::MacAddr;
use log::{debug, warn};
use vhost::vhost_kern::net::Net as KernNet;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::features::{bit, effective, offered, tun_offloads};
use super::tap::{NetError, Tap};
use super::{config_space, CONFIG_LEN, QUEUE_SIZE};
use crate::devices::virtio::block::read_config_bytes;
use crate::devices::virtio::{ActivateError, Interrupt, VirtioDevice, TYPE_NET};

pub use husk_vm_config::VHOST_NET_PATH;

/// The virtio features vhost-net itself acts on (ring layout, notification
/// suppression, mergeable rx buffers): offered only if it offers them, and
/// the part of the acked set `VHOST_SET_FEATURES` gets.
pub const KERNEL_FEATURES: u64 = bit(VIRTIO_F_VERSION_1)
    | bit(VIRTIO_RING_F_INDIRECT_DESC)
    | bit(VIRTIO_RING_F_EVENT_IDX)
    | bit(VIRTIO_NET_F_MRG_RXBUF);

/// Number of queues: rx and tx of one pair.
const QUEUES: usize = 2;

/// Why vhost-net could not be set up; each ioctl names its step. The
/// message leaves out which NIC: the caller names it.
#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    #[error(
        "cannot open {VHOST_NET_PATH}: {0} (the host needs the vhost_net module: modprobe vhost_net)"
    )]
    Open(std::io::Error),
    #[error("vhost-net {step}: {source}")]
    Ioctl {
        step: &'static str,
        source: vhost::Error,
    },
    #[error("vhost-net queue {queue}: {step}: {source}")]
    Queue {
        queue: usize,
        step: &'static str,
        source: vhost::Error,
    },
    #[error("vhost-net does not offer VIRTIO_F_VERSION_1 (it offers {0:#x})")]
    NoVersion1(u64),
    #[error("vhost-net: guest RAM at {addr:#x} is not mapped")]
    Memory { addr: u64 },
}

fn ioctl(step: &'static str) -> impl FnOnce(vhost::Error) -> VhostError {
    move |source| VhostError::Ioctl { step, source }
}

/// The features offered to the driver when vhost-net offers `kernel`
/// (from `VHOST_GET_FEATURES`); `VIRTIO_NET_F_MTU` only with an MTU.
pub fn offered_with(kernel: u64, mtu: bool) -> Result<u64, VhostError> {
    if kernel & bit(VIRTIO_F_VERSION_1) == 0 {
        return Err(VhostError::NoVersion1(kernel));
    }
    let ours = offered(mtu) | bit(VIRTIO_RING_F_EVENT_IDX);
    Ok(ours & !(KERNEL_FEATURES & !kernel))
}

/// What `VHOST_SET_FEATURES` gets for the driver's (effective) features.
pub fn kernel_acked(features: u64) -> u64 {
    features & KERNEL_FEATURES
}

/// The ioctls the device makes on its vhost-net instance (the kernel's;
/// a fake in tests).
pub trait Kernel: Send {
    fn set_features(&self, features: u64) -> vhost::Result<()>;
    fn set_mem_table(&self, regions: &[VhostUserMemoryRegionInfo]) -> vhost::Result<()>;
    fn set_vring_num(&self, queue: usize, num: u16) -> vhost::Result<()>;
    fn set_vring_addr(&self, queue: usize, addr: &VringConfigData) -> vhost::Result<()>;
    fn set_vring_base(&self, queue: usize, base: u16) -> vhost::Result<()>;
    fn get_vring_base(&self, queue: usize) -> vhost::Result<u32>;
    fn set_vring_call(&self, queue: usize, fd: &EventFd) -> vhost::Result<()>;
    fn set_vring_kick(&self, queue: usize, fd: &EventFd) -> vhost::Result<()>;
    fn set_backend(&self, queue: usize, tap: Option<&File>) -> vhost::Result<()>;
}

/// A vhost-net instance; its guest memory turns ring addresses into host
/// addresses in `VHOST_SET_VRING_ADDR`.
type Kern = KernNet<Arc<GuestMemoryMmap>>;

impl Kernel for Kern {
    fn set_features(&self, features: u64) -> vhost::Result<()> {
        VhostBackend::set_features(self, features)
    }
    fn set_mem_table(&self, regions: &[VhostUserMemoryRegionInfo]) -> vhost::Result<()> {
        VhostBackend::set_mem_table(self, regions).map(drop)
    }
    fn set_vring_num(&self, queue: usize, num: u16) -> vhost::Result<()> {
        VhostBackend::set_vring_num(self, queue, num)
    }
    fn set_vring_addr(&self, queue: usize, addr: &VringConfigData) -> vhost::Result<()> {
        VhostBackend::set_vring_addr(self, queue, addr)
    }
    fn set_vring_base(&self, queue: usize, base: u16) -> vhost::Result<()> {
        VhostBackend::set_vring_base(self, queue, base)
    }
    fn get_vring_base(&self, queue: usize) -> vhost::Result<u32> {
        VhostBackend::get_vring_base(self, queue)
    }
    fn set_vring_call(&self, queue: usize, fd: &EventFd) -> vhost::Result<()> {
        VhostBackend::set_vring_call(self, queue, fd)
    }
    fn set_vring_kick(&self, queue: usize, fd: &EventFd) -> vhost::Result<()> {
        VhostBackend::set_vring_kick(self, queue, fd)
    }
    fn set_backend(&self, queue: usize, tap: Option<&File>) -> vhost::Result<()> {
        vhost::net::VhostNet::set_backend(self, queue, tap)
    }
}

/// Opens `/dev/vhost-net` for guest memory `mem`, takes ownership of it
/// (`VHOST_SET_OWNER`) and reads what it offers (`VHOST_GET_FEATURES`).
pub(super) fn open_kernel(mem: &GuestMemoryMmap) -> Result<(Kern, u64), VhostError> {
    let kern = KernNet::new(Arc::new(mem.clone())).map_err(|e| match e {
        vhost::Error::VhostOpen(e) => VhostError::Open(e),
        e => VhostError::Ioctl {
            step: "open",
            source: e,
        },
    })?;
    VhostBackend::set_owner(&kern).map_err(ioctl("VHOST_SET_OWNER"))?;
    let features = VhostBackend::get_features(&kern).map_err(ioctl("VHOST_GET_FEATURES"))?;
    Ok((kern, features))
}

/// The memory table: every guest RAM region at its address in husk-vmm.
pub(super) fn mem_table(
    mem: &GuestMemoryMmap,
) -> Result<Vec<VhostUserMemoryRegionInfo>, VhostError> {
    mem.iter()
        .map(|r| {
            let start = r.start_addr();
            let host = mem
                .get_host_address(start)
                .map_err(|_| VhostError::Memory { addr: start.0 })?;
            // The kernel reads only the three addresses; no file backs
            // the region as far as it is concerned.
            Ok(VhostUserMemoryRegionInfo {
                guest_phys_addr: start.0,
                memory_size: r.len(),
                userspace_addr: host as u64,
                mmap_offset: 0,
                mmap_handle: -1,
            })
        })
        .collect()
}

/// What a ready queue tells `VHOST_SET_VRING_ADDR` (guest addresses; the
/// crate turns them into husk-vmm's).
fn ring_of(q: &Queue) -> VringConfigData {
    VringConfigData {
        queue_max_size: q.max_size(),
        queue_size: q.size(),
        flags: 0,
        desc_table_addr: q.desc_table(),
        used_ring_addr: q.used_ring(),
        avail_ring_addr: q.avail_ring(),
        log_addr: None,
    }
}

/// A virtio-net device whose queues the kernel's vhost-net serves.
pub struct VhostNet<K = Kern> {
    tap: Tap,
    /// `fd N` or `tap NAME`, for logs.
    name: String,
    config: [u8; CONFIG_LEN],
    avail_features: u64,
    queue_sizes: [u16; QUEUES],
    /// The transport's queue-notify eventfds (KVM ioeventfds).
    kicks: Vec<EventFd>,
    kernel: K,
    /// Whether vhost-net has the tap (from activation to reset).
    running: bool,
    /// The `TUN_F_*` offloads set on the tap at the last activation.
    tap_offloads: u32,
}

impl<K: Kernel> std::fmt::Debug for VhostNet<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostNet")
            .field("name", &self.name)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl VhostNet {
    /// A device on the inherited tap descriptor `fd` (as
    /// [`super::Net::from_tap_fd`]) for a guest with memory `mem`.
    pub fn from_tap_fd(
        fd: RawFd,
        mac: MacAddr,
        mtu: Option<u16>,
        mem: &GuestMemoryMmap,
    ) -> Result<VhostNet, NetError> {
        let tap = Tap::from_inherited(fd)?;
        let (kernel, features) = open_kernel(mem)?;
        Ok(VhostNet::with_kernel(
            tap,
            format!("fd {fd}"),
            mac,
            mtu,
            kernel,
            features,
        )?)
    }

    /// A device on tap `name`, opened (or created) in husk-vmm's network
    /// namespace, for a guest with memory `mem`.
    pub fn from_tap_name(
        name: &str,
        mac: MacAddr,
        mtu: Option<u16>,
        mem: &GuestMemoryMmap,
    ) -> Result<VhostNet, NetError> {
        let tap = Tap::open(name)?;
        let (kernel, features) = open_kernel(mem)?;
        Ok(VhostNet::with_kernel(
            tap,
            format!("tap {name}"),
            mac,
            mtu,
            kernel,
            features,
        )?)
    }
}

impl<K: Kernel> VhostNet<K> {
    /// A device on `tap` whose queues `kernel` serves; `kernel_features` is
    /// what it offers.
    pub(super) fn with_kernel(
        tap: Tap,
        name: String,
        mac: MacAddr,
        mtu: Option<u16>,
        kernel: K,
        kernel_features: u64,
    ) -> Result<VhostNet<K>, VhostError> {
        let avail_features = offered_with(kernel_features, mtu.is_some())?;
        debug!(
            "vhost-net {name}: the kernel offers {kernel_features:#x}; offering {avail_features:#x}"
        );
        Ok(VhostNet {
            tap,
            name,
            config: config_space(mac, mtu),
            avail_features,
            queue_sizes: [QUEUE_SIZE; QUEUES],
            kicks: Vec::new(),
            kernel,
            running: false,
            tap_offloads: 0,
        })
    }

    /// The `TUN_F_*` offloads set on the tap at the last activation.
    pub fn tap_offloads(&self) -> u32 {
        self.tap_offloads
    }

    /// Hands the rings and the tap to the kernel, in the order vhost-net
    /// wants: features and memory first, each ring, then the backends.
    fn start(
        &self,
        mem: &GuestMemoryMmap,
        queues: &[Queue],
        interrupt: &Interrupt,
        features: u64,
    ) -> Result<(), VhostError> {
        let k = &self.kernel;
        let acked = kernel_acked(features);
        k.set_features(acked).map_err(ioctl("VHOST_SET_FEATURES"))?;
        k.set_mem_table(&mem_table(mem)?)
            .map_err(ioctl("VHOST_SET_MEM_TABLE"))?;
        let at = |queue, step| {
            move |source| VhostError::Queue {
                queue,
                step,
                source,
            }
        };
        for (i, (q, kick)) in queues.iter().zip(&self.kicks).enumerate() {
            k.set_vring_num(i, q.size())
                .map_err(at(i, "VHOST_SET_VRING_NUM"))?;
            k.set_vring_addr(i, &ring_of(q))
                .map_err(at(i, "VHOST_SET_VRING_ADDR"))?;
            k.set_vring_base(i, q.next_avail())
                .map_err(at(i, "VHOST_SET_VRING_BASE"))?;
            k.set_vring_call(i, interrupt.evt())
                .map_err(at(i, "VHOST_SET_VRING_CALL"))?;
            k.set_vring_kick(i, kick)
                .map_err(at(i, "VHOST_SET_VRING_KICK"))?;
        }
        for i in 0..queues.len() {
            k.set_backend(i, Some(self.tap.file()))
                .map_err(at(i, "VHOST_NET_SET_BACKEND"))?;
        }
        debug!(
            "vhost-net {}: running, features {features:#x} (kernel {acked:#x})",
            self.name
        );
        Ok(())
    }

    /// Takes the tap away from both queues and stops them. `loud`: log
    /// failures as warnings (a running device), else at debug (undoing a
    /// start that failed half-way).
    fn stop(&mut self, loud: bool) {
        for i in 0..QUEUES {
            let r = self
                .kernel
                .set_backend(i, None)
                .map_err(|e| format!("VHOST_NET_SET_BACKEND -1: {e}"))
                .and_then(|()| {
                    self.kernel
                        .get_vring_base(i)
                        .map_err(|e| format!("VHOST_GET_VRING_BASE: {e}"))
                });
            match r {
                Err(e) if loud => warn!("vhost-net {} queue {i}: {e}", self.name),
                Err(e) => debug!("vhost-net {} queue {i}: {e}", self.name),
                Ok(_) => {}
            }
        }
        self.running = false;
    }
}

impl<K: Kernel> VirtioDevice for VhostNet<K> {
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
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        ActivateError::check_queues(QUEUES, queues.len(), Some(self.kicks.len()))?;
        if self.running {
            self.stop(true);
        }
        let features = effective(acked_features);
        let offloads = tun_offloads(features);
        match self.tap.set_offloads(offloads) {
            Ok(()) => self.tap_offloads = offloads,
            // The tap then hands over only whole, checksummed frames,
            // which every guest takes.
            Err(e) => warn!("vhost-net {}: TUNSETOFFLOAD {offloads:#x}: {e}", self.name),
        }
        if let Err(e) = self.start(&mem, &queues, &interrupt, features) {
            self.stop(false);
            return Err(ActivateError::Other(e.to_string()));
        }
        self.running = true;
        Ok(())
    }

    fn reset(&mut self) {
        if self.running {
            self.stop(true);
        }
    }

    fn external_queues(&self) -> bool {
        true
    }

    fn set_queue_notifiers(&mut self, evts: Vec<EventFd>) {
        self.kicks = evts;
    }

    fn process_queue(&mut self, _index: usize, _ops: &mut event_manager::EventOps) -> bool {
        // Never called: the transport does not poll our queue eventfds.
        false
    }
}
