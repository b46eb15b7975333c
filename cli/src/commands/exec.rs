//! `exec`: the process from `--process FILE` or the command line (with
//! runc's flags applied), run in the container in the foreground or by an
//! exec monitor (`husk __exec`) with `--detach`.

use std::path::PathBuf;

use husk_protocol::oci;
use husk_runtime::container::{self, ExecMonitorRequest, ExecRequest};
use husk_runtime::spawn::READY_FD;
use husk_runtime::state::{State, Store};
use serde_json::{json, Value};

use super::create::spawn_helper;
use crate::args::{ExecArgs, Global};
use crate::error::{Error, Result};

fn exec_process(st: &State, a: &ExecArgs) -> Result<oci::Process> {
    let mut p: oci::Process = match &a.process {
        Some(f) => {
            let flag = || format!("--process {}", f.display());
            let data = std::fs::read(f).map_err(|source| Error::FlagFile {
                flag: flag(),
                source,
            })?;
            let v: Value = serde_json::from_slice(&data).map_err(|source| Error::FlagJson {
                flag: flag(),
                source,
            })?;
            husk_protocol::decode_tracked(v, "process").map_err(|e| Error::flag(flag(), e))?
        }
        None => {
            if a.command.is_empty() {
                return Err(Error::Exec("a command is required (or --process FILE)"));
            }
            let b = husk_runtime::bundle::load(&st.bundle).ok();
            let mut p = b.and_then(|b| b.spec.process().clone()).unwrap_or_default();
            p.set_args(Some(a.command.clone()));
            p.set_terminal(Some(false));
            p
        }
    };
    if a.process.is_some() && !a.command.is_empty() {
        p.set_args(Some(a.command.clone()));
    }
    if p.args().as_ref().is_none_or(|v| v.is_empty()) {
        return Err(Error::Exec("process.args must not be empty"));
    }
    if a.tty {
        p.set_terminal(Some(true));
    }
    if !a.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        for e in &a.env {
            if !e.contains('=') {
                return Err(Error::flag(format!("--env {e}"), "not KEY=VALUE"));
            }
            let k = e.split('=').next().unwrap_or("");
            env.retain(|x| x.split('=').next() != Some(k));
            env.push(e.clone());
        }
        p.set_env(Some(env));
    }
    if let Some(c) = &a.cwd {
        if !c.starts_with('/') {
            return Err(Error::flag(
                format!("--cwd {c}"),
                "must be an absolute path",
            ));
        }
        p.set_cwd(PathBuf::from(c));
    }
    if let Some(u) = &a.user {
        let bad = |_| Error::flag(format!("--user {u}"), "expected UID[:GID] (numbers)");
        let mut parts = u.splitn(2, ':');
        let uid: u32 = parts.next().unwrap_or("").parse().map_err(bad)?;
        let gid: u32 = match parts.next() {
            Some(g) => g.parse().map_err(bad)?,
            None => 0,
        };
        let mut user = p.user().clone();
        user.set_uid(uid);
        user.set_gid(gid);
        p.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(a.additional_gids.clone()));
        p.set_user(user);
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        let mut add = Vec::new();
        for c in &a.cap {
            let v = json!(c.to_uppercase());
            let cap: oci::Capability = serde_json::from_value(v)
                .map_err(|_| Error::flag(format!("--cap {c}"), "unknown capability"))?;
            add.push(cap);
        }
        let with = |s: &Option<oci::Capabilities>| {
            let mut s = s.clone().unwrap_or_default();
            s.extend(add.iter().copied());
            Some(s)
        };
        caps.set_bounding(with(caps.bounding()));
        caps.set_effective(with(caps.effective()));
        caps.set_permitted(with(caps.permitted()));
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

/// `husk __exec ID EXEC_ID --process FILE [--console-socket S] --ready-fd 3`.
fn exec_monitor_args(m: &ExecMonitorRequest) -> Vec<String> {
    let mut args = vec![
        "__exec".to_string(),
        m.id.clone(),
        m.exec_id.clone(),
        "--process".into(),
        m.process_file.display().to_string(),
    ];
    if let Some(s) = &m.console_socket {
        args.push("--console-socket".into());
        args.push(s.display().to_string());
    }
    args.extend(["--ready-fd".into(), READY_FD.to_string()]);
    args
}

pub fn exec(g: &Global, store: &Store, a: ExecArgs) -> Result<i32> {
    let st = container::exec_state(store, &a.id, a.ignore_paused)?;
    let req = ExecRequest {
        process: exec_process(&st, &a)?,
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        detach: a.detach,
    };
    Ok(container::exec(store, &st, req, |m| {
        spawn_helper(
            g,
            &exec_monitor_args(m),
            "exec monitor",
            m.limit,
            m.terminal,
        )
    })?)
}
