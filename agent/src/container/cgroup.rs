//! cgroup v2: one group per container, `linux.resources` as interface files.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use crate::sysinfo::read_bounded;

/// Where the unified hierarchy is mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

/// Controllers enabled for containers (each only if the parent offers it).
const CONTROLLERS: &[&str] = &[
    "cpu", "cpuset", "io", "memory", "pids", "hugetlb", "rdma", "misc",
];

/// One interface-file write derived from the spec: `file` gets `value`;
/// `field` names the spec field for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write1 {
    pub file: String,
    pub value: String,
    pub field: String,
}

fn w(file: &str, value: impl Into<String>, field: &str) -> Write1 {
    Write1 {
        file: file.into(),
        value: value.into(),
        field: field.into(),
    }
}

/// -1 (unlimited) or a value >= 0.
fn limit(v: i64, field: &str) -> Result<String, String> {
    match v {
        -1 => Ok("max".into()),
        v if v < 0 => Err(format!(
            "{field}: {v} is negative (only -1, unlimited, is allowed)"
        )),
        v => Ok(v.to_string()),
    }
}

/// Validates `linux.resources` and turns it into cgroup v2 interface-file
/// writes (runc's v1->v2 conversions for cpu.weight, io.weight and swap).
/// Settings with no cgroup v2 equivalent are reported in `warnings`.
pub fn resource_writes(
    r: &LinuxResources,
    warnings: &mut Vec<String>,
) -> Result<Vec<Write1>, String> {
    let f = "linux.resources";
    let mut out = Vec::new();
    if let Some(m) = r.memory() {
        let mem_limit = match m.limit() {
            Some(l) => {
                let v = limit(l, &format!("{f}.memory.limit"))?;
                out.push(w("memory.max", v, &format!("{f}.memory.limit")));
                Some(l)
            }
            None => None,
        };
        if let Some(r2) = m.reservation() {
            let v = limit(r2, &format!("{f}.memory.reservation"))?;
            out.push(w("memory.low", v, &format!("{f}.memory.reservation")));
        }
        if let Some(s) = m.swap() {
            let field = format!("{f}.memory.swap");
            // OCI's swap is memory+swap; cgroup v2's swap.max is swap alone.
            let v = match (s, mem_limit) {
                (-1, _) => "max".to_string(),
                (s, _) if s < 0 => {
                    return Err(format!(
                        "{field}: {s} is negative (only -1, unlimited, is allowed)"
                    ))
                }
                (_, None) | (_, Some(-1)) => {
                    return Err(format!("{field}: needs a memory.limit (it is memory+swap)"))
                }
                (s, Some(l)) if s < l => {
                    return Err(format!(
                        "{field}: {s} is below memory.limit {l} (it is memory+swap)"
                    ))
                }
                (s, Some(l)) => (s - l).to_string(),
            };
            out.push(w("memory.swap.max", v, &field));
        }
        #[allow(deprecated)]
        if m.kernel().is_some() || m.kernel_tcp().is_some() {
            warnings.push(format!(
                "{f}.memory.kernel/kernelTCP ignored: no cgroup v2 equivalent"
            ));
        }
        if m.swappiness().is_some() {
            warnings.push(format!(
                "{f}.memory.swappiness ignored: no cgroup v2 equivalent"
            ));
        }
        if m.disable_oom_killer() == Some(true) {
            warnings.push(format!(
                "{f}.memory.disableOOMKiller ignored: no cgroup v2 equivalent"
            ));
        }
    }
    if let Some(c) = r.cpu() {
        // 0 means "not set" for shares, quota and period, as runc reads
        // them (Docker sends 0 for every CPU knob the user left alone).
        if let Some(shares) = c.shares().filter(|s| *s != 0) {
            let field = format!("{f}.cpu.shares");
            if !(2..=262_144).contains(&shares) {
                return Err(format!("{field}: {shares} is outside 2..262144"));
            }
            let weight = 1 + ((shares - 2) * 9999) / 262_142;
            out.push(w("cpu.weight", weight.to_string(), &field));
        }
        let (cq, cp) = (
            c.quota().filter(|q| *q != 0),
            c.period().filter(|p| *p != 0),
        );
        if cq.is_some() || cp.is_some() {
            let field = format!("{f}.cpu.quota");
            let quota = match cq {
                None | Some(-1) => "max".to_string(),
                Some(q) if q <= 0 => {
                    return Err(format!("{field}: {q} must be positive or -1 (unlimited)"))
                }
                Some(q) => q.to_string(),
            };
            let period = cp.unwrap_or(100_000);
            if !(1_000..=1_000_000).contains(&period) {
                return Err(format!(
                    "{f}.cpu.period: {period} is outside 1000..1000000 us"
                ));
            }
            out.push(w("cpu.max", format!("{quota} {period}"), &field));
        }
        if let Some(b) = c.burst() {
            out.push(w("cpu.max.burst", b.to_string(), &format!("{f}.cpu.burst")));
        }
        if let Some(i) = c.idle() {
            if !(0..=1).contains(&i) {
                return Err(format!("{f}.cpu.idle: {i} is not 0 or 1"));
            }
            out.push(w("cpu.idle", i.to_string(), &format!("{f}.cpu.idle")));
        }
        for (name, v) in [("cpus", c.cpus()), ("mems", c.mems())] {
            if let Some(v) = v {
                let field = format!("{f}.cpu.{name}");
                if !v
                    .chars()
                    .all(|ch| ch.is_ascii_digit() || ch == ',' || ch == '-')
                {
                    return Err(format!("{field}: {v:?} is not a CPU/node list"));
                }
                out.push(w(&format!("cpuset.{name}"), v.clone(), &field));
            }
        }
        if c.realtime_runtime().is_some() || c.realtime_period().is_some() {
            warnings.push(format!(
                "{f}.cpu.realtimeRuntime/realtimePeriod ignored: no cgroup v2 equivalent"
            ));
        }
    }
    if let Some(p) = r.pids() {
        let field = format!("{f}.pids.limit");
        let v = match p.limit() {
            0 | -1 => "max".to_string(),
            l if l < 0 => {
                return Err(format!(
                    "{field}: {l} is negative (only -1, unlimited, is allowed)"
                ))
            }
            l => l.to_string(),
        };
        out.push(w("pids.max", v, &field));
    }
    if let Some(b) = r.block_io() {
        let bf = format!("{f}.blockIO");
        if let Some(wt) = b.weight().filter(|w| *w != 0) {
            if !(10..=1000).contains(&wt) {
                return Err(format!("{bf}.weight: {wt} is outside 10..1000"));
            }
            let v = 1 + (u64::from(wt) - 10) * 9999 / 990;
            out.push(w(
                "io.weight",
                format!("default {v}"),
                &format!("{bf}.weight"),
            ));
        }
        for (i, d) in b.weight_device().iter().flatten().enumerate() {
            let field = format!("{bf}.weightDevice[{i}]");
            dev_num(d.major(), d.minor(), &field)?;
            if let Some(wt) = d.weight() {
                if !(10..=1000).contains(&wt) {
                    return Err(format!("{field}.weight: {wt} is outside 10..1000"));
                }
                let v = 1 + (u64::from(wt) - 10) * 9999 / 990;
                out.push(w(
                    "io.weight",
                    format!("{}:{} {v}", d.major(), d.minor()),
                    &field,
                ));
            }
        }
        for (name, key, list) in [
            (
                "throttleReadBpsDevice",
                "rbps",
                b.throttle_read_bps_device(),
            ),
            (
                "throttleWriteBpsDevice",
                "wbps",
                b.throttle_write_bps_device(),
            ),
            (
                "throttleReadIOPSDevice",
                "riops",
                b.throttle_read_iops_device(),
            ),
            (
                "throttleWriteIOPSDevice",
                "wiops",
                b.throttle_write_iops_device(),
            ),
        ] {
            for (i, d) in list.iter().flatten().enumerate() {
                let field = format!("{bf}.{name}[{i}]");
                dev_num(d.major(), d.minor(), &field)?;
                let rate = if d.rate() == 0 {
                    "max".to_string()
                } else {
                    d.rate().to_string()
                };
                out.push(w(
                    "io.max",
                    format!("{}:{} {key}={rate}", d.major(), d.minor()),
                    &field,
                ));
            }
        }
        if b.leaf_weight().is_some() {
            warnings.push(format!("{bf}.leafWeight ignored: no cgroup v2 equivalent"));
        }
    }
    for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
        let field = format!("{f}.hugepageLimits[{i}]");
        let size = h.page_size();
        if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("{field}.pageSize: {size:?} is not a page size"));
        }
        let v = limit(h.limit(), &format!("{field}.limit"))?;
        out.push(w(&format!("hugetlb.{size}.max"), v, &field));
    }
    if let Some(rdma) = r.rdma() {
        let mut devs: Vec<_> = rdma.iter().collect();
        devs.sort_by(|a, b| a.0.cmp(b.0));
        for (dev, l) in devs {
            let field = format!("{f}.rdma.{dev}");
            if dev.is_empty() || dev.contains(char::is_whitespace) {
                return Err(format!("{field}: bad device name"));
            }
            let mut v = dev.clone();
            if let Some(h) = l.hca_handles() {
                v.push_str(&format!(" hca_handle={h}"));
            }
            if let Some(o) = l.hca_objects() {
                v.push_str(&format!(" hca_object={o}"));
            }
            out.push(w("rdma.max", v, &field));
        }
    }
    if let Some(u) = r.unified() {
        let mut keys: Vec<_> = u.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in keys {
            let field = format!("{f}.unified.{k}");
            if k.is_empty()
                || k.contains('/')
                || k.starts_with('.')
                || !k.contains('.')
                || k.starts_with("cgroup.")
            {
                return Err(format!("{field}: not a controller interface file"));
            }
            out.push(w(k, v.clone(), &field));
        }
    }
    if r.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        warnings.push(format!(
            "{f}.devices ignored: cgroup v2 device rules need eBPF; the container gets only the devices it is given"
        ));
    }
    if r.network().is_some() {
        warnings.push(format!("{f}.network ignored: no cgroup v2 equivalent"));
    }
    Ok(out)
}

fn dev_num(major: i64, minor: i64, field: &str) -> Result<(), String> {
    if major < 0 || minor < 0 || major > u32::MAX as i64 || minor > u32::MAX as i64 {
        return Err(format!(
            "{field}: device {major}:{minor} is negative or too large"
        ));
    }
    Ok(())
}

/// Validates `linux.cgroupsPath` (or the default) into a path relative to [`ROOT`].
pub fn rel_path(spec_path: Option<&Path>, id: &str) -> Result<String, String> {
    let Some(p) = spec_path else {
        return Ok(format!("husk/{id}"));
    };
    let s = p.to_str().ok_or("linux.cgroupsPath: not UTF-8")?;
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("linux.cgroupsPath: {s:?} contains '..'")),
            c if c.contains(':') => {
                return Err(format!(
                    "linux.cgroupsPath: {s:?} looks like a systemd slice path, which the guest has no systemd for"
                ))
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(format!("linux.cgroupsPath: {s:?} names the root cgroup"));
    }
    Ok(parts.join("/"))
}

/// A container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub rel: String,
    pub dir: PathBuf,
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    // One write(2): cgroup files parse one value per write.
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

impl Cgroup {
    /// Creates the group (and its missing parents, with controllers enabled
    /// on the way down). Fails if the group already exists.
    pub fn create(rel: &str) -> Result<Cgroup, String> {
        let root = Path::new(ROOT);
        if !root.join("cgroup.controllers").exists() {
            return Err(format!("no cgroup v2 hierarchy at {ROOT}"));
        }
        let mut dir = root.to_path_buf();
        let parts: Vec<&str> = rel.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            enable_controllers(&dir);
            dir.push(part);
            let last = i + 1 == parts.len();
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !last => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(format!(
                        "linux.cgroupsPath: cgroup {} already exists",
                        dir.display()
                    ))
                }
                Err(e) => return Err(format!("create cgroup {}: {e}", dir.display())),
            }
        }
        Ok(Cgroup {
            rel: rel.to_string(),
            dir,
        })
    }

    pub fn apply(&self, writes: &[Write1]) -> Result<(), String> {
        for wr in writes {
            write_file(&self.dir.join(&wr.file), &wr.value)
                .map_err(|e| format!("{}: write {:?} to {}: {e}", wr.field, wr.value, wr.file))?;
        }
        Ok(())
    }

    pub fn add_pid(&self, pid: i32) -> io::Result<()> {
        write_file(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    pub fn read(&self, file: &str) -> io::Result<String> {
        read_bounded(&self.dir.join(file))
    }

    /// A `key value` line of a flat-keyed file such as `memory.events`.
    pub fn keyed(&self, file: &str, key: &str) -> Option<u64> {
        parse_keyed(&self.read(file).ok()?, key)
    }

    pub fn populated(&self) -> bool {
        self.keyed("cgroup.events", "populated").unwrap_or(0) != 0
    }

    pub fn pids(&self) -> Vec<i32> {
        self.read("cgroup.procs")
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Freezes (`true`) or thaws the group and waits (bounded) until the
    /// kernel reports the new state.
    pub fn freeze(&self, on: bool) -> Result<(), String> {
        write_file(&self.dir.join("cgroup.freeze"), if on { "1" } else { "0" })
            .map_err(|e| format!("write cgroup.freeze: {e}"))?;
        let want = u64::from(on);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.keyed("cgroup.events", "frozen") != Some(want) {
            if Instant::now() > deadline {
                return Err(format!(
                    "cgroup {} did not {} within 10 s",
                    self.rel,
                    if on { "freeze" } else { "thaw" }
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Kills every process in the group (cgroup.kill, or SIGKILL to each pid
    /// on kernels without it).
    pub fn kill_all(&self) {
        if write_file(&self.dir.join("cgroup.kill"), "1").is_err() {
            for pid in self.pids() {
                // SAFETY: kill(2) with integer arguments only.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// Kills what is left, waits (bounded) until the group is empty and
    /// removes it.
    pub fn destroy(&self) -> Result<(), String> {
        if !self.dir.exists() {
            return Ok(());
        }
        let _ = self.freeze(false);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !self.populated() {
                match fs::remove_dir(&self.dir) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("remove cgroup {}: {e}", self.dir.display()))
                    }
                    Err(_) => {}
                }
            } else {
                self.kill_all();
                if Instant::now() > deadline {
                    return Err(format!(
                        "cgroup {} still has processes after 10 s",
                        self.dir.display()
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Enables every available controller of [`CONTROLLERS`] for `dir`'s children.
fn enable_controllers(dir: &Path) {
    let avail = read_bounded(&dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = read_bounded(&dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in CONTROLLERS {
        if avail.split_whitespace().any(|a| a == *c) && !enabled.split_whitespace().any(|a| a == *c)
        {
            let _ = write_file(&dir.join("cgroup.subtree_control"), &format!("+{c}"));
        }
    }
}

/// The value of `key` in a flat-keyed cgroup file (`key value` lines).
pub fn parse_keyed(s: &str, key: &str) -> Option<u64> {
    s.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(json: &str) -> Result<Vec<Write1>, String> {
        let r: LinuxResources = serde_json::from_str(json).unwrap();
        resource_writes(&r, &mut Vec::new())
    }

    fn files(ws: &[Write1]) -> Vec<(String, String)> {
        ws.iter()
            .map(|w| (w.file.clone(), w.value.clone()))
            .collect()
    }

    #[test]
    fn conversions() {
        let ws = res(r#"{"memory":{"limit":33554432,"swap":67108864,"reservation":-1},
            "cpu":{"shares":1024,"quota":50000,"period":100000,"cpus":"0-1"},
            "pids":{"limit":10},
            "blockIO":{"weight":500,"throttleReadBpsDevice":[{"major":254,"minor":0,"rate":1048576}]}}"#)
        .unwrap();
        let f = files(&ws);
        for want in [
            ("memory.max", "33554432"),
            ("memory.swap.max", "33554432"),
            ("memory.low", "max"),
            ("cpu.weight", "39"),
            ("cpu.max", "50000 100000"),
            ("cpuset.cpus", "0-1"),
            ("pids.max", "10"),
            ("io.weight", "default 4950"),
            ("io.max", "254:0 rbps=1048576"),
        ] {
            assert!(
                f.contains(&(want.0.into(), want.1.into())),
                "{want:?} in {f:?}"
            );
        }
        assert_eq!(
            files(&res(r#"{"pids":{"limit":-1}}"#).unwrap()),
            [("pids.max".into(), "max".into())]
        );
        assert_eq!(
            files(&res(r#"{"cpu":{"quota":-1}}"#).unwrap()),
            [("cpu.max".into(), "max 100000".into())]
        );
    }

    #[test]
    fn zero_cpu_knobs_are_unset_as_in_runc() {
        let ws =
            res(r#"{"cpu":{"shares":0,"quota":0,"period":0},"blockIO":{"weight":0}}"#).unwrap();
        assert!(ws.is_empty(), "{:?}", files(&ws));
    }

    #[test]
    fn bad_values_name_the_field() {
        for (json, field) in [
            (
                r#"{"memory":{"limit":-5}}"#,
                "linux.resources.memory.limit:",
            ),
            (r#"{"pids":{"limit":-3}}"#, "linux.resources.pids.limit:"),
            (r#"{"memory":{"swap":100}}"#, "linux.resources.memory.swap:"),
            (
                r#"{"memory":{"limit":200,"swap":100}}"#,
                "linux.resources.memory.swap:",
            ),
            (r#"{"cpu":{"shares":1}}"#, "linux.resources.cpu.shares:"),
            (r#"{"cpu":{"quota":-5}}"#, "linux.resources.cpu.quota:"),
            (r#"{"cpu":{"cpus":"0;1"}}"#, "linux.resources.cpu.cpus:"),
            (
                r#"{"blockIO":{"weight":5}}"#,
                "linux.resources.blockIO.weight:",
            ),
            (
                r#"{"blockIO":{"throttleReadBpsDevice":[{"major":-1,"minor":0,"rate":1}]}}"#,
                "linux.resources.blockIO.throttleReadBpsDevice[0]:",
            ),
            (
                r#"{"unified":{"../x":"1"}}"#,
                "linux.resources.unified.../x:",
            ),
            (
                r#"{"unified":{"cgroup.procs":"1"}}"#,
                "linux.resources.unified.cgroup.procs:",
            ),
        ] {
            let e = res(json).unwrap_err();
            assert!(e.starts_with(field), "{json}: {e}");
        }
    }

    #[test]
    fn cgroup_paths() {
        assert_eq!(rel_path(None, "c1").unwrap(), "husk/c1");
        assert_eq!(rel_path(Some(Path::new("/a/b")), "x").unwrap(), "a/b");
        assert_eq!(rel_path(Some(Path::new("a//b/")), "x").unwrap(), "a/b");
        assert!(rel_path(Some(Path::new("/a/../b")), "x")
            .unwrap_err()
            .starts_with("linux.cgroupsPath:"));
        assert!(rel_path(Some(Path::new("/")), "x").is_err());
        assert!(rel_path(Some(Path::new("system.slice:docker:x")), "x").is_err());
    }

    #[test]
    fn keyed_files() {
        let s = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n";
        assert_eq!(parse_keyed(s, "oom_kill"), Some(2));
        assert_eq!(parse_keyed(s, "oom"), Some(1));
        assert_eq!(parse_keyed(s, "nope"), None);
        assert_eq!(parse_keyed("populated x", "populated"), None);
    }
}
