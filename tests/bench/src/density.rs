//! Density: K husk-vmm sandboxes started at once, until every agent has
//! answered a Ping; total time and what each costs the host.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::mem;
use crate::stats::{stats, Stats};
use crate::vmms::{self, BootSpec};

#[derive(Serialize, Clone, Debug)]
pub struct DensityResult {
    pub k: usize,
    /// Sandboxes whose agent answered (the figures below are theirs).
    pub ready: usize,
    /// Why the others did not, or did not stop cleanly.
    pub errors: Vec<String>,
    /// Spawn of the first VMM to the last agent's answer.
    pub all_ready_ms: f64,
    /// Each sandbox's spawn-to-ready time.
    pub ready_ms: Option<Stats>,
    /// Per sandbox, with all K running: husk-vmm PSS outside guest RAM.
    pub host_pss_kib: Option<Stats>,
    /// Per sandbox: PSS of its guest RAM (memory the guest touched).
    pub guest_ram_pss_kib: Option<Stats>,
    /// Drop of the host's MemAvailable from before the first spawn to all
    /// ready, divided by K: everything a sandbox costs, kernel side
    /// included (KVM's page tables, vhost, page cache for the images).
    pub mem_available_drop_per_sandbox_kib: Option<f64>,
    /// Spawn of the first VMM to the exit of the last after Shutdown.
    pub all_stopped_ms: f64,
    /// Earlier rounds at this K in which a sandbox failed: such a round is
    /// reported here and run once more (see `density_section`).
    pub failed_rounds: Vec<String>,
}

/// Boots `k` sandboxes at once and shuts them down again.
pub fn run(bin: &Path, spec: &BootSpec, k: usize, tmp: &Path) -> Result<DensityResult, String> {
    let avail0 = mem::meminfo_kib("MemAvailable");
    let t0 = Instant::now();
    let mut vmms = Vec::with_capacity(k);
    for i in 0..k {
        let uds = tmp.join(format!("d{k}-{i}.vsock"));
        let log = tmp.join(format!("d{k}-{i}.log"));
        let vmm = vmms::spawn_husk(bin, spec, &uds, &log, false)
            .map_err(|e| format!("sandbox {}: {e}", i + 1))?;
        vmms.push((vmm, uds));
    }
    let timeout = spec.timeout;
    let waiters: Vec<_> = vmms
        .into_iter()
        .enumerate()
        .map(|(i, (mut vmm, uds))| {
            std::thread::Builder::new()
                .name(format!("sandbox{i}"))
                .spawn(move || {
                    let r = vmms::husk_wait_agent(&mut vmm, &uds, t0, timeout);
                    (vmm, r)
                })
                .map_err(|e| format!("thread: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut ready = Vec::with_capacity(k);
    let mut errors = Vec::new();
    for (i, w) in waiters.into_iter().enumerate() {
        match w.join() {
            Ok((vmm, Ok((client, _info, at)))) => ready.push((vmm, client, at)),
            Ok((_vmm, Err(e))) => errors.push(format!("sandbox {}: {e}", i + 1)),
            Err(_) => errors.push(format!("sandbox {}: waiter panicked", i + 1)),
        }
    }
    let all_ready = t0.elapsed();
    let avail1 = mem::meminfo_kib("MemAvailable");
    let mems: Vec<mem::ProcMem> = ready
        .iter()
        .filter_map(|(v, _, _)| mem::proc_mem(v.pid(), spec.guest_ram_min()).ok())
        .collect();
    let ready_ms: Vec<f64> = ready.iter().map(|r| r.2.as_secs_f64() * 1e3).collect();
    // Shut every ready sandbox down in parallel; the others were killed
    // when their waiter thread dropped them.
    let stoppers: Vec<_> = ready
        .into_iter()
        .map(|(vmm, client, _)| std::thread::spawn(move || vmms::husk_shutdown(vmm, client)))
        .collect();
    for (i, s) in stoppers.into_iter().enumerate() {
        match s.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("sandbox {} shutdown: {e}", i + 1)),
            Err(_) => errors.push(format!("sandbox {} shutdown panicked", i + 1)),
        }
    }
    let all_stopped = t0.elapsed();
    if ready_ms.is_empty() {
        errors.truncate(3);
        return Err(format!(
            "no sandbox of {k} got ready: {}",
            errors.join("; ")
        ));
    }
    Ok(DensityResult {
        k,
        ready: ready_ms.len(),
        errors,
        all_ready_ms: all_ready.as_secs_f64() * 1e3,
        ready_ms: stats(ready_ms),
        host_pss_kib: stats(mems.iter().map(|m| m.host_pss_kib() as f64).collect()),
        guest_ram_pss_kib: stats(mems.iter().map(|m| m.guest_ram_pss_kib as f64).collect()),
        mem_available_drop_per_sandbox_kib: match (avail0, avail1) {
            (Some(a), Some(b)) => Some((a as f64 - b as f64) / k as f64),
            _ => None,
        },
        all_stopped_ms: all_stopped.as_secs_f64() * 1e3,
        failed_rounds: Vec::new(),
    })
}

/// Whether `k` sandboxes of about `per_sandbox_kib` each fit in the host's
/// available memory with a 20% margin; `Err` says why not.
pub fn fits(k: usize, per_sandbox_kib: f64, available_kib: Option<u64>) -> Result<(), String> {
    let Some(avail) = available_kib else {
        return Ok(());
    };
    let need = k as f64 * per_sandbox_kib * 1.2;
    if need > avail as f64 {
        return Err(format!(
            "needs ~{:.0} MiB ({k} x {:.1} MiB + 20%), the host has {:.0} MiB available",
            need / 1024.0,
            per_sandbox_kib / 1024.0,
            avail as f64 / 1024.0
        ));
    }
    Ok(())
}

/// Bounded wait for all of `k` sandboxes: generous, since K boots share the
/// host's CPUs.
pub fn timeout_for(k: usize, one: Duration) -> Duration {
    one + Duration::from_secs(10) * u32::try_from(k).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_check() {
        assert!(fits(10, 40.0 * 1024.0, Some(3000 * 1024)).is_ok());
        let e = fits(100, 40.0 * 1024.0, Some(3000 * 1024)).unwrap_err();
        assert!(e.contains("4800 MiB"), "{e}");
        assert!(fits(100, 40.0 * 1024.0, None).is_ok());
    }
}
