//! `Stats`: a container's cgroup v2 counters (cpu.stat, memory.*, pids.*,
//! io.stat). A missing or odd file reads as zero (or "no limit").

use husk_protocol::container::{ContainerStats, CpuStats, IoDeviceStats, MemoryStats, PidsStats};

use crate::container::cgroup::{parse_keyed, Cgroup};

/// The counters of `cg` now.
pub fn read(cg: &Cgroup) -> ContainerStats {
    let num = |f: &str| cg.read(f).ok().and_then(|s| s.trim().parse::<u64>().ok());
    ContainerStats {
        cpu: cpu_stats(&cg.read("cpu.stat").unwrap_or_default()),
        memory: MemoryStats {
            current: num("memory.current").unwrap_or(0),
            max: num("memory.max"),
            swap_current: num("memory.swap.current").unwrap_or(0),
            ..memory_stats(
                &cg.read("memory.stat").unwrap_or_default(),
                &cg.read("memory.events").unwrap_or_default(),
            )
        },
        pids: PidsStats {
            current: num("pids.current").unwrap_or(0),
            max: num("pids.max"),
        },
        io: io_stats(&cg.read("io.stat").unwrap_or_default()),
    }
}

fn keyed(s: &str, key: &str) -> u64 {
    parse_keyed(s, key).unwrap_or(0)
}

/// The counters of a `cpu.stat` text.
pub fn cpu_stats(cpu: &str) -> CpuStats {
    CpuStats {
        usage_usec: keyed(cpu, "usage_usec"),
        user_usec: keyed(cpu, "user_usec"),
        system_usec: keyed(cpu, "system_usec"),
        nr_periods: keyed(cpu, "nr_periods"),
        nr_throttled: keyed(cpu, "nr_throttled"),
        throttled_usec: keyed(cpu, "throttled_usec"),
    }
}

/// The counters of `memory.stat` and `memory.events` texts (the single-value
/// files are left at zero).
pub fn memory_stats(stat: &str, events: &str) -> MemoryStats {
    MemoryStats {
        current: 0,
        max: None,
        swap_current: 0,
        anon: keyed(stat, "anon"),
        file: keyed(stat, "file"),
        oom: keyed(events, "oom"),
        oom_kill: keyed(events, "oom_kill"),
    }
}

/// The devices of an `io.stat` text (`MAJ:MIN rbytes=N wbytes=N ...`
/// lines); a line that does not parse is skipped.
pub fn io_stats(s: &str) -> Vec<IoDeviceStats> {
    s.lines().filter_map(io_device).collect()
}

fn io_device(l: &str) -> Option<IoDeviceStats> {
    let mut it = l.split_whitespace();
    let (maj, min) = it.next()?.split_once(':')?;
    let mut d = IoDeviceStats {
        major: maj.parse().ok()?,
        minor: min.parse().ok()?,
        ..Default::default()
    };
    for kv in it {
        let (k, v) = kv.split_once('=')?;
        let v = v.parse().unwrap_or(0);
        match k {
            "rbytes" => d.rbytes = v,
            "wbytes" => d.wbytes = v,
            "rios" => d.rios = v,
            "wios" => d.wios = v,
            _ => {}
        }
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::oom::tests::fake_cgroup;

    #[test]
    fn io_stat_lines() {
        let s = "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
                 8:16 rbytes=x wbytes=5\n\
                 garbage\n\
                 1:2 rbytes\n";
        let d = io_stats(s);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(
            (
                d[0].major,
                d[0].minor,
                d[0].rbytes,
                d[0].wbytes,
                d[0].rios,
                d[0].wios
            ),
            (254, 0, 4096, 8192, 1, 2)
        );
        assert_eq!(
            (d[1].major, d[1].minor, d[1].rbytes, d[1].wbytes),
            (8, 16, 0, 5)
        );
    }

    #[test]
    fn cpu_and_memory_texts() {
        let c = cpu_stats("usage_usec 10\nuser_usec 7\nsystem_usec 3\nnr_periods 4\nnr_throttled 1\nthrottled_usec 9\n");
        assert_eq!(
            (
                c.usage_usec,
                c.user_usec,
                c.system_usec,
                c.nr_periods,
                c.nr_throttled,
                c.throttled_usec
            ),
            (10, 7, 3, 4, 1, 9)
        );
        let m = memory_stats(
            "anon 100\nfile 200\nkernel 5\n",
            "low 0\noom 2\noom_kill 1\n",
        );
        assert_eq!((m.anon, m.file, m.oom, m.oom_kill), (100, 200, 2, 1));
        assert_eq!(cpu_stats(""), CpuStats::default());
    }

    #[test]
    fn a_cgroup_directory() {
        let cg = fake_cgroup("stats");
        for (f, v) in [
            ("cpu.stat", "usage_usec 42\n"),
            ("memory.current", "1024\n"),
            ("memory.max", "max\n"),
            ("memory.events", "oom_kill 3\n"),
            ("pids.current", "2\n"),
            ("pids.max", "10\n"),
            ("io.stat", "7:0 rbytes=1\n"),
        ] {
            std::fs::write(cg.dir.join(f), v).unwrap();
        }
        let s = read(&cg);
        assert_eq!(s.cpu.usage_usec, 42);
        assert_eq!(
            (s.memory.current, s.memory.max, s.memory.oom_kill),
            (1024, None, 3)
        );
        assert_eq!(
            (s.memory.swap_current, s.memory.anon),
            (0, 0),
            "missing files"
        );
        assert_eq!((s.pids.current, s.pids.max), (2, Some(10)));
        assert_eq!(s.io.len(), 1);
        std::fs::remove_dir_all(&cg.dir).unwrap();
    }
}
