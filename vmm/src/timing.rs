//! Opt-in start-up timing (`HUSK_VMM_TIMING=1`): one stderr line per phase,
//! with the wall time since the start of `main` and the process's CPU time
//! (all threads, counted by the kernel from the process's creation, so it
//! includes exec and the loader):
//!
//! ```text
//! husk-vmm: timing:   12.345 ms  cpu    6.789 ms  first KVM_RUN
//! ```
//!
//! `first KVM_RUN` is marked by the first vCPU thread to enter the guest;
//! the CPU time there is the VMM's start-up cost (goal: at most 8 ms).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Option<Instant>> = OnceLock::new();
static FIRST_RUN: AtomicBool = AtomicBool::new(false);

/// Enables the marks if `HUSK_VMM_TIMING` is set; `t0` is the start of main.
pub fn init(t0: Instant) {
    let _ = START.set(std::env::var_os("HUSK_VMM_TIMING").map(|_| t0));
}

fn enabled() -> Option<Instant> {
    START.get().copied().flatten()
}

/// CPU time of the whole process (every thread) so far, in milliseconds.
pub fn process_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// Prints how long after start `what` happened, if enabled.
pub fn mark(what: &str) {
    if let Some(t0) = enabled() {
        eprintln!(
            "husk-vmm: timing: {:8.3} ms  cpu {:8.3} ms  {what}",
            t0.elapsed().as_secs_f64() * 1e3,
            process_cpu_ms()
        );
    }
}

/// Called by every vCPU thread just before its first KVM_RUN; marks
/// `first KVM_RUN` once per process.
pub fn first_kvm_run() {
    if enabled().is_some() && !FIRST_RUN.swap(true, Ordering::Relaxed) {
        mark("first KVM_RUN");
    }
}

/// Marks `what` the first time it happens in this process (`flag` is the
/// event's own static), if enabled: guest milestones seen from the VMM, such
/// as the first console byte or the guest's vsock driver coming up.
pub fn mark_once(flag: &AtomicBool, what: &str) {
    if enabled().is_some() && !flag.swap(true, Ordering::Relaxed) {
        mark(what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_time_advances() {
        let a = process_cpu_ms();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = process_cpu_ms();
        assert!(a.is_finite() && b >= a, "{a} -> {b}");
    }
}
