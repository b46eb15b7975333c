//! husk-vmm's `log` backend: one `husk-vmm: LEVEL: message` line per record
//! on stderr (the container's `vmm.log` under the monitor).
//!
//! Warnings and errors only, unless `HUSK_VMM_LOG=debug` (or `info`,
//! `trace`). Many of them can be caused by the guest (a driver that
//! activates broken queues over and over, requests the host cannot serve),
//! and the guest is hostile: at most [`BURST`] lines per [`WINDOW`] are
//! written, the rest are counted and reported as one line when the next
//! window opens, so no guest can fill the host's disk through the log.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Lines written per window at most.
pub const BURST: u32 = 50;
/// Length of a rate-limiting window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Counts lines per window: whether a line may be written, and how many
/// were dropped in the window that just closed.
#[derive(Debug)]
pub struct Limiter {
    start: Instant,
    written: u32,
    dropped: u64,
}

impl Limiter {
    pub fn new(now: Instant) -> Limiter {
        Limiter {
            start: now,
            written: 0,
            dropped: 0,
        }
    }

    /// `(write this line?, lines dropped in the window that just ended)`.
    pub fn admit(&mut self, now: Instant) -> (bool, u64) {
        let mut dropped_before = 0;
        if now.duration_since(self.start) >= WINDOW {
            dropped_before = std::mem::take(&mut self.dropped);
            self.start = now;
            self.written = 0;
        }
        if self.written < BURST {
            self.written += 1;
            (true, dropped_before)
        } else {
            self.dropped += 1;
            (false, dropped_before)
        }
    }
}

struct Logger {
    level: LevelFilter,
    limiter: Mutex<Limiter>,
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let (write, dropped) = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(Instant::now());
        let mut text = String::new();
        if dropped > 0 {
            text.push_str(&format!(
                "husk-vmm: warning: {dropped} log lines suppressed (more than {BURST} in {} s)\n",
                WINDOW.as_secs()
            ));
        }
        if write {
            let level = match r.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "info",
                Level::Debug => "debug",
                Level::Trace => "trace",
            };
            text.push_str(&format!("husk-vmm: {level}: {}\n", r.args()));
        }
        if !text.is_empty() {
            // One write per record: lines from threads do not interleave.
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// The level `HUSK_VMM_LOG` asks for (warnings and errors by default).
pub fn level_from(v: Option<&str>) -> LevelFilter {
    match v.map(str::to_ascii_lowercase).as_deref() {
        Some("trace") => LevelFilter::Trace,
        Some("debug") => LevelFilter::Debug,
        Some("info") => LevelFilter::Info,
        Some("error") => LevelFilter::Error,
        Some("off") => LevelFilter::Off,
        _ => LevelFilter::Warn,
    }
}

/// Installs the logger (once; later calls do nothing).
pub fn init() {
    let level = level_from(std::env::var("HUSK_VMM_LOG").ok().as_deref());
    static LOGGER: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();
    let logger = LOGGER.get_or_init(|| Logger {
        level,
        limiter: Mutex::new(Limiter::new(Instant::now())),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(logger.level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_a_burst_per_window_and_counted() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        let written = (0..1000).filter(|_| l.admit(t0).0).count();
        assert_eq!(written, BURST as usize);
        // The next window opens: its first line is written, and the 950
        // lines dropped in the last one are reported with it.
        assert_eq!(l.admit(t0 + WINDOW), (true, 1000 - BURST as u64));
        // ... once.
        assert_eq!(l.admit(t0 + WINDOW), (true, 0));
    }

    #[test]
    fn quiet_windows_report_nothing() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        assert_eq!(l.admit(t0), (true, 0));
        assert_eq!(l.admit(t0 + WINDOW * 3), (true, 0));
    }

    #[test]
    fn level_defaults_to_warnings() {
        assert_eq!(level_from(None), LevelFilter::Warn);
        assert_eq!(level_from(Some("bogus")), LevelFilter::Warn);
        assert_eq!(level_from(Some("DEBUG")), LevelFilter::Debug);
        assert_eq!(level_from(Some("off")), LevelFilter::Off);
    }
}
