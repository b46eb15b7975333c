//! Opt-in start-up timing (`HUSK_VMM_TIMING=1`): one stderr line per phase,
//! in milliseconds since the start of `main`.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Option<Instant>> = OnceLock::new();

/// Enables the marks if `HUSK_VMM_TIMING` is set; `t0` is the start of main.
pub fn init(t0: Instant) {
    let _ = START.set(std::env::var_os("HUSK_VMM_TIMING").map(|_| t0));
}

/// Prints how long after start `what` happened, if enabled.
pub fn mark(what: &str) {
    if let Some(Some(t0)) = START.get() {
        eprintln!(
            "husk-vmm: timing: {:8.3} ms {what}",
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
}
