//! Building and running a VM: KVM setup, guest memory, boot structures,
//! devices, vCPU threads, and the main-thread event loop that waits for the
//! VM to end.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::layout::{self, CMDLINE_ADDR, MPTABLE_ADDR};
use crate::arch::{cpuid, mptable, pvh, ram, regs};
use crate::bus::Bus;
use crate::config::{io_msg, SerialConfig, VmConfig};
use crate::devices::i8042::I8042;
use crate::devices::serial::{SerialDevice, SerialSink};
use crate::vcpu::{self, ExitState, Vcpu, VmExit};
use crate::{cmdline, host, kernel, timing};

/// Every error that stops a VM from being built. Displayed as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    #[error(transparent)]
    Host(#[from] host::Error),
    #[error(transparent)]
    Regs(#[from] regs::Error),
    #[error(transparent)]
    MpTable(#[from] mptable::Error),
    #[error("{0}: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    #[error("memory: {0}")]
    Memory(String),
    #[error("{0}")]
    Device(String),
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
}

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// How the VM ended.
#[derive(Debug)]
pub struct Outcome {
    pub exit: VmExit,
    /// The guest console showed "Kernel panic - not syncing".
    pub panicked: bool,
    /// The last lines of guest console output.
    pub serial_tail: Vec<String>,
}

impl Outcome {
    /// True if the guest shut down or rebooted on its own, without a panic.
    pub fn is_clean(&self) -> bool {
        matches!(
            self.exit,
            VmExit::Reset | VmExit::PowerOff | VmExit::StartupOnly
        ) && !self.panicked
    }

    /// A one-line description of a non-clean outcome.
    pub fn describe(&self) -> String {
        let why = match &self.exit {
            VmExit::Reset | VmExit::PowerOff if self.panicked => {
                "guest kernel panicked".to_string()
            }
            VmExit::Reset => "guest rebooted".to_string(),
            VmExit::PowerOff => "guest powered off".to_string(),
            VmExit::TripleFault { cpu } => format!(
                "vCPU {cpu}: triple fault (KVM_EXIT_SHUTDOWN){}",
                if self.panicked {
                    " after a guest kernel panic"
                } else {
                    ""
                }
            ),
            VmExit::Fatal(m) => m.clone(),
            VmExit::Signal(s) => match *s {
                libc::SIGTERM => "stopped by SIGTERM".to_string(),
                libc::SIGINT => "stopped by SIGINT".to_string(),
                s => format!("stopped by signal {s}"),
            },
            VmExit::Timeout(m) => m.clone(),
            VmExit::StartupOnly => "stopped before the first KVM_RUN (--startup-only)".to_string(),
        };
        why
    }

    /// Process exit status for `husk-vmm run`.
    pub fn exit_code(&self) -> i32 {
        match self.exit {
            _ if self.is_clean() => 0,
            VmExit::Signal(s) => 128 + s,
            _ => 1,
        }
    }
}

/// Watches the exit eventfd and SIGTERM/SIGINT on the main thread.
struct Control {
    exit: Arc<ExitState>,
    signals: OwnedFd,
}

impl MutEventSubscriber for Control {
    fn init(&mut self, ops: &mut EventOps) {
        for fd in [self.exit.evt().as_raw_fd(), self.signals.as_raw_fd()] {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                self.exit.request(VmExit::Fatal(format!("event loop: {e}")));
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.exit.evt().as_raw_fd() {
            let _ = self.exit.evt().read();
        } else if events.fd() == self.signals.as_raw_fd() {
            // SAFETY: an all-zero signalfd_siginfo is a valid value.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: `info` is a writable buffer of exactly `size` bytes and
            // the fd is our signalfd.
            let n = unsafe {
                libc::read(
                    self.signals.as_raw_fd(),
                    &mut info as *mut _ as *mut libc::c_void,
                    size,
                )
            };
            if n == size as isize {
                self.exit.request(VmExit::Signal(info.ssi_signo as i32));
            }
        }
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread (and so in every thread it
/// spawns afterwards) and returns a signalfd receiving them.
fn signal_fd() -> Result<OwnedFd, Error> {
    // SAFETY: an all-zero sigset_t is a valid argument for sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the calls only write to it and to
    // the thread's signal mask.
    let fd = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
    };
    if fd < 0 {
        return Err(Error::Io("signalfd", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A built VM whose vCPUs are running.
pub struct Vm {
    exit: Arc<ExitState>,
    em: EventManager<Subscriber>,
    serial: Arc<Mutex<SerialDevice>>,
    threads: Vec<JoinHandle<()>>,
    vsock_uds: Option<PathBuf>,
    // Dropped after the event manager, in this order.
    _buses: (Arc<Bus>, Arc<Bus>),
    /// Guest RAM: registered with KVM, so it must outlive every vCPU run.
    mem: GuestMemoryMmap,
    _vm: VmFd,
    _kvm: Kvm,
    /// The host mappings behind `mem`, unmapped by `finish` after it.
    ram: Vec<ram::Mapping>,
}

/// Validates everything that does not need KVM: kernel, initrd, command
/// line, serial output. Runs before /dev/kvm is opened.
pub struct Prepared {
    config: VmConfig,
    kernel: kernel::KernelInfo,
    initrd_size: u64,
    initrd_addr: u64,
    cmdline: linux_loader::cmdline::Cmdline,
    serial_sink: SerialSink,
    startup_only: bool,
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

pub fn prepare(config: VmConfig) -> Result<Prepared, Error> {
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
        SerialConfig::File(p) => {
            SerialSink::File(File::create(p).map_err(|e| crate::config::ConfigError {
                field: "serial".into(),
                msg: format!("{}: {}", p.display(), io_msg(&e)),
            })?)
        }
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

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> Error {
    move |e| Error::Kvm(what, e)
}

/// The thread that writes the boot image (kernel, initrd, command line, PVH
/// start info, MP table, GDT) into guest RAM. Dropping it waits for the
/// thread, so an early error return never leaves it writing.
struct BootImageLoader(Option<JoinHandle<Result<u64, Error>>>);

impl BootImageLoader {
    fn spawn(p: &Prepared, mem: &GuestMemoryMmap) -> Result<Self, Error> {
        let (mem, config) = (mem.clone(), p.config.clone());
        let (want_entry, cmdline) = (p.kernel.pvh_entry, p.cmdline.clone());
        let (initrd_addr, initrd_size) = (p.initrd_addr, p.initrd_size);
        let write = move || -> Result<u64, Error> {
            let entry = kernel::load_kernel(&mem, &config.kernel)?;
            if entry != want_entry {
                return Err(kernel::Error::Kernel(
                    config.kernel.clone(),
                    "PVH entry point changed while loading".into(),
                )
                .into());
            }
            timing::mark("kernel loaded");
            let initrd = kernel::load_initrd(&mem, &config.initrd, initrd_addr, initrd_size)?;
            timing::mark("initrd loaded");
            linux_loader::loader::load_cmdline(&mem, GuestAddress(CMDLINE_ADDR), &cmdline)
                .map_err(|e| Error::Memory(format!("writing the command line: {e}")))?;
            pvh::write(&mem, config.memory_bytes(), Some(initrd))
                .map_err(|e| Error::Memory(format!("writing the PVH start info: {e}")))?;
            let mpt = mptable::build(config.vcpus, MPTABLE_ADDR)?;
            vm_memory::Bytes::write_slice(&mem, &mpt, GuestAddress(MPTABLE_ADDR))
                .map_err(|e| Error::Memory(format!("writing the MP table: {e}")))?;
            regs::write_gdt(&mem)?;
            Ok(entry)
        };
        std::thread::Builder::new()
            .name("boot-image".into())
            .spawn(write)
            .map(|h| BootImageLoader(Some(h)))
            .map_err(|e| Error::Io("spawning the boot image thread", e))
    }

    /// Waits for the boot image; returns the kernel's PVH entry point.
    fn join(mut self) -> Result<u64, Error> {
        let h = self.0.take().expect("joined once");
        h.join()
            .unwrap_or_else(|_| Err(Error::Memory("writing the boot image panicked".into())))
    }
}

impl Drop for BootImageLoader {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

impl Vm {
    /// Creates the VM and starts its vCPUs.
    pub fn start(p: Prepared) -> Result<Vm, Error> {
        let config = &p.config;
        // Before any thread exists: threads inherit the blocked signals.
        let signals = signal_fd()?;
        // Guest RAM first, and the boot image written into it by a thread
        // while KVM is set up: on a small host, copying megabytes of kernel
        // and initrd into freshly zeroed pages is as long as all of KVM's
        // set-up, and the two do not depend on each other.
        //
        // Guest RAM: anonymous, MAP_NORESERVE, never pre-faulted; 2 MiB
        // aligned with THP requested, so KVM can map it with huge pages.
        // The mappings are only released by `finish`; an error return
        // leaves them mapped until the process exits.
        let mem_bytes = config.memory_bytes();
        // With a vhost-user device, a memfd mapped shared instead, so the
        // backend can map it too.
        let backing = if config.shared_memory() {
            ram::Backing::SharedMemfd
        } else {
            ram::Backing::Anonymous
        };
        let ram::GuestRam { mem, mappings: ram } =
            ram::create(&layout::ram_ranges(mem_bytes), backing)
                .map_err(|e| Error::Memory(format!("cannot map {} MiB: {e}", config.memory_mib)))?;
        timing::mark("guest memory mapped");
        let loader = BootImageLoader::spawn(&p, &mem)?;

        vcpu::install_kick_handler().map_err(|e| Error::Io("signal handler", e))?;
        let kvm = host::open_kvm(p.startup_only)?;
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        timing::mark("KVM opened, VM created");
        for cap in [
            Cap::Irqchip,
            Cap::UserMemory,
            Cap::Ioeventfd,
            Cap::Irqfd,
            Cap::Pit2,
        ] {
            if !kvm.check_extension(cap) {
                return Err(Error::Device(format!("KVM lacks the {cap:?} capability")));
            }
        }
        vm.set_tss_address(layout::KVM_TSS_ADDR as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDR)
            .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;

        for (slot, region) in mem.iter().enumerate() {
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the host range is a live mapping of exactly
            // `memory_size` bytes owned by `mem`, which `Vm` keeps until
            // every vCPU thread has stopped (or forever, if one is stuck).
            unsafe { vm.set_user_memory_region(r) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }

        timing::mark("guest memory registered");
        // Devices.
        let exit = Arc::new(ExitState::new().map_err(|e| Error::Io("eventfd", e))?);
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let mut em = EventManager::<Subscriber>::new_with_capacity(64)
            .map_err(|e| Error::Device(format!("event manager: {e}")))?;
        em.add_subscriber(Arc::new(Mutex::new(Control {
            exit: exit.clone(),
            signals,
        })));

        let irq = |gsi: u32| -> Result<EventFd, Error> {
            let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Io("eventfd", e))?;
            vm.register_irqfd(&evt, gsi).map_err(kvm_err("KVM_IRQFD"))?;
            Ok(evt)
        };
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            irq(layout::SERIAL_GSI)?,
            p.serial_sink,
        )));
        pio.insert(
            layout::SERIAL_PORT as u64,
            layout::SERIAL_PORT_LEN,
            serial.clone(),
        )
        .map_err(|e| Error::Device(e.to_string()))?;
        let reset_exit = exit.clone();
        let i8042 = I8042::new(
            Box::new(move || reset_exit.request(VmExit::Reset)),
            Some(irq(1)?),
        );
        pio.insert(
            layout::I8042_PORT as u64,
            layout::I8042_PORT_LEN,
            Arc::new(Mutex::new(i8042)),
        )
        .map_err(|e| Error::Device(e.to_string()))?;
        crate::virtio_attach::attach(&vm, &mem, config, &mut mmio, &mut em, &exit)?;

        timing::mark("devices attached");
        let pio = Arc::new(pio);
        let mmio = Arc::new(mmio);

        let entry = loader.join()?;
        timing::mark("boot image written");

        // vCPUs: all created and configured before any runs, so the boot CPU
        // never sends a SIPI to a vCPU that does not exist yet.
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
        let mut vcpus = Vec::with_capacity(config.vcpus as usize);
        for id in 0..config.vcpus {
            let fd = vm
                .create_vcpu(id as u64)
                .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            let mut entries = supported.as_slice().to_vec();
            cpuid::adjust(&mut entries, id, config.vcpus, tsc_deadline);
            let c = CpuId::from_entries(&entries).map_err(|_| {
                Error::Device(format!("{} CPUID entries are too many", entries.len()))
            })?;
            fd.set_cpuid2(&c).map_err(kvm_err("KVM_SET_CPUID2"))?;
            regs::setup_msrs(&fd)?;
            regs::setup_lapic(&fd)?;
            if id == 0 {
                regs::setup_boot_vcpu(&fd, entry)?;
            }
            vcpus.push(Vcpu {
                fd,
                id,
                pio: pio.clone(),
                mmio: mmio.clone(),
                exit: exit.clone(),
                startup_only: p.startup_only,
            });
        }
        timing::mark("vCPUs configured");
        let mut threads = Vec::with_capacity(vcpus.len());
        for v in vcpus {
            match v.spawn() {
                Ok(t) => threads.push(t),
                Err(e) => {
                    exit.request(VmExit::Fatal(format!("starting a vCPU thread: {e}")));
                    vcpu::stop_all(threads, Duration::from_secs(1));
                    return Err(Error::Io("spawning a vCPU thread", e));
                }
            }
        }

        Ok(Vm {
            exit,
            em,
            serial,
            threads,
            vsock_uds: config.vsock.as_ref().map(|v| v.uds.clone()),
            _buses: (pio, mmio),
            mem,
            _vm: vm,
            _kvm: kvm,
            ram,
        })
    }

    /// The shared exit state, to stop the VM from another thread.
    pub fn exit_state(&self) -> Arc<ExitState> {
        self.exit.clone()
    }

    /// Runs the event loop until the VM stops (or `deadline` passes), then
    /// stops the vCPUs and releases every device.
    pub fn run(mut self, deadline: Option<Instant>) -> Outcome {
        while !self.exit.stopping() {
            let timeout = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.exit
                            .request(VmExit::Timeout("timed out waiting for the VM".into()));
                        break;
                    }
                    left.as_millis().clamp(1, i32::MAX as u128) as i32
                }
            };
            let em = &mut self.em;
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                em.run_with_timeout(timeout)
            })) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => self.exit.request(VmExit::Fatal(format!("event loop: {e}"))),
                Err(_) => self
                    .exit
                    .request(VmExit::Fatal("event loop: a device panicked".into())),
            }
        }
        self.finish()
    }

    fn finish(self) -> Outcome {
        let Vm {
            exit,
            em,
            serial,
            threads,
            vsock_uds,
            _buses,
            mem,
            _vm,
            _kvm,
            ram,
        } = self;
        let stuck = vcpu::stop_all(threads, Duration::from_secs(1));
        // A vCPU stuck in a device (say, blocked writing to a full stdout
        // pipe) may hold the serial lock: wait for it only briefly.
        let mut tail = (
            vec!["(serial output unavailable: device busy)".to_string()],
            false,
        );
        let until = Instant::now() + Duration::from_millis(200);
        loop {
            if let Ok(mut s) = serial.try_lock() {
                s.output_mut().flush_sink();
                let log = s.output().log();
                tail = (log.last_lines(), log.panicked());
                break;
            }
            if Instant::now() >= until {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Dropping the event manager and buses drops the virtio devices (the
        // vsock device removes its socket); remove it here too in case a
        // stuck vCPU thread still holds a reference.
        drop(em);
        drop(_buses);
        if let Some(p) = vsock_uds {
            let _ = std::fs::remove_file(p);
        }
        if stuck.is_empty() {
            drop(mem);
            for m in ram {
                // SAFETY: every vCPU thread has returned, and the event
                // manager and buses (the devices and their clones of the
                // guest memory view) were dropped above, as was `mem`.
                unsafe { m.unmap() };
            }
        } else {
            // A vCPU may still be inside KVM_RUN on this memory.
            log::warn!("{} vCPU thread(s) did not stop", stuck.len());
            std::mem::forget(mem);
            // Never unmapped: it stays mapped until the process exits.
            std::mem::forget(ram);
        }
        Outcome {
            exit: exit
                .reason()
                .unwrap_or(VmExit::Fatal("VM stopped for no recorded reason".into())),
            panicked: tail.1,
            serial_tail: tail.0,
        }
    }
}

/// The serial tail, formatted for stderr.
pub fn format_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return "(no serial output)".to_string();
    }
    let mut s = String::from("last serial output:");
    for l in lines {
        s.push_str("\n  | ");
        s.push_str(l);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigInput;
    use crate::kernel::tests::{tiny_elf, write_tmp};

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

    #[test]
    fn outcome_codes() {
        let o = |exit, panicked| Outcome {
            exit,
            panicked,
            serial_tail: vec![],
        };
        assert_eq!(o(VmExit::Reset, false).exit_code(), 0);
        assert_eq!(o(VmExit::PowerOff, false).exit_code(), 0);
        assert_eq!(o(VmExit::StartupOnly, false).exit_code(), 0);
        assert!(o(VmExit::StartupOnly, false).is_clean());
        assert_eq!(o(VmExit::Reset, true).exit_code(), 1);
        assert_eq!(o(VmExit::Reset, true).describe(), "guest kernel panicked");
        assert_eq!(o(VmExit::TripleFault { cpu: 1 }, false).exit_code(), 1);
        assert_eq!(
            o(VmExit::TripleFault { cpu: 1 }, false).describe(),
            "vCPU 1: triple fault (KVM_EXIT_SHUTDOWN)"
        );
        assert_eq!(o(VmExit::Signal(15), false).exit_code(), 143);
        assert_eq!(
            o(VmExit::Signal(15), false).describe(),
            "stopped by SIGTERM"
        );
        assert_eq!(o(VmExit::Signal(2), false).exit_code(), 130);
        assert_eq!(o(VmExit::Fatal("x".into()), false).exit_code(), 1);
    }

    #[test]
    fn tail_format() {
        assert_eq!(format_tail(&[]), "(no serial output)");
        assert_eq!(
            format_tail(&["a".into(), "b".into()]),
            "last serial output:\n  | a\n  | b"
        );
    }
}
