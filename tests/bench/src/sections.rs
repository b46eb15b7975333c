//! The sections of a run: each measures, prints its progress on stderr and
//! returns its part of the report.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::report::{
    measured_on, phase_stats, BootReport, DensityReport, HostInfo, OverheadReport, RuntimeResult,
    StartReport, StartupReport, VmmOverhead, VmmResult,
};
use crate::start::{self, Runtime};
use crate::stats::{ratio, stats, Stats};
use crate::vmms::{self, BootSpec};
use crate::{density, mem, Cli};

/// One boot sample; a boot that fails is recorded in `failed` and retried
/// once, so that a rare failure is reported without ending the section. A
/// second failure in a row ends it.
pub fn sample_retry<T>(
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

/// `husk-vmm run --startup-only` `runs` times: set-up with the bench's
/// kernel, initrd and command line, stopped right before the first KVM_RUN.
pub fn startup_section(
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

pub fn boot_section(cli: &Cli, spec: &BootSpec, runs: usize, tmp: &Path) -> BootReport {
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
pub fn pair_ratios(husk: &[f64], qemu: &[f64]) -> Option<Stats> {
    stats(
        husk.iter()
            .zip(qemu)
            .filter_map(|(h, q)| ratio(Some(*h), Some(*q)))
            .collect(),
    )
}

pub fn start_section(
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
pub fn overhead_section(
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

pub fn density_section(
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
