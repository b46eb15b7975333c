//! husk benchmarks.
//!
//! `husk-bench boot` measures boot-to-agent-ready — from spawning the VMM
//! process to the agent's answer to a Ping over virtio-vsock — for husk-vmm
//! and for QEMU `-M microvm` with the same kernel, initramfs and kernel
//! command line, timed the same way from outside both processes, with the runs
//! of the two interleaved so that background noise hits both alike. It prints
//! min / median / p90 for each and the ratios, and can write every sample as
//! JSON. Figures are only meaningful as ratios within one run (in the nested
//! lab everything is 20-50x slower than on hardware).

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use husk_protocol::client::Client;
use husk_protocol::{
    read_frame, write_frame, Request, RequestFrame, Response, ResponseFrame, AGENT_PORT,
};
use serde::Serialize;

/// The kernel command line both VMMs boot with (each adds its own
/// virtio_mmio.device= entries).
const CMDLINE: &str = "console=ttyS0 8250.nr_uarts=1 reboot=k panic=-1 pci=off \
     i8042.noaux i8042.nomux i8042.dumbkbd i8042.nopnp tsc=reliable no_timer_check quiet";

/// Where QEMU microvm (acpi=off) puts its first virtio-mmio transport:
/// base 0xfeb00000, 512 bytes, GSI 5.
const QEMU_MICROVM_VSOCK: &str = "virtio_mmio.device=512@0xfeb00000:5";

#[derive(Parser)]
#[command(name = "husk-bench", about = "husk benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot-to-agent-ready: husk-vmm against QEMU microvm.
    Boot(BootArgs),
}

#[derive(clap::Args)]
struct BootArgs {
    /// Boots per VMM.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    memory: u32,
    /// Guest kernel [default: $HUSK_KERNEL or /usr/share/husk/vmlinux]
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Guest initramfs with husk-agent [default: $HUSK_INITRAMFS or /usr/share/husk/initramfs.img]
    #[arg(long)]
    initrd: Option<PathBuf>,
    #[arg(long, default_value = "husk-vmm")]
    husk_vmm: PathBuf,
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// Seconds to wait for one agent to answer.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Also write all samples here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize, Clone, Copy)]
struct Sample {
    /// Spawn of the VMM process to the Ping answer.
    ready_ms: f64,
    /// The guest's own uptime when it answered: the kernel + agent share.
    guest_uptime_ms: u64,
    /// Spawn to the VMM process's exit after Shutdown.
    total_ms: f64,
}

#[derive(Serialize)]
struct Stats {
    min: f64,
    median: f64,
    p90: f64,
}

#[derive(Serialize)]
struct VmmResult {
    name: &'static str,
    samples: Vec<Sample>,
    ready_ms: Stats,
    guest_uptime_ms: Stats,
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Boot(a) => boot(a),
    };
    if let Err(e) = r {
        eprintln!("husk-bench: {e}");
        std::process::exit(1);
    }
}

fn default_path(flag: Option<PathBuf>, env: &str, default: &str) -> PathBuf {
    flag.or_else(|| std::env::var_os(env).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(default))
}

fn boot(a: BootArgs) -> Result<(), String> {
    let kernel = default_path(a.kernel, "HUSK_KERNEL", "/usr/share/husk/vmlinux");
    let initrd = default_path(a.initrd, "HUSK_INITRAMFS", "/usr/share/husk/initramfs.img");
    for (what, p) in [("kernel", &kernel), ("initrd", &initrd)] {
        if !p.is_file() {
            return Err(format!("{what} {}: not found", p.display()));
        }
    }
    if a.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let timeout = Duration::from_secs(a.timeout);
    let tmp = TempDir::new()?;
    let (mut husk, mut qemu) = (Vec::new(), Vec::new());
    for i in 0..a.runs {
        let h = husk_sample(
            &a.husk_vmm,
            &kernel,
            &initrd,
            a.vcpus,
            a.memory,
            tmp.path(),
            timeout,
        )
        .map_err(|e| format!("husk-vmm run {}: {e}", i + 1))?;
        let q = qemu_sample(
            &a.qemu,
            &kernel,
            &initrd,
            a.vcpus,
            a.memory,
            1000 + i as u32,
            tmp.path(),
            timeout,
        )
        .map_err(|e| format!("qemu run {}: {e}", i + 1))?;
        eprintln!(
            "  run {:>2}: husk-vmm {:>8.1} ms   qemu-microvm {:>8.1} ms",
            i + 1,
            h.ready_ms,
            q.ready_ms
        );
        husk.push(h);
        qemu.push(q);
    }
    let husk = summarize("husk-vmm", husk);
    let qemu = summarize("qemu-microvm", qemu);
    println!(
        "boot-to-agent-ready, ms ({} boots each; {} vCPU, {} MiB; kernel {}, initrd {})",
        a.runs,
        a.vcpus,
        a.memory,
        kernel.display(),
        initrd.display()
    );
    println!(
        "{:<14} {:>9} {:>9} {:>9}   {:>22}",
        "", "min", "median", "p90", "guest uptime (median)"
    );
    for r in [&husk, &qemu] {
        println!(
            "{:<14} {:>9.1} {:>9.1} {:>9.1}   {:>22}",
            r.name, r.ready_ms.min, r.ready_ms.median, r.ready_ms.p90, r.guest_uptime_ms.median
        );
    }
    let ratio_min = husk.ready_ms.min / qemu.ready_ms.min;
    let ratio_med = husk.ready_ms.median / qemu.ready_ms.median;
    println!(
        "ratio husk-vmm/qemu-microvm: min {ratio_min:.2}, median {ratio_med:.2} (goal <= 0.50)"
    );
    if let Some(path) = a.json {
        let doc = serde_json::json!({
            "benchmark": "boot-to-agent-ready",
            "runs": a.runs, "vcpus": a.vcpus, "memory_mib": a.memory,
            "kernel": kernel, "initrd": initrd, "cmdline": CMDLINE,
            "results": [husk, qemu],
            "ratio": {"min": ratio_min, "median": ratio_med},
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn summarize(name: &'static str, samples: Vec<Sample>) -> VmmResult {
    let ready: Vec<f64> = samples.iter().map(|s| s.ready_ms).collect();
    let up: Vec<f64> = samples.iter().map(|s| s.guest_uptime_ms as f64).collect();
    VmmResult {
        name,
        ready_ms: stats(ready),
        guest_uptime_ms: stats(up),
        samples,
    }
}

/// min, median and p90 (nearest rank) of a non-empty set.
fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    let p90 = v[((n as f64 * 0.9).ceil() as usize).clamp(1, n) - 1];
    Stats {
        min: v[0],
        median,
        p90,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A VMM process that is killed if the sample fails half-way.
struct Vmm(Child);

impl Vmm {
    fn spawn(cmd: &mut Command, log: &Path) -> Result<Vmm, String> {
        let log = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(err);
        cmd.spawn()
            .map(Vmm)
            .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))
    }

    /// Waits up to `timeout` for the process to end by itself.
    fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.0.try_wait().map_err(|e| e.to_string())? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                return Err(format!("did not exit within {timeout:?} of Shutdown"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

fn husk_sample(
    bin: &Path,
    kernel: &Path,
    initrd: &Path,
    vcpus: u32,
    memory: u32,
    tmp: &Path,
    timeout: Duration,
) -> Result<Sample, String> {
    let uds = tmp.join("husk.vsock");
    let log = tmp.join("husk.log");
    let _ = std::fs::remove_file(&uds);
    let t0 = Instant::now();
    let mut vmm = Vmm::spawn(
        Command::new(bin)
            .arg("run")
            .arg("--kernel")
            .arg(kernel)
            .arg("--initrd")
            .arg(initrd)
            .args(["--cmdline", CMDLINE, "--serial", "none"])
            .args([
                "--vcpus",
                &vcpus.to_string(),
                "--memory",
                &memory.to_string(),
            ])
            .arg("--vsock-uds")
            .arg(&uds),
        &log,
    )?;
    let deadline = t0 + timeout;
    let mut client = loop {
        // Retry in short slices so that a VMM that died is noticed at once.
        match Client::connect_uds_retry(&uds, AGENT_PORT, Duration::from_millis(200)) {
            Ok(c) => break c,
            Err(e) => {
                if let Some(st) = vmm.exited() {
                    return Err(format!(
                        "husk-vmm exited ({st}) before the agent answered: {}",
                        log_tail(&log)
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!("no agent within {timeout:?}: {e}"));
                }
            }
        }
    };
    client
        .set_timeout(Duration::from_secs(30))
        .map_err(|e| format!("socket timeout: {e}"))?;
    let info = client.ping().map_err(|e| format!("ping: {e}"))?;
    let ready = t0.elapsed();
    client.shutdown().map_err(|e| format!("shutdown: {e}"))?;
    let st = vmm.wait(Duration::from_secs(30))?;
    if !st.success() {
        return Err(format!(
            "husk-vmm exited {st} after Shutdown: {}",
            log_tail(&log)
        ));
    }
    Ok(Sample {
        ready_ms: ms(ready),
        guest_uptime_ms: info.uptime_ms,
        total_ms: ms(t0.elapsed()),
    })
}

#[allow(clippy::too_many_arguments)]
fn qemu_sample(
    bin: &Path,
    kernel: &Path,
    initrd: &Path,
    vcpus: u32,
    memory: u32,
    cid: u32,
    tmp: &Path,
    timeout: Duration,
) -> Result<Sample, String> {
    let log = tmp.join("qemu.log");
    let t0 = Instant::now();
    // QEMU's microvm configured for fast boots: qboot firmware, no ACPI (our
    // kernel has none; with ACPI on, microvm moves virtio-mmio IRQs to a
    // second IOAPIC that only ACPI describes), no option ROMs, no RTC; the
    // same serial port (output dropped) and a vhost-vsock device, as husk-vmm
    // has. microvm adds virtio_mmio.device= only for bzImage boots, so the
    // device is pinned to the first transport and announced here.
    let mut vmm = Vmm::spawn(
        Command::new(bin)
            .args([
                "-M",
                "microvm,acpi=off,x-option-roms=off,rtc=off,isa-serial=on",
            ])
            .args([
                "-enable-kvm",
                "-cpu",
                "host",
                "-nodefaults",
                "-no-user-config",
            ])
            .args(["-display", "none", "-no-reboot", "-serial", "null"])
            .args(["-smp", &vcpus.to_string(), "-m", &memory.to_string()])
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            // reboot=t (last one wins): microvm has no i8042, and reboot=k
            // falls back to a BIOS restart that reboots the guest in place;
            // a triple fault makes QEMU (-no-reboot) exit. Shutdown only.
            .args([
                "-append",
                &format!("{CMDLINE} {QEMU_MICROVM_VSOCK} reboot=t"),
            ])
            .args([
                "-device",
                &format!("vhost-vsock-device,guest-cid={cid},bus=virtio-mmio-bus.0"),
            ]),
        &log,
    )?;
    let deadline = t0 + timeout;
    let mut backoff = Duration::from_millis(1);
    let mut sock = loop {
        match vsock_connect(cid, AGENT_PORT) {
            Ok(s) => break s,
            Err(e) => {
                if let Some(st) = vmm.exited() {
                    return Err(format!(
                        "qemu exited ({st}) before the agent answered: {}",
                        log_tail(&log)
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!("no agent within {timeout:?}: {e}"));
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(20));
            }
        }
    };
    let info = vsock_call(&mut sock, 1, Request::Ping).and_then(|r| match r {
        Response::Pong(p) => Ok(p),
        other => Err(format!("unexpected answer to Ping: {other:?}")),
    })?;
    let ready = t0.elapsed();
    let _ = vsock_call(&mut sock, 2, Request::Shutdown)?;
    drop(sock);
    vmm.wait(Duration::from_secs(30))?;
    Ok(Sample {
        ready_ms: ms(ready),
        guest_uptime_ms: info.uptime_ms,
        total_ms: ms(t0.elapsed()),
    })
}

/// A connected AF_VSOCK stream to (cid, port) on the host side of vhost-vsock.
fn vsock_connect(cid: u32, port: u32) -> Result<File, String> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!(
            "socket(AF_VSOCK): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a fresh socket that nothing else owns; OwnedFd closes it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid starting value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    // SAFETY: addr is a valid sockaddr_vm and the length passed is its size.
    let rc = unsafe {
        libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &addr as *const libc::sockaddr_vm as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "connect(vsock {cid}:{port}): {}",
            std::io::Error::last_os_error()
        ));
    }
    // Bound every read and write: a guest that stops answering must end the
    // sample with an error, not hang the benchmark.
    let tv = libc::timeval {
        tv_sec: 30,
        tv_usec: 0,
    };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: tv is a valid timeval and the length passed is its size.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::SOL_SOCKET,
                opt,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(format!(
                "setsockopt(vsock timeout): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(File::from(fd))
}

fn vsock_call(sock: &mut File, id: u64, request: Request) -> Result<Response, String> {
    write_frame(sock, &RequestFrame::new(id, request)).map_err(|e| format!("send: {e}"))?;
    let resp: ResponseFrame = read_frame(sock).map_err(|e| format!("receive: {e}"))?;
    if resp.id != id {
        return Err(format!("answer for request {} to request {id}", resp.id));
    }
    Ok(resp.response)
}

/// A private directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let base = std::env::temp_dir();
        for n in 0..1000u32 {
            let p = base.join(format!("husk-bench.{}.{n}", std::process::id()));
            if std::fs::create_dir(&p).is_ok() {
                return Ok(TempDir(p));
            }
        }
        Err(format!("cannot create a directory in {}", base.display()))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_odd_and_even_sets() {
        let s = stats(vec![5.0, 1.0, 3.0]);
        assert_eq!((s.min, s.median, s.p90), (1.0, 3.0, 5.0));
        let s = stats((1..=10).map(f64::from).collect());
        assert_eq!((s.min, s.median, s.p90), (1.0, 5.5, 9.0));
        let s = stats(vec![7.0]);
        assert_eq!((s.min, s.median, s.p90), (7.0, 7.0, 7.0));
    }
}
