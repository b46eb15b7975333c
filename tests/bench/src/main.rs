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
//! - `density`: K sandboxes started at once until all agents answer;
//! - `network`: TCP throughput and HTTP requests/s (through a published
//!   port) to a server in the container or guest: husk, runc and crun on a
//!   bundle in a prepared network namespace; husk-vmm and QEMU microvm
//!   (vhost-net) on a tap. `husk-bench netserve` is that server.
//!
//! It prints tables and the ratios against the goals, and can write every
//! sample as JSON (`--json`) and an SVG plot (`--plot`). Figures are only
//! meaningful as ratios within one run (in the nested lab everything is
//! 20-50x slower than on hardware).

mod check;
mod density;
mod fileio;
mod mem;
mod netload;
mod netsetup;
mod network;
mod plot;
mod print;
mod report;
mod sections;
mod start;
mod stats;
mod vmms;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

use print::*;
use report::{goals, HostInfo, Report};
use sections::*;
use start::Runtime;
use vmms::{BootSpec, TempDir};

#[derive(Parser)]
#[command(
    name = "husk-bench",
    about = "husk benchmarks: VM boot, container start, overhead, density, network, file I/O",
    after_help = "Run where VMs boot: `tests/lab/run -- husk-bench --quick` (nested lab) \
                  or directly on a KVM host. Compare ratios within one run."
)]
struct Cli {
    /// Sections to run [default: all]
    #[arg(value_enum)]
    sections: Vec<Section>,
    /// Small N everywhere (boot 3, start 5, density 5,10, network 3 s per
    /// workload): minutes, not tens.
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
    /// Network: seconds per workload (upload, download, HTTP) [default:
    /// 10; --quick 3].
    #[arg(long)]
    net_seconds: Option<u64>,
    /// Network: concurrent keep-alive HTTP connections.
    #[arg(long, default_value_t = 4)]
    net_connections: usize,
    /// Network: run the husk peer once per value, with the bundle
    /// annotation `io.husk.net.backend` set to it (e.g. `virtio,vhost`);
    /// [default: once, without the annotation].
    #[arg(long, value_delimiter = ',')]
    husk_net_backends: Vec<String>,
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
    Network,
    /// File I/O in a container's rootfs: husk vs runc, ms, and husk's
    /// FUSE requests per operation.
    Io,
}

fn main() {
    // The network section's server, run inside containers and guests.
    if std::env::args().nth(1).as_deref() == Some("netserve") {
        std::process::exit(netload::serve());
    }
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

/// What a run measures: the sections asked for and their sizes.
struct Plan {
    sections: Vec<Section>,
    /// Boots per VMM (boot, overhead).
    runs: usize,
    startup_runs: usize,
    start_runs: usize,
    /// Density rounds: sandboxes at once.
    ks: Vec<usize>,
    spec: BootSpec,
}

impl Plan {
    fn new(cli: &Cli) -> Result<Plan, String> {
        let all = [
            Section::Startup,
            Section::Boot,
            Section::Start,
            Section::Overhead,
            Section::Density,
            Section::Network,
            Section::Io,
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
        let kernel = default_path(
            cli.kernel.clone(),
            "HUSK_KERNEL",
            husk_vm_config::DEFAULT_KERNEL,
        );
        let initrd = default_path(
            cli.initrd.clone(),
            "HUSK_INITRAMFS",
            husk_vm_config::DEFAULT_INITRD,
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
            kernel,
            initrd,
            vcpus: cli.vcpus,
            memory_mib: cli.memory,
            timeout: Duration::from_secs(cli.timeout),
        };
        Ok(Plan {
            sections,
            runs,
            startup_runs,
            start_runs,
            ks,
            spec,
        })
    }

    fn has(&self, s: Section) -> bool {
        self.sections.contains(&s)
    }
}

fn run(cli: Cli) -> Result<i32, String> {
    if let Some(p) = &cli.check {
        return check_report(p);
    }
    let t_start = Instant::now();
    let plan = Plan::new(&cli)?;
    let tmp = TempDir::new()?;
    let mut rep = Report {
        quick: cli.quick,
        host: host_info(),
        ..Default::default()
    };
    println!(
        "husk-bench{}: host kernel {}, {} CPUs, {:.0} MiB, kvm: {}",
        if cli.quick { " --quick" } else { "" },
        rep.host.kernel,
        rep.host.cpus,
        rep.host.mem_total_kib.unwrap_or(0) as f64 / 1024.0,
        rep.host.kvm
    );
    measure_vmms(&cli, &plan, tmp.path(), &mut rep);
    measure_containers(&cli, &plan, tmp.path(), &mut rep);
    if plan.has(Section::Density) {
        measure_density(&cli, &plan, tmp.path(), &mut rep);
    }
    if plan.has(Section::Network) {
        measure_network(&cli, &plan, tmp.path(), &mut rep);
    }
    if plan.has(Section::Io) {
        measure_io(&cli, tmp.path(), &mut rep);
    }
    rep.goals = goals(&rep);
    print_goals(&rep.goals, &rep);
    rep.elapsed_s = t_start.elapsed().as_secs_f64();
    write_outputs(&cli, &mut rep)?;
    let mut exit = 0;
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

/// The sections of bare VMs: start-up and boot.
fn measure_vmms(cli: &Cli, plan: &Plan, tmp: &Path, rep: &mut Report) {
    if plan.has(Section::Startup) {
        let s = startup_section(cli, &plan.spec, plan.startup_runs, tmp, &rep.host);
        print_startup(&s);
        if let Some(e) = &s.error {
            rep.errors.push(format!("startup: {e}"));
        }
        rep.startup = Some(s);
    }
    if plan.has(Section::Boot) {
        let b = boot_section(cli, &plan.spec, plan.runs, tmp);
        print_boot(&b);
        for v in &b.vmms {
            if let Some(e) = &v.error {
                rep.errors.push(format!("boot {}: {e}", v.name));
            }
        }
        rep.boot = Some(b);
    }
}

/// The sections that run containers (start, and overhead, which also
/// takes the boot samples).
fn measure_containers(cli: &Cli, plan: &Plan, tmp: &Path, rep: &mut Report) {
    let runtimes = [
        Runtime::find("husk", cli.husk.as_deref()),
        Runtime::find("crun", cli.crun.as_deref()),
        Runtime::find("runc", cli.runc.as_deref()),
    ];
    let wants_containers = plan.has(Section::Start) || plan.has(Section::Overhead);
    let bundles = if wants_containers {
        container_bundles(cli, &runtimes, tmp, &mut rep.errors)
    } else {
        None
    };
    if plan.has(Section::Start) {
        if let Some((echo, _)) = &bundles {
            let s = start_section(&runtimes, echo, plan.start_runs, cli, tmp);
            print_start(&s);
            for r in &s.runtimes {
                if r.status.starts_with("failed") {
                    rep.errors.push(format!("start {}: {}", r.name, r.status));
                }
            }
            rep.start = Some(s);
        }
    }
    if plan.has(Section::Overhead) {
        let o = overhead_section(
            cli,
            &plan.spec,
            plan.runs,
            rep.boot.as_ref(),
            rep.start.as_ref(),
            &runtimes,
            bundles.as_ref(),
            tmp,
            &mut rep.errors,
        );
        print_overhead(&o);
        rep.overhead = Some(o);
    }
}

/// The file I/O section: husk and runc on the same data set.
fn measure_io(cli: &Cli, tmp: &Path, rep: &mut Report) {
    let (size, runs) = if cli.quick {
        (fileio::IoSize::QUICK, 1)
    } else {
        (fileio::IoSize::FULL, 2)
    };
    let io = fileio::io_section(
        &Runtime::find("husk", cli.husk.as_deref()),
        &Runtime::find("runc", cli.runc.as_deref()),
        &busybox_path(cli),
        &size,
        runs,
        Duration::from_secs(cli.timeout.max(600)),
        tmp,
    );
    fileio::print_io(&io);
    rep.errors.extend(io.errors.iter().cloned());
    rep.io = Some(io);
}

/// Says which runtimes are missing and makes the busybox bundles for start
/// (`echo`) and overhead (`sleep`).
fn container_bundles(
    cli: &Cli,
    runtimes: &[Runtime],
    tmp: &Path,
    errors: &mut Vec<String>,
) -> Option<(PathBuf, PathBuf)> {
    let missing: Vec<&Runtime> = runtimes.iter().filter(|r| r.bin.is_none()).collect();
    for r in &missing {
        eprintln!("husk-bench: {}: {}", r.name, r.missing_reason());
    }
    if !missing.is_empty() && !cli.allow_missing {
        errors.push(format!(
            "runtimes missing: {} (--allow-missing to accept)",
            missing
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let busybox = busybox_path(cli);
    let echo = tmp.join("bundle-echo");
    let sleep = tmp.join("bundle-sleep");
    match start::make_bundle(&echo, &busybox, start::WORKLOAD)
        .and_then(|()| start::make_bundle(&sleep, &busybox, &["sleep", "600"]))
    {
        Ok(()) => Some((echo, sleep)),
        Err(e) => {
            errors.push(format!("busybox bundle: {e}"));
            None
        }
    }
}

fn measure_density(cli: &Cli, plan: &Plan, tmp: &Path, rep: &mut Report) {
    let per_sandbox_kib = rep
        .boot
        .as_ref()
        .and_then(|b| b.vmms.first())
        .and_then(|v| v.guest_ram_pss_kib.zip(v.host_pss_kib))
        .map(|(g, h)| g.max + h.max)
        .unwrap_or(64.0 * 1024.0);
    let d = density_section(cli, &plan.spec, &plan.ks, per_sandbox_kib, tmp);
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

fn measure_network(cli: &Cli, plan: &Plan, tmp: &Path, rep: &mut Report) {
    let runtimes = [
        Runtime::find("husk", cli.husk.as_deref()),
        Runtime::find("crun", cli.crun.as_deref()),
        Runtime::find("runc", cli.runc.as_deref()),
    ];
    let busybox = busybox_path(cli);
    let inputs = network::NetInputs {
        runtimes: &runtimes,
        husk_vmm: &cli.husk_vmm,
        qemu: &cli.qemu,
        busybox: &busybox,
        spec: &plan.spec,
    };
    let np = network::NetPlan {
        secs: Duration::from_secs(cli.net_seconds.unwrap_or(if cli.quick { 3 } else { 10 })),
        connections: cli.net_connections.max(1),
        budget: Duration::from_secs(if cli.quick { 120 } else { 300 }),
        backends: cli.husk_net_backends.clone(),
        timeout: Duration::from_secs(cli.timeout),
    };
    let n = network::network_section(&inputs, &np, tmp);
    print_network(&n);
    for p in &n.peers {
        if p.status.starts_with("failed") {
            rep.errors.push(format!("network {}: {}", p.name, p.status));
        }
    }
    rep.network = Some(n);
}

fn busybox_path(cli: &Cli) -> PathBuf {
    cli.busybox
        .clone()
        .or_else(|| mem::which("busybox"))
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

/// Writes the plot and the JSON report (`--out`, or `--plot`/`--json`).
fn write_outputs(cli: &Cli, rep: &mut Report) -> Result<(), String> {
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
    match plot::draw(
        &svg,
        rep.boot.as_ref(),
        rep.start.as_ref(),
        rep.density.as_ref(),
    ) {
        Ok(()) => println!("plot: {}", svg.display()),
        Err(e) => rep.errors.push(format!("plot {}: {e}", svg.display())),
    }
    let text = serde_json::to_vec_pretty(&rep).map_err(|e| e.to_string())?;
    match std::fs::write(&json, text) {
        Ok(()) => println!("json: {}", json.display()),
        Err(e) => rep.errors.push(format!("json {}: {e}", json.display())),
    }
    Ok(())
}
