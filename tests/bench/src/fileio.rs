//! File I/O inside a container (`io` section): five operations on the
//! container's own rootfs, timed inside the container, for husk and runc on
//! the same bundle; and for husk, how many FUSE requests each one sends to
//! virtiofsd, a figure that does not depend on the machine's speed.
//!
//! The workload is one shell script (`/io.sh` in the bundle) that runs the
//! operations in order and prints `husk-io OP MS` after each, the time read
//! from /proc/uptime (10 ms steps; a builtin `read`, so timing sends no
//! request itself). Before each operation it looks up a file name that does
//! not exist, `/.husk-io-mark-OP`: one LOOKUP that virtiofsd's debug log
//! shows by name, so the requests between two marks are the operation's.
//!
//! Requests are counted in a run of their own, with virtiofsd in debug mode
//! (`-d`: one `unique: N, opcode: NAME (n), ...` line per request), reached
//! through `HUSK_VIRTIOFSD` pointing at a wrapper script; the timed runs use
//! the configured virtiofsd untouched. Operations touching many files send
//! a few requests more for the processes the script starts (`find`, `cat`,
//! `dd`, `sync`: their binary is one busybox, looked up and opened once).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;

use crate::start::{self, Runtime};
use crate::stats::{ratio, stats, Stats};

/// The shape of the data set the operations work on.
#[derive(Serialize, Clone, Copy, Debug)]
pub struct IoSize {
    pub dirs: usize,
    pub files_per_dir: usize,
    pub small_bytes: usize,
    pub big_mib: usize,
    pub created: usize,
    pub written_mib: usize,
}

impl IoSize {
    /// The table: 4000 files of 1 KiB in 40 directories, a 128 MiB
    /// file, 500 files created, 64 MiB written.
    pub const FULL: IoSize = IoSize {
        dirs: 40,
        files_per_dir: 100,
        small_bytes: 1024,
        big_mib: 128,
        created: 500,
        written_mib: 64,
    };
    /// `--quick` (the test command runs it): 100 files, 8 MiB files; the
    /// per-file and per-MiB request figures stay comparable.
    pub const QUICK: IoSize = IoSize {
        dirs: 5,
        files_per_dir: 20,
        small_bytes: 1024,
        big_mib: 8,
        created: 50,
        written_mib: 8,
    };

    fn small_files(&self) -> usize {
        self.dirs * self.files_per_dir
    }
}

/// One operation: its name, what the table says, the shell that does it and
/// the unit its requests are counted per (with how many of them).
struct Op {
    name: &'static str,
    what: String,
    script: String,
    per: (&'static str, usize),
}

fn ops(s: &IoSize) -> Vec<Op> {
    vec![
        Op {
            name: "find",
            what: format!("find over {} files in {} dirs", s.small_files(), s.dirs),
            script: "find /io/tree >/dev/null".into(),
            per: ("file", s.small_files()),
        },
        Op {
            name: "read-small",
            what: format!("read those {} files (cat */*)", s.small_files()),
            script: "cat /io/tree/*/* >/dev/null".into(),
            per: ("file", s.small_files()),
        },
        Op {
            name: "read-big",
            what: format!("read one {} MiB file", s.big_mib),
            script: "cat /io/big >/dev/null".into(),
            per: ("MiB", s.big_mib),
        },
        Op {
            name: "create-small",
            what: format!("create {} small files + sync", s.created),
            // Builtins only in the loop: one request pattern per file.
            script: format!(
                "mkdir /io/w; i=0; while [ $i -lt {} ]; do echo x >/io/w/f$i; i=$((i+1)); done; sync",
                s.created
            ),
            per: ("file", s.created),
        },
        Op {
            name: "write-big",
            what: format!("write {} MiB + sync", s.written_mib),
            script: format!(
                "dd if=/dev/zero of=/io/wbig bs=1M count={} 2>/dev/null; sync",
                s.written_mib
            ),
            per: ("MiB", s.written_mib),
        },
    ]
}

const MARK: &str = ".husk-io-mark-";
const END: &str = "end";

/// The container's script: each operation after its mark, timed.
fn script(s: &IoSize) -> String {
    let mut sh = String::from(
        "#!/bin/sh\n\
         # husk-bench io: see tests/bench/src/fileio.rs\n\
         rm -rf /io/w /io/wbig\n\
         ms() { read -r u _ </proc/uptime; echo $(( ${u%.*} * 1000 + (1${u#*.} - 100) * 10 )); }\n",
    );
    for op in ops(s) {
        sh += &format!(
            "[ -e /{MARK}{n} ]; a=$(ms); {cmd}; b=$(ms); echo \"husk-io {n} $((b - a))\"\n",
            n = op.name,
            cmd = op.script
        );
    }
    sh += &format!("[ -e /{MARK}{END} ]; rm -rf /io/w /io/wbig\n");
    sh
}

/// An OCI bundle at `dir` with a writable busybox rootfs holding the data
/// set and `/io.sh`, which it runs.
pub fn make_io_bundle(dir: &Path, busybox: &Path, s: &IoSize) -> Result<(), String> {
    start::make_bundle(dir, busybox, &["sh", "/io.sh"])?;
    let cfg = dir.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    spec["root"]["readonly"] = false.into();
    std::fs::write(&cfg, serde_json::to_vec_pretty(&spec).unwrap()).map_err(|e| e.to_string())?;
    let rootfs = dir.join("rootfs");
    let write = |p: &Path, data: &[u8]| {
        std::fs::write(p, data).map_err(|e| format!("{}: {e}", p.display()))
    };
    write(&rootfs.join("io.sh"), script(s).as_bytes())?;
    let small = vec![b'x'; s.small_bytes];
    for d in 0..s.dirs {
        let dd = rootfs.join(format!("io/tree/d{d:02}"));
        std::fs::create_dir_all(&dd).map_err(|e| format!("{}: {e}", dd.display()))?;
        for f in 0..s.files_per_dir {
            write(&dd.join(format!("f{f:03}")), &small)?;
        }
    }
    // Data, not a hole: reading a sparse file costs the host nothing.
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let big = rootfs.join("io/big");
    let mut out = std::fs::File::create(&big).map_err(|e| format!("{}: {e}", big.display()))?;
    for _ in 0..s.big_mib {
        std::io::Write::write_all(&mut out, &chunk).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `husk-io OP MS` lines of the script's output.
pub fn parse_times(out: &str) -> BTreeMap<String, f64> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("husk-io ")?.split_whitespace();
            let op = w.next()?;
            let ms = w.next()?.parse::<f64>().ok()?;
            Some((op.to_string(), ms))
        })
        .collect()
}

/// Requests by opcode between the marks of a virtiofsd `-d` log: for each
/// operation, its opcode counts. The mark's own LOOKUP (logged as
/// `unique: N, opcode: LOOKUP (1)` just before its `lo_lookup(parent=P,
/// name=.husk-io-mark-OP)` line) is not counted in the operation before.
pub fn parse_requests(log: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut all: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in log.lines() {
        if let Some(rest) = line.split(", opcode: ").nth(1) {
            if let (Some(op), Some(name)) = (&current, rest.split(' ').next()) {
                *all.entry(op.clone())
                    .or_default()
                    .entry(name.to_string())
                    .or_default() += 1;
            }
        } else if let Some(rest) = line.split(&format!("name={MARK}")).nth(1) {
            if let Some(n) = current.as_ref().and_then(|op| all.get_mut(op)) {
                if let Some(c) = n.get_mut("LOOKUP") {
                    *c = c.saturating_sub(1);
                }
            }
            let next = rest.trim_end_matches(')').trim();
            current = (next != END).then(|| next.to_string());
            if let Some(op) = &current {
                all.entry(op.clone()).or_default();
            }
        }
    }
    all
}

/// One operation's figures.
#[derive(Serialize, Debug)]
pub struct IoRow {
    pub op: String,
    pub what: String,
    pub husk_ms: Option<Stats>,
    pub runc_ms: Option<Stats>,
    /// husk / runc, medians.
    pub ratio: Option<f64>,
    /// FUSE requests husk's guest sent for it, by opcode, and in all.
    pub husk_requests: BTreeMap<String, u64>,
    pub husk_requests_total: Option<u64>,
    /// Requests per `per` (a file, a MiB).
    pub per: String,
    pub husk_requests_per: Option<f64>,
}

#[derive(Serialize, Debug)]
pub struct IoReport {
    pub runs: usize,
    pub size: IoSize,
    pub rows: Vec<IoRow>,
    pub errors: Vec<String>,
}

/// `RUNTIME --root ROOT run --bundle B ID`, its stdout; `env` added.
fn run_script(
    bin: &Path,
    root: &Path,
    bundle: &Path,
    id: &str,
    env: Option<(&str, &Path)>,
    timeout: Duration,
    tmp: &Path,
) -> Result<String, String> {
    let out_path = tmp.join(format!("{id}.out"));
    let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    cmd.arg("--root")
        .arg(root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id);
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let res = start::run_bounded_out(&mut cmd, Stdio::from(out), timeout);
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    if let Err(e) = res {
        start::force_delete(bin, root, id);
        return Err(format!("{id}: {e}"));
    }
    Ok(text)
}

/// The virtiofsd husk would start (HUSK_VIRTIOFSD, else Debian's paths).
fn real_virtiofsd() -> PathBuf {
    std::env::var_os("HUSK_VIRTIOFSD")
        .map(PathBuf::from)
        .or_else(|| {
            ["/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("virtiofsd"))
}

/// A virtiofsd that logs every request (`-d`) to `log`.
fn counting_virtiofsd(tmp: &Path, log: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let w = tmp.join("virtiofsd-counting");
    let text = format!(
        "#!/bin/sh\nexec '{}' -d \"$@\" 2>>'{}'\n",
        real_virtiofsd().display(),
        log.display()
    );
    std::fs::write(&w, text).map_err(|e| format!("{}: {e}", w.display()))?;
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(w)
}

/// The section: `runs` timed runs of husk and runc (interleaved), then one
/// husk run counting requests.
pub fn io_section(
    husk: &Runtime,
    runc: &Runtime,
    busybox: &Path,
    s: &IoSize,
    runs: usize,
    timeout: Duration,
    tmp: &Path,
) -> IoReport {
    let mut rep = IoReport {
        runs,
        size: *s,
        rows: Vec::new(),
        errors: Vec::new(),
    };
    eprintln!(
        "husk-bench: io: {runs} runs each of husk and runc, then one husk run counting FUSE requests"
    );
    let bundle = tmp.join("io-bundle");
    if let Err(e) = make_io_bundle(&bundle, busybox, s) {
        rep.errors.push(format!("io bundle: {e}"));
        return rep;
    }
    let mut times: BTreeMap<&str, Vec<BTreeMap<String, f64>>> = BTreeMap::new();
    let peers = [("husk", husk), ("runc", runc)];
    for i in 0..runs {
        for (name, r) in peers {
            let Some(bin) = &r.bin else { continue };
            let root = tmp.join(format!("io-root-{name}"));
            let _ = std::fs::create_dir_all(&root);
            let id = format!("io-{name}-{}-{i}", std::process::id());
            match run_script(bin, &root, &bundle, &id, None, timeout, tmp) {
                Ok(out) => {
                    let t = parse_times(&out);
                    eprintln!("  run {:>2}: {name} {t:?}", i + 1);
                    times.entry(name).or_default().push(t);
                }
                Err(e) => rep.errors.push(format!("io {name}: {e}")),
            }
        }
    }
    let mut requests = BTreeMap::new();
    if let Some(bin) = &husk.bin {
        let log = tmp.join("virtiofsd-requests.log");
        let counted = counting_virtiofsd(tmp, &log).and_then(|w| {
            let root = tmp.join("io-root-husk");
            let id = format!("io-count-{}", std::process::id());
            run_script(
                bin,
                &root,
                &bundle,
                &id,
                Some(("HUSK_VIRTIOFSD", &w)),
                timeout,
                tmp,
            )
        });
        match counted {
            Ok(_) => {
                requests = parse_requests(&std::fs::read_to_string(&log).unwrap_or_default());
            }
            Err(e) => rep.errors.push(format!("io request count: {e}")),
        }
    }
    let med = |name: &str, op: &str| -> Option<Stats> {
        let v = times.get(name)?.iter().filter_map(|t| t.get(op).copied());
        stats(v.collect())
    };
    for op in ops(s) {
        let (husk_ms, runc_ms) = (med("husk", op.name), med("runc", op.name));
        let req = requests.get(op.name).cloned().unwrap_or_default();
        let total = requests.get(op.name).map(|r| r.values().sum::<u64>());
        rep.rows.push(IoRow {
            op: op.name.into(),
            what: op.what,
            husk_ms,
            runc_ms,
            ratio: ratio(husk_ms.map(|s| s.median), runc_ms.map(|s| s.median)),
            husk_requests: req,
            husk_requests_total: total,
            per: op.per.0.into(),
            #[allow(clippy::cast_precision_loss)]
            husk_requests_per: total.map(|t| t as f64 / op.per.1.max(1) as f64),
        });
    }
    rep
}

/// The section's table.
pub fn print_io(r: &IoReport) {
    let s = &r.size;
    println!();
    println!(
        "== File I/O in the container's rootfs: ms (median of {} runs, 10 ms steps) and husk's FUSE requests",
        r.runs
    );
    println!(
        "{:<44} {:>9} {:>9} {:>7} {:>9} {:>12}",
        "operation", "husk ms", "runc ms", "ratio", "requests", "per unit"
    );
    let f0 = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.0}"));
    for x in &r.rows {
        println!(
            "{:<44} {:>9} {:>9} {:>7} {:>9} {:>12}",
            x.what,
            f0(x.husk_ms.map(|s| s.median)),
            f0(x.runc_ms.map(|s| s.median)),
            x.ratio.map_or_else(|| "-".into(), |v| format!("{v:.1}x")),
            x.husk_requests_total
                .map_or_else(|| "-".into(), |v| v.to_string()),
            x.husk_requests_per
                .map_or_else(|| "-".into(), |v| format!("{v:.2}/{}", x.per)),
        );
    }
    for x in &r.rows {
        let top: Vec<String> = {
            let mut v: Vec<(&String, &u64)> = x.husk_requests.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1));
            v.iter().take(5).map(|(k, n)| format!("{k} {n}")).collect()
        };
        if !top.is_empty() {
            println!("  {:<12} {}", x.op, top.join(", "));
        }
    }
    println!(
        "  data: {} files of {} B in {} dirs, {} MiB file; requests from one husk run with virtiofsd -d",
        s.dirs * s.files_per_dir,
        s.small_bytes,
        s.dirs,
        s.big_mib
    );
    for e in &r.errors {
        println!("io: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_from_the_scripts_lines() {
        let t = parse_times("noise\nhusk-io find 120\nhusk-io read-small 3400\nhusk-io x\n");
        assert_eq!(t.len(), 2);
        assert_eq!(t["find"], 120.0);
        assert_eq!(t["read-small"], 3400.0);
    }

    #[test]
    fn requests_are_counted_between_marks_without_the_marks() {
        let log = "\
unique: 1, opcode: INIT (26), nodeid: 0, insize: 104, pid: 0
unique: 2, opcode: LOOKUP (1), nodeid: 1, insize: 60, pid: 7
lo_lookup(parent=5, name=.husk-io-mark-find)
   unique: 2, error: -2 (No such file or directory), outsize: 16
unique: 3, opcode: LOOKUP (1), nodeid: 5, insize: 50, pid: 8
unique: 4, opcode: READDIRPLUS (44), nodeid: 6, insize: 80, pid: 8
unique: 5, opcode: READDIRPLUS (44), nodeid: 6, insize: 80, pid: 8
unique: 6, opcode: LOOKUP (1), nodeid: 1, insize: 60, pid: 7
lo_lookup(parent=5, name=.husk-io-mark-read-small)
unique: 7, opcode: OPEN (14), nodeid: 9, insize: 48, pid: 9
unique: 8, opcode: READ (15), nodeid: 9, insize: 80, pid: 9
unique: 9, opcode: LOOKUP (1), nodeid: 1, insize: 60, pid: 7
lo_lookup(parent=5, name=.husk-io-mark-end)
unique: 10, opcode: FORGET (2), nodeid: 9, insize: 48, pid: 0
";
        let r = parse_requests(log);
        assert_eq!(r.len(), 2, "{r:?}");
        let find = &r["find"];
        assert_eq!(find["LOOKUP"], 1);
        assert_eq!(find["READDIRPLUS"], 2);
        assert_eq!(find.values().sum::<u64>(), 3);
        let small = &r["read-small"];
        assert_eq!(small.get("LOOKUP").copied().unwrap_or(0), 0);
        assert_eq!(small.values().sum::<u64>(), 2);
    }

    #[test]
    fn the_script_marks_and_times_every_operation() {
        let sh = script(&IoSize::QUICK);
        for op in ops(&IoSize::QUICK) {
            assert!(sh.contains(&format!("/{MARK}{} ]", op.name)), "{}", op.name);
            assert!(sh.contains(&format!("husk-io {} ", op.name)), "{}", op.name);
        }
        assert!(sh.contains(&format!("/{MARK}{END} ]")));
    }
}
