//! The vhost-net device: feature arithmetic, the ioctl sequence of
//! activation and reset against a fake kernel (through the real
//! transport), errors naming the failed step, and, where the host has
//! `/dev/vhost-net`, the real thing on a tap in a network namespace of the
//! test's own.

use std::fs::File;
use std::sync::Mutex;

use ::vhost::{VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::super::features::{offered, tun_offloads};
use super::super::tap::Tap;
use super::super::vhost::{
    kernel_acked, mem_table, offered_with, open_kernel, Kernel, VhostError, KERNEL_FEATURES,
};
use super::super::{MacAddr, NetError, VhostNet, VHOST_NET_PATH};
use super::tap::{exchange_with_host, in_netns};
use super::*;
use crate::devices::virtio::test_utils::low32;
use crate::devices::virtio::{ActivateError, Interrupt, VirtioDevice};

/// What vhost-net offers on Linux 6.x (`VHOST_NET_FEATURES`):
/// NOTIFY_ON_EMPTY, LOG_ALL, ANY_LAYOUT (= VHOST_NET_F_VIRTIO_NET_HDR),
/// INDIRECT_DESC, EVENT_IDX, VERSION_1, ACCESS_PLATFORM, RING_RESET,
/// MRG_RXBUF.
const KERNEL: u64 = bit(24)
    | bit(26)
    | bit(27)
    | bit(VIRTIO_RING_F_INDIRECT_DESC)
    | bit(VIRTIO_RING_F_EVENT_IDX)
    | bit(VIRTIO_F_VERSION_1)
    | bit(33)
    | bit(40)
    | bit(VIRTIO_NET_F_MRG_RXBUF);

#[test]
fn offered_features_are_ours_within_what_the_kernel_serves() {
    let f = offered_with(KERNEL, true).unwrap();
    assert_eq!(f, offered(true) | bit(VIRTIO_RING_F_EVENT_IDX));
    // Nothing of the kernel's own that the transport cannot back (IOMMU,
    // ring reset, dirty logging, a vhost-added header).
    for b in [24, 26, 27, 33, 40] {
        assert_eq!(f & bit(b), 0, "bit {b} offered");
    }
    assert_eq!(
        offered_with(KERNEL, false).unwrap() & bit(VIRTIO_NET_F_MTU),
        0
    );
    // A kernel without mergeable buffers or event index: not offered.
    let old = KERNEL & !bit(VIRTIO_NET_F_MRG_RXBUF) & !bit(VIRTIO_RING_F_EVENT_IDX);
    let f = offered_with(old, false).unwrap();
    assert_eq!(
        f & (bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_RING_F_EVENT_IDX)),
        0
    );
    assert_ne!(
        f & bit(VIRTIO_NET_F_GUEST_TSO4),
        0,
        "offloads are the tap's"
    );
    let e = offered_with(KERNEL & !bit(VIRTIO_F_VERSION_1), false).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "vhost-net does not offer VIRTIO_F_VERSION_1 (it offers {:#x})",
            KERNEL & !bit(VIRTIO_F_VERSION_1)
        )
    );
}

#[test]
fn the_kernel_gets_only_the_ring_features() {
    let acked = ALL | bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX);
    assert_eq!(
        kernel_acked(acked),
        bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_NET_F_MRG_RXBUF)
    );
    assert_eq!(kernel_acked(acked) & !KERNEL, 0);
    assert_eq!(kernel_acked(u64::MAX), KERNEL_FEATURES);
}

#[test]
fn the_memory_table_maps_guest_ram_where_husk_vmm_has_it() {
    let mem = guest_memory();
    let t = mem_table(&mem).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].guest_phys_addr, t[0].mmap_handle), (0, -1));
    let host = vm_memory::GuestMemoryBackend::get_host_address(&mem, GuestAddress(0)).unwrap();
    assert_eq!(t[0].userspace_addr, host as u64);
    assert_eq!(
        t[0].memory_size,
        vm_memory::GuestMemoryBackend::last_addr(&mem).0 + 1
    );
}

/// A vhost-net stand-in: records each call, fails the one named `fail`.
#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<String>>>,
    fail: Option<&'static str>,
}

impl Fake {
    fn call(&self, what: String) -> ::vhost::Result<()> {
        let failed = self.fail == Some(what.as_str());
        self.calls.lock().unwrap().push(what);
        if failed {
            return Err(::vhost::Error::IoctlError(
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        Ok(())
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl Kernel for Fake {
    fn set_features(&self, features: u64) -> ::vhost::Result<()> {
        self.call(format!("features {features:#x}"))
    }
    fn set_mem_table(&self, regions: &[VhostUserMemoryRegionInfo]) -> ::vhost::Result<()> {
        self.call(format!("mem_table {}", regions.len()))
    }
    fn set_vring_num(&self, queue: usize, num: u16) -> ::vhost::Result<()> {
        self.call(format!("num {queue} {num}"))
    }
    fn set_vring_addr(&self, queue: usize, a: &VringConfigData) -> ::vhost::Result<()> {
        let (d, av, u) = (a.desc_table_addr, a.avail_ring_addr, a.used_ring_addr);
        self.call(format!("addr {queue} {d:#x} {av:#x} {u:#x}"))
    }
    fn set_vring_base(&self, queue: usize, base: u16) -> ::vhost::Result<()> {
        self.call(format!("base {queue} {base}"))
    }
    fn get_vring_base(&self, queue: usize) -> ::vhost::Result<u32> {
        self.call(format!("get_base {queue}")).map(|()| 0)
    }
    fn set_vring_call(&self, queue: usize, _fd: &EventFd) -> ::vhost::Result<()> {
        self.call(format!("call {queue}"))
    }
    fn set_vring_kick(&self, queue: usize, _fd: &EventFd) -> ::vhost::Result<()> {
        self.call(format!("kick {queue}"))
    }
    fn set_backend(&self, queue: usize, tap: Option<&File>) -> ::vhost::Result<()> {
        let what = if tap.is_some() { "tap" } else { "none" };
        self.call(format!("backend {queue} {what}"))
    }
}

fn fake_device(fake: Fake) -> VhostNet<Fake> {
    let (dev, _host) = socket_pair();
    VhostNet::with_kernel(
        Tap::socket(dev).unwrap(),
        "test socket".into(),
        MacAddr(MAC),
        Some(1500),
        fake,
        KERNEL,
    )
    .unwrap()
}

/// What activation asks of the kernel for the test driver's rings, and
/// reset after it.
fn start_calls(d: &Driver, features: u64) -> Vec<String> {
    let mut want = vec![format!("features {features:#x}"), "mem_table 1".into()];
    for (i, q) in d.queues.iter().enumerate() {
        let avail = d.avail_addr(i).0;
        want.extend([
            format!("num {i} 256"),
            format!(
                "addr {i} {:#x} {avail:#x} {:#x}",
                q.desc_table_addr().0,
                q.used_addr().0
            ),
            format!("base {i} 0"),
            format!("call {i}"),
            format!("kick {i}"),
        ]);
    }
    want.extend(["backend 0 tap".into(), "backend 1 tap".into()]);
    want
}

const STOP: [&str; 4] = [
    "backend 0 none",
    "get_base 0",
    "backend 1 none",
    "get_base 1",
];

#[test]
fn activation_hands_rings_and_tap_to_the_kernel_and_reset_takes_them_back() {
    let mem = guest_memory();
    let fake = Fake::default();
    let mut d = Driver::new(&mem, Box::new(fake_device(fake.clone())));
    assert_eq!(d.read32(0x8), TYPE_NET);
    assert_eq!(d.read_config(0, 6), MAC);
    assert_eq!(d.read_config(10, 2), 1500u16.to_le_bytes());
    assert_eq!(d.device_features(), offered_with(KERNEL, true).unwrap());
    let extra = ALL | bit(VIRTIO_RING_F_EVENT_IDX);
    assert!(d.activate(extra));
    let acked = kernel_acked(extra | bit(VIRTIO_F_VERSION_1));
    assert_eq!(fake.take(), start_calls(&d, acked));
    // Nothing is served by husk-vmm: a kick reaches only the kernel.
    d.kick(TX);
    d.poll(0);
    assert_eq!(fake.take(), Vec::<String>::new());
    assert!(d.reset_and_activate(0));
    let mut want: Vec<String> = STOP.iter().map(|s| s.to_string()).collect();
    want.extend(start_calls(&d, bit(VIRTIO_F_VERSION_1)));
    assert_eq!(fake.take(), want);
    d.write32(0x70, 0);
    assert_eq!(fake.take(), STOP);
    // A reset of a device that never ran asks nothing.
    d.write32(0x70, 0);
    assert_eq!(fake.take(), Vec::<String>::new());
}

#[test]
fn a_failed_step_fails_activation_naming_it_and_is_undone() {
    let mem = guest_memory();
    let fake = Fake {
        fail: Some("addr 1 0x20000 0x28000 0x21000"),
        ..Fake::default()
    };
    let mut dev = fake_device(fake.clone());
    dev.set_queue_notifiers(vec![
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    ]);
    let queue = |i: u64| {
        let mut q = Queue::new(256).unwrap();
        let base = 0x1_0000 * (i + 1);
        QueueT::set_desc_table_address(&mut q, Some(low32(base)), Some(0));
        QueueT::set_avail_ring_address(&mut q, Some(low32(base + 0x8000)), Some(0));
        QueueT::set_used_ring_address(&mut q, Some(low32(base + 0x1000)), Some(0));
        q
    };
    let irq = Arc::new(Interrupt::new().unwrap());
    let features = bit(VIRTIO_F_VERSION_1) | ALL;
    let e = dev
        .activate(mem.clone(), vec![queue(0), queue(1)], irq.clone(), features)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "vhost-net queue 1: VHOST_SET_VRING_ADDR: failure in vhost ioctl: \
         Invalid argument (os error 22)"
    );
    let calls = fake.take();
    assert_eq!(calls.last().unwrap(), "get_base 1", "undone: {calls:?}");
    assert!(calls.ends_with(&STOP.map(String::from)), "{calls:?}");
    assert!(!calls.iter().any(|c| c.ends_with(" tap")), "{calls:?}");
    // The offloads still follow what the guest acked.
    assert_eq!(dev.tap_offloads(), tun_offloads(features));
    // Not running: a reset asks nothing.
    dev.reset();
    assert_eq!(fake.take(), Vec::<String>::new());
    // Without the queue notifiers there is nothing to hand over.
    let mut bare = fake_device(Fake::default());
    let e = bare
        .activate(mem.clone(), vec![queue(0), queue(1)], irq.clone(), features)
        .unwrap_err();
    assert_eq!(e.to_string(), "no queue notifiers");
    let e = bare
        .activate(mem, vec![queue(0)], irq, features)
        .unwrap_err();
    assert!(matches!(
        e,
        ActivateError::QueueCount {
            expected: 2,
            got: 1
        }
    ));
}

#[test]
fn opening_vhost_net_fails_with_one_line_naming_it_and_the_module() {
    if std::path::Path::new(VHOST_NET_PATH).exists() {
        eprintln!("opening_vhost_net: skipped: this host has {VHOST_NET_PATH}");
        return;
    }
    let Err(e) = open_kernel(&guest_memory()) else {
        panic!("{VHOST_NET_PATH} opened without existing");
    };
    assert!(matches!(e, VhostError::Open(_)), "{e}");
    assert_eq!(
        e.to_string(),
        "cannot open /dev/vhost-net: No such file or directory (os error 2) \
         (the host needs the vhost_net module: modprobe vhost_net)"
    );
    // Through the device: the tap is checked first, then vhost-net.
    let e = VhostNet::from_tap_fd(1_000_000, MacAddr(MAC), None, &guest_memory()).unwrap_err();
    assert!(matches!(e, NetError::NotOpen { .. }), "{e}");
}

/// Where the host has it: vhost-net on a real tap, a frame each way (as
/// `tap::frames_cross_a_real_tap_both_ways` for the user-space device):
/// the kernel's ARP request for the guest reaches a guest rx buffer, a
/// guest UDP datagram with a partial checksum reaches a host socket. Then
/// a reset and a bring-up without offloads.
#[test]
fn the_kernels_vhost_net_moves_frames_through_a_real_tap() {
    if !std::path::Path::new(VHOST_NET_PATH).exists() {
        eprintln!(
            "vhost-net on a tap: skipped: no {VHOST_NET_PATH} (modprobe vhost_net to run it)"
        );
        return;
    }
    in_netns("vhost-net on a tap", || {
        let mem = guest_memory();
        let (_, kernel) = open_kernel(&mem).unwrap();
        assert_ne!(kernel & bit(VIRTIO_F_VERSION_1), 0, "{kernel:#x}");
        let dev = VhostNet::from_tap_name("huskvh0", MacAddr(MAC), Some(1500), &mem).unwrap();
        let mut g = G {
            drv: Driver::new(&mem, Box::new(dev)),
            host: socket_pair().1,
            stats: Arc::new(NetCounters::default()),
            used: VecDeque::new(),
        };
        let offered = g.drv.device_features();
        assert_ne!(offered & bit(VIRTIO_RING_F_EVENT_IDX), 0, "{offered:#x}");
        assert!(g.drv.activate(ALL & offered));
        g.post_rx(64, RX_BUF);
        exchange_with_host(&mut g, "huskvh0");
        // The tx chain came back used, by the kernel.
        assert!(g.drv.run_until(5, |d| !d.take_used(TX).is_empty()));
        assert!(g.drv.reset_and_activate(bit(VIRTIO_NET_F_MRG_RXBUF)));
        g.drv.write32(0x70, 0);
    });
}
