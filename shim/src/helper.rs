//! The helpers the shim starts itself as: `__monitor` (a container's
//! monitor, which boots its microVM and relays its stdio) and `__exec` (a
//! started exec's monitor). Their stdio is the process's (the FIFOs
//! containerd gave, or /dev/null with a terminal, which goes over the
//! console socket); they report on the ready pipe (fd 3) and exit with the
//! process's exit status.
//!
//! `__monitor --root R --id ID [--console-socket S] [--start] [--debug]`
//! `__exec --root R --id ID --exec-id E --process FILE [--console-socket S] [--debug]`

use std::path::PathBuf;

use husk_runtime::container;
use husk_runtime::monitor;
use husk_runtime::session::Terminal;
use husk_runtime::spawn::{inherited_ready_pipe, READY_FD};
use husk_runtime::state::Store;

pub const MONITOR: &str = "__monitor";
pub const EXEC: &str = "__exec";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HelperArgs {
    pub exec: bool,
    pub root: PathBuf,
    pub id: String,
    pub exec_id: Option<String>,
    pub process: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub start: bool,
    pub debug: bool,
}

impl HelperArgs {
    /// The command line a helper is started with (after the binary).
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![
            if self.exec { EXEC } else { MONITOR }.to_string(),
            "--root".into(),
            self.root.display().to_string(),
            "--id".into(),
            self.id.clone(),
        ];
        if let Some(e) = &self.exec_id {
            v.extend(["--exec-id".into(), e.clone()]);
        }
        if let Some(p) = &self.process {
            v.extend(["--process".into(), p.display().to_string()]);
        }
        if let Some(s) = &self.console_socket {
            v.extend(["--console-socket".into(), s.display().to_string()]);
        }
        if self.start {
            v.push("--start".into());
        }
        if self.debug {
            v.push("--debug".into());
        }
        v
    }
}

/// Parses a helper command line (`args[0]` is `__monitor` or `__exec`).
pub fn parse(args: &[String]) -> Result<HelperArgs, String> {
    let mut h = HelperArgs {
        exec: match args.first().map(String::as_str) {
            Some(MONITOR) => false,
            Some(EXEC) => true,
            other => return Err(format!("not a helper command: {other:?}")),
        },
        ..Default::default()
    };
    let mut it = args[1..].iter();
    let mut root = None;
    let mut id = None;
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name}: a value is required"))
        };
        match a.as_str() {
            "--root" => root = Some(PathBuf::from(value(a)?)),
            "--id" => id = Some(value(a)?),
            "--exec-id" => h.exec_id = Some(value(a)?),
            "--process" => h.process = Some(PathBuf::from(value(a)?)),
            "--console-socket" => h.console_socket = Some(PathBuf::from(value(a)?)),
            "--start" => h.start = true,
            "--debug" => h.debug = true,
            other => return Err(format!("{other}: unknown flag")),
        }
    }
    h.root = root.ok_or("--root: required")?;
    h.id = id.ok_or("--id: required")?;
    if h.exec && (h.exec_id.is_none() || h.process.is_none()) {
        return Err("__exec: --exec-id and --process are required".into());
    }
    Ok(h)
}

/// Runs a helper if `args` asks for one; returns its exit status.
pub fn main(args: &[String]) -> Option<i32> {
    let cmd = args.get(1)?;
    if cmd != MONITOR && cmd != EXEC {
        return None;
    }
    let h = match parse(&args[1..]) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("containerd-shim-husk-v2 {cmd}: {e}");
            return Some(1);
        }
    };
    let store = Store::new(h.root.clone());
    // The helper's stderr is the container's: its own lines go to the log.
    husk_runtime::log::init_log(Some(store.dir(&h.id).join("husk.log")), false, h.debug);
    let ready = inherited_ready_pipe(READY_FD);
    if !h.exec {
        let opts = monitor::Opts {
            term: match h.console_socket {
                Some(s) => Terminal::Console(s),
                None => Terminal::No,
            },
            ready,
            start: h.start,
        };
        return Some(monitor::run(&store, &h.id, opts).unwrap_or(1));
    }
    let (Some(exec_id), Some(process)) = (h.exec_id, h.process) else {
        return Some(1);
    };
    match container::exec_monitor(&store, &h.id, exec_id, &process, h.console_socket, ready) {
        Ok(code) => Some(code),
        Err(e) => {
            husk_runtime::log::log("error", &e.to_string());
            Some(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn round_trip() {
        let h = HelperArgs {
            exec: true,
            root: "/run/husk-shim/default".into(),
            id: "c1".into(),
            exec_id: Some("e1".into()),
            process: Some("/tmp/p.json".into()),
            console_socket: Some("/run/husk-shim/c.sock".into()),
            start: false,
            debug: true,
        };
        assert_eq!(parse(&h.to_args()).unwrap(), h);
        let m = HelperArgs {
            root: "/r".into(),
            id: "c".into(),
            start: true,
            ..Default::default()
        };
        assert_eq!(
            m.to_args(),
            s(&["__monitor", "--root", "/r", "--id", "c", "--start"])
        );
        assert_eq!(parse(&m.to_args()).unwrap(), m);
    }

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(
            parse(&s(&["__monitor", "--id", "c"])).unwrap_err(),
            "--root: required"
        );
        assert_eq!(
            parse(&s(&["__monitor", "--root"])).unwrap_err(),
            "--root: a value is required"
        );
        assert_eq!(
            parse(&s(&["__monitor", "--root", "/r", "--id", "c", "-x"])).unwrap_err(),
            "-x: unknown flag"
        );
        assert!(parse(&s(&["__exec", "--root", "/r", "--id", "c"]))
            .unwrap_err()
            .contains("--exec-id"));
        assert_eq!(main(&s(&["shim", "start"])), None);
    }
}
