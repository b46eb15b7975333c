//! What a run of husk-bench reports: the figures of each section, the
//! goals, and the JSON it writes (every field of these structs).

use std::path::PathBuf;

use serde::Serialize;

use crate::density;
use crate::netload::HttpResult;
use crate::start::{SandboxMem, StartSample};
use crate::stats::{stats, Stats};
use crate::vmms::{self, Sample};

/// The goals of the benchmark, printed next to the figures.
pub const GOAL_BOOT_RATIO: f64 = 0.5;
pub const GOAL_HOST_PSS_MIB: f64 = 5.0;
pub const GOAL_FIRST_RUN_CPU_MS: f64 = 8.0;

#[derive(Serialize, Default)]
pub struct Report {
    pub quick: bool,
    pub host: HostInfo,
    pub startup: Option<StartupReport>,
    pub boot: Option<BootReport>,
    pub start: Option<StartReport>,
    pub overhead: Option<OverheadReport>,
    pub density: Option<DensityReport>,
    pub network: Option<NetworkReport>,
    pub io: Option<crate::fileio::IoReport>,
    pub goals: Vec<Goal>,
    pub errors: Vec<String>,
    pub elapsed_s: f64,
}

#[derive(Serialize, Default)]
pub struct HostInfo {
    pub kernel: String,
    pub cpus: usize,
    pub mem_total_kib: Option<u64>,
    pub kvm: String,
    /// Inside tests/lab's L1 machine (TCG-emulated, nested KVM).
    pub nested_lab: bool,
}

#[derive(Serialize)]
pub struct VmmResult {
    pub name: String,
    pub samples: Vec<Sample>,
    pub ready_ms: Option<Stats>,
    pub guest_uptime_ms: Option<Stats>,
    pub host_pss_kib: Option<Stats>,
    pub guest_ram_pss_kib: Option<Stats>,
    pub first_kvm_run_cpu_ms: Option<Stats>,
    pub first_kvm_run_wall_ms: Option<Stats>,
    /// The VMM process's CPU at agent-ready, all threads; the part of it
    /// in the guest; the rest (the VMM's own work).
    pub vmm_cpu_ms: Option<Stats>,
    pub guest_cpu_ms: Option<Stats>,
    pub vmm_own_cpu_ms: Option<Stats>,
    /// husk-vmm start-up phases in order: median wall and CPU ms at the end
    /// of each.
    pub phases: Vec<PhaseStats>,
    /// Boots that failed and were retried once (see `sample_retry`).
    pub failed_runs: Vec<String>,
    pub error: Option<String>,
}

#[derive(Serialize, Clone, Debug)]
pub struct PhaseStats {
    pub what: String,
    pub wall_ms: f64,
    pub cpu_ms: f64,
}

/// Median end (wall, CPU) of each phase over `samples`, in the order of the
/// first sample that has phases.
pub fn phase_stats(runs: &[&[vmms::Phase]]) -> Vec<PhaseStats> {
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
    pub fn new(
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

#[derive(Serialize)]
pub struct BootReport {
    pub runs: usize,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: &'static str,
    pub vmms: Vec<VmmResult>,
    pub ratio_min: Option<f64>,
    pub ratio_median: Option<f64>,
    /// husk-vmm's boot over QEMU's in each interleaved pair (run i of
    /// each): how much the ratio moves with the host's noise.
    pub pair_ratio: Option<Stats>,
}

#[derive(Serialize)]
pub struct RuntimeResult {
    pub name: String,
    pub bin: Option<PathBuf>,
    /// "ok", "skipped: ..." or "failed: ...".
    pub status: String,
    pub samples: Vec<StartSample>,
    /// Runs that failed and were retried once (as boots are).
    pub failed_runs: Vec<String>,
    pub first_byte_ms: Option<Stats>,
    pub exit_ms: Option<Stats>,
}

#[derive(Serialize)]
pub struct StartReport {
    pub runs: usize,
    pub workload: Vec<&'static str>,
    pub runtimes: Vec<RuntimeResult>,
    /// husk/crun and husk/runc of the median first-byte and exit times.
    pub ratios: Vec<(String, Option<f64>, Option<f64>)>,
}

#[derive(Serialize)]
pub struct OverheadReport {
    /// From the boot samples (husk-vmm and QEMU, bare VMs at agent-ready).
    pub vmms: Vec<VmmOverhead>,
    /// What each runtime leaves on the host per running container.
    pub runtimes: Vec<(String, Result<SandboxMem, String>)>,
}

#[derive(Serialize)]
pub struct VmmOverhead {
    pub name: String,
    pub host_pss_kib: Option<Stats>,
    pub guest_ram_pss_kib: Option<Stats>,
    pub guest_mem_total_kib: Option<u64>,
    /// Guest RAM the guest kernel keeps for itself before MemTotal (its
    /// image, page tables, memmap): configured RAM - MemTotal.
    pub guest_kernel_reserved_kib: Option<u64>,
    pub first_kvm_run_cpu_ms: Option<Stats>,
    pub first_kvm_run_wall_ms: Option<Stats>,
    pub vmm_cpu_ms: Option<Stats>,
    pub guest_cpu_ms: Option<Stats>,
    pub vmm_own_cpu_ms: Option<Stats>,
    pub phases: Vec<PhaseStats>,
}

#[derive(Serialize)]
pub struct DensityReport {
    pub memory_mib: u32,
    pub vcpus: u32,
    pub results: Vec<(usize, Result<density::DensityResult, String>)>,
}

#[derive(Serialize)]
pub struct Goal {
    pub what: String,
    pub value: Option<f64>,
    pub goal: f64,
    pub unit: &'static str,
    pub met: Option<bool>,
}

/// The network section: per peer, TCP throughput and HTTP through the
/// published port (see `network.rs`).
#[derive(Serialize)]
pub struct NetworkReport {
    /// Each workload's length, s.
    pub seconds: f64,
    pub http_connections: usize,
    /// How the HTTP load is sent (keep-alive or not, closed loop).
    pub http_mode: String,
    /// Through which path: an iptables DNAT rule, or direct.
    pub published: String,
    pub peers: Vec<NetPeer>,
    pub ratios: Vec<NetRatio>,
    pub elapsed_s: f64,
}

/// One peer of the network section.
#[derive(Serialize, Clone, Debug)]
pub struct NetPeer {
    /// `husk`, `husk (BACKEND)`, `runc`, `crun`, `husk-vmm`, `qemu-microvm`.
    pub name: String,
    /// `container` (a runtime CLI on a bundle in a prepared netns) or
    /// `vmm` (a bare VMM on a tap, the server started through the agent).
    pub level: &'static str,
    /// "ok", "skipped: ..." or "failed: ...".
    pub status: String,
    pub note: Option<String>,
    /// Set-up began -> the server listens (container create + start, or
    /// VMM spawn, boot, network, container).
    pub setup_ms: Option<f64>,
    /// Host -> server.
    pub upload_gbps: Option<f64>,
    /// Server -> host.
    pub download_gbps: Option<f64>,
    pub http: Option<HttpResult>,
}

impl NetPeer {
    pub fn new(name: &str, container: bool) -> NetPeer {
        NetPeer {
            name: name.into(),
            level: if container { "container" } else { "vmm" },
            status: "ok".into(),
            note: None,
            setup_ms: None,
            upload_gbps: None,
            download_gbps: None,
            http: None,
        }
    }

    pub fn set(&mut self, setup_ms: f64, upload: f64, download: f64, http: HttpResult) {
        self.setup_ms = Some(setup_ms);
        self.upload_gbps = Some(upload);
        self.download_gbps = Some(download);
        self.http = Some(http);
    }
}

/// One peer's figures over another's (`what`: `A/B`). Throughput and req/s:
/// higher is better; latencies: lower is better.
#[derive(Serialize, Clone, Debug)]
pub struct NetRatio {
    pub what: String,
    pub upload: Option<f64>,
    pub download: Option<f64>,
    pub requests_per_s: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// The goal for husk's network figures over QEMU's (throughput, req/s).
pub const GOAL_NET_RATIO: f64 = 1.0;

/// husk-vmm's own start-up, exec to the first KVM_RUN, with no guest.
#[derive(Serialize)]
pub struct StartupReport {
    pub runs: usize,
    /// Where it was measured: the KVM module and whether inside the lab.
    pub measured_on: String,
    pub cpu_ms: Option<Stats>,
    pub wall_ms: Option<Stats>,
    pub phases: Vec<PhaseStats>,
    /// Per run: (CPU, wall) ms at the first KVM_RUN.
    pub samples: Vec<(f64, f64)>,
    pub failed_runs: Vec<String>,
    pub error: Option<String>,
}

/// Where figures are measured, in words.
pub fn measured_on(h: &HostInfo) -> String {
    if h.nested_lab {
        format!("the nested lab's L1 machine ({}, under TCG)", h.kvm)
    } else {
        format!("this host ({}, {} CPUs)", h.kvm, h.cpus)
    }
}

pub fn goals(rep: &Report) -> Vec<Goal> {
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
