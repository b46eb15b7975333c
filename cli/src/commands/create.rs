//! `create`, `run` and `start`; how this binary starts a container's
//! monitor (`husk __monitor`, with the same global options).

use std::path::Path;
use std::process::Command;

use husk_runtime::container::{self, CreateRequest, MonitorRequest};
use husk_runtime::error::IoContext;
use husk_runtime::spawn::{self, READY_FD};
use husk_runtime::state::Store;

use crate::error::{Error, Result};

use crate::args::{CreateArgs, Global, RunArgs};

/// The global options a helper (monitor, exec monitor) is started with.
fn global_args(g: &Global) -> Vec<String> {
    let mut v = vec!["--root".to_string(), g.root.display().to_string()];
    if let Some(l) = &g.log {
        v.push("--log".into());
        v.push(l.display().to_string());
    }
    v.push("--log-format".into());
    v.push(g.log_format.clone());
    if g.debug {
        v.push("--debug".into());
    }
    v
}

/// Starts `husk <globals> <args>` (this binary) as a helper that reports
/// on its ready pipe; returns its pid once it says ok.
pub fn spawn_helper(
    g: &Global,
    args: &[String],
    what: &str,
    limit: std::time::Duration,
    console: bool,
) -> husk_runtime::Result<i32> {
    let exe = std::env::current_exe().at(Path::new("/proc/self/exe"))?;
    let mut cmd = Command::new(exe);
    cmd.args(global_args(g)).args(args);
    Ok(spawn::spawn_ready(cmd, what, limit, console)?)
}

/// `husk __monitor ID [--console-socket S] [--start] --ready-fd 3`.
fn monitor_args(m: &MonitorRequest) -> Vec<String> {
    let mut args = vec!["__monitor".to_string(), m.id.clone()];
    if let Some(s) = &m.console_socket {
        args.push("--console-socket".into());
        args.push(s.display().to_string());
    }
    if m.start {
        args.push("--start".into());
    }
    args.extend(["--ready-fd".into(), READY_FD.to_string()]);
    args
}

fn request(a: &CreateArgs) -> Result<CreateRequest> {
    let bundle = match &a.bundle {
        Some(p) => p.clone(),
        None => std::env::current_dir().map_err(|source| Error::Io {
            what: "current directory",
            source,
        })?,
    };
    Ok(CreateRequest {
        id: a.id.clone(),
        bundle,
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        preserve_fds: a.preserve_fds.unwrap_or(0),
    })
}

pub fn create(g: &Global, store: &Store, a: &CreateArgs, start: bool) -> Result<i32> {
    container::check_id(&a.id)?;
    let req = request(a)?;
    Ok(container::create(store, &req, start, |m| {
        spawn_helper(g, &monitor_args(m), "monitor", m.limit, m.terminal)
    })?)
}

/// `run`: detached, a create that starts; else this process is the monitor.
pub fn run(g: &Global, store: &Store, a: &RunArgs) -> Result<i32> {
    if a.detach {
        create(g, store, &a.create, true).map(|_| 0)
    } else {
        container::check_id(&a.create.id)?;
        Ok(container::run_foreground(
            store,
            &request(&a.create)?,
            a.keep,
        )?)
    }
}

pub fn start(store: &Store, id: &str) -> Result<()> {
    Ok(container::start(store, id)?)
}
