//! vCPUs: creation and configuration (CPUID, MSRs, LAPIC, the boot vCPU's
//! PVH entry registers), and their threads: the KVM_RUN loop, dispatching
//! PIO/MMIO exits to the buses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::vm::KvmVm;
use crate::arch::{cpuid, regs};
use crate::bus::{lock, Bus};
use crate::confine::ThreadKind;

/// vCPU threads need little stack: KVM_RUN and register-level device
/// emulation only (queue processing happens on the main thread).
pub const VCPU_STACK_SIZE: usize = 256 << 10;

/// Why the VM stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The guest pulsed the reset line (reboot, or a panic with panic=-1).
    Reset,
    /// The guest powered off or halted its boot CPU.
    PowerOff,
    /// KVM_EXIT_SHUTDOWN: a triple fault.
    TripleFault { cpu: u8 },
    /// Any other fatal vCPU condition.
    Fatal(String),
    /// SIGTERM / SIGINT.
    Signal(i32),
    /// A bounded wait ran out.
    Timeout(String),
    /// `--startup-only`: everything was set up and the boot vCPU stopped
    /// right before its first KVM_RUN.
    StartupOnly,
}

/// First-wins record of why the VM stops, plus an eventfd that wakes the
/// main thread.
pub struct ExitState {
    reason: Mutex<Option<VmExit>>,
    stopping: AtomicBool,
    evt: EventFd,
}

impl ExitState {
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitState {
            reason: Mutex::new(None),
            stopping: AtomicBool::new(false),
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// Records `why` unless a reason was recorded before, and wakes the main
    /// thread.
    pub fn request(&self, why: VmExit) {
        let mut r = lock(&self.reason);
        if r.is_none() {
            *r = Some(why);
        }
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.evt.write(1);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn reason(&self) -> Option<VmExit> {
        lock(&self.reason).clone()
    }

    pub fn evt(&self) -> &EventFd {
        &self.evt
    }
}

pub struct Vcpu {
    pub fd: VcpuFd,
    pub id: u8,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub exit: Arc<ExitState>,
    /// Stop before the first KVM_RUN instead of entering the guest.
    pub startup_only: bool,
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The signal that kicks vCPU threads out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// Installs the (empty) kick handler; without SA_RESTART, the signal makes
/// KVM_RUN return EINTR.
pub fn install_kick_handler() -> std::io::Result<()> {
    register_signal_handler(kick_signal(), kick_handler)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

/// Creating or configuring one vCPU failed.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("KVM_CREATE_VCPU: {0}")]
    Create(kvm_ioctls::Error),
    #[error("{0} CPUID entries are too many")]
    CpuidTooLong(usize),
    #[error("KVM_SET_CPUID2: {0}")]
    SetCpuid(kvm_ioctls::Error),
    #[error(transparent)]
    Regs(#[from] regs::Error),
    #[error("starting its thread: {0}")]
    Spawn(std::io::Error),
}

/// What every vCPU of a VM is created from.
pub struct VcpuSetup<'a> {
    /// Number of vCPUs in the VM.
    pub count: u8,
    /// KVM_GET_SUPPORTED_CPUID, adjusted per vCPU.
    pub supported_cpuid: &'a CpuId,
    /// KVM emulates the LAPIC TSC-deadline timer.
    pub tsc_deadline: bool,
    /// The kernel's 32-bit PVH entry point, for the boot vCPU.
    pub boot_entry: u64,
    pub pio: &'a Arc<Bus>,
    pub mmio: &'a Arc<Bus>,
    pub exit: &'a Arc<ExitState>,
    /// Stop before the first KVM_RUN instead of entering the guest.
    pub startup_only: bool,
}

impl Vcpu {
    /// Creates vCPU `id` and sets its CPUID, MSRs and LAPIC; vCPU 0 also
    /// gets the PVH entry registers. Does not run it.
    pub fn create(vm: &KvmVm, id: u8, setup: &VcpuSetup) -> Result<Vcpu, VcpuError> {
        let fd = vm
            .fd()
            .create_vcpu(u64::from(id))
            .map_err(VcpuError::Create)?;
        let mut entries = setup.supported_cpuid.as_slice().to_vec();
        cpuid::adjust(&mut entries, id, setup.count, setup.tsc_deadline);
        let c =
            CpuId::from_entries(&entries).map_err(|_| VcpuError::CpuidTooLong(entries.len()))?;
        fd.set_cpuid2(&c).map_err(VcpuError::SetCpuid)?;
        regs::setup_msrs(&fd)?;
        regs::setup_lapic(&fd)?;
        if id == 0 {
            regs::setup_boot_vcpu(&fd, setup.boot_entry)?;
        }
        Ok(Vcpu {
            fd,
            id,
            pio: setup.pio.clone(),
            mmio: setup.mmio.clone(),
            exit: setup.exit.clone(),
            startup_only: setup.startup_only,
        })
    }

    /// Runs the guest until the VM stops. Every outcome is reported through
    /// `self.exit`.
    pub fn run(mut self) {
        let id = self.id;
        crate::timing::first_kvm_run();
        if self.startup_only {
            self.exit.request(VmExit::StartupOnly);
            return;
        }
        while !self.exit.stopping() {
            let why = match self.fd.run() {
                Ok(exit) => match exit {
                    VcpuExit::IoIn(port, data) => {
                        // Nothing on the port: the ISA bus floats high.
                        if !self.pio.read(port as u64, data) {
                            data.fill(0xff);
                        }
                        None
                    }
                    VcpuExit::IoOut(port, data) => {
                        self.pio.write(port as u64, data);
                        None
                    }
                    VcpuExit::MmioRead(addr, data) => {
                        if !self.mmio.read(addr, data) {
                            data.fill(0);
                        }
                        None
                    }
                    VcpuExit::MmioWrite(addr, data) => {
                        self.mmio.write(addr, data);
                        None
                    }
                    // With the in-kernel LAPIC, HLT only exits when the guest
                    // halts for good.
                    VcpuExit::Hlt => Some(VmExit::PowerOff),
                    VcpuExit::Shutdown => {
                        // Where the guest died is the one clue a triple
                        // fault leaves (often before any console output).
                        eprintln!("husk-vmm: vCPU {id}: triple fault; {}", self.state_summary());
                        Some(VmExit::TripleFault { cpu: id })
                    }
                    VcpuExit::SystemEvent(kind, _) => Some(match kind {
                        kvm_bindings::KVM_SYSTEM_EVENT_RESET => VmExit::Reset,
                        kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => VmExit::PowerOff,
                        k => VmExit::Fatal(format!("vCPU {id}: KVM system event {k}")),
                    }),
                    VcpuExit::FailEntry(reason, cpu) => Some(VmExit::Fatal(format!(
                        "vCPU {id}: KVM_EXIT_FAIL_ENTRY (hardware entry failure reason {reason:#x} on host CPU {cpu})"
                    ))),
                    VcpuExit::InternalError => {
                        let sub = self.internal_error_suberror();
                        Some(VmExit::Fatal(format!(
                            "vCPU {id}: KVM_EXIT_INTERNAL_ERROR (suberror {sub})"
                        )))
                    }
                    VcpuExit::Intr | VcpuExit::IrqWindowOpen => None,
                    other => Some(VmExit::Fatal(format!("vCPU {id}: unexpected KVM exit {other:?}"))),
                },
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    None
                }
                Err(e) => Some(VmExit::Fatal(format!("vCPU {id}: KVM_RUN failed: {e}"))),
            };
            if let Some(why) = why {
                self.exit.request(why);
            }
        }
    }

    /// The registers that say where a guest was and in which mode, in one
    /// line: `rip=.. rsp=.. cr0=.. cr2=.. cr3=.. cr4=.. efer=.. cs=..`.
    fn state_summary(&self) -> String {
        let regs = self.fd.get_regs();
        let sregs = self.fd.get_sregs();
        match (regs, sregs) {
            (Ok(r), Ok(s)) => summarize(&r, &s),
            (Err(e), _) | (_, Err(e)) => format!("registers unavailable: {e}"),
        }
    }

    fn internal_error_suberror(&mut self) -> u32 {
        let run = self.fd.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so KVM filled
        // the `internal` member of the exit union.
        unsafe { run.__bindgen_anon_1.internal.suberror }
    }

    /// Starts the vCPU on its own thread.
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("vcpu{}", self.id))
            .stack_size(VCPU_STACK_SIZE)
            .spawn(move || {
                let id = self.id;
                let exit = self.exit.clone();
                // Before the first KVM_RUN: from here on the guest runs.
                let name = format!("vcpu{id}");
                if let Err(e) = crate::confine::confine_thread(ThreadKind::Vcpu, &name) {
                    exit.request(VmExit::Fatal(format!("vCPU {id}: {e}")));
                    return;
                }
                // A bug in device emulation must end the VM, not leave it
                // running without this vCPU.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run())).is_err() {
                    exit.request(VmExit::Fatal(format!("vCPU {id}: thread panicked")));
                }
            })
    }
}

/// Kicks `threads` out of KVM_RUN until they have all returned, for at most
/// `budget`. Returns the threads that did not stop.
pub fn stop_all(threads: Vec<JoinHandle<()>>, budget: std::time::Duration) -> Vec<JoinHandle<()>> {
    let deadline = std::time::Instant::now() + budget;
    let mut running = threads;
    loop {
        let (done, rest): (Vec<_>, Vec<_>) = running.into_iter().partition(|t| t.is_finished());
        for t in done {
            let _ = t.join();
        }
        running = rest;
        if running.is_empty() || std::time::Instant::now() >= deadline {
            return running;
        }
        for t in &running {
            // Repeated kicks cover a signal landing just before KVM_RUN.
            let _ = t.kill(kick_signal());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The registers after a triple fault, for the error message. On AMD,
/// KVM re-INITs a vCPU that hit a shutdown before it returns to userspace
/// (the VMCB is undefined after one), so what is left is the reset state
/// (CS:IP f000:fff0, real mode) and where the guest died is lost: the
/// message says so rather than pointing at the reset vector.
fn summarize(r: &kvm_bindings::kvm_regs, s: &kvm_bindings::kvm_sregs) -> String {
    let regs = format!(
        "rip={:#x} rsp={:#x} rflags={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x}",
        r.rip, r.rsp, r.rflags, s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector
    );
    if r.rip == 0xfff0 && s.cs.selector == 0xf000 && s.cr0 & 1 == 0 && s.cr3 == 0 {
        format!(
            "registers already reset by KVM (on AMD it re-initialises a vCPU after a \
             shutdown), so where the guest died is not known: {regs}"
        )
    } else {
        regs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_exit_reason_wins() {
        let s = ExitState::new().unwrap();
        assert!(!s.stopping());
        s.request(VmExit::Reset);
        s.request(VmExit::TripleFault { cpu: 0 });
        assert!(s.stopping());
        assert_eq!(s.reason(), Some(VmExit::Reset));
        assert!(s.evt().read().unwrap() >= 1);
    }

    #[test]
    fn kicks_interrupt_blocking_threads() {
        install_kick_handler().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        // A thread blocked in a syscall (like KVM_RUN) until a signal arrives.
        let t = std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                // SAFETY: pause() has no memory-safety preconditions.
                unsafe { libc::pause() };
            }
        });
        stop.store(true, Ordering::SeqCst);
        let left = stop_all(vec![t], std::time::Duration::from_secs(5));
        assert!(left.is_empty());
    }

    #[test]
    fn triple_fault_message_says_when_kvm_already_reset_the_vcpu() {
        let mut r = kvm_bindings::kvm_regs {
            rip: 0xfff0,
            rflags: 2,
            ..Default::default()
        };
        let mut s = kvm_bindings::kvm_sregs {
            cr0: 0x10,
            ..Default::default()
        };
        s.cs.selector = 0xf000;
        let m = summarize(&r, &s);
        assert!(m.starts_with("registers already reset by KVM"), "{m}");
        assert!(m.ends_with("cs=0xf000"), "{m}");
        // A long-mode guest that died in the kernel: the registers as they are.
        r.rip = 0xffff_ffff_8100_2995;
        s.cr0 = 0x8005_0033;
        s.cr3 = 0x1c0_9000;
        s.cs.selector = 0x10;
        let m = summarize(&r, &s);
        assert!(m.starts_with("rip=0xffffffff81002995 "), "{m}");
    }
}
