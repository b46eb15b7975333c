//! A running VM: the main-thread event loop that waits for it to end
//! (exit requests, SIGTERM/SIGINT, device events), stopping it, and how it
//! ended. Building one is [`crate::builder`]'s job; the KVM state is in
//! [`crate::vstate`].

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::signal::create_sigset;

use crate::arch::ram;
use crate::builder;
pub use crate::builder::{prepare, PrepareError, Prepared, StartError};
use crate::bus::Bus;
use crate::confine::ThreadKind;
use crate::devices::serial::SerialDevice;
use crate::vstate::vcpu::{self, ExitState, VmExit};
use crate::vstate::vm::KvmVm;

pub(crate) type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

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
pub(crate) struct Control {
    exit: Arc<ExitState>,
    signals: OwnedFd,
}

impl Control {
    pub(crate) fn new(exit: Arc<ExitState>, signals: OwnedFd) -> Self {
        Control { exit, signals }
    }
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
            let buf = std::ptr::addr_of_mut!(info).cast::<libc::c_void>();
            // SAFETY: `buf` is a writable buffer of exactly `size` bytes and
            // the fd is our signalfd.
            let n = unsafe { libc::read(self.signals.as_raw_fd(), buf, size) };
            if usize::try_from(n) == Ok(size) {
                if let Ok(signo) = i32::try_from(info.ssi_signo) {
                    self.exit.request(VmExit::Signal(signo));
                }
            }
        }
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread (and so in every thread it
/// spawns afterwards) and returns a signalfd receiving them.
pub(crate) fn signal_fd() -> std::io::Result<OwnedFd> {
    let set = create_sigset(&[libc::SIGTERM, libc::SIGINT])
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    // SAFETY: `set` is a valid sigset_t; the call only changes this
    // thread's signal mask.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    // SAFETY: `set` is a valid sigset_t; the call creates a new fd.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A built VM whose vCPUs are running (made by [`crate::builder`]).
pub struct Vm {
    pub(crate) exit: Arc<ExitState>,
    pub(crate) em: EventManager<Subscriber>,
    pub(crate) serial: Arc<Mutex<SerialDevice>>,
    pub(crate) threads: Vec<JoinHandle<()>>,
    pub(crate) vsock_uds: Option<PathBuf>,
    // Dropped after the event manager, in this order.
    pub(crate) buses: (Arc<Bus>, Arc<Bus>),
    /// Guest RAM: registered with KVM, so it must outlive every vCPU run.
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) vm: KvmVm,
    /// The host mappings behind `mem`, unmapped by `finish` after it.
    pub(crate) ram: Vec<ram::Mapping>,
}

impl Vm {
    /// Creates the VM and starts its vCPUs (the steps are in
    /// [`crate::builder`]).
    pub fn start(p: Prepared) -> Result<Vm, StartError> {
        builder::build(p)
    }

    /// The shared exit state, to stop the VM from another thread.
    pub fn exit_state(&self) -> Arc<ExitState> {
        self.exit.clone()
    }

    /// Runs the event loop until the VM stops (or `deadline` passes), then
    /// stops the vCPUs and releases every device.
    pub fn run(mut self, deadline: Option<Instant>) -> Outcome {
        // Last of all threads (none inherits this filter), before the
        // event loop reads anything the guest wrote.
        if let Err(e) = crate::confine::confine_thread(ThreadKind::Main, "main") {
            self.exit.request(VmExit::Fatal(e.to_string()));
        }
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
                    i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1)
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
            buses,
            mem,
            vm: _vm,
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
        drop(buses);
        if let Some(p) = vsock_uds {
            let _ = crate::confine::paths::remove_file(&p);
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
