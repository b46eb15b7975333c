//! Confinement, as Firecracker does it: once a thread's setup is done (files
//! opened and loaded, the KVM VM and vCPUs created, sockets connected) and
//! before it touches anything the guest controls, it
//!
//! 1. sets `PR_SET_NO_NEW_PRIVS` and drops every capability (bounding set,
//!    ambient, then effective, permitted and inheritable), and
//! 2. installs its own seccomp-BPF allowlist ([`allowlist`]): the vCPU
//!    threads, the main thread (the event loop), the virtio-fs worker and the
//!    smoke client each get one. A syscall outside it traps; the `SIGSYS`
//!    handler writes `husk-vmm: seccomp: thread <name> made syscall <nr>
//!    outside its allowlist` to stderr (the container's `vmm.log`) and ends
//!    the whole process with [`VIOLATION_EXIT`].
//!
//! Capabilities and `NO_NEW_PRIVS` are per thread: the main thread drops them
//! before it starts the vCPU threads, which inherit that; a thread started
//! earlier (the virtio-fs worker) drops its own. Filters are per thread too,
//! and stack: the main thread installs its own last ([`crate::vm::Vm::run`]),
//! after every other thread has started, so none inherits it.
//!
//! Before both, the process jails itself ([`jail`]): its own mount
//! namespace (entered at start-up), whose root becomes an empty tmpfs
//! holding only the vsock socket's directory at the end of setup
//! ([`jail_process`]), rlimits, and, given `--jail-uid`, an unprivileged uid
//! and gid that each thread switches to as it drops its privileges.
//!
//! [`Mode`]: `--no-seccomp` or `HUSK_VMM_SECCOMP=off` skips the filters (the
//! privileges are still dropped); `HUSK_VMM_SECCOMP=log` installs them with
//! `SECCOMP_RET_LOG` as the default action (the kernel logs each syscall a
//! filter would have refused, as an audit record, and lets it run), to find
//! what a new code path needs. The default, outside `husk-vmm run` and
//! `smoke` (unit tests, library use), is off.

pub mod allowlist;
pub mod jail;
pub mod paths;
mod privileges;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Once;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

pub use allowlist::ThreadKind;
pub use privileges::drop_privileges;

/// husk-vmm's exit status after a seccomp violation: 128 + `SIGSYS`, as if
/// the signal had killed it (without a core dump of guest memory).
pub const VIOLATION_EXIT: i32 = 128 + libc::SIGSYS;

/// Whether the filters are installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Installed; a syscall outside a thread's allowlist ends husk-vmm.
    Enforce,
    /// Installed with `SECCOMP_RET_LOG`: refused syscalls are logged by the
    /// kernel and allowed (debugging only).
    Log,
    /// Not installed (debugging only).
    Off,
}

impl Mode {
    /// The mode for `--no-seccomp` (`no_seccomp`) and `HUSK_VMM_SECCOMP`
    /// (`env`: `off`, `log`, or `on`, the default).
    pub fn from_flag_and_env(no_seccomp: bool, env: Option<&str>) -> Result<Mode, ConfineError> {
        if no_seccomp {
            return Ok(Mode::Off);
        }
        match env.map(str::trim) {
            None | Some("" | "on" | "1") => Ok(Mode::Enforce),
            Some("off" | "0") => Ok(Mode::Off),
            Some("log") => Ok(Mode::Log),
            Some(other) => Err(ConfineError::BadMode(other.to_string())),
        }
    }

    fn code(self) -> u8 {
        match self {
            Mode::Off => 0,
            Mode::Enforce => 1,
            Mode::Log => 2,
        }
    }
}

/// Why a thread could not be confined. husk-vmm does not run a guest
/// unconfined: each of these ends the VM.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("HUSK_VMM_SECCOMP={0}: expected on, off or log")]
    BadMode(String),
    #[error("seccomp filter for the {kind} thread: {source}")]
    Filter {
        kind: &'static str,
        source: seccompiler::BackendError,
    },
    #[error("installing the seccomp filter of thread {thread}: {source}")]
    Install {
        thread: String,
        source: seccompiler::Error,
    },
    #[error("SIGSYS handler: {0}")]
    Handler(std::io::Error),
    #[error("jail: {step}: {source}")]
    Jail {
        step: String,
        source: std::io::Error,
    },
    #[error("dropping privileges ({step}): {source}")]
    Privileges {
        step: &'static str,
        source: std::io::Error,
    },
}

static MODE: AtomicU8 = AtomicU8::new(0);
/// Whether husk-vmm confines itself at all: set with the mode by `run` and
/// `smoke`; unset (library use, unit tests), nothing is dropped.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Sets the process's mode and turns confinement on; `husk-vmm run` and
/// `smoke` call it once, first.
pub fn set_mode(m: Mode) {
    MODE.store(m.code(), Ordering::SeqCst);
    ACTIVE.store(true, Ordering::SeqCst);
}

/// The process's mode.
pub fn mode() -> Mode {
    match MODE.load(Ordering::SeqCst) {
        1 => Mode::Enforce,
        2 => Mode::Log,
        _ => Mode::Off,
    }
}

fn active() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

/// The main thread's step before it starts the vCPU threads: they inherit
/// `NO_NEW_PRIVS` and the empty capability sets. A no-op unless
/// [`set_mode`] was called.
pub fn drop_process_privileges() -> Result<(), ConfineError> {
    if active() {
        drop_privileges()?;
    }
    Ok(())
}

/// What the main thread's jail keeps and allows (see [`jail`]).
#[derive(Debug)]
pub struct JailPlan {
    /// Directories still reached by path (the vsock socket's).
    pub keep: Vec<std::path::PathBuf>,
    pub limits: jail::Limits,
}

/// The main thread's jail, after setup and before it starts the vCPU
/// threads: the host's root replaced by `plan`'s directories, the limits
/// set. A no-op unless [`set_mode`] was called and [`jail::enter`] ran
/// (the uid switch is part of each thread's [`drop_privileges`]).
pub fn jail_process(
    plan: impl FnOnce() -> Result<JailPlan, ConfineError>,
) -> Result<(), ConfineError> {
    if !active() || !jail::entered() {
        return Ok(());
    }
    let plan = plan()?;
    jail::isolate_filesystem(&plan.keep)?;
    plan.limits.apply()?;
    jail::set_not_dumpable()
}

/// The BPF program of `kind`'s allowlist for this process (`pid`: the
/// thread group `tgkill` may signal; the paths registered with
/// [`paths::register`] so far), with `mismatch` as the action for any
/// other syscall.
pub fn compile(
    kind: ThreadKind,
    pid: u32,
    mismatch: SeccompAction,
) -> Result<BpfProgram, ConfineError> {
    let err = |source| ConfineError::Filter {
        kind: kind.name(),
        source,
    };
    let filter = SeccompFilter::new(
        allowlist::rules(kind, pid, &paths::addresses()).map_err(err)?,
        mismatch,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(err)?;
    filter.try_into().map_err(err)
}

/// Confines the calling thread as `kind` (privileges dropped, then its
/// filter, unless the mode is [`Mode::Off`]); `name` is the thread's name
/// in the violation message. A no-op unless [`set_mode`] was called.
pub fn confine_thread(kind: ThreadKind, name: &str) -> Result<(), ConfineError> {
    if !active() {
        return Ok(());
    }
    drop_privileges()?;
    let action = match mode() {
        Mode::Off => return Ok(()),
        Mode::Enforce => SeccompAction::Trap,
        Mode::Log => SeccompAction::Log,
    };
    let prog = compile(kind, std::process::id(), action)?;
    install_sigsys_handler()?;
    set_thread_name(name);
    seccompiler::apply_filter(&prog).map_err(|source| ConfineError::Install {
        thread: name.to_string(),
        source,
    })
}

/// Longest thread name the violation message shows.
const NAME_MAX: usize = 24;

thread_local! {
    /// This thread's name for the SIGSYS handler: a plain, constant-
    /// initialised TLS slot, so reading it there needs no allocation, lock
    /// or syscall.
    static THREAD_NAME: Cell<([u8; NAME_MAX], usize)> = const { Cell::new(([0; NAME_MAX], 0)) };
}

fn set_thread_name(name: &str) {
    let mut buf = [0u8; NAME_MAX];
    let n = name.len().min(NAME_MAX);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    THREAD_NAME.with(|c| c.set((buf, n)));
}

/// Installs the process-wide SIGSYS handler, once.
fn install_sigsys_handler() -> Result<(), ConfineError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        // SAFETY: an all-zero sigaction is a valid value to fill in.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = sigsys_handler as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_SIGINFO;
        // SAFETY: `sa.sa_mask` is a valid sigset_t owned by us.
        unsafe { libc::sigemptyset(&mut sa.sa_mask) };
        // SAFETY: `sa` is a valid sigaction whose handler only makes
        // async-signal-safe calls; the old action is not wanted.
        if unsafe { libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) } != 0 {
            result = Err(ConfineError::Handler(std::io::Error::last_os_error()));
        }
    });
    result
}

/// Index (in `c_int`s) of `si_syscall` in a `SIGSYS` siginfo on x86_64:
/// signo, errno, code, padding, then the 8-byte `_call_addr`.
const SI_SYSCALL_INT_OFFSET: usize = 6;
/// `si_code` of a SIGSYS raised by a seccomp filter.
const SYS_SECCOMP: i32 = 1;

/// Writes the violation line and ends the process. Only async-signal-safe
/// calls, and only `write` and `exit_group`, which every allowlist has.
extern "C" fn sigsys_handler(
    _sig: libc::c_int,
    info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    let mut nr: i64 = -1;
    // SAFETY: the kernel passes a valid siginfo to a SA_SIGINFO handler.
    if !info.is_null() && unsafe { (*info).si_code } == SYS_SECCOMP {
        // SAFETY: a seccomp SIGSYS siginfo's `_sigsys` member holds the
        // syscall number at this offset (see `SI_SYSCALL_INT_OFFSET`),
        // within the 128-byte siginfo.
        let at = unsafe { info.cast::<libc::c_int>().add(SI_SYSCALL_INT_OFFSET) };
        // SAFETY: `at` points into the siginfo (above), aligned for c_int.
        nr = i64::from(unsafe { at.read() });
    }
    let (name, len) = THREAD_NAME
        .try_with(Cell::get)
        .unwrap_or(([0; NAME_MAX], 0));
    let mut line = Line::default();
    line.push(b"husk-vmm: seccomp: thread ");
    line.push(if len == 0 { b"?" } else { &name[..len] });
    line.push(b" made syscall ");
    line.push_int(nr);
    line.push(b" outside its allowlist\n");
    let bytes = line.bytes();
    // SAFETY: `bytes` is valid for reads of its length; write(2) is
    // async-signal-safe.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
    // SAFETY: _exit(2) is async-signal-safe and ends the whole process.
    unsafe { libc::_exit(VIOLATION_EXIT) }
}

/// A fixed buffer for the violation line (no allocation in the handler).
struct Line {
    buf: [u8; 128],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; 128],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_int(&mut self, v: i64) {
        if v < 0 {
            self.push(b"-");
        }
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut u = v.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + u8::try_from(u % 10).unwrap_or(0);
            u /= 10;
            if u == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests;
