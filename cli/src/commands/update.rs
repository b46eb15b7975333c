//! `update`: runc's resource flags (or a linux.resources JSON file) into
//! the container's cgroup in its microVM.

use std::io::Read;

use husk_protocol::oci;
use husk_runtime::container;
use husk_runtime::state::Store;
use serde_json::{json, Value};

use crate::args::UpdateArgs;
use crate::error::{Error, Result};
use crate::parse::parse_size;

fn update_resources(a: &UpdateArgs) -> Result<oci::LinuxResources> {
    let mut v: Value = match &a.resources {
        Some(p) => {
            let mut data = Vec::new();
            if p.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_end(&mut data)
                    .map_err(|source| Error::Io {
                        what: "read resources from stdin",
                        source,
                    })?;
            } else {
                data = std::fs::read(p).map_err(|source| Error::FlagFile {
                    flag: format!("--resources {}", p.display()),
                    source,
                })?;
            }
            serde_json::from_slice(&data).map_err(|source| Error::FlagJson {
                flag: format!("--resources {}", p.display()),
                source,
            })?
        }
        None => json!({}),
    };
    if !v.is_object() {
        return Err(Error::flag(
            "--resources",
            "expected a JSON object (linux.resources)",
        ));
    }
    let mut set = |path: &[&str], val: Value| {
        let mut cur = &mut v;
        for k in &path[..path.len() - 1] {
            if !cur.get(*k).is_some_and(Value::is_object) {
                cur[*k] = json!({});
            }
            cur = &mut cur[*k];
        }
        cur[path[path.len() - 1]] = val;
    };
    if let Some(w) = a.blkio_weight {
        set(&["blockIO", "weight"], json!(w));
    }
    if let Some(x) = a.cpu_period {
        set(&["cpu", "period"], json!(x));
    }
    if let Some(x) = a.cpu_quota {
        set(&["cpu", "quota"], json!(x));
    }
    if let Some(x) = a.cpu_share {
        set(&["cpu", "shares"], json!(x));
    }
    if let Some(x) = &a.cpuset_cpus {
        set(&["cpu", "cpus"], json!(x));
    }
    if let Some(x) = &a.cpuset_mems {
        set(&["cpu", "mems"], json!(x));
    }
    if let Some(x) = &a.memory {
        set(
            &["memory", "limit"],
            json!(parse_size(x).map_err(|e| Error::flag("--memory", e.to_string()))?),
        );
    }
    if let Some(x) = &a.memory_reservation {
        set(
            &["memory", "reservation"],
            json!(parse_size(x).map_err(|e| Error::flag("--memory-reservation", e.to_string()))?),
        );
    }
    if let Some(x) = &a.memory_swap {
        set(
            &["memory", "swap"],
            json!(parse_size(x).map_err(|e| Error::flag("--memory-swap", e.to_string()))?),
        );
    }
    if let Some(x) = a.pids_limit {
        set(&["pids", "limit"], json!(x));
    }
    husk_protocol::decode_tracked(v, "resources").map_err(Error::Decode)
}

pub fn update(store: &Store, a: UpdateArgs) -> Result<()> {
    container::check_id(&a.id)?;
    let res = update_resources(&a)?;
    Ok(container::update(store, &a.id, res)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Cmd};

    #[test]
    fn update_flags_become_resources() {
        use clap::Parser;
        let cli = Cli::parse_from([
            "husk",
            "update",
            "--memory",
            "64m",
            "--cpu-quota",
            "50000",
            "--pids-limit",
            "10",
            "c1",
        ]);
        let Some(Cmd::Update(a)) = cli.cmd else {
            panic!("not update")
        };
        let r = update_resources(&a).unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50000));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 10);
    }
}
