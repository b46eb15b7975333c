//! Booting the two VMMs the same way and timing them from outside: husk-vmm
//! and QEMU `-M microvm`, same kernel, initramfs and command line, each timed
//! from spawning the process to the agent's answer to a Ping over
//! virtio-vsock.

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use husk_protocol::client::{Client, ReadyListener};
use husk_protocol::vsock::{self, VsockListener, VsockStream};
use husk_protocol::{
    read_frame, write_frame, PingInfo, Request, RequestFrame, Response, ResponseFrame, AGENT_PORT,
    READY_PORT,
};
use husk_vm_config::{ConfigInput, SerialConfig};
use serde::Serialize;

use crate::mem;

/// The kernel command line both VMMs boot with (each adds its own
/// virtio_mmio.device= entries): husk-vmm's default.
pub const CMDLINE: &str = husk_vm_config::DEFAULT_CMDLINE;

/// Where QEMU microvm (acpi=off) puts its first virtio-mmio transport:
/// base 0xfeb00000, 512 bytes, GSI 5.
const QEMU_MICROVM_VSOCK: &str = "virtio_mmio.device=512@0xfeb00000:5";

/// Bound on every agent read and write once connected.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// What a boot is made of.
#[derive(Clone, Debug)]
pub struct BootSpec {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub timeout: Duration,
}

impl BootSpec {
    /// Mappings at least this large are guest RAM (see [`mem::parse_smaps`]).
    pub fn guest_ram_min(&self) -> u64 {
        (self.memory_mib as u64) << 19
    }
}

/// One boot of one VMM.
#[derive(Serialize, Clone, Debug)]
pub struct Sample {
    /// Spawn of the VMM process to the Ping answer.
    pub ready_ms: f64,
    /// The guest's own uptime when it answered: the kernel + agent share.
    pub guest_uptime_ms: u64,
    /// Spawn to the VMM process's exit after Shutdown.
    pub total_ms: f64,
    /// `MemTotal` the agent reports.
    pub guest_mem_total_kib: u64,
    /// The VMM process's PSS outside guest RAM, at the Ping answer.
    pub host_pss_kib: Option<u64>,
    /// PSS of the guest RAM mapping at the Ping answer: the guest memory
    /// touched so far, as the host pays for it.
    pub guest_ram_pss_kib: Option<u64>,
    /// husk-vmm only (`HUSK_VMM_TIMING`): process CPU time and wall time
    /// since main when the first vCPU entered KVM_RUN.
    pub first_kvm_run_cpu_ms: Option<f64>,
    pub first_kvm_run_wall_ms: Option<f64>,
    /// husk-vmm only: every start-up phase, in order (wall and CPU ms at
    /// its end).
    pub phases: Vec<Phase>,
    /// CPU time of the VMM process (all threads) at the Ping answer, and
    /// the part of it spent running the guest (KVM_RUN): the rest is the
    /// VMM's own work, comparable between the two VMMs.
    pub vmm_cpu_ms: Option<f64>,
    pub guest_cpu_ms: Option<f64>,
}

impl Sample {
    /// What VMM process `pid` shows when its agent answered Ping, `ready`
    /// after the spawn; `total_ms` and husk-vmm's own timing are set later.
    fn at_ready(pid: i32, spec: &BootSpec, ready: Duration, info: &PingInfo) -> Sample {
        let cpu = proc_cpu_ms(pid);
        let m = mem::proc_mem(pid, spec.guest_ram_min()).ok();
        Sample {
            ready_ms: ms(ready),
            guest_uptime_ms: info.uptime_ms,
            total_ms: 0.0,
            guest_mem_total_kib: info.mem_total_kib,
            host_pss_kib: m.as_ref().map(|m| m.host_pss_kib()),
            guest_ram_pss_kib: m.as_ref().map(|m| m.guest_ram_pss_kib),
            first_kvm_run_cpu_ms: None,
            first_kvm_run_wall_ms: None,
            phases: Vec::new(),
            vmm_cpu_ms: cpu.map(|c| c.0),
            guest_cpu_ms: cpu.map(|c| c.1),
        }
    }
}

/// One `husk-vmm: timing:` line.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Phase {
    pub what: String,
    pub wall_ms: f64,
    pub cpu_ms: f64,
}

/// A VMM process that is killed if it is dropped still running.
pub struct Vmm {
    child: Child,
    pub log: PathBuf,
    /// husk-vmm: where the agent's ready signal arrives.
    ready: Option<ReadyListener>,
}

impl Vmm {
    pub fn spawn(cmd: &mut Command, log: &Path) -> Result<Vmm, String> {
        let f = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = f.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(f).stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
        Ok(Vmm {
            child,
            log: log.to_owned(),
            ready: None,
        })
    }

    pub fn pid(&self) -> i32 {
        mem::pid(self.child.id())
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                return Err(format!("did not exit within {timeout:?} of Shutdown"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().filter(|l| !l.contains(" timing: ")).collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The VM husk-vmm boots for `spec`, its vsock socket at `uds`.
pub fn husk_config(spec: &BootSpec, uds: &Path) -> ConfigInput {
    ConfigInput {
        kernel: Some(spec.kernel.clone()),
        initrd: Some(spec.initrd.clone()),
        cmdline: Some(CMDLINE.to_string()),
        // The console goes to the log with husk-vmm's own messages: with
        // `quiet` that is a line or two, and a failed boot shows why.
        // (QEMU gets `-serial null`: the same UART, output dropped.)
        serial: Some(SerialConfig::Stdout.to_string()),
        vcpus: Some(spec.vcpus),
        memory: Some(u64::from(spec.memory_mib)),
        vsock_uds: Some(uds.to_path_buf()),
        ..Default::default()
    }
}

/// Starts husk-vmm for `spec` with its vsock socket at `uds` and
/// `HUSK_VMM_TIMING` on; output goes to `log`, the VM's configuration
/// (`--config`) beside it. `startup_only`: stop before the first KVM_RUN.
pub fn spawn_husk(
    bin: &Path,
    spec: &BootSpec,
    uds: &Path,
    log: &Path,
    startup_only: bool,
) -> Result<Vmm, String> {
    spawn_husk_config(bin, husk_config(spec, uds), uds, log, startup_only)
}

/// [`spawn_husk`] of the VM `input` (its vsock socket at `uds`).
pub fn spawn_husk_config(
    bin: &Path,
    input: ConfigInput,
    uds: &Path,
    log: &Path,
    startup_only: bool,
) -> Result<Vmm, String> {
    let _ = std::fs::remove_file(uds);
    let config = log.with_extension("json");
    input.write_json_file(&config).map_err(|e| e.to_string())?;
    // Before the VMM starts, so the agent's ready signal cannot be missed.
    let ready =
        ReadyListener::bind(uds).map_err(|e| format!("ready socket for {}: {e}", uds.display()))?;
    let mut cmd = Command::new(bin);
    cmd.env("HUSK_VMM_TIMING", "1")
        .arg("run")
        .arg("--config")
        .arg(&config);
    if startup_only {
        cmd.arg("--startup-only");
    }
    let mut vmm = Vmm::spawn(&mut cmd, log)?;
    vmm.ready = Some(ready);
    Ok(vmm)
}

/// How often the agent is tried before its ready signal came (so that an
/// agent without one is still found).
const FALLBACK_POLL: Duration = Duration::from_millis(250);

/// Connects to the agent of a husk-vmm started at `t0` and pings it: once
/// the agent's ready signal came (as husk does), trying now and then before.
pub fn husk_wait_agent(
    vmm: &mut Vmm,
    uds: &Path,
    t0: Instant,
    timeout: Duration,
) -> Result<(Client, PingInfo, Duration), String> {
    let deadline = t0 + timeout;
    let mut signalled = vmm.ready.is_none();
    let mut next_try = Instant::now() + FALLBACK_POLL;
    let mut client = loop {
        if let Some(r) = vmm.ready.as_ref().filter(|_| !signalled) {
            // Short slices, so that a VMM that died is noticed at once.
            signalled = r.wait(Duration::from_millis(50)).unwrap_or(true);
        }
        let now = Instant::now();
        let tried = if signalled {
            Some(Client::connect_uds_retry(
                uds,
                AGENT_PORT,
                Duration::from_millis(200),
            ))
        } else if now >= next_try {
            next_try = now + FALLBACK_POLL;
            Some(Client::connect_uds(uds, AGENT_PORT, IO_TIMEOUT))
        } else {
            None
        };
        let e = match tried {
            Some(Ok(c)) => break c,
            Some(Err(e)) => e.to_string(),
            None => "no ready signal yet".to_string(),
        };
        if let Some(st) = vmm.exited() {
            return Err(format!(
                "husk-vmm exited ({st}) before the agent answered: {}",
                vmm.log_tail()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!("no agent within {timeout:?}: {e}"));
        }
    };
    client
        .set_timeout(IO_TIMEOUT)
        .map_err(|e| format!("socket timeout: {e}"))?;
    let info = client.ping().map_err(|e| format!("ping: {e}"))?;
    Ok((client, info, t0.elapsed()))
}

/// Shuts a husk-vmm down through its agent and checks that it exits 0.
pub fn husk_shutdown(mut vmm: Vmm, client: Client) -> Result<(), String> {
    client.shutdown().map_err(|e| format!("shutdown: {e}"))?;
    let st = vmm.wait(Duration::from_secs(30))?;
    if !st.success() {
        return Err(format!(
            "husk-vmm exited {st} after Shutdown: {}",
            vmm.log_tail()
        ));
    }
    Ok(())
}

/// Every `husk-vmm: timing:` line of a husk-vmm log, in order.
pub fn parse_phases(log: &str) -> Vec<Phase> {
    log.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("husk-vmm: timing:")?;
            let (wall, rest) = rest.split_once(" ms")?;
            let rest = rest.trim_start().strip_prefix("cpu")?;
            let (cpu, what) = rest.split_once(" ms")?;
            Some(Phase {
                what: what.trim().to_string(),
                wall_ms: wall.trim().parse().ok()?,
                cpu_ms: cpu.trim().parse().ok()?,
            })
        })
        .collect()
}

/// `(wall ms, cpu ms)` of the `first KVM_RUN` timing line.
pub fn first_kvm_run(phases: &[Phase]) -> Option<(f64, f64)> {
    phases
        .iter()
        .find(|p| p.what == "first KVM_RUN")
        .map(|p| (p.wall_ms, p.cpu_ms))
}

/// `(all threads' CPU ms, guest ms)` of process `pid`: the sum of
/// `/proc/PID/task/*/schedstat` (ns on CPU) and `guest_time` from
/// `/proc/PID/stat` (clock ticks).
pub fn proc_cpu_ms(pid: i32) -> Option<(f64, f64)> {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let s = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
        ns += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some((
        ns as f64 / 1e6,
        guest_ticks(&stat)? as f64 * 1e3 / clock_ticks(),
    ))
}

/// Field 43 (`guest_time`) of a /proc/PID/stat line.
fn guest_ticks(stat: &str) -> Option<u64> {
    mem::stat_field(stat, 43)?.parse().ok()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

pub fn husk_sample(bin: &Path, spec: &BootSpec, tmp: &Path) -> Result<Sample, String> {
    let uds = tmp.join("husk.vsock");
    let t0 = Instant::now();
    let mut vmm = spawn_husk(bin, spec, &uds, &tmp.join("husk.log"), false)?;
    let (client, info, ready) = husk_wait_agent(&mut vmm, &uds, t0, spec.timeout)?;
    let mut s = Sample::at_ready(vmm.pid(), spec, ready, &info);
    let log = vmm.log.clone();
    husk_shutdown(vmm, client)?;
    s.phases = parse_phases(&std::fs::read_to_string(&log).unwrap_or_default());
    (s.first_kvm_run_wall_ms, s.first_kvm_run_cpu_ms) = first_kvm_run(&s.phases).unzip();
    s.total_ms = ms(t0.elapsed());
    Ok(s)
}

/// QEMU's microvm configured for fast boots: qboot firmware, no ACPI (our
/// kernel has none; with ACPI on, microvm moves virtio-mmio IRQs to a second
/// IOAPIC that only ACPI describes), no option ROMs, no RTC; the same serial
/// port (output dropped) and a vhost-vsock device, as husk-vmm has.
///
/// `auto-kernel-cmdline=off`: QEMU 7.2 appends a `virtio_mmio.device=` for
/// every transport with a device, for vmlinux (PVH) boots too. With ours as
/// well the guest registered the transport twice, and its failed second
/// probe (two error lines on the serial console) cost every QEMU boot
/// 115-190 ms in the lab. The one device is announced here, pinned to the
/// first transport.
pub fn qemu_command(bin: &Path, spec: &BootSpec, cid: u32) -> Command {
    qemu_command_with(bin, spec, cid, "")
}

/// [`qemu_command`] with `append` added to the kernel command line (for
/// more devices: QEMU microvm's transport N is at 0xfeb00000 + N * 512,
/// GSI 5 + N, with ACPI off).
pub fn qemu_command_with(bin: &Path, spec: &BootSpec, cid: u32, append: &str) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "-M",
        "microvm,acpi=off,x-option-roms=off,rtc=off,isa-serial=on,auto-kernel-cmdline=off",
    ])
    .args([
        "-enable-kvm",
        "-cpu",
        "host",
        "-nodefaults",
        "-no-user-config",
    ])
    .args(["-display", "none", "-no-reboot", "-serial", "null"])
    .args(["-smp", &spec.vcpus.to_string()])
    .args(["-m", &spec.memory_mib.to_string()])
    .arg("-kernel")
    .arg(&spec.kernel)
    .arg("-initrd")
    .arg(&spec.initrd)
    // reboot=t (last one wins): microvm has no i8042, and reboot=k falls back
    // to a BIOS restart that reboots the guest in place; a triple fault makes
    // QEMU (-no-reboot) exit. Shutdown only.
    .args([
        "-append",
        &format!("{CMDLINE} {QEMU_MICROVM_VSOCK}{append} reboot=t"),
    ])
    .args([
        "-device",
        &format!("vhost-vsock-device,guest-cid={cid},bus=virtio-mmio-bus.0"),
    ]);
    c
}

pub fn qemu_sample(bin: &Path, spec: &BootSpec, cid: u32, tmp: &Path) -> Result<Sample, String> {
    let log = tmp.join("qemu.log");
    // The agent's ready signal, as for husk-vmm: here a host vsock listener
    // (vhost-vsock delivers the guest's connection to host port 1025).
    let ready = VsockReady::bind(READY_PORT)?;
    let t0 = Instant::now();
    let mut vmm = Vmm::spawn(&mut qemu_command(bin, spec, cid), &log)?;
    let mut sock = qemu_wait_agent(&mut vmm, &ready, cid, t0, spec.timeout)?;
    let info = vsock_call(&mut sock, 1, Request::Ping).and_then(|r| match r {
        Response::Pong(p) => Ok(p),
        other => Err(format!("unexpected answer to Ping: {other:?}")),
    })?;
    let mut s = Sample::at_ready(vmm.pid(), spec, t0.elapsed(), &info);
    let _ = vsock_call(&mut sock, 2, Request::Shutdown)?;
    drop(sock);
    vmm.wait(Duration::from_secs(30))?;
    s.total_ms = ms(t0.elapsed());
    Ok(s)
}

/// Connects to the agent of QEMU guest `cid` started at `t0`: once its
/// ready signal came on `ready`, trying now and then before.
pub fn qemu_wait_agent(
    vmm: &mut Vmm,
    ready: &VsockReady,
    cid: u32,
    t0: Instant,
    timeout: Duration,
) -> Result<VsockStream, String> {
    let deadline = t0 + timeout;
    let mut backoff = Duration::from_millis(1);
    let mut signalled = false;
    let mut next_try = Instant::now() + FALLBACK_POLL;
    loop {
        if !signalled {
            signalled = ready.wait(Duration::from_millis(50), cid)?;
        }
        let now = Instant::now();
        let e = if signalled || now >= next_try {
            next_try = now + FALLBACK_POLL;
            match vsock_connect(cid, AGENT_PORT) {
                Ok(s) => return Ok(s),
                Err(e) => e,
            }
        } else {
            "no ready signal yet".to_string()
        };
        if let Some(st) = vmm.exited() {
            return Err(format!(
                "qemu exited ({st}) before the agent answered: {}",
                vmm.log_tail()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!("no agent within {timeout:?}: {e}"));
        }
        if signalled {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(20));
        }
    }
}

/// A host AF_VSOCK listener on `port` (any CID) for the agent's ready
/// signal through vhost-vsock.
pub struct VsockReady {
    listener: VsockListener,
}

impl VsockReady {
    pub fn bind(port: u32) -> Result<VsockReady, String> {
        let listener = VsockListener::bind(port)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| format!("listen on vsock port {port} (the agent's ready signal): {e}"))?;
        Ok(VsockReady { listener })
    }

    /// Waits up to `timeout` for a connection from guest `cid`; others (a
    /// guest of an earlier run) are accepted and dropped.
    fn wait(&self, timeout: Duration, cid: u32) -> Result<bool, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept_peer() {
                Ok((_, peer)) if peer == cid => return Ok(true),
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Err(format!("accept (vsock ready signal): {e}")),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            vsock::wait_readable(self.listener.as_raw_fd(), left.min(Duration::from_secs(1)))
                .map_err(|e| format!("poll (vsock ready signal): {e}"))?;
        }
    }
}

/// A connected AF_VSOCK stream to (cid, port) on the host side of vhost-vsock.
fn vsock_connect(cid: u32, port: u32) -> Result<VsockStream, String> {
    let s =
        VsockStream::connect(cid, port).map_err(|e| format!("connect(vsock {cid}:{port}): {e}"))?;
    // Bound every read and write: a guest that stops answering must end the
    // sample with an error, not hang the benchmark.
    s.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| format!("setsockopt(vsock timeout): {e}"))?;
    Ok(s)
}

pub fn vsock_call(sock: &mut VsockStream, id: u64, request: Request) -> Result<Response, String> {
    write_frame(sock, &RequestFrame::new(id, request)).map_err(|e| format!("send: {e}"))?;
    let resp: ResponseFrame = read_frame(sock).map_err(|e| format!("receive: {e}"))?;
    if resp.id != id {
        return Err(format!("answer for request {} to request {id}", resp.id));
    }
    Ok(resp.response)
}

/// A private directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Result<TempDir, String> {
        let base = std::env::temp_dir();
        for n in 0..1000u32 {
            let p = base.join(format!("husk-bench.{}.{n}", std::process::id()));
            if std::fs::create_dir(&p).is_ok() {
                return Ok(TempDir(p));
            }
        }
        Err(format!("cannot create a directory in {}", base.display()))
    }
    pub fn path(&self) -> &Path {
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
    fn timing_lines() {
        let log = "husk-vmm: timing:    0.100 ms  cpu    0.900 ms  arguments parsed\n\
                   husk-agent: listening\n\
                   husk-vmm: timing:   12.345 ms  cpu    6.789 ms  first KVM_RUN\n\
                   husk-vmm: timing:   13.000 ms  cpu    7.000 ms  vCPUs started\n";
        let p = parse_phases(log);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].what, "arguments parsed");
        assert_eq!((p[0].wall_ms, p[0].cpu_ms), (0.1, 0.9));
        assert_eq!(first_kvm_run(&p), Some((12.345, 6.789)));
        assert_eq!(
            first_kvm_run(&parse_phases("husk-vmm: guest said hi\n")),
            None
        );
    }

    #[test]
    fn guest_time_field() {
        // 52 fields; the name has a space and a parenthesis.
        let mut f: Vec<String> = (1..=52).map(|i| i.to_string()).collect();
        f[1] = "(vcpu 0) x)".into();
        f[42] = "777".into();
        assert_eq!(guest_ticks(&f.join(" ")), Some(777));
        let me = mem::pid(std::process::id());
        let (cpu, guest) = proc_cpu_ms(me).unwrap();
        assert!(cpu > 0.0 && guest == 0.0, "{cpu} {guest}");
    }

    #[test]
    fn guest_ram_threshold_is_half_the_guest_memory() {
        let s = BootSpec {
            kernel: "k".into(),
            initrd: "i".into(),
            vcpus: 1,
            memory_mib: 128,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(s.guest_ram_min(), 64 << 20);
    }

    #[test]
    fn husk_vmm_gets_the_same_vm_as_qemu() {
        let s = BootSpec {
            kernel: "/k".into(),
            initrd: "/i".into(),
            vcpus: 2,
            memory_mib: 256,
            timeout: Duration::from_secs(1),
        };
        let tmp = TempDir::new().unwrap();
        let uds = tmp.path().join("v.sock");
        let c = husk_vm_config::VmConfig::from_input(husk_config(&s, &uds), |_| None).unwrap();
        assert_eq!((c.vcpus, c.memory_mib), (2, 256));
        assert_eq!(
            (c.kernel.to_str(), c.initrd.to_str()),
            (Some("/k"), Some("/i"))
        );
        assert_eq!(c.cmdline, CMDLINE);
        assert_eq!(c.serial, SerialConfig::Stdout);
        assert_eq!(c.vsock.map(|v| v.uds), Some(uds));
    }

    #[test]
    fn qemu_announces_its_vsock_transport_once() {
        let s = BootSpec {
            kernel: "k".into(),
            initrd: "i".into(),
            vcpus: 2,
            memory_mib: 128,
            timeout: Duration::from_secs(1),
        };
        let c = qemu_command(Path::new("qemu"), &s, 7);
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let after = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
        // QEMU must not add its own entry: one per transport, ours.
        assert!(after("-M")
            .split(',')
            .any(|o| o == "auto-kernel-cmdline=off"));
        let append = after("-append");
        assert_eq!(append.matches("virtio_mmio.device=").count(), 1, "{append}");
        assert!(append.starts_with(CMDLINE), "{append}");
        assert_eq!(after("-smp"), "2");
        assert!(after("-device").contains("guest-cid=7,bus=virtio-mmio-bus.0"));
    }
}
