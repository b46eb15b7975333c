//! husk benchmarks: how much a microVM costs at start-up.
//!
//! `husk-bench [--quick] [SECTION...]` runs, in one go (default: all):
//! - `boot`: boot-to-agent-ready of husk-vmm against QEMU `-M microvm` with
//!   the same kernel, initramfs and command line, both timed the same way
//!   from outside (spawn to the agent's Ping answer over virtio-vsock), runs
//!   interleaved so that background noise hits both alike;
//! - `start`: container start (spawn of `RUNTIME run` to the workload's
//!   first stdout byte and to its exit) for husk, crun and runc on the same
//!   busybox bundle, all driven as the same runc-compatible command line;
//! - `overhead`: host memory per sandbox (PSS outside guest RAM, guest RAM
//!   touched, every process a runtime leaves running per container) and the
//!   VMM's CPU time from exec to the first KVM_RUN;
//! - `density`: K sandboxes started at once until all agents answer.
//!
//! It prints tables and the ratios against the goals, and can write every
//! sample as JSON (`--json`) and an SVG plot (`--plot`). Figures are only
//! meaningful as ratios within one run (in the nested lab everything is
//! 20-50x slower than on hardware).

mod check;
mod density;
mod mem;
mod plot;
mod start;
mod stats;
mod vmms;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde::Serialize;

use start::{Runtime, SandboxMem, StartSample};
use stats::{ratio, stats, Stats};
use vmms::{BootSpec, Sample, TempDir};

/// The goals of issue 6, printed next to the figures.
const GOAL_BOOT_RATIO: f64 = 0.5;
const GOAL_HOST_PSS_MIB: f64 = 5.0;
const GOAL_FIRST_RUN_CPU_MS: f64 = 8.0;

#[derive(Parser)]
#[command(
    name = "husk-bench",
    about = "husk benchmarks: VM boot, container start, overhead, density",
    after_help = "Run where VMs boot: `tests/lab/run -- husk-bench --quick` (nested lab) \
                  or directly on a KVM host. Compare ratios within one run."
)]
struct Cli {
    /// Sections to run [default: all]
    #[arg(value_enum)]
    sections: Vec<Section>,
    /// Small N everywhere (boot 3, start 5, density 5,10): minutes, not tens.
    #[arg(long)]
    quick: bool,
    /// Boots per VMM [default: 10; --quick 3]; also the start-up runs
    /// [default: 30; --quick 10].
    #[arg(long)]
    runs: Option<usize>,
    /// Container runs per runtime [default: 10; --quick 5].
    #[arg(long)]
    start_runs: Option<usize>,
    /// Concurrent sandboxes, comma-separated [default: 10,25,50; --quick 5,10].
    #[arg(long, value_delimiter = ',')]
    density: Option<Vec<usize>>,
    /// vCPUs per VM.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Guest memory per VM in MiB (boot, overhead, density). Guest RAM is
    /// MAP_NORESERVE: only what the guest touches costs host memory.
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
    /// The husk runtime CLI [default: husk on PATH]
    #[arg(long)]
    husk: Option<PathBuf>,
    /// [default: runc on PATH]
    #[arg(long)]
    runc: Option<PathBuf>,
    /// [default: crun on PATH]
    #[arg(long)]
    crun: Option<PathBuf>,
    /// Static busybox for the container bundle [default: busybox on PATH]
    #[arg(long)]
    busybox: Option<PathBuf>,
    /// A runtime that is not installed is reported and skipped without
    /// making the exit status non-zero.
    #[arg(long)]
    allow_missing: bool,
    /// Seconds to wait for one VM's agent or one container.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Directory for husk-bench.json and husk-bench.svg [default:
    /// $HUSK_BENCH_OUT or ./husk-bench-out]. In the nested lab, pass a
    /// `tests/lab/run --share` directory to see them on the host.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Every sample and figure as JSON [default: OUT/husk-bench.json]
    #[arg(long)]
    json: Option<PathBuf>,
    /// The SVG plot [default: OUT/husk-bench.svg]
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Measure nothing: check that the JSON report FILE is complete and its
    /// figures sane (exit 1 and name each problem if not).
    #[arg(long, value_name = "FILE", exclusive = true)]
    check: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum Section {
    /// husk-vmm exec -> first KVM_RUN only (`--startup-only`): no guest
    /// runs, so it also works on a PVM host, outside the lab.
    Startup,
    Boot,
    Start,
    Overhead,
    Density,
}

#[derive(Serialize, Default)]
struct Report {
    quick: bool,
    host: HostInfo,
    startup: Option<StartupReport>,
    boot: Option<BootReport>,
    start: Option<StartReport>,
    overhead: Option<OverheadReport>,
    density: Option<DensityReport>,
    goals: Vec<Goal>,
    errors: Vec<String>,
    elapsed_s: f64,
}

#[derive(Serialize, Default)]
struct HostInfo {
    kernel: String,
    cpus: usize,
    mem_total_kib: Option<u64>,
    kvm: String,
    /// Inside tests/lab's L1 machine (TCG-emulated, nested KVM).
    nested_lab: bool,
}

#[derive(Serialize)]
pub struct VmmResult {
    name: String,
    samples: Vec<Sample>,
    ready_ms: Option<Stats>,
    guest_uptime_ms: Option<Stats>,
    host_pss_kib: Option<Stats>,
    guest_ram_pss_kib: Option<Stats>,
    first_kvm_run_cpu_ms: Option<Stats>,
    first_kvm_run_wall_ms: Option<Stats>,
    /// The VMM process's CPU at agent-ready, all threads; the part of it
    /// in the guest; the rest (the VMM's own work).
    vmm_cpu_ms: Option<Stats>,
    guest_cpu_ms: Option<Stats>,
    vmm_own_cpu_ms: Option<Stats>,
    /// husk-vmm start-up phases in order: median wall and CPU ms at the end
    /// of each.
    phases: Vec<PhaseStats>,
    /// Boots that failed and were retried once (see `sample_retry`).
    failed_runs: Vec<String>,
    error: Option<String>,
}

#[derive(Serialize, Clone, Debug)]
pub struct PhaseStats {
    what: String,
    wall_ms: f64,
    cpu_ms: f64,
}

/// Median end (wall, CPU) of each phase over `samples`, in the order of the
/// first sample that has phases.
fn phase_stats(runs: &[&[vmms::Phase]]) -> Vec<PhaseStats> {
    let Some(first) = runs.iter().find(|s| !s.is_empty()) else {
        return Vec::new();
    };
    let mut v: Vec<PhaseStats> = first
        .iter()
        .filter_map(|p| {
            let of = |f: fn(&vmms::Phase) -> f64| {
                stats(
                    runs.iter()
                        .filter_map(|s| s.iter().find(|q| q.what == p.what).map(f))
                        .collect(),
                )
            };
            Some(PhaseStats {
                what: p.what.clone(),
                wall_ms: of(|q| q.wall_ms)?.median,
                cpu_ms: of(|q| q.cpu_ms)?.median,
            })
        })
        .collect();
    // By CPU: process CPU time only grows, whichever thread marked the phase.
    v.sort_by(|a, b| a.cpu_ms.total_cmp(&b.cpu_ms));
    v
}

impl VmmResult {
    fn new(
        name: &str,
        samples: Vec<Sample>,
        failed_runs: Vec<String>,
        error: Option<String>,
    ) -> VmmResult {
        let f = |g: &dyn Fn(&Sample) -> Option<f64>| stats(samples.iter().filter_map(g).collect());
        VmmResult {
            name: name.into(),
            ready_ms: f(&|s| Some(s.ready_ms)),
            guest_uptime_ms: f(&|s| Some(s.guest_uptime_ms as f64)),
            host_pss_kib: f(&|s| s.host_pss_kib.map(|v| v as f64)),
            guest_ram_pss_kib: f(&|s| s.guest_ram_pss_kib.map(|v| v as f64)),
            first_kvm_run_cpu_ms: f(&|s| s.first_kvm_run_cpu_ms),
            first_kvm_run_wall_ms: f(&|s| s.first_kvm_run_wall_ms),
            vmm_cpu_ms: f(&|s| s.vmm_cpu_ms),
            guest_cpu_ms: f(&|s| s.guest_cpu_ms),
            vmm_own_cpu_ms: f(&|s| Some(s.vmm_cpu_ms? - s.guest_cpu_ms?)),
            phases: phase_stats(&samples.iter().map(|s| &s.phases[..]).collect::<Vec<_>>()),
            samples,
            failed_runs,
            error,
        }
    }
}

/// One boot sample; a boot that fails is recorded in `failed` and retried
/// once, so that a rare failure is reported without ending the section. A
/// second failure in a row ends it.
fn sample_retry<T>(
    run: usize,
    failed: &mut Vec<String>,
    mut boot: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    match boot() {
        Ok(s) => Ok(s),
        Err(e) => {
            eprintln!("  run {run:>2}: failed, retrying once: {e}");
            failed.push(format!("run {run}: {e}"));
            boot().map_err(|e2| format!("run {run}: failed twice in a row: {e2}"))
        }
    }
}

#[derive(Serialize)]
pub struct BootReport {
    runs: usize,
    vcpus: u32,
    memory_mib: u32,
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: &'static str,
    pub vmms: Vec<VmmResult>,
    ratio_min: Option<f64>,
    pub ratio_median: Option<f64>,
    /// husk-vmm's boot over QEMU's in each interleaved pair (run i of
    /// each): how much the ratio moves with the host's noise.
    pair_ratio: Option<Stats>,
}

#[derive(Serialize)]
pub struct RuntimeResult {
    pub name: String,
    bin: Option<PathBuf>,
    /// "ok", "skipped: ..." or "failed: ...".
    status: String,
    pub samples: Vec<StartSample>,
    /// Runs that failed and were retried once (as boots are).
    failed_runs: Vec<String>,
    first_byte_ms: Option<Stats>,
    exit_ms: Option<Stats>,
}

#[derive(Serialize)]
pub struct StartReport {
    runs: usize,
    workload: Vec<&'static str>,
    pub runtimes: Vec<RuntimeResult>,
    /// husk/crun and husk/runc of the median first-byte and exit times.
    pub ratios: Vec<(String, Option<f64>, Option<f64>)>,
}

#[derive(Serialize)]
struct OverheadReport {
    /// From the boot samples (husk-vmm and QEMU, bare VMs at agent-ready).
    vmms: Vec<VmmOverhead>,
    /// What each runtime leaves on the host per running container.
    runtimes: Vec<(String, Result<SandboxMem, String>)>,
}

#[derive(Serialize)]
struct VmmOverhead {
    name: String,
    host_pss_kib: Option<Stats>,
    guest_ram_pss_kib: Option<Stats>,
    guest_mem_total_kib: Option<u64>,
    /// Guest RAM the guest kernel keeps for itself before MemTotal (its
    /// image, page tables, memmap): configured RAM - MemTotal.
    guest_kernel_reserved_kib: Option<u64>,
    first_kvm_run_cpu_ms: Option<Stats>,
    first_kvm_run_wall_ms: Option<Stats>,
    vmm_cpu_ms: Option<Stats>,
    guest_cpu_ms: Option<Stats>,
    vmm_own_cpu_ms: Option<Stats>,
    phases: Vec<PhaseStats>,
}

#[derive(Serialize)]
pub struct DensityReport {
    memory_mib: u32,
    vcpus: u32,
    pub results: Vec<(usize, Result<density::DensityResult, String>)>,
}

#[derive(Serialize)]
struct Goal {
    what: String,
    value: Option<f64>,
    goal: f64,
    unit: &'static str,
    met: Option<bool>,
}

fn main() {
    let cli = Cli::parse();
    std::process::exit(match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("husk-bench: {e}");
            1
        }
    });
}

fn default_path(flag: Option<PathBuf>, env: &str, default: &str) -> PathBuf {
    flag.or_else(|| std::env::var_os(env).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(default))
}

fn host_info() -> HostInfo {
    let kvm = ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .iter()
        .filter(|m| Path::new("/sys/module").join(m).exists())
        .copied()
        .collect::<Vec<_>>()
        .join(",");
    HostInfo {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .into(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_total_kib: mem::meminfo_kib("MemTotal"),
        kvm: if kvm.is_empty() { "none".into() } else { kvm },
        nested_lab: Path::new("/run/husk-lab").is_dir(),
    }
}

fn check_report(path: &Path) -> Result<i32, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let r: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let p = check::problems(&r);
    if p.is_empty() {
        println!("{}: complete, figures sane", path.display());
        return Ok(0);
    }
    println!("{}: {} problem(s):", path.display(), p.len());
    for x in &p {
        println!("  {x}");
    }
    Ok(1)
}

fn run(cli: Cli) -> Result<i32, String> {
    if let Some(p) = &cli.check {
        return check_report(p);
    }
    let t_start = Instant::now();
    let all = [
        Section::Startup,
        Section::Boot,
        Section::Start,
        Section::Overhead,
        Section::Density,
    ];
    let sections: Vec<Section> = if cli.sections.is_empty() {
        all.to_vec()
    } else {
        all.into_iter()
            .filter(|s| cli.sections.contains(s))
            .collect()
    };
    let runs = cli.runs.unwrap_or(if cli.quick { 3 } else { 10 });
    let startup_runs = cli.runs.unwrap_or(if cli.quick { 10 } else { 30 });
    let start_runs = cli.start_runs.unwrap_or(if cli.quick { 5 } else { 10 });
    let ks = cli.density.clone().unwrap_or_else(|| {
        if cli.quick {
            vec![5, 10]
        } else {
            vec![10, 25, 50]
        }
    });
    if runs == 0 || start_runs == 0 || ks.contains(&0) {
        return Err("--runs, --start-runs and --density values must be at least 1".into());
    }
    let kernel = default_path(cli.kernel.clone(), "HUSK_KERNEL", "/usr/share/husk/vmlinux");
    let initrd = default_path(
        cli.initrd.clone(),
        "HUSK_INITRAMFS",
        "/usr/share/husk/initramfs.img",
    );
    let needs_vm = sections.iter().any(|s| *s != Section::Start);
    if needs_vm {
        for (what, p) in [("kernel", &kernel), ("initrd", &initrd)] {
            if !p.is_file() {
                return Err(format!("{what} {}: not found", p.display()));
            }
        }
    }
    let spec = BootSpec {
        kernel: kernel.clone(),
        initrd: initrd.clone(),
        vcpus: cli.vcpus,
        memory_mib: cli.memory,
        timeout: Duration::from_secs(cli.timeout),
    };
    let tmp = TempDir::new()?;
    let mut rep = Report {
        quick: cli.quick,
        host: host_info(),
        ..Default::default()
    };
    let mut exit = 0;
    println!(
        "husk-bench{}: host kernel {}, {} CPUs, {:.0} MiB, kvm: {}",
        if cli.quick { " --quick" } else { "" },
        rep.host.kernel,
        rep.host.cpus,
        rep.host.mem_total_kib.unwrap_or(0) as f64 / 1024.0,
        rep.host.kvm
    );

    if sections.contains(&Section::Startup) {
        let s = startup_section(&cli, &spec, startup_runs, tmp.path(), &rep.host);
        print_startup(&s);
        if let Some(e) = &s.error {
            rep.errors.push(format!("startup: {e}"));
        }
        rep.startup = Some(s);
    }

    if sections.contains(&Section::Boot) {
        let b = boot_section(&cli, &spec, runs, tmp.path());
        print_boot(&b);
        for v in &b.vmms {
            if let Some(e) = &v.error {
                rep.errors.push(format!("boot {}: {e}", v.name));
            }
        }
        rep.boot = Some(b);
    }

    // The bundles for start and overhead.
    let runtimes = [
        Runtime::find("husk", cli.husk.as_deref()),
        Runtime::find("crun", cli.crun.as_deref()),
        Runtime::find("runc", cli.runc.as_deref()),
    ];
    let wants_containers =
        sections.contains(&Section::Start) || sections.contains(&Section::Overhead);
    let mut bundles = None;
    if wants_containers {
        let missing: Vec<&Runtime> = runtimes.iter().filter(|r| r.bin.is_none()).collect();
        for r in &missing {
            eprintln!("husk-bench: {}: {}", r.name, r.missing_reason());
        }
        if !missing.is_empty() && !cli.allow_missing {
            rep.errors.push(format!(
                "runtimes missing: {} (--allow-missing to accept)",
                missing
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let busybox = cli
            .busybox
            .clone()
            .or_else(|| mem::which("busybox"))
            .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
        let echo = tmp.path().join("bundle-echo");
        let sleep = tmp.path().join("bundle-sleep");
        match start::make_bundle(&echo, &busybox, start::WORKLOAD)
            .and_then(|()| start::make_bundle(&sleep, &busybox, &["sleep", "600"]))
        {
            Ok(()) => bundles = Some((echo, sleep)),
            Err(e) => rep.errors.push(format!("busybox bundle: {e}")),
        }
    }

    if sections.contains(&Section::Start) {
        if let Some((echo, _)) = &bundles {
            let s = start_section(&runtimes, echo, start_runs, &cli, tmp.path());
            print_start(&s);
            for r in &s.runtimes {
                if r.status.starts_with("failed") {
                    rep.errors.push(format!("start {}: {}", r.name, r.status));
                }
            }
            rep.start = Some(s);
        }
    }

    if sections.contains(&Section::Overhead) {
        let o = overhead_section(
            &cli,
            &spec,
            runs,
            rep.boot.as_ref(),
            rep.start.as_ref(),
            &runtimes,
            bundles.as_ref(),
            tmp.path(),
            &mut rep.errors,
        );
        print_overhead(&o);
        rep.overhead = Some(o);
    }

    if sections.contains(&Section::Density) {
        let per_sandbox_kib = rep
            .boot
            .as_ref()
            .and_then(|b| b.vmms.first())
            .and_then(|v| v.guest_ram_pss_kib.zip(v.host_pss_kib))
            .map(|(g, h)| g.max + h.max)
            .unwrap_or(64.0 * 1024.0);
        let d = density_section(&cli, &spec, &ks, per_sandbox_kib, tmp.path());
        print_density(&d);
        for (k, r) in &d.results {
            match r {
                Err(e) if !e.starts_with("skipped") => rep.errors.push(format!("density {k}: {e}")),
                Ok(x) => {
                    for e in &x.errors {
                        rep.errors.push(format!("density {k}: {e}"));
                    }
                }
                _ => {}
            }
        }
        rep.density = Some(d);
    }

    rep.goals = goals(&rep);
    print_goals(&rep.goals, &rep);
    rep.elapsed_s = t_start.elapsed().as_secs_f64();
    let out = default_path(cli.out.clone(), "HUSK_BENCH_OUT", "husk-bench-out");
    if (cli.json.is_none() || cli.plot.is_none()) && !out.is_dir() {
        if let Err(e) = std::fs::create_dir_all(&out) {
            rep.errors.push(format!("{}: {e}", out.display()));
        }
    }
    let json = cli
        .json
        .clone()
        .unwrap_or_else(|| out.join("husk-bench.json"));
    let svg = cli
        .plot
        .clone()
        .unwrap_or_else(|| out.join("husk-bench.svg"));
    {
        let p = &svg;
        match plot::draw(
            p,
            rep.boot.as_ref(),
            rep.start.as_ref(),
            rep.density.as_ref(),
        ) {
            Ok(()) => println!("plot: {}", p.display()),
            Err(e) => rep.errors.push(format!("plot {}: {e}", p.display())),
        }
    }
    {
        let p = &json;
        let text = serde_json::to_vec_pretty(&rep).map_err(|e| e.to_string())?;
        match std::fs::write(p, text) {
            Ok(()) => println!("json: {}", p.display()),
            Err(e) => rep.errors.push(format!("json {}: {e}", p.display())),
        }
    }
    if !rep.errors.is_empty() {
        println!("errors:");
        for e in &rep.errors {
            println!("  {e}");
        }
        exit = 1;
    }
    println!("husk-bench: done in {:.0} s", rep.elapsed_s);
    Ok(exit)
}

// --- sections ---------------------------------------------------------------

/// husk-vmm's own start-up, exec to the first KVM_RUN, with no guest.
#[derive(Serialize)]
pub struct StartupReport {
    runs: usize,
    /// Where it was measured: the KVM module and whether inside the lab.
    measured_on: String,
    cpu_ms: Option<Stats>,
    wall_ms: Option<Stats>,
    phases: Vec<PhaseStats>,
    /// Per run: (CPU, wall) ms at the first KVM_RUN.
    samples: Vec<(f64, f64)>,
    failed_runs: Vec<String>,
    error: Option<String>,
}

/// Where figures are measured, in words.
fn measured_on(h: &HostInfo) -> String {
    if h.nested_lab {
        format!("the nested lab's L1 machine ({}, under TCG)", h.kvm)
    } else {
        format!("this host ({}, {} CPUs)", h.kvm, h.cpus)
    }
}

/// `husk-vmm run --startup-only` `runs` times: set-up with the bench's
/// kernel, initrd and command line, stopped right before the first KVM_RUN.
fn startup_section(
    cli: &Cli,
    spec: &BootSpec,
    runs: usize,
    tmp: &Path,
    host: &HostInfo,
) -> StartupReport {
    eprintln!("husk-bench: startup: {runs} runs of husk-vmm run --startup-only");
    let uds = tmp.join("startup.vsock");
    let log = tmp.join("startup.log");
    let one = || -> Result<(f64, f64, Vec<vmms::Phase>), String> {
        let mut vmm = vmms::spawn_husk(&cli.husk_vmm, spec, &uds, &log, true)?;
        let st = vmm.wait(spec.timeout)?;
        if !st.success() {
            return Err(format!("husk-vmm exited {st}: {}", vmm.log_tail()));
        }
        let phases = vmms::parse_phases(&std::fs::read_to_string(&log).unwrap_or_default());
        let (wall, cpu) = vmms::first_kvm_run(&phases)
            .ok_or_else(|| format!("no `first KVM_RUN` timing line: {}", vmm.log_tail()))?;
        Ok((cpu, wall, phases))
    };
    let (mut samples, mut phases, mut failed, mut error) = (vec![], vec![], vec![], None);
    for i in 0..runs {
        match sample_retry(i + 1, &mut failed, one) {
            Ok((cpu, wall, p)) => {
                samples.push((cpu, wall));
                phases.push(p);
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    StartupReport {
        runs,
        measured_on: measured_on(host),
        cpu_ms: stats(samples.iter().map(|s| s.0).collect()),
        wall_ms: stats(samples.iter().map(|s| s.1).collect()),
        phases: phase_stats(&phases.iter().map(|p| &p[..]).collect::<Vec<_>>()),
        samples,
        failed_runs: failed,
        error,
    }
}

fn print_startup(s: &StartupReport) {
    println!(
        "\n== VMM start-up: husk-vmm exec -> first KVM_RUN, no guest ({} runs, `husk-vmm run --startup-only`; on {})",
        s.runs, s.measured_on
    );
    println!(
        "CPU {} ms, wall {} ms (min / median / p90; goal CPU <= {GOAL_FIRST_RUN_CPU_MS} ms on hardware)",
        triple(s.cpu_ms, 1.0),
        triple(s.wall_ms, 1.0)
    );
    print_phases(&s.phases);
    print_retried("husk-vmm --startup-only", "run", &s.failed_runs);
    if let Some(e) = &s.error {
        println!("startup: {e}");
    }
}

/// The phase table under a start-up figure.
fn print_phases(phases: &[PhaseStats]) {
    if phases.is_empty() {
        return;
    }
    println!("  start-up phases (median, ms: CPU spent in the phase / CPU and wall at its end):");
    let mut prev = 0.0;
    for p in phases {
        println!(
            "    {:<36} {:>8.1}   {:>8.1} {:>8.1}",
            p.what,
            p.cpu_ms - prev,
            p.cpu_ms,
            p.wall_ms
        );
        prev = p.cpu_ms;
    }
}

fn boot_section(cli: &Cli, spec: &BootSpec, runs: usize, tmp: &Path) -> BootReport {
    eprintln!("husk-bench: boot: {runs} boots each of husk-vmm and qemu-microvm, interleaved");
    let (mut husk, mut qemu) = (Vec::new(), Vec::new());
    let (mut husk_err, mut qemu_err) = (None, None);
    let (mut husk_failed, mut qemu_failed) = (Vec::new(), Vec::new());
    let mut cid = 1000;
    for i in 0..runs {
        let mut line = format!("  run {:>2}:", i + 1);
        if husk_err.is_none() {
            match sample_retry(i + 1, &mut husk_failed, || {
                vmms::husk_sample(&cli.husk_vmm, spec, tmp)
            }) {
                Ok(s) => {
                    line += &format!(" husk-vmm {:>8.1} ms", s.ready_ms);
                    husk.push(s);
                }
                Err(e) => husk_err = Some(e),
            }
        }
        if qemu_err.is_none() {
            match sample_retry(i + 1, &mut qemu_failed, || {
                cid += 1;
                vmms::qemu_sample(&cli.qemu, spec, cid, tmp)
            }) {
                Ok(s) => {
                    line += &format!("   qemu-microvm {:>8.1} ms", s.ready_ms);
                    qemu.push(s);
                }
                Err(e) => qemu_err = Some(e),
            }
        }
        eprintln!("{line}");
        if husk_err.is_some() && qemu_err.is_some() {
            break;
        }
    }
    let pair_ratio = pair_ratios(
        &husk.iter().map(|s| s.ready_ms).collect::<Vec<_>>(),
        &qemu.iter().map(|s| s.ready_ms).collect::<Vec<_>>(),
    );
    let husk = VmmResult::new("husk-vmm", husk, husk_failed, husk_err);
    let qemu = VmmResult::new("qemu-microvm", qemu, qemu_failed, qemu_err);
    let m = |v: &VmmResult, f: fn(&Stats) -> f64| v.ready_ms.as_ref().map(f);
    BootReport {
        runs,
        vcpus: spec.vcpus,
        memory_mib: spec.memory_mib,
        kernel: spec.kernel.clone(),
        initrd: spec.initrd.clone(),
        cmdline: vmms::CMDLINE,
        ratio_min: ratio(m(&husk, |s| s.min), m(&qemu, |s| s.min)),
        ratio_median: ratio(m(&husk, |s| s.median), m(&qemu, |s| s.median)),
        pair_ratio,
        vmms: vec![husk, qemu],
    }
}

/// Stats of `husk[i] / qemu[i]` over the runs both have (runs are
/// interleaved, so run i of each saw the same moment's noise).
fn pair_ratios(husk: &[f64], qemu: &[f64]) -> Option<Stats> {
    stats(
        husk.iter()
            .zip(qemu)
            .filter_map(|(h, q)| ratio(Some(*h), Some(*q)))
            .collect(),
    )
}

fn start_section(
    runtimes: &[Runtime],
    bundle: &Path,
    runs: usize,
    cli: &Cli,
    tmp: &Path,
) -> StartReport {
    let found: Vec<&Runtime> = runtimes.iter().filter(|r| r.bin.is_some()).collect();
    eprintln!(
        "husk-bench: start: {runs} runs each of {} (`RUNTIME --root DIR run --bundle B ID`, busybox {})",
        if found.is_empty() {
            "no runtime".to_string()
        } else {
            found.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
        },
        start::WORKLOAD.join(" ")
    );
    let timeout = Duration::from_secs(cli.timeout);
    let mut results: Vec<RuntimeResult> = runtimes
        .iter()
        .map(|r| RuntimeResult {
            name: r.name.clone(),
            bin: r.bin.clone(),
            status: if r.bin.is_some() {
                "ok".into()
            } else {
                format!("skipped: {}", r.missing_reason())
            },
            samples: Vec::new(),
            failed_runs: Vec::new(),
            first_byte_ms: None,
            exit_ms: None,
        })
        .collect();
    for i in 0..runs {
        if !results.iter().any(|r| r.status == "ok") {
            break;
        }
        let mut line = format!("  run {:>2}:", i + 1);
        for (r, res) in runtimes.iter().zip(results.iter_mut()) {
            let Some(bin) = &r.bin else { continue };
            if res.status != "ok" {
                continue;
            }
            let root = tmp.join(format!("root-{}", r.name));
            let _ = std::fs::create_dir_all(&root);
            let id = format!("bench-{}-{}-{i}", r.name, std::process::id());
            let errlog = tmp.join(format!("{}.err", r.name));
            let dlog = tmp.join("husk-debug.log");
            let dlog = (r.name == "husk").then_some(dlog.as_path());
            let mut sample = start::start_sample(bin, &root, bundle, &id, timeout, &errlog, dlog);
            if let Err(e) = &sample {
                // A failed run is reported and retried once, as boots are.
                eprintln!("  run {:>2}: {} failed, retrying once: {e}", i + 1, r.name);
                res.failed_runs.push(format!("run {}: {e}", i + 1));
                start::force_delete(bin, &root, &id);
                let id = format!("{id}-retry");
                sample = start::start_sample(bin, &root, bundle, &id, timeout, &errlog, dlog)
                    .inspect_err(|_| start::force_delete(bin, &root, &id));
            }
            match sample {
                Ok(s) => {
                    line += &format!("  {} {:.1}/{:.1} ms", r.name, s.first_byte_ms, s.exit_ms);
                    res.samples.push(s);
                }
                Err(e) => {
                    line += &format!("  {} FAILED", r.name);
                    res.status = format!("failed: run {}: failed twice in a row: {e}", i + 1);
                }
            }
        }
        eprintln!("{line}");
    }
    for r in &mut results {
        r.first_byte_ms = stats(r.samples.iter().map(|s| s.first_byte_ms).collect());
        r.exit_ms = stats(r.samples.iter().map(|s| s.exit_ms).collect());
    }
    let med = |name: &str, f: fn(&RuntimeResult) -> Option<Stats>| {
        results
            .iter()
            .find(|r| r.name == name)
            .and_then(f)
            .map(|s| s.median)
    };
    let ratios = ["crun", "runc"]
        .iter()
        .map(|peer| {
            (
                format!("husk/{peer}"),
                ratio(
                    med("husk", |r| r.first_byte_ms),
                    med(peer, |r| r.first_byte_ms),
                ),
                ratio(med("husk", |r| r.exit_ms), med(peer, |r| r.exit_ms)),
            )
        })
        .collect();
    StartReport {
        runs,
        workload: start::WORKLOAD.to_vec(),
        runtimes: results,
        ratios,
    }
}

#[allow(clippy::too_many_arguments)]
fn overhead_section(
    cli: &Cli,
    spec: &BootSpec,
    runs: usize,
    boot: Option<&BootReport>,
    start: Option<&StartReport>,
    runtimes: &[Runtime],
    bundles: Option<&(PathBuf, PathBuf)>,
    tmp: &Path,
    errors: &mut Vec<String>,
) -> OverheadReport {
    // Bare VMs: from the boot samples, or boots of husk-vmm alone.
    let own;
    let vmm_results: &[VmmResult] = match boot {
        Some(b) => &b.vmms,
        None => {
            eprintln!("husk-bench: overhead: {runs} boots of husk-vmm");
            let mut v = Vec::new();
            let mut err = None;
            let mut failed = Vec::new();
            for i in 0..runs {
                match sample_retry(i + 1, &mut failed, || {
                    vmms::husk_sample(&cli.husk_vmm, spec, tmp)
                }) {
                    Ok(s) => v.push(s),
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = &err {
                errors.push(format!("overhead husk-vmm: {e}"));
            }
            own = [VmmResult::new("husk-vmm", v, failed, err)];
            &own
        }
    };
    let vmms = vmm_results
        .iter()
        .map(|v| VmmOverhead {
            name: v.name.clone(),
            host_pss_kib: v.host_pss_kib,
            guest_ram_pss_kib: v.guest_ram_pss_kib,
            guest_mem_total_kib: v.samples.first().map(|s| s.guest_mem_total_kib),
            guest_kernel_reserved_kib: v
                .samples
                .first()
                .map(|s| (u64::from(spec.memory_mib) << 10).saturating_sub(s.guest_mem_total_kib)),
            first_kvm_run_cpu_ms: v.first_kvm_run_cpu_ms,
            first_kvm_run_wall_ms: v.first_kvm_run_wall_ms,
            vmm_cpu_ms: v.vmm_cpu_ms,
            guest_cpu_ms: v.guest_cpu_ms,
            vmm_own_cpu_ms: v.vmm_own_cpu_ms,
            phases: v.phases.clone(),
        })
        .collect();
    let mut per_runtime = Vec::new();
    if let Some((_, sleep)) = bundles {
        for r in runtimes {
            let Some(bin) = &r.bin else {
                per_runtime.push((
                    r.name.clone(),
                    Err(format!("skipped: {}", r.missing_reason())),
                ));
                continue;
            };
            // A runtime that could not run one container in `start` would
            // only fail again here, after its timeout.
            if let Some(st) = start.and_then(|s| s.runtimes.iter().find(|x| x.name == r.name)) {
                if st.status.starts_with("failed") {
                    per_runtime.push((r.name.clone(), Err("skipped: it failed in `start`".into())));
                    continue;
                }
            }
            eprintln!(
                "husk-bench: overhead: {} create + start, then delete",
                r.name
            );
            let root = tmp.join(format!("root-{}", r.name));
            let _ = std::fs::create_dir_all(&root);
            let id = format!("bench-mem-{}-{}", r.name, std::process::id());
            let res = start::sandbox_mem(bin, &root, sleep, &id, Duration::from_secs(cli.timeout));
            match &res {
                Err(e) => errors.push(format!("overhead {}: {e}", r.name)),
                Ok(m) if !m.left_after_delete.is_empty() => errors.push(format!(
                    "overhead {}: processes left after delete --force: {}",
                    r.name,
                    m.left_after_delete.join(", ")
                )),
                Ok(_) => {}
            }
            per_runtime.push((r.name.clone(), res));
        }
    }
    OverheadReport {
        vmms,
        runtimes: per_runtime,
    }
}

fn density_section(
    cli: &Cli,
    spec: &BootSpec,
    ks: &[usize],
    per_sandbox_kib: f64,
    tmp: &Path,
) -> DensityReport {
    let mut results = Vec::new();
    for &k in ks {
        let avail = mem::meminfo_kib("MemAvailable");
        if let Err(e) = density::fits(k, per_sandbox_kib, avail) {
            eprintln!("husk-bench: density: K={k} skipped: {e}");
            results.push((k, Err(format!("skipped: {e}"))));
            continue;
        }
        eprintln!("husk-bench: density: {k} husk-vmm sandboxes at once");
        let spec_k = BootSpec {
            timeout: density::timeout_for(k, spec.timeout),
            ..spec.clone()
        };
        let mut r = density::run(&cli.husk_vmm, &spec_k, k, tmp);
        // As with single boots: a round in which a sandbox failed is
        // reported and run once more; the second round's result stands.
        if let Ok(d) = &r {
            if !d.errors.is_empty() {
                let failed = format!("{}/{k} ready: {}", d.ready, d.errors.join("; "));
                eprintln!("  K={k}: a sandbox failed, running the round once more: {failed}");
                r = density::run(&cli.husk_vmm, &spec_k, k, tmp).map(|mut d2| {
                    d2.failed_rounds.push(failed);
                    d2
                });
            }
        }
        match &r {
            Ok(d) => eprintln!(
                "  K={k}: {} ready in {:.1} s, all stopped in {:.1} s",
                d.ready,
                d.all_ready_ms / 1e3,
                d.all_stopped_ms / 1e3
            ),
            Err(e) => eprintln!("  K={k}: {e}"),
        }
        results.push((k, r));
    }
    DensityReport {
        memory_mib: spec.memory_mib,
        vcpus: spec.vcpus,
        results,
    }
}

fn goals(rep: &Report) -> Vec<Goal> {
    let mut g = Vec::new();
    let mut add = |what: &str, value: Option<f64>, goal: f64, unit: &'static str| {
        g.push(Goal {
            what: what.into(),
            value,
            goal,
            unit,
            met: value.map(|v| v <= goal),
        })
    };
    add(
        "boot-to-agent husk-vmm/qemu-microvm (median)",
        rep.boot.as_ref().and_then(|b| b.ratio_median),
        GOAL_BOOT_RATIO,
        "x",
    );
    let husk = rep
        .overhead
        .as_ref()
        .and_then(|o| o.vmms.iter().find(|v| v.name == "husk-vmm"));
    add(
        "husk-vmm host PSS outside guest RAM (median)",
        husk.and_then(|h| h.host_pss_kib).map(|s| s.median / 1024.0),
        GOAL_HOST_PSS_MIB,
        "MiB",
    );
    // The start-up section's figure (more runs, no guest competing for the
    // CPU) where there is one, else the overhead section's.
    add(
        "husk-vmm exec -> first KVM_RUN, CPU (median)",
        rep.startup
            .as_ref()
            .and_then(|s| s.cpu_ms)
            .or_else(|| husk.and_then(|h| h.first_kvm_run_cpu_ms))
            .map(|s| s.median),
        GOAL_FIRST_RUN_CPU_MS,
        "ms",
    );
    g
}

// --- tables -----------------------------------------------------------------

fn f1(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

fn f2(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

/// "min / median / p90" of `s` scaled by `scale`.
fn triple(s: Option<Stats>, scale: f64) -> String {
    match s {
        Some(s) => format!(
            "{:.1} / {:.1} / {:.1}",
            s.min * scale,
            s.median * scale,
            s.p90 * scale
        ),
        None => "-".into(),
    }
}

/// One line for the samples of `name` that failed and were retried once.
fn print_retried(name: &str, what: &str, failed: &[String]) {
    if let Some(first) = failed.first() {
        println!(
            "{name}: {} failed {what}(s), each retried once; first: {first}",
            failed.len()
        );
    }
}

fn print_boot(b: &BootReport) {
    println!();
    println!(
        "== VM boot: spawn -> agent Ping answer, ms ({} boots each; {} vCPU, {} MiB; kernel {}, initrd {})",
        b.runs,
        b.vcpus,
        b.memory_mib,
        b.kernel.display(),
        b.initrd.display()
    );
    println!(
        "{:<14} {:>4} {:>9} {:>9} {:>9}   {:>14}",
        "", "n", "min", "median", "p90", "guest uptime"
    );
    for v in &b.vmms {
        match (&v.ready_ms, &v.error) {
            (Some(s), _) => println!(
                "{:<14} {:>4} {:>9.1} {:>9.1} {:>9.1}   {:>14}{}",
                v.name,
                s.n,
                s.min,
                s.median,
                s.p90,
                f1(v.guest_uptime_ms.map(|s| s.median)),
                v.error
                    .as_ref()
                    .map(|e| format!("   (stopped: {e})"))
                    .unwrap_or_default()
            ),
            (None, Some(e)) => println!("{:<14} failed: {e}", v.name),
            (None, None) => println!("{:<14} no samples", v.name),
        }
    }
    for v in &b.vmms {
        print_retried(&v.name, "boot", &v.failed_runs);
    }
    println!(
        "ratio husk-vmm/qemu-microvm: min {}, median {} (goal <= {GOAL_BOOT_RATIO:.2})",
        f2(b.ratio_min),
        f2(b.ratio_median)
    );
    if let Some(p) = &b.pair_ratio {
        println!(
            "  per interleaved pair (husk run i / QEMU run i, {} pairs): min {:.2}, median {:.2}, p90 {:.2}, max {:.2}",
            p.n, p.min, p.median, p.p90, p.max
        );
    }
}

fn print_start(s: &StartReport) {
    println!();
    println!(
        "== Container start: spawn `RUNTIME run` -> first stdout byte / -> exit, ms ({} runs each; busybox `{}`)",
        s.runs,
        s.workload.join(" ")
    );
    println!(
        "{:<6} {:>4}   {:>26}   {:>26}",
        "", "n", "first byte min/median/p90", "exit min/median/p90"
    );
    for r in &s.runtimes {
        if r.samples.is_empty() {
            println!("{:<6} {}", r.name, r.status);
            continue;
        }
        println!(
            "{:<6} {:>4}   {:>26}   {:>26}{}",
            r.name,
            r.samples.len(),
            triple(r.first_byte_ms, 1.0),
            triple(r.exit_ms, 1.0),
            if r.status == "ok" {
                String::new()
            } else {
                format!("   ({})", r.status)
            }
        );
    }
    for r in &s.runtimes {
        print_retried(&r.name, "run", &r.failed_runs);
    }
    if let Some(h) = s.runtimes.iter().find(|r| r.name == "husk") {
        print_husk_phases(h);
    }
    for (name, fb, ex) in &s.ratios {
        println!(
            "ratio {name} (median): first byte {}, exit {}",
            f2(*fb),
            f2(*ex)
        );
    }
}

/// Where husk's start goes: medians of the phases (`husk --debug`), in ms
/// since spawn, and the steps between them.
fn print_husk_phases(r: &RuntimeResult) {
    let ph: Vec<(start::HuskPhases, f64)> = r
        .samples
        .iter()
        .filter_map(|s| Some((s.husk?, s.first_byte_ms)))
        .collect();
    if ph.is_empty() {
        return;
    }
    let med = |f: &dyn Fn(&(start::HuskPhases, f64)) -> f64| {
        stats(ph.iter().map(f).collect()).map_or(f64::NAN, |s| s.median)
    };
    let at = [
        ("monitor began", med(&|p| p.0.monitor_ms)),
        ("husk-vmm spawned", med(&|p| p.0.vmm_spawned_ms)),
        ("agent ready", med(&|p| p.0.agent_ready_ms)),
        ("created", med(&|p| p.0.created_ms)),
        ("started", med(&|p| p.0.started_ms)),
        ("first byte", med(&|p| p.1)),
    ];
    println!(
        "husk's start, median ms since spawn ({} runs, `husk --debug`): {}",
        ph.len(),
        at.iter()
            .map(|(n, v)| format!("{n} {v:.0}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!(
        "  steps (median): checks {:.0}, virtiofsd + husk-vmm spawned {:.0}, boot to agent ready {:.0}, \
         create {:.0}, start {:.0}, start to first byte {:.0}",
        med(&|p| p.0.monitor_ms),
        med(&|p| p.0.vmm_spawned_ms - p.0.monitor_ms),
        med(&|p| p.0.agent_ready_ms - p.0.vmm_spawned_ms),
        med(&|p| p.0.created_ms - p.0.agent_ready_ms),
        med(&|p| p.0.started_ms - p.0.created_ms),
        med(&|p| p.1 - p.0.started_ms),
    );
}

fn print_overhead(o: &OverheadReport) {
    println!();
    println!("== Overhead per sandbox (bare VMs at agent-ready; PSS in KiB, min / median / p90)");
    println!(
        "{:<14} {:>26}   {:>26}   {:>14}   {:>15}",
        "",
        "host PSS outside guest RAM",
        "guest RAM touched (PSS)",
        "guest MemTotal",
        "kernel reserved"
    );
    let kib = |v: Option<u64>| v.map_or_else(|| "-".into(), |k| format!("{k}"));
    for v in &o.vmms {
        println!(
            "{:<14} {:>26}   {:>26}   {:>14}   {:>15}",
            v.name,
            triple(v.host_pss_kib, 1.0),
            triple(v.guest_ram_pss_kib, 1.0),
            kib(v.guest_mem_total_kib),
            kib(v.guest_kernel_reserved_kib)
        );
    }
    println!("VMM process CPU at agent-ready, ms (min / median / p90):");
    println!(
        "{:<14} {:>26}   {:>26}   {:>26}",
        "", "all threads", "of which in the guest", "VMM's own"
    );
    for v in &o.vmms {
        println!(
            "{:<14} {:>26}   {:>26}   {:>26}",
            v.name,
            triple(v.vmm_cpu_ms, 1.0),
            triple(v.guest_cpu_ms, 1.0),
            triple(v.vmm_own_cpu_ms, 1.0)
        );
    }
    if let [a, b] = &o.vmms[..] {
        println!(
            "ratio {}/{} of the VMM's own CPU (median): {}",
            a.name,
            b.name,
            f2(ratio(
                a.vmm_own_cpu_ms.map(|s| s.median),
                b.vmm_own_cpu_ms.map(|s| s.median)
            ))
        );
    }
    for v in &o.vmms {
        if v.first_kvm_run_cpu_ms.is_some() {
            println!(
                "{} exec -> first KVM_RUN: CPU {} ms, wall {} ms (min / median / p90; goal CPU <= {GOAL_FIRST_RUN_CPU_MS} ms on hardware)",
                v.name,
                triple(v.first_kvm_run_cpu_ms, 1.0),
                triple(v.first_kvm_run_wall_ms, 1.0)
            );
        }
        print_phases(&v.phases);
    }
    if o.runtimes.is_empty() {
        return;
    }
    println!("host processes a runtime leaves per running container (`create` + `start` of busybox `sleep`), PSS KiB:");
    for (name, r) in &o.runtimes {
        match r {
            Ok(m) => {
                let procs: Vec<String> = m
                    .processes
                    .iter()
                    .map(|p| {
                        if p.guest_ram_pss_kib > 0 {
                            format!(
                                "{} {} (+{} guest RAM)",
                                p.comm,
                                p.host_pss_kib(),
                                p.guest_ram_pss_kib
                            )
                        } else {
                            format!("{} {}", p.comm, p.host_pss_kib())
                        }
                    })
                    .collect();
                println!(
                    "  {:<6} {:>6} KiB in {} process(es): {}; create+start {:.0} ms",
                    name,
                    m.host_pss_kib,
                    m.processes.len(),
                    procs.join(", "),
                    m.create_start_ms
                );
            }
            Err(e) if e.starts_with("skipped") => println!("  {name:<6} {e}"),
            Err(e) => println!("  {name:<6} failed: {e}"),
        }
    }
}

fn print_density(d: &DensityReport) {
    println!();
    println!(
        "== Density: K husk-vmm sandboxes started at once until every agent answers ({} vCPU, {} MiB guest each)",
        d.vcpus, d.memory_mib
    );
    println!(
        "{:>4} {:>6} {:>12} {:>22} {:>16} {:>18} {:>20}",
        "K",
        "ready",
        "all ready s",
        "ready s min/med/p90",
        "VMM PSS KiB med",
        "guest RAM MiB med",
        "MemAvail drop MiB/sb"
    );
    for (k, r) in &d.results {
        match r {
            Ok(x) => {
                println!(
                    "{:>4} {:>6} {:>12.1} {:>22} {:>16} {:>18} {:>20}",
                    k,
                    format!("{}/{k}", x.ready),
                    x.all_ready_ms / 1e3,
                    triple(x.ready_ms, 1e-3),
                    f1(x.host_pss_kib.map(|s| s.median)),
                    f1(x.guest_ram_pss_kib.map(|s| s.median / 1024.0)),
                    f1(x.mem_available_drop_per_sandbox_kib.map(|v| v / 1024.0))
                );
                for e in &x.errors {
                    println!("       FAILED {e}");
                }
                for e in &x.failed_rounds {
                    println!("       an earlier round failed and was run again: {e}");
                }
            }
            Err(e) => println!("{k:>4} {e}"),
        }
    }
}

fn print_goals(goals: &[Goal], rep: &Report) {
    println!();
    println!("== Goals (figures, not tests)");
    for g in goals {
        let v = match (g.value, g.unit) {
            (Some(v), "x") => format!("{v:.2}x"),
            (Some(v), u) => format!("{v:.2} {u}"),
            (None, _) => "not measured".into(),
        };
        let goal = if g.unit == "x" {
            format!("<= {:.2}x", g.goal)
        } else {
            format!("<= {} {}", g.goal, g.unit)
        };
        let met = match g.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "-",
        };
        println!("{:<48} {:>12}   goal {:<10} {met}", g.what, v, goal);
    }
    if rep.host.nested_lab {
        println!(
            "(in the nested lab's L1 machine under TCG everything runs 20-50x slower than on \
             hardware: the ratios compare, the absolute CPU goal is for hardware)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{pair_ratios, sample_retry};

    #[test]
    fn pair_ratios_divide_run_i_by_run_i_and_stop_at_the_shorter_side() {
        let p = pair_ratios(&[100.0, 300.0, 50.0, 9.0], &[200.0, 300.0, 25.0]).unwrap();
        assert_eq!((p.n, p.min, p.median, p.max), (3, 0.5, 1.0, 2.0));
        assert!(pair_ratios(&[1.0], &[]).is_none());
        // A zero (no figure) on QEMU's side is left out, not infinite.
        assert_eq!(pair_ratios(&[1.0, 2.0], &[0.0, 4.0]).unwrap().n, 1);
    }

    #[test]
    fn a_failed_sample_is_recorded_and_retried_once() {
        let mut failed = Vec::new();
        let mut calls = 0;
        let r = sample_retry(2, &mut failed, || {
            calls += 1;
            if calls == 1 {
                Err("triple fault".to_string())
            } else {
                Ok(42)
            }
        });
        assert_eq!(r, Ok(42));
        assert_eq!(calls, 2);
        assert_eq!(failed, vec!["run 2: triple fault".to_string()]);
    }

    #[test]
    fn two_failures_in_a_row_end_the_section() {
        let mut failed = Vec::new();
        let mut calls = 0;
        let r: Result<u32, String> = sample_retry(1, &mut failed, || {
            calls += 1;
            Err(format!("boom {calls}"))
        });
        assert_eq!(r, Err("run 1: failed twice in a row: boom 2".to_string()));
        assert_eq!(calls, 2);
        assert_eq!(failed.len(), 1);
    }

    #[test]
    fn a_good_sample_is_not_retried() {
        let mut failed = Vec::new();
        let mut calls = 0;
        let r = sample_retry(1, &mut failed, || {
            calls += 1;
            Ok::<_, String>(calls)
        });
        assert_eq!(r, Ok(1));
        assert!(failed.is_empty());
    }
}
