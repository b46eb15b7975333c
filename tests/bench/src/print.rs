//! The tables husk-bench prints for each section and the goals.

use crate::report::{
    BootReport, DensityReport, Goal, NetworkReport, OverheadReport, PhaseStats, Report,
    RuntimeResult, StartReport, StartupReport, GOAL_BOOT_RATIO, GOAL_FIRST_RUN_CPU_MS,
    GOAL_NET_RATIO,
};
use crate::start;
use crate::stats::{ratio, stats, Stats};

pub fn print_startup(s: &StartupReport) {
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
pub fn print_phases(phases: &[PhaseStats]) {
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

pub fn f1(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

pub fn f2(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

/// "min / median / p90" of `s` scaled by `scale`.
pub fn triple(s: Option<Stats>, scale: f64) -> String {
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
pub fn print_retried(name: &str, what: &str, failed: &[String]) {
    if let Some(first) = failed.first() {
        println!(
            "{name}: {} failed {what}(s), each retried once; first: {first}",
            failed.len()
        );
    }
}

pub fn print_boot(b: &BootReport) {
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

pub fn print_start(s: &StartReport) {
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
pub fn print_husk_phases(r: &RuntimeResult) {
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

pub fn print_overhead(o: &OverheadReport) {
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

pub fn print_density(d: &DensityReport) {
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

pub fn print_goals(goals: &[Goal], rep: &Report) {
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

pub fn print_network(n: &NetworkReport) {
    println!();
    println!(
        "== Network: TCP throughput host -> server (up) and server -> host (down), Gbit/s, {:.0} s each; \
         HTTP GET over {}",
        n.seconds, n.http_mode
    );
    println!("   HTTP via {}", n.published);
    println!(
        "{:<16} {:<9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9}",
        "", "level", "up", "down", "req/s", "p50 ms", "p99 ms", "setup ms"
    );
    for p in &n.peers {
        if p.status != "ok" {
            println!("{:<16} {:<9} {}", p.name, p.level, p.status);
            continue;
        }
        let h = p.http.as_ref();
        println!(
            "{:<16} {:<9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9}{}",
            p.name,
            p.level,
            f2(p.upload_gbps),
            f2(p.download_gbps),
            f1(h.map(|h| h.requests_per_s)),
            f2(h.and_then(|h| h.p50_ms)),
            f2(h.and_then(|h| h.p99_ms)),
            f1(p.setup_ms),
            p.note
                .as_ref()
                .map(|x| format!("   ({x})"))
                .unwrap_or_default()
        );
        if let Some(h) = h.filter(|h| h.errors > 0) {
            println!(
                "  {}: {} HTTP errors; first: {}",
                p.name,
                h.errors,
                h.first_error.as_deref().unwrap_or("?")
            );
        }
    }
    for r in &n.ratios {
        let goal = if r.what.ends_with("/qemu-microvm") && r.what.starts_with("husk") {
            format!(" (goal up, down, req/s >= {GOAL_NET_RATIO:.2})")
        } else {
            String::new()
        };
        println!(
            "ratio {}: up {}, down {}, req/s {}, p50 {}, p99 {}{goal}",
            r.what,
            f2(r.upload),
            f2(r.download),
            f2(r.requests_per_s),
            f2(r.p50),
            f2(r.p99)
        );
    }
}
