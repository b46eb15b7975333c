//! Container start: husk against runc and crun, all three driven as the same
//! runc-compatible command line on the same busybox bundle:
//! `RUNTIME --root TMP run --bundle B ID`, timed from spawning it to the
//! first byte of the workload's stdout and to its exit. And what each runtime
//! leaves running on the host per container (`create` + `start`).

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::mem::{self, ProcMem};

/// The benchmark workload, and what it prints.
pub const WORKLOAD: &[&str] = &["echo", "hello"];
pub const HELLO: &[u8] = b"hello\n";

/// Mappings at least this large in a runtime's processes are guest RAM:
/// husk never gives a guest less than 64 MiB.
pub const CONTAINER_GUEST_RAM_MIN: u64 = 32 << 20;

/// One runtime, found or not.
#[derive(Serialize, Clone, Debug)]
pub struct Runtime {
    pub name: String,
    pub bin: Option<PathBuf>,
}

impl Runtime {
    /// `explicit` if given (a path must exist; a bare name is looked up on
    /// PATH), else `name` next to this binary (`husk bench` runs
    /// `husk-bench` from the directory of `husk`), else on PATH.
    pub fn find(name: &str, explicit: Option<&Path>) -> Runtime {
        let bin = match explicit {
            Some(p) if p.components().count() > 1 => p.is_file().then(|| p.to_owned()),
            Some(p) => mem::which(&p.to_string_lossy()),
            None => std::env::current_exe()
                .ok()
                .and_then(|me| Some(me.parent()?.join(name)))
                .filter(|p| mem::is_executable(p))
                .or_else(|| mem::which(name)),
        };
        Runtime {
            name: name.into(),
            bin,
        }
    }

    /// Why it is missing, for the table: where to get it here.
    pub fn missing_reason(&self) -> String {
        let in_lab = Path::new("/run/husk-lab").is_dir();
        match (self.name.as_str(), in_lab) {
            ("husk", true) => "NOT FOUND in the lab's L1 machine: no `husk` among the workspace's \
                               release binaries (the cli crate did not build?)"
                .into(),
            ("husk", false) => "NOT FOUND next to husk-bench or on PATH \
                                (cargo build --release -p husk)"
                .into(),
            (n, true) => format!(
                "NOT INSTALLED in the lab's L1 machine: its Debian userland \
                 (tests/lab/build-l1) has no `{n}`"
            ),
            (n, false) => {
                format!("NOT INSTALLED on this host: no `{n}` on PATH (apt-get install {n})")
            }
        }
    }
}

/// Writes an OCI bundle at `dir`: a busybox rootfs (the static `busybox`
/// binary with every applet as a symlink) and a config.json that runs
/// `args`. The spec is what `runc spec` writes (namespaces, default
/// mounts, masked and read-only paths, capabilities), with a read-only root
/// and no terminal.
pub fn make_bundle(dir: &Path, busybox: &Path, args: &[&str]) -> Result<(), String> {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(rootfs.join(d))
            .map_err(|e| format!("{}: {e}", rootfs.join(d).display()))?;
    }
    if !is_static_elf(busybox)? {
        return Err(format!(
            "{} is not a static binary (install busybox-static)",
            busybox.display()
        ));
    }
    let bb = rootfs.join("bin/busybox");
    std::fs::copy(busybox, &bb).map_err(|e| format!("copying {}: {e}", busybox.display()))?;
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("{} --list: {e}", busybox.display()))?;
    for applet in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if applet != "busybox" && !applet.contains('/') {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
    }
    if !rootfs.join("bin/echo").exists() {
        return Err(format!("{} has no echo applet", busybox.display()));
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .map_err(|e| e.to_string())?;
    let spec = serde_json::to_vec_pretty(&runc_spec(args)).unwrap();
    std::fs::write(dir.join("config.json"), spec).map_err(|e| e.to_string())
}

/// runc 1.1's `runc spec`, with `args`, no terminal and a read-only root.
pub fn runc_spec(args: &[&str]) -> serde_json::Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "husk-bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Whether `p` is an ELF file without a program interpreter.
pub fn is_static_elf(p: &Path) -> Result<bool, String> {
    let b = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
    };
    // 64-bit little-endian ELF only (x86_64).
    if b.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Ok(false);
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Ok(false);
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return Ok(false);
    };
    for i in 0..usize::from(phnum) {
        let o = phoff + i * usize::from(phentsize);
        match u32_at(o) {
            Some(3) => return Ok(false), // PT_INTERP
            Some(_) => {}
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// One container run.
#[derive(Serialize, Clone, Copy, Debug)]
pub struct StartSample {
    /// Spawn of `RUNTIME run` to the first byte of the workload's stdout.
    pub first_byte_ms: f64,
    /// Spawn to the exit of `RUNTIME run`.
    pub exit_ms: f64,
    /// husk only: where the time to the first byte went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub husk: Option<HuskPhases>,
}

/// Where one `husk run` went, in ms since it was spawned, from the
/// monitor's `--debug` lines (`husk run` is its own monitor).
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
pub struct HuskPhases {
    /// The monitor began: the command line, bundle and state checked.
    pub monitor_ms: f64,
    /// virtiofsd and husk-vmm spawned.
    pub vmm_spawned_ms: f64,
    /// The agent answered a Ping (after its ready signal).
    pub agent_ready_ms: f64,
    /// CreateContainer answered.
    pub created_ms: f64,
    /// StartContainer answered.
    pub started_ms: f64,
}

/// Seconds since midnight of an RFC 3339 UTC time, `...THH:MM:SS[.f]Z`.
fn second_of_day(t: &str) -> Option<f64> {
    let (_, hms) = t.split_once('T')?;
    let hms = hms.strip_suffix('Z')?;
    let mut it = hms.splitn(3, ':');
    let h: f64 = it.next()?.parse().ok()?;
    let m: f64 = it.next()?.parse().ok()?;
    let s: f64 = it.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The phases of one `husk --debug --log LOG run` spawned at `spawn_sod`
/// (seconds since midnight UTC); `None` if a phase is missing.
pub fn husk_phases(log: &str, spawn_sod: f64) -> Option<HuskPhases> {
    // ms since the spawn of a line `time="..." level=debug msg="..."`.
    let at = |line: &str| -> Option<f64> {
        let t = line.strip_prefix("time=\"")?.split('"').next()?;
        let d = second_of_day(t)? - spawn_sod;
        Some(if d < -43200.0 { d + 86400.0 } else { d } * 1e3)
    };
    // The "N" of "... at N ms".
    let n_ms = |line: &str, what: &str| -> Option<f64> {
        let rest = &line[line.find(what)? + what.len()..];
        rest.strip_prefix(" at ")?.split(' ').next()?.parse().ok()
    };
    let find = |what: &str| log.lines().find(|l| l.contains(what));
    let v = find("virtiofsd spawned")?;
    Some(HuskPhases {
        monitor_ms: at(v)? - n_ms(v, "virtiofsd spawned")?,
        vmm_spawned_ms: at(find("husk-vmm spawned")?)?,
        agent_ready_ms: at(find(" ready after ")?)?,
        created_ms: at(find("container created in the microVM")?)?,
        started_ms: at(find(" started at ")?)?,
    })
}

/// What a `RUNTIME run` wrote and how it ended.
struct Ran {
    /// None: it did not exit by the deadline (and was killed).
    status: Option<ExitStatus>,
    /// Since spawning.
    exit: Duration,
    got: Vec<u8>,
    /// Since spawning, to the first byte of output.
    first: Option<Duration>,
}

/// Reads `child`'s stdout `out` until the child exits (or `deadline`
/// passes: then it is killed); `t0` is when it was spawned.
fn collect(
    child: &mut Child,
    mut out: ChildStdout,
    t0: Instant,
    deadline: Instant,
) -> Result<Ran, String> {
    // The end is the exit of `RUNTIME run`, not EOF on its stdout: a helper
    // the runtime leaves behind (husk's monitor) may hold the pipe open.
    // A pidfd makes the exit wake poll() at once; without one (Linux < 5.3)
    // the exit is checked every millisecond.
    let pidfd = pidfd_open(child.id());
    let mut got = Vec::new();
    let mut first = None;
    let mut out_open = true;
    let (status, exit) = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break (Some(st), t0.elapsed());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            break (None, t0.elapsed());
        }
        let mut fds = [
            libc::pollfd {
                fd: if out_open { out.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd.as_ref().map_or(-1, |p| p.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let wait_ms = if pidfd.is_some() {
            left.as_millis().min(1000) as libc::c_int
        } else {
            1
        };
        // SAFETY: fds is an array of two valid pollfds for the duration of
        // the call (a negative fd is ignored by poll).
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait_ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("poll: {e}"));
        }
        if out_open && fds[0].revents != 0 && !read_some(&mut out, &mut got, &mut first, t0) {
            out_open = false;
        }
    };
    // What the workload wrote before the runtime exited is in the pipe.
    if out_open {
        // Best effort: without it the drain below may block until EOF.
        let _ = husk_sys::set_nonblocking(&out, true);
        while read_some(&mut out, &mut got, &mut first, t0) {}
    }
    Ok(Ran {
        status,
        exit,
        got,
        first,
    })
}

/// `bin --root root run --bundle bundle id`, timed. With `debug_log`
/// (husk), it runs with `--debug --log debug_log` and the sample says where
/// the time went.
pub fn start_sample(
    bin: &Path,
    root: &Path,
    bundle: &Path,
    id: &str,
    timeout: Duration,
    errlog: &Path,
    debug_log: Option<&Path>,
) -> Result<StartSample, String> {
    let err = std::fs::File::create(errlog).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    if let Some(l) = debug_log {
        let _ = std::fs::remove_file(l);
        cmd.arg("--debug").arg("--log").arg(l);
    }
    let spawned = std::time::SystemTime::now();
    let t0 = Instant::now();
    let mut child = cmd
        .arg("--root")
        .arg(root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let out = child.stdout.take().unwrap();
    let Ran {
        status,
        exit,
        got,
        first,
    } = collect(&mut child, out, t0, t0 + timeout)?;
    let tail = || {
        let s = std::fs::read_to_string(errlog).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    };
    let status = status.ok_or_else(|| {
        format!(
            "no exit within {timeout:?} (stdout so far {:?}); stderr: {}",
            String::from_utf8_lossy(&got),
            tail()
        )
    })?;
    if !status.success() || got != HELLO {
        return Err(format!(
            "{status}, stdout {:?} (want {:?}); stderr: {}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(HELLO),
            tail()
        ));
    }
    let first = first.ok_or("no output")?;
    let husk = debug_log.and_then(|l| {
        let log = std::fs::read_to_string(l).ok()?;
        let since_epoch = spawned.duration_since(std::time::UNIX_EPOCH).ok()?;
        husk_phases(&log, since_epoch.as_secs_f64() % 86400.0)
    });
    Ok(StartSample {
        first_byte_ms: first.as_secs_f64() * 1e3,
        exit_ms: exit.as_secs_f64() * 1e3,
        husk,
    })
}

/// Reads what `out` has; false at EOF, on an error or when it would block.
/// The first byte's time since `t0` goes to `first`.
fn read_some(
    out: &mut std::process::ChildStdout,
    got: &mut Vec<u8>,
    first: &mut Option<Duration>,
    t0: Instant,
) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match out.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                first.get_or_insert_with(|| t0.elapsed());
                if got.len() < 4096 {
                    got.extend_from_slice(&buf[..n]);
                }
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// A pidfd for `pid` (readable once the process has exited), if the kernel
/// has pidfd_open.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, mem::pid(pid), 0) };
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `bin --root root delete --force id`, output dropped; best effort.
pub fn force_delete(bin: &Path, root: &Path, id: &str) {
    let _ = run_bounded(
        Command::new(bin)
            .arg("--root")
            .arg(root)
            .args(["delete", "--force", id]),
        Duration::from_secs(30),
    );
}

/// Runs `cmd` with stdin, stdout and stderr away from us; the error carries
/// its stderr.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<(), String> {
    run_bounded_out(cmd, Stdio::null(), timeout)
}

/// [`run_bounded`] with its stdout to `out`.
pub fn run_bounded_out(cmd: &mut Command, out: Stdio, timeout: Duration) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            if st.success() {
                return Ok(());
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(format!("{st}: {}", err.trim()));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("did not finish within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What one runtime leaves on the host for one running container.
#[derive(Serialize, Clone, Debug)]
pub struct SandboxMem {
    /// The pid in `--pid-file` (runc: the container's init; husk: the
    /// monitor) and its name.
    pub pid_file_pid: Option<i32>,
    /// Every process that appeared with `create` + `start` in the tree
    /// under the pid-file process and is still there (kernel threads left
    /// out).
    pub processes: Vec<ProcMem>,
    /// Their PSS outside guest RAM, summed.
    pub host_pss_kib: u64,
    /// Their guest RAM PSS, summed (0 for namespace containers).
    pub guest_ram_pss_kib: u64,
    /// Time from `create` to `start` returning.
    pub create_start_ms: f64,
    /// Processes still there after `delete --force`.
    pub left_after_delete: Vec<String>,
}

/// `create` + `start` a container whose workload sleeps, measures the new
/// processes, then `delete --force`s it.
pub fn sandbox_mem(
    bin: &Path,
    root: &Path,
    bundle: &Path,
    id: &str,
    timeout: Duration,
) -> Result<SandboxMem, String> {
    let me = mem::pid(std::process::id());
    let before = mem::pids();
    let pid_file = root.join(format!("{id}.pid"));
    let t0 = Instant::now();
    let res = run_bounded(
        Command::new(bin)
            .arg("--root")
            .arg(root)
            .args(["create", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id),
        timeout,
    )
    .map_err(|e| format!("create: {e}"))
    .and_then(|()| {
        run_bounded(
            Command::new(bin)
                .arg("--root")
                .arg(root)
                .args(["start", id]),
            timeout,
        )
        .map_err(|e| format!("start: {e}"))
    });
    if let Err(e) = res {
        force_delete(bin, root, id);
        return Err(e);
    }
    let create_start_ms = t0.elapsed().as_secs_f64() * 1e3;
    // Let start-up transients (page cache, short-lived helpers) settle.
    std::thread::sleep(Duration::from_millis(500));
    let pid_file_pid: Option<i32> = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let Some(top) = pid_file_pid else {
        force_delete(bin, root, id);
        return Err(format!("create left no pid in {}", pid_file.display()));
    };
    // The processes that appeared since, in the tree under the pid-file
    // process: anything else the host started meanwhile (a cron job, the
    // lab's heartbeat) is not this container's.
    let links: Vec<(i32, i32)> = mem::pids()
        .into_iter()
        .filter(|p| *p != me && before.binary_search(p).is_err())
        .filter_map(|p| Some((p, mem::ppid(p)?)))
        .collect();
    let mut processes: Vec<ProcMem> = mem::tree(top, &links)
        .into_iter()
        .filter_map(|p| mem::proc_mem(p, CONTAINER_GUEST_RAM_MIN).ok())
        .filter(|m| m.pss_kib > 0)
        .collect();
    processes.sort_by_key(|m| m.pid);
    force_delete(bin, root, id);
    std::thread::sleep(Duration::from_millis(200));
    let left_after_delete = processes
        .iter()
        .filter(|m| Path::new(&format!("/proc/{}", m.pid)).exists() && mem::comm(m.pid) == m.comm)
        .map(|m| format!("{} ({})", m.comm, m.pid))
        .collect();
    Ok(SandboxMem {
        pid_file_pid,
        host_pss_kib: processes.iter().map(|m| m.host_pss_kib()).sum(),
        guest_ram_pss_kib: processes.iter().map(|m| m.guest_ram_pss_kib).sum(),
        processes,
        create_start_ms,
        left_after_delete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_runs_the_workload_read_only_without_terminal() {
        let s = runc_spec(&["echo", "hello"]);
        assert_eq!(s["process"]["args"], json!(["echo", "hello"]));
        assert_eq!(s["process"]["terminal"], json!(false));
        assert_eq!(s["root"], json!({"path": "rootfs", "readonly": true}));
        // The agent's own OCI decoder accepts it.
        let spec: Result<husk_protocol::oci::Spec, _> = husk_protocol::decode_tracked(s, "spec");
        assert!(spec.is_ok(), "{:?}", spec.err());
    }

    #[test]
    fn bundle_from_a_static_busybox() {
        let bb = Path::new("/bin/busybox");
        if !bb.is_file() || !is_static_elf(bb).unwrap() {
            eprintln!("no static /bin/busybox here; skipped");
            return;
        }
        let dir = std::env::temp_dir().join(format!("husk-bench-bundle-{}", std::process::id()));
        make_bundle(&dir, bb, &["echo", "hello"]).unwrap();
        assert!(dir.join("rootfs/bin/sh").exists());
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(spec["process"]["args"][0], "echo");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dynamic_binaries_are_not_static() {
        // This test binary is static in this workspace (+crt-static); a
        // shell script is not ELF at all.
        let me = std::env::current_exe().unwrap();
        assert!(is_static_elf(&me).is_ok());
        let dir = std::env::temp_dir().join(format!("husk-bench-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("script");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        assert!(!is_static_elf(&f).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn husk_phases_from_the_monitor_debug_log() {
        let log = concat!(
            "time=\"2026-12-02T16:31:21.200000000Z\" level=debug msg=\"container c: virtiofsd spawned at 14 ms\"\n",
            "time=\"2026-12-02T16:31:21.210000000Z\" level=debug msg=\"container c: husk-vmm spawned at 24 ms\"\n",
            "time=\"2026-12-02T16:31:22.300000000Z\" level=debug msg=\"agent 0.1.0 ready after 1090 ms (1 vCPUs, 256 MiB), reached after its ready signal\"\n",
            "time=\"2026-12-02T16:31:22.500000000Z\" level=debug msg=\"container c: container created in the microVM at 1314 ms\"\n",
            "time=\"2026-12-02T16:31:22.580000000Z\" level=debug msg=\"container c started at 1394 ms\"\n",
        );
        let spawn = 16.0 * 3600.0 + 31.0 * 60.0 + 21.086;
        let p = husk_phases(log, spawn).unwrap();
        let near = |a: f64, b: f64| (a - b).abs() < 0.01;
        assert!(near(p.monitor_ms, 100.0), "{p:?}");
        assert!(near(p.vmm_spawned_ms, 124.0), "{p:?}");
        assert!(near(p.agent_ready_ms, 1214.0), "{p:?}");
        assert!(near(p.created_ms, 1414.0), "{p:?}");
        assert!(near(p.started_ms, 1494.0), "{p:?}");
        // Spawned just before midnight, logged just after.
        let l = "time=\"2026-12-03T00:00:00.050000000Z\" level=debug msg=\"container c: virtiofsd spawned at 10 ms\"";
        let all = [
            l,
            &l.replace("virtiofsd", "husk-vmm"),
            &l.replace("virtiofsd spawned", "x ready after"),
            &l.replace("virtiofsd spawned", "container created in the microVM"),
            &l.replace("virtiofsd spawned", "c started"),
        ]
        .join("\n");
        let p = husk_phases(&all, 86399.95).unwrap();
        assert!(
            near(p.monitor_ms, 90.0) && near(p.started_ms, 100.0),
            "{p:?}"
        );
        // A run without a phase (an older husk, no --debug) has none.
        assert_eq!(
            husk_phases(&log.lines().take(3).collect::<Vec<_>>().join("\n"), spawn),
            None
        );
        assert_eq!(second_of_day("2026-12-02T01:02:03.5Z"), Some(3723.5));
        assert_eq!(second_of_day("garbage"), None);
    }

    #[test]
    fn a_fake_runtime_is_timed_and_checked() {
        let dir = std::env::temp_dir().join(format!("husk-bench-rt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rt = dir.join("fake-runc");
        std::fs::write(&rt, "#!/bin/sh\nsleep 0.05; echo hello; sleep 0.05\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = start_sample(
            &rt,
            &dir,
            &dir,
            "x",
            Duration::from_secs(10),
            &dir.join("err"),
            None,
        )
        .unwrap();
        assert!(
            s.first_byte_ms >= 40.0 && s.exit_ms >= s.first_byte_ms + 40.0,
            "{s:?}"
        );
        std::fs::write(&rt, "#!/bin/sh\necho bye; echo oops >&2; exit 3\n").unwrap();
        let e = start_sample(
            &rt,
            &dir,
            &dir,
            "x",
            Duration::from_secs(10),
            &dir.join("err"),
            None,
        )
        .unwrap_err();
        assert!(e.contains("bye") && e.contains("oops"), "{e}");
        // A helper left behind that holds stdout open (as a monitor may)
        // does not hold up the end: that is the runtime's exit.
        std::fs::write(&rt, "#!/bin/sh\nsleep 5 &\necho hello\n").unwrap();
        let t = Instant::now();
        start_sample(
            &rt,
            &dir,
            &dir,
            "x",
            Duration::from_secs(10),
            &dir.join("err"),
            None,
        )
        .unwrap();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
