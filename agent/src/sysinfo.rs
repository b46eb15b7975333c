//! Facts about the guest for `Ping`: uptime, online CPUs, total memory.
//! Every file read is bounded and every parser returns `None` on odd input.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use husk_protocol::{PingInfo, PROTOCOL_VERSION};

/// Largest size read from a /proc or /sys file.
const MAX_READ: u64 = 64 * 1024;

/// Reads at most `MAX_READ` bytes of a text file.
pub fn read_bounded(path: &Path) -> std::io::Result<String> {
    let mut s = String::new();
    File::open(path)?.take(MAX_READ).read_to_string(&mut s)?;
    Ok(s)
}

pub fn ping_info() -> PingInfo {
    PingInfo {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        protocol_version: PROTOCOL_VERSION,
        uptime_ms: uptime_ms(),
        vcpus: vcpus(),
        mem_total_kib: mem_total_kib().unwrap_or(0),
    }
}

/// Time since boot (CLOCK_BOOTTIME, which also counts suspend), in ms.
pub fn uptime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

/// Online CPUs: /sys/devices/system/cpu/online, else the affinity mask, else 1.
pub fn vcpus() -> u32 {
    if let Some(n) = read_bounded(Path::new("/sys/devices/system/cpu/online"))
        .ok()
        .and_then(|s| parse_cpu_list(&s))
    {
        return n;
    }
    // SAFETY: cpu_set_t is plain data; all-zero is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 = this thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc == 0 {
        // SAFETY: `set` is an initialized cpu_set_t filled in by the kernel.
        let n = unsafe { libc::CPU_COUNT(&set) };
        if let Ok(n @ 1..) = u32::try_from(n) {
            return n;
        }
    }
    1
}

/// Counts the CPUs of a kernel CPU list such as `0-3,5\n`.
pub fn parse_cpu_list(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        if b < a {
            return None;
        }
        total += (b - a) as u64 + 1;
    }
    u32::try_from(total).ok()
}

pub fn mem_total_kib() -> Option<u64> {
    parse_meminfo_total(&read_bounded(Path::new("/proc/meminfo")).ok()?)
}

/// Extracts `MemTotal:  1234 kB` from /proc/meminfo text.
pub fn parse_meminfo_total(s: &str) -> Option<u64> {
    let rest = s.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let mut it = rest.split_whitespace();
    let n = it.next()?.parse::<u64>().ok()?;
    match it.next() {
        Some("kB") | None => Some(n),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0\n"), Some(1));
        assert_eq!(parse_cpu_list("0-3\n"), Some(4));
        assert_eq!(parse_cpu_list("0-3,5,7-8"), Some(7));
        for bad in ["", "\n", "x", "3-1", "0-", "-1", "0,,1", "0-4294967296"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
        assert_eq!(parse_cpu_list("0-4294967295"), None, "overflows u32");
    }

    #[test]
    fn meminfo() {
        let s = "MemFree:  10 kB\nMemTotal:       2012345 kB\nBuffers: 1 kB\n";
        assert_eq!(parse_meminfo_total(s), Some(2_012_345));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: lots kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: 5 MB\n"), None);
    }

    #[test]
    fn live_values_are_plausible() {
        let p = ping_info();
        assert!(p.vcpus >= 1);
        assert!(p.uptime_ms > 0);
        assert!(p.mem_total_kib > 1024, "{}", p.mem_total_kib);
        assert_eq!(p.agent_version, env!("CARGO_PKG_VERSION"));
    }
}
