use std::sync::{Arc, Mutex};

use event_manager::EventOps;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::super::test_utils::{guest_memory, Driver};
use super::super::{ActivateError, Interrupt, VirtioDevice, INT_CONFIG, INT_USED_RING};
use crate::devices::BusDevice;

#[derive(Default)]
struct DummyState {
    activations: usize,
    resets: usize,
    after_resets: usize,
    queue_sizes: Vec<u16>,
    notified: Vec<usize>,
    interrupt: Option<Arc<Interrupt>>,
    acked: u64,
    config_writes: Vec<(u64, Vec<u8>)>,
}

struct Dummy {
    sizes: Vec<u16>,
    features: u64,
    state: Arc<Mutex<DummyState>>,
}

const CONFIG: [u8; 6] = [1, 2, 3, 4, 5, 6];
const F_DUMMY: u64 = 1 << 3;

impl VirtioDevice for Dummy {
    fn device_type(&self) -> u32 {
        42
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }
    fn avail_features(&self) -> u64 {
        self.features
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::super::block::read_config_bytes(&CONFIG, offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.state
            .lock()
            .unwrap()
            .config_writes
            .push((offset, data.to_vec()));
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        acked: u64,
    ) -> Result<(), ActivateError> {
        let mut s = self.state.lock().unwrap();
        s.activations += 1;
        s.queue_sizes = queues.iter().map(|q| q.size()).collect();
        s.interrupt = Some(interrupt);
        s.acked = acked;
        Ok(())
    }
    fn reset(&mut self) {
        self.state.lock().unwrap().resets += 1;
    }
    fn after_reset(&mut self, _ops: &mut EventOps) {
        self.state.lock().unwrap().after_resets += 1;
    }
    fn process_queue(&mut self, index: usize, _ops: &mut EventOps) -> bool {
        self.state.lock().unwrap().notified.push(index);
        false
    }
}

fn dummy(sizes: &[u16]) -> (Box<Dummy>, Arc<Mutex<DummyState>>) {
    let state = Arc::new(Mutex::new(DummyState::default()));
    (
        Box::new(Dummy {
            sizes: sizes.to_vec(),
            features: (1 << 32) | F_DUMMY,
            state: state.clone(),
        }),
        state,
    )
}

const ALL_OK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE
    | VIRTIO_CONFIG_S_DRIVER
    | VIRTIO_CONFIG_S_FEATURES_OK
    | VIRTIO_CONFIG_S_DRIVER_OK;

#[test]
fn identification_registers() {
    let mem = guest_memory();
    let (d, _) = dummy(&[16]);
    let drv = Driver::new(&mem, d);
    assert_eq!(drv.read32(0x0), 0x7472_6976);
    assert_eq!(drv.read32(0x4), 2);
    assert_eq!(drv.read32(0x8), 42);
    assert_eq!(drv.read32(0xc), 0x4b53_5548);
    assert_eq!(drv.device_features(), (1 << 32) | F_DUMMY);
    drv.write32(0x14, 7);
    assert_eq!(drv.read32(0x10), 0);
    assert_eq!(drv.read32(0xfc), 0);
    // No shared memory regions.
    assert_eq!(drv.read32(0xb0), u32::MAX);
    assert_eq!(drv.read32(0xb4), u32::MAX);
    // Config space.
    assert_eq!(drv.read_config(0, 6), CONFIG);
    assert_eq!(drv.read_config(4, 4), [5, 6, 0, 0]);
    assert_eq!(drv.read_config(0x800, 4), [0; 4]);
}

#[test]
fn rejects_invalid_queue_sizes() {
    let mem = guest_memory();
    let (d, _) = dummy(&[12]);
    assert!(super::VirtioMmioDevice::new(mem.clone(), d).is_err());
    let (d, _) = dummy(&[]);
    assert!(super::VirtioMmioDevice::new(mem, d).is_err());
}

#[test]
fn feature_negotiation() {
    let mem = guest_memory();
    let (d, state) = dummy(&[16, 32]);
    let mut drv = Driver::new(&mem, d);
    // VERSION_1 is required.
    assert!(!drv.setup_queues(F_DUMMY));
    // Features the device did not offer are refused.
    assert!(!drv.setup_queues((1 << 32) | (1 << 5)));
    // Features written before DRIVER are ignored.
    drv.write32(0x70, 0);
    drv.write32(0x24, 1);
    drv.write32(0x20, 1);
    drv.write32(0x70, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    drv.write32(
        0x70,
        VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
    );
    assert_eq!(drv.read32(0x70) & VIRTIO_CONFIG_S_FEATURES_OK, 0);

    assert!(drv.activate(F_DUMMY));
    let s = state.lock().unwrap();
    assert_eq!(s.activations, 1);
    assert_eq!(s.acked, (1 << 32) | F_DUMMY);
    assert_eq!(s.queue_sizes, vec![16, 32]);
}

#[test]
fn queue_registers() {
    let mem = guest_memory();
    let (d, _) = dummy(&[16, 256]);
    let mut drv = Driver::new(&mem, d);
    drv.write32(0x30, 1);
    assert_eq!(drv.read32(0x34), 256);
    drv.write32(0x30, 2);
    assert_eq!(drv.read32(0x34), 0);
    assert_eq!(drv.read32(0x44), 0);
    // Queue registers are not writable before FEATURES_OK.
    drv.write32(0x30, 0);
    drv.write32(0x44, 1);
    assert_eq!(drv.read32(0x44), 0);

    assert!(drv.activate(0));
    drv.write32(0x30, 1);
    assert_eq!(drv.read32(0x44), 1);
    // ...nor after DRIVER_OK.
    drv.write32(0x44, 0);
    assert_eq!(drv.read32(0x44), 1);
}

#[test]
fn activation_requires_valid_queues() {
    let mem = guest_memory();
    let (d, state) = dummy(&[16]);
    let mut drv = Driver::new(&mem, d);
    assert!(drv.setup_queues(1 << 32));
    // Move the used ring outside guest memory.
    drv.write32(0xa4, 0x10);
    drv.write32(0x44, 0);
    drv.write32(0xa4, 0x10);
    drv.write32(0x44, 1);
    drv.write32(0x70, ALL_OK);
    assert!(!drv.dev.lock().unwrap().is_activated());
    assert_eq!(state.lock().unwrap().activations, 0);
    assert_ne!(drv.read32(0x70) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    assert_eq!(drv.read32(0x60) & INT_CONFIG, INT_CONFIG);
    assert_eq!(drv.dev.lock().unwrap().irq_evt().read().unwrap(), 1);

    // A queue left not ready also blocks activation.
    let (d, state) = dummy(&[16, 16]);
    let mut drv = Driver::new(&mem, d);
    assert!(drv.setup_queues(1 << 32));
    drv.write32(0x30, 1);
    drv.write32(0x44, 0);
    drv.write32(0x70, ALL_OK);
    assert_eq!(state.lock().unwrap().activations, 0);

    // DRIVER_OK without FEATURES_OK does nothing.
    let (d, state) = dummy(&[16]);
    let drv = Driver::new(&mem, d);
    drv.write32(0x70, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    drv.write32(0x70, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    drv.write32(
        0x70,
        VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_DRIVER_OK,
    );
    assert_eq!(drv.read32(0x70) & VIRTIO_CONFIG_S_DRIVER_OK, 0);
    assert_eq!(state.lock().unwrap().activations, 0);
}

#[test]
fn notifications_and_interrupts() {
    let mem = guest_memory();
    let (d, state) = dummy(&[16, 16]);
    let mut drv = Driver::new(&mem, d);
    // Notifications before activation are drained and ignored.
    drv.kick(1);
    drv.poll(0);
    assert!(state.lock().unwrap().notified.is_empty());

    assert!(drv.activate(0));
    // Activation kicks every queue once.
    drv.run_until(2, |_| state.lock().unwrap().notified.len() == 2);
    state.lock().unwrap().notified.clear();

    drv.kick(1);
    // Out-of-range queue index: ignored.
    drv.kick(7);
    drv.run_until(2, |_| !state.lock().unwrap().notified.is_empty());
    drv.poll(20);
    assert_eq!(state.lock().unwrap().notified, vec![1]);

    let irq = state.lock().unwrap().interrupt.clone().unwrap();
    irq.signal_used_queue();
    assert_eq!(drv.read32(0x60), INT_USED_RING);
    assert_eq!(drv.dev.lock().unwrap().irq_evt().read().unwrap(), 1);
    irq.signal_config_change();
    assert_eq!(drv.read32(0x60), INT_USED_RING | INT_CONFIG);
    drv.write32(0x64, INT_USED_RING);
    assert_eq!(drv.read32(0x60), INT_CONFIG);
    drv.write32(0x64, INT_CONFIG);
    assert_eq!(drv.read32(0x60), 0);
}

#[test]
fn reset() {
    let mem = guest_memory();
    let (d, state) = dummy(&[16]);
    let mut drv = Driver::new(&mem, d);
    assert!(drv.activate(0));
    // (Bring-up starts with a reset, like Linux does.)
    let resets = state.lock().unwrap().resets;
    assert!(drv.run_until(2, |_| state.lock().unwrap().after_resets == resets));
    state
        .lock()
        .unwrap()
        .interrupt
        .clone()
        .unwrap()
        .signal_used_queue();
    // Clearing bits is not a reset.
    drv.write32(0x70, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    assert_eq!(drv.read32(0x70), ALL_OK);
    assert!(drv.dev.lock().unwrap().is_activated());

    drv.write32(0x70, 0);
    assert_eq!(drv.read32(0x70), 0);
    assert_eq!(drv.read32(0x60), 0);
    assert!(!drv.dev.lock().unwrap().is_activated());
    assert_eq!(drv.read32(0x44), 0);
    assert_eq!(state.lock().unwrap().resets, resets + 1);
    assert!(drv.run_until(2, |_| state.lock().unwrap().after_resets == resets + 1));

    // The device comes back up.
    assert!(drv.activate(0));
    assert_eq!(state.lock().unwrap().activations, 2);
}

#[test]
fn garbage_accesses_are_harmless() {
    let mem = guest_memory();
    let (d, state) = dummy(&[16, 16]);
    let mut drv = Driver::new(&mem, d);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for phase in 0..3 {
        if phase == 1 {
            assert!(drv.activate(0));
        }
        for offset in (0..0x1010u64).chain([0x1_0000, u64::MAX - 3, u64::MAX]) {
            for size in 0..=9usize {
                let mut buf = vec![0u8; size];
                drv.dev.lock().unwrap().read(offset, &mut buf);
                if offset < 0x100 && (size != 4 || offset % 4 != 0) {
                    assert!(buf.iter().all(|&b| b == 0), "{offset:#x}/{size}");
                }
                // Don't reset the device by writing the status register in
                // the activated phase; everything else gets garbage.
                if phase == 1 && (0x70..0x74).contains(&offset) {
                    continue;
                }
                let v = rnd().to_le_bytes();
                let data: Vec<u8> = v.iter().copied().cycle().take(size).collect();
                drv.dev.lock().unwrap().write(offset, &data);
            }
        }
        drv.poll(0);
    }
    // Config writes reached the device with their offsets.
    assert!(state
        .lock()
        .unwrap()
        .config_writes
        .iter()
        .any(|(o, d)| *o == 0 && d.len() == 4));
    // Still functional: reset and bring up again.
    drv.write32(0x70, 0);
    assert!(drv.activate(0));
}
