//! Building a VM, one named step at a time:
//!
//! 0. [`prepare`]: everything that needs no KVM (kernel and initrd
//!    validated, where the initrd goes, the command line, the console sink),
//!    so bad input fails before /dev/kvm is opened.
//! 1. [`create_guest_memory`]: guest RAM mapped.
//! 2. The boot image (kernel, initrd, boot structures) starts being written
//!    into it by its own thread ([`boot_image`]), overlapping steps 3 to 5;
//!    it is waited for before step 6.
//! 3. [`create_vm_state`]: the KVM VM, its interrupt controller and PIT,
//!    guest RAM registered as memory slots.
//! 4. [`attach_legacy_devices`]: the serial port and the i8042 controller.
//! 5. Virtio devices ([`crate::virtio_attach`]).
//! 6. [`create_vcpus`]: every vCPU created and configured before any runs.
//! 7. [`start_vcpus`]: one thread each.
//!
//! The `HUSK_VMM_TIMING` marks (`crate::timing`) sit at these step
//! boundaries; husk-bench reads them by name.

mod boot_image;

use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, SubscriberOps};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Cap;

use crate::arch::{layout, ram};
use crate::bus::{self, Bus};
use crate::config::{io_msg, ConfigError, SerialConfig, VmConfig};
use crate::devices::i8042::I8042;
use crate::devices::serial::{SerialDevice, SerialSink};
use crate::virtio_attach::{self, AttachError};
use crate::vm::{signal_fd, Control, Subscriber, Vm};
use crate::vstate::vcpu::{self, ExitState, Vcpu, VcpuError, VcpuSetup, VmExit};
use crate::vstate::vm::{IrqLineError, IrqchipError, KvmVm, MemslotError, VmError};
use crate::{cmdline, kernel, timing};
pub use boot_image::BootImageError;

/// Why a VM could not be prepared (before KVM is touched).
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
}

/// Why a VM could not be started: one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("signalfd: {0}")]
    Signals(std::io::Error),
    #[error("memory: cannot map {mib} MiB: {source}")]
    Memory { mib: u64, source: ram::Error },
    #[error(transparent)]
    BootImage(#[from] BootImageError),
    #[error("signal handler: {0}")]
    KickHandler(std::io::Error),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Irqchip(#[from] IrqchipError),
    #[error(transparent)]
    Memslot(#[from] MemslotError),
    #[error("eventfd: {0}")]
    ExitEvent(std::io::Error),
    #[error("event manager: {0}")]
    EventManager(event_manager::Error),
    #[error(transparent)]
    LegacyDevice(#[from] LegacyDeviceError),
    #[error(transparent)]
    Device(#[from] AttachError),
    #[error("KVM_GET_SUPPORTED_CPUID: {0}")]
    SupportedCpuid(kvm_ioctls::Error),
    #[error("vCPU {id}: {source}")]
    Vcpu { id: u8, source: VcpuError },
    #[error(transparent)]
    Confine(#[from] crate::confine::ConfineError),
}

/// Setting up the serial port or the i8042 controller failed.
#[derive(Debug, thiserror::Error)]
pub enum LegacyDeviceError {
    #[error("{device}: interrupt line: {source}")]
    Irq {
        device: &'static str,
        source: IrqLineError,
    },
    #[error("{device}: {source}")]
    Bus {
        device: &'static str,
        source: bus::Error,
    },
}

/// A VM validated without KVM, ready for [`build`].
pub struct Prepared {
    pub(crate) config: VmConfig,
    pub(crate) kernel: kernel::KernelInfo,
    pub(crate) initrd_size: u64,
    pub(crate) initrd_addr: u64,
    pub(crate) cmdline: linux_loader::cmdline::Cmdline,
    pub(crate) serial_sink: SerialSink,
    pub(crate) startup_only: bool,
}

impl Prepared {
    /// Sets everything up but stops the vCPUs right before their first
    /// KVM_RUN: no guest code runs, so this also works where guests cannot
    /// boot (a PVM host), to measure the VMM's own start-up there.
    pub fn startup_only(mut self) -> Self {
        self.startup_only = true;
        self
    }
}

/// Step 0: validates everything that does not need KVM: kernel, initrd,
/// command line, serial output. Runs before /dev/kvm is opened.
pub fn prepare(config: VmConfig) -> Result<Prepared, PrepareError> {
    let kernel = kernel::inspect_kernel(&config.kernel)?;
    let initrd_size = kernel::inspect_initrd(&config.initrd)?;
    let initrd_addr = kernel::check_fit(
        &kernel,
        initrd_size,
        layout::low_ram_end(config.memory_bytes()),
    )?;
    let cmdline = cmdline::build(&config.cmdline, &config.append, config.virtio_devices())?;
    let serial_sink = match &config.serial {
        SerialConfig::Stdout => SerialSink::Stdout,
        SerialConfig::None => SerialSink::None,
        SerialConfig::File(p) => SerialSink::File(File::create(p).map_err(|e| ConfigError {
            field: "serial".into(),
            msg: format!("{}: {}", p.display(), io_msg(&e)),
        })?),
    };
    Ok(Prepared {
        config,
        kernel,
        initrd_size,
        initrd_addr,
        cmdline,
        serial_sink,
        startup_only: false,
    })
}

/// Creates the VM and starts its vCPUs.
pub fn build(p: Prepared) -> Result<Vm, StartError> {
    // Before any thread exists: threads inherit the blocked signals.
    let signals = signal_fd().map_err(StartError::Signals)?;
    let ram = create_guest_memory(&p.config)?;
    timing::mark("guest memory mapped");
    let boot_image = boot_image::BootImageLoader::spawn(&p, &ram.mem)?;

    vcpu::install_kick_handler().map_err(StartError::KickHandler)?;
    let vm = create_vm_state(&ram.mem, p.startup_only)?;
    timing::mark("guest memory registered");

    let exit = Arc::new(ExitState::new().map_err(StartError::ExitEvent)?);
    let mut em =
        EventManager::<Subscriber>::new_with_capacity(64).map_err(StartError::EventManager)?;
    em.add_subscriber(Arc::new(Mutex::new(Control::new(exit.clone(), signals))));
    let (mut pio, mut mmio) = (Bus::new(), Bus::new());
    let serial = attach_legacy_devices(&vm, &mut pio, p.serial_sink, &exit)?;
    virtio_attach::attach(&vm, &ram.mem, &p.config, &mut mmio, &mut em, &exit)?;
    timing::mark("devices attached");
    let (pio, mmio) = (Arc::new(pio), Arc::new(mmio));

    let boot_entry = boot_image.join()?;
    timing::mark("boot image written");

    let supported_cpuid = vm
        .kvm()
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(StartError::SupportedCpuid)?;
    let setup = VcpuSetup {
        count: p.config.vcpus,
        supported_cpuid: &supported_cpuid,
        tsc_deadline: vm.kvm().check_extension(Cap::TscDeadlineTimer),
        boot_entry,
        pio: &pio,
        mmio: &mmio,
        exit: &exit,
        startup_only: p.startup_only,
    };
    let vcpus = create_vcpus(&vm, &setup)?;
    timing::mark("vCPUs configured");
    // Setup is done: every file, device and socket is open. The vCPU
    // threads inherit this (see `crate::confine`): the jail first, while
    // still root, then the privileges (with the jail's ids).
    crate::confine::jail_process(|| jail_plan(&p.config))?;
    crate::confine::drop_process_privileges()?;
    let threads = start_vcpus(vcpus, &exit)?;

    Ok(Vm {
        exit,
        em,
        serial,
        threads,
        vsock_uds: p.config.vsock.as_ref().map(|v| v.uds.clone()),
        buses: (pio, mmio),
        mem: ram.mem,
        vm,
        ram: ram.mappings,
    })
}

/// The jail of a VM set up from `config`: the vsock socket's directory
/// kept (guest-initiated connections reach `<uds>_<port>` there, and the
/// socket is removed at the end); room for the vCPU threads and the smoke
/// client, for every vsock connection, and for writes to writable disks.
fn jail_plan(config: &VmConfig) -> Result<crate::confine::JailPlan, crate::confine::ConfineError> {
    use crate::confine::jail::Limits;
    let keep = config
        .vsock
        .iter()
        .filter_map(|v| v.uds.parent().map(std::path::Path::to_path_buf))
        .collect();
    let writable: Vec<&std::path::Path> = config
        .disks
        .iter()
        .filter(|d| !d.read_only)
        .map(|d| d.path.as_path())
        .collect();
    let fds = crate::devices::virtio::VSOCK_MAX_CONNECTIONS as u64 + 64;
    let limits = Limits::measure(u64::from(config.vcpus) + 2, fds, &writable)?;
    Ok(crate::confine::JailPlan { keep, limits })
}

/// Step 1: guest RAM, anonymous, MAP_NORESERVE, never pre-faulted; 2 MiB
/// aligned with THP requested, so KVM can map it with huge pages. With a
/// vhost-user device, a memfd mapped shared instead, so the backend can map
/// it too. The mappings are only released by `Vm::finish`; an error return
/// leaves them mapped until the process exits.
pub fn create_guest_memory(config: &VmConfig) -> Result<ram::GuestRam, StartError> {
    let backing = if config.shared_memory() {
        ram::Backing::SharedMemfd
    } else {
        ram::Backing::Anonymous
    };
    ram::create(&layout::ram_ranges(config.memory_bytes()), backing).map_err(|source| {
        StartError::Memory {
            mib: config.memory_mib,
            source,
        }
    })
}

/// Step 3: the KVM VM with its interrupt controller and PIT, and `mem`
/// registered with it. Marks "KVM opened, VM created" once the VM exists.
pub fn create_vm_state(
    mem: &vm_memory::GuestMemoryMmap,
    startup_only: bool,
) -> Result<KvmVm, StartError> {
    let vm = KvmVm::create(startup_only)?;
    timing::mark("KVM opened, VM created");
    vm.setup_irqchip()?;
    vm.register_memory(mem)?;
    Ok(vm)
}

/// Step 4: the serial port (COM1, its output to `sink`) and the i8042
/// controller, whose reset line ends the VM as a reboot. Returns the serial
/// device, whose log the VM's outcome reports.
pub fn attach_legacy_devices(
    vm: &KvmVm,
    pio: &mut Bus,
    sink: SerialSink,
    exit: &Arc<ExitState>,
) -> Result<Arc<Mutex<SerialDevice>>, LegacyDeviceError> {
    let irq = |device, gsi| {
        vm.irq_line(gsi)
            .map_err(|source| LegacyDeviceError::Irq { device, source })
    };
    let on_bus = |device| move |source| LegacyDeviceError::Bus { device, source };
    let mut serial = SerialDevice::new(irq("serial port", layout::SERIAL_GSI)?, sink);
    // The guest's first console output, among the start-up timing marks.
    serial.output_mut().report_milestones(timing::mark);
    let serial = Arc::new(Mutex::new(serial));
    pio.insert(
        u64::from(layout::SERIAL_PORT),
        layout::SERIAL_PORT_LEN,
        serial.clone(),
    )
    .map_err(on_bus("serial port"))?;
    let reset_exit = exit.clone();
    let i8042 = I8042::new(
        Box::new(move || reset_exit.request(VmExit::Reset)),
        Some(irq("i8042", layout::I8042_KBD_GSI)?),
    );
    pio.insert(
        u64::from(layout::I8042_PORT),
        layout::I8042_PORT_LEN,
        Arc::new(Mutex::new(i8042)),
    )
    .map_err(on_bus("i8042"))?;
    Ok(serial)
}

/// Step 6: every vCPU, created and configured before any runs, so the boot
/// CPU never sends a SIPI to a vCPU that does not exist yet.
pub fn create_vcpus(vm: &KvmVm, setup: &VcpuSetup) -> Result<Vec<Vcpu>, StartError> {
    (0..setup.count)
        .map(|id| Vcpu::create(vm, id, setup).map_err(|source| StartError::Vcpu { id, source }))
        .collect()
}

/// Step 7: one thread per vCPU. If one cannot start, the ones already
/// running are stopped.
pub fn start_vcpus(
    vcpus: Vec<Vcpu>,
    exit: &ExitState,
) -> Result<Vec<std::thread::JoinHandle<()>>, StartError> {
    let mut threads = Vec::with_capacity(vcpus.len());
    for v in vcpus {
        let id = v.id;
        match v.spawn() {
            Ok(t) => threads.push(t),
            Err(e) => {
                exit.request(VmExit::Fatal(format!("starting a vCPU thread: {e}")));
                vcpu::stop_all(threads, Duration::from_secs(1));
                return Err(StartError::Vcpu {
                    id,
                    source: VcpuError::Spawn(e),
                });
            }
        }
    }
    Ok(threads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigInput;
    use crate::kernel::tests::{tiny_elf, write_tmp};
    use std::path::PathBuf;

    fn config(kernel: PathBuf, initrd: PathBuf) -> VmConfig {
        VmConfig::from_input(
            ConfigInput {
                kernel: Some(kernel),
                initrd: Some(initrd),
                serial: Some("none".into()),
                ..Default::default()
            },
            |_| None,
        )
        .unwrap()
    }

    #[test]
    fn bad_kernel_fails_before_kvm() {
        let initrd = write_tmp("vm-initrd", b"0707");
        let e = prepare(config("/nonexistent/vmlinux".into(), initrd.clone()))
            .err()
            .unwrap();
        assert_eq!(e.to_string(), "kernel: /nonexistent/vmlinux: not found");
        let junk = write_tmp("vm-junk", &[0x55; 4096]);
        let e = prepare(config(junk.clone(), initrd.clone()))
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            format!(
                "kernel: {}: not an ELF file (bad magic); husk boots an uncompressed vmlinux",
                junk.display()
            )
        );
        let k = write_tmp("vm-kernel", &tiny_elf(0x100_0000, &[0; 64], true));
        let e = prepare(config(k.clone(), "/nonexistent/initrd".into()))
            .err()
            .unwrap();
        assert_eq!(e.to_string(), "initrd: /nonexistent/initrd: not found");
        assert!(prepare(config(k.clone(), initrd.clone())).is_ok());
        for p in [initrd, junk, k] {
            std::fs::remove_file(p).unwrap();
        }
    }
}
