//! Host memory of processes, from /proc: PSS split into guest RAM and the
//! rest, the system's MemAvailable, and the process list.

use std::path::Path;

use serde::Serialize;

/// One process's proportional set size, split into its guest RAM mapping(s)
/// and everything else.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ProcMem {
    pub pid: i32,
    pub comm: String,
    /// PSS of every mapping.
    pub pss_kib: u64,
    /// PSS of the mappings taken for guest RAM (see [`parse_smaps`]).
    pub guest_ram_pss_kib: u64,
}

impl ProcMem {
    /// PSS outside guest RAM: what the process costs the host on top of the
    /// guest memory it backs.
    pub fn host_pss_kib(&self) -> u64 {
        self.pss_kib.saturating_sub(self.guest_ram_pss_kib)
    }
}

/// Sums `Pss:` over the mappings of an smaps text: (all, guest RAM). A
/// mapping counts as guest RAM when it spans at least `guest_ram_min` bytes:
/// a VMM has no other mapping nearly as large as the guest's memory (its
/// thread stacks and heap are a few MiB), and the rule also finds the RAM
/// of QEMU and of helpers that map it shared (virtiofsd).
pub fn parse_smaps(text: &str, guest_ram_min: u64) -> (u64, u64) {
    let (mut all, mut guest) = (0u64, 0u64);
    let mut in_guest = false;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                in_guest = guest_ram_min > 0 && b.saturating_sub(a) >= guest_ram_min;
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("Pss:") {
            let kib: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
            all += kib;
            if in_guest {
                guest += kib;
            }
        }
    }
    (all, guest)
}

/// [`ProcMem`] of `pid`; mappings of at least `guest_ram_min` bytes are
/// guest RAM.
pub fn proc_mem(pid: i32, guest_ram_min: u64) -> Result<ProcMem, String> {
    let p = format!("/proc/{pid}/smaps");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{p}: {e}"))?;
    let (pss_kib, guest_ram_pss_kib) = parse_smaps(&text, guest_ram_min);
    Ok(ProcMem {
        pid,
        comm: comm(pid),
        pss_kib,
        guest_ram_pss_kib,
    })
}

/// The process's name (`/proc/PID/comm`), or "?".
/// A process id as the kernel's calls take it (`std` hands out `u32`).
pub fn pid(id: u32) -> i32 {
    #[allow(clippy::cast_possible_wrap)] // pids are below pid_max (at most 2^22)
    let pid = id as i32;
    pid
}

pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The parent of `pid`, from `/proc/PID/stat` (the field after the
/// parenthesised command name, which may itself hold spaces and parentheses).
pub fn ppid(pid: i32) -> Option<i32> {
    parse_ppid(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_ppid(stat: &str) -> Option<i32> {
    stat_field(stat, 4)?.parse().ok()
}

/// Field `n` (1-based, as in proc(5); `n` >= 3) of a /proc/PID/stat line.
/// The command name (field 2) may hold spaces and parentheses: fields are
/// counted from after its last `)`.
pub fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n.checked_sub(3)?)
}

/// `root` and those of `links` (pid, parent) that descend from it, in
/// `links`' order after `root`.
pub fn tree(root: i32, links: &[(i32, i32)]) -> Vec<i32> {
    let mut out = vec![root];
    // Parents may come after their children in pid order (pids wrap):
    // repeat until nothing is added.
    loop {
        let before = out.len();
        for &(p, pp) in links {
            if out.contains(&pp) && !out.contains(&p) {
                out.push(p);
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// Every process (not thread) now alive.
pub fn pids() -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// A `/proc/meminfo` field in KiB.
pub fn meminfo_kib(field: &str) -> Option<u64> {
    meminfo_field(&std::fs::read_to_string("/proc/meminfo").ok()?, field)
}

fn meminfo_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// The first `file_name` found in the directories of `PATH`.
pub fn which(file_name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(file_name))
        .find(|p| is_executable(p))
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_of_odd_command_names_and_of_this_process() {
        assert_eq!(parse_ppid("42 (a) b) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("42 (x y) R 1 2"), Some(1));
        assert_eq!(parse_ppid("42 (x"), None);
        let me = pid(std::process::id());
        assert_eq!(ppid(me), Some(pid(std::os::unix::process::parent_id())));
    }

    #[test]
    fn tree_keeps_descendants_only() {
        // 10 -> 11 -> 12, 10 -> 13; 20 (a stranger) -> 21; 9 is 10's parent.
        let links = [(12, 11), (21, 20), (11, 10), (13, 10), (20, 1), (10, 9)];
        let mut t = tree(10, &links);
        t.sort();
        assert_eq!(t, vec![10, 11, 12, 13]);
        assert_eq!(tree(21, &links), vec![21]);
    }

    const SMAPS: &str = "\
55d4c0000000-55d4c0100000 r-xp 00000000 fd:01 1234   /usr/bin/husk-vmm
Size:               1024 kB
Rss:                 800 kB
Pss:                 700 kB
VmFlags: rd ex mr mw me
7f0000000000-7f0008000000 rw-p 00000000 00:00 0 
Size:             131072 kB
Rss:               40960 kB
Pss:               40960 kB
AnonHugePages:     40960 kB
VmFlags: rd wr mr mw me nr hg
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0      [stack]
Size:                132 kB
Pss:                  12 kB
";

    #[test]
    fn smaps_split_guest_ram_from_the_rest() {
        assert_eq!(parse_smaps(SMAPS, 64 << 20), (41672, 40960));
        // No threshold: nothing is guest RAM.
        assert_eq!(parse_smaps(SMAPS, 0), (41672, 0));
        let m = ProcMem {
            pid: 1,
            comm: "x".into(),
            pss_kib: 41672,
            guest_ram_pss_kib: 40960,
        };
        assert_eq!(m.host_pss_kib(), 712);
    }

    #[test]
    fn meminfo_fields() {
        let t =
            "MemTotal:        3000000 kB\nMemFree:          100 kB\nMemAvailable:    2500000 kB\n";
        assert_eq!(meminfo_field(t, "MemAvailable"), Some(2_500_000));
        assert_eq!(meminfo_field(t, "MemFree"), Some(100));
        assert_eq!(meminfo_field(t, "Mem"), None);
    }

    #[test]
    fn own_process_is_listed() {
        let me = pid(std::process::id());
        assert!(pids().contains(&me));
        let m = proc_mem(me, 1 << 40).unwrap();
        assert!(m.pss_kib > 0 && m.guest_ram_pss_kib == 0);
    }
}
