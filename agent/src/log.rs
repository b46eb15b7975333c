//! Console logging: one `write` per line on stderr (the console when PID 1),
//! prefixed `husk-agent:`. Every serial byte costs the guest a VM exit, so
//! the boot path prints at most one line unless `husk.debug` is set.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Writes one line; errors (no console) are ignored: logging must never
/// take the agent down.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    let line = format!("husk-agent: {args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Always printed: start-up line, errors.
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write_line(format_args!($($arg)*)) };
}

/// Printed only with `husk.debug` (PID 1) or `--debug`.
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::log::write_line(format_args!($($arg)*))
        }
    };
}

pub(crate) use {debug, info};

/// Debug timing of a multi-step operation: `mark` logs "WHAT: STEP at N ms"
/// (ms since `start`), only with debug logging on.
pub struct Phases {
    what: String,
    t0: std::time::Instant,
}

impl Phases {
    pub fn start(what: String) -> Phases {
        Phases {
            what,
            t0: std::time::Instant::now(),
        }
    }

    pub fn mark(&self, step: &str) {
        debug!(
            "{}: {step} at {:.1} ms",
            self.what,
            self.t0.elapsed().as_secs_f64() * 1e3
        );
    }
}
