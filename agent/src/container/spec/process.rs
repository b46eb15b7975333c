//! The process part of a spec (`process`, or an exec's process): program,
//! environment, cwd, user, capabilities, rlimits and the rest.

use std::collections::HashSet;

use oci_spec::runtime::{PosixRlimitType, Process};

use super::{abs, no_nul, path_str};
use crate::container::caps::CapSets;
use crate::container::config::{ProcessConfig, Rlimit};
use crate::container::error::SpecError;

/// The RLIMIT_* number of an rlimit type.
#[allow(clippy::unnecessary_cast)] // RLIMIT_* are c_int on musl
pub fn rlimit_resource(t: PosixRlimitType) -> u32 {
    // Every RLIMIT_* number is small and non-negative (0..16).
    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
    let n = (match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as u32;
    n
}

/// Validates a process (`process` of the spec, or an exec's); `f` is its
/// field name.
pub fn plan_process(
    p: &Process,
    f: &str,
    warnings: &mut Vec<String>,
) -> Result<ProcessConfig, SpecError> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(SpecError::invalid(
            format!("{f}.args"),
            "must name a program",
        ));
    }
    for (i, a) in args.iter().enumerate() {
        no_nul(a, &format!("{f}.args[{i}]"))?;
    }
    if args[0].is_empty() {
        return Err(SpecError::invalid(
            format!("{f}.args[0]"),
            "empty program name",
        ));
    }
    let env = p.env().clone().unwrap_or_default();
    for (i, e) in env.iter().enumerate() {
        no_nul(e, &format!("{f}.env[{i}]"))?;
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => {
                return Err(SpecError::invalid(
                    format!("{f}.env[{i}]"),
                    format!("{e:?} is not NAME=VALUE"),
                ))
            }
        }
    }
    let cwd = path_str(p.cwd(), &format!("{f}.cwd"))?.to_string();
    abs(&cwd, &format!("{f}.cwd"))?;
    let user = p.user();
    let umask = user.umask().unwrap_or(0o022);
    if umask > 0o7777 {
        return Err(SpecError::invalid(
            format!("{f}.user.umask"),
            format!("{umask:#o} is not a file mode mask"),
        ));
    }
    let additional_gids = user.additional_gids().clone().unwrap_or_default();
    if additional_gids.len() > 65536 {
        return Err(SpecError::invalid(
            format!("{f}.user.additionalGids"),
            "more than 65536 groups",
        ));
    }
    if user.username().is_some() {
        warnings.push(format!("{f}.user.username ignored (Windows only)"));
    }
    let mut caps = CapSets::from_spec(p.capabilities().as_ref())?;
    // Ambient needs permitted and inheritable; runc drops the others too.
    caps.ambient &= caps.permitted & caps.inheritable;
    let rlimits = rlimits(p, f)?;
    if let Some(adj) = p.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(SpecError::out_of_range(
                format!("{f}.oomScoreAdj"),
                adj,
                "-1000..1000",
            ));
        }
    }
    let io_priority = io_priority(p, f)?;
    unsupported(p, f, warnings);
    Ok(ProcessConfig {
        args,
        env,
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids,
        umask,
        caps,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        rlimits,
        terminal: p.terminal().unwrap_or(false),
        console_size: p.console_size().map(|b| {
            let clamp = |n: u64| u16::try_from(n).unwrap_or(u16::MAX);
            (clamp(b.height()), clamp(b.width()))
        }),
        oom_score_adj: p.oom_score_adj(),
        io_priority,
    })
}

/// `rlimits`: each type once, soft <= hard.
fn rlimits(p: &Process, f: &str) -> Result<Vec<Rlimit>, SpecError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        let field = format!("{f}.rlimits[{i}]");
        if !seen.insert(rlimit_resource(r.typ())) {
            return Err(SpecError::Twice {
                field: format!("{field}.type"),
                what: format!("{:?}", r.typ()),
            });
        }
        if r.soft() > r.hard() {
            return Err(SpecError::invalid(
                field,
                format!("soft limit {} is above hard limit {}", r.soft(), r.hard()),
            ));
        }
        out.push(Rlimit {
            resource: rlimit_resource(r.typ()),
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    Ok(out)
}

/// `ioPriority` as (class, level).
fn io_priority(p: &Process, f: &str) -> Result<Option<(u32, u32)>, SpecError> {
    use oci_spec::runtime::IOPriorityClass as C;
    let Some(io) = p.io_priority() else {
        return Ok(None);
    };
    let class = match io.class() {
        C::IoprioClassRt => 1,
        C::IoprioClassBe => 2,
        C::IoprioClassIdle => 3,
    };
    let prio = io.priority();
    match u32::try_from(prio) {
        Ok(level) if level <= 7 => Ok(Some((class, level))),
        _ => Err(SpecError::out_of_range(
            format!("{f}.ioPriority.priority"),
            prio,
            "0..7",
        )),
    }
}

/// Warns about the process settings the guest ignores.
fn unsupported(p: &Process, f: &str, warnings: &mut Vec<String>) {
    for (name, set) in [
        ("apparmorProfile", p.apparmor_profile().is_some()),
        ("selinuxLabel", p.selinux_label().is_some()),
        ("scheduler", p.scheduler().is_some()),
        ("execCPUAffinity", p.exec_cpu_affinity().is_some()),
        ("commandLine", p.command_line().is_some()),
    ] {
        if set {
            warnings.push(format!(
                "{f}.{name} ignored: not supported in the husk guest"
            ));
        }
    }
}
