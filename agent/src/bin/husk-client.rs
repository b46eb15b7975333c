//! husk-client: a host-side test client of the agent protocol (over
//! husk-vmm's vsock Unix socket, or a `husk-agent --listen-unix` agent).
//! A binary of its own, so that none of it lands in the guest initramfs.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use husk_protocol::client::{Client, ClientError};
use husk_protocol::{
    oci, read_frame, ResponseFrame, RootfsSource, StdioConfig, StdioStream, AGENT_PORT,
};

pub const USAGE: &str = "\
usage: husk-client (--unix PATH | --vsock-uds PATH [--port N]) [--timeout SECS] COMMAND

Commands (ID: container id; rootfs options: --rootfs-path GUESTDIR |
--rootfs-blk DEV [--fstype T] [--ro] | --rootfs-virtiofs TAG; without one,
the bundle's root.path is used as a guest path, relative to the bundle):
  ping | shutdown
  run --id ID --bundle DIR [rootfs] [--no-stdin] [--keep]
        create with stdio attached here, start, wait, remove; exit status is
        the container's (128+N for signal N)
  create --id ID --bundle DIR [rootfs]     (stdio /dev/null), prints the pid
  start --id ID
  exec --id ID --exec-id E [--bundle DIR] [--no-stdin] -- ARGS...
        runs ARGS in the container (process settings from DIR/config.json)
  kill --id ID [--exec-id E] [--all] SIGNAL
  wait --id ID [--exec-id E]       prints the exit as JSON, exits with it
  state --id ID | stats --id ID    JSON
  pause --id ID | resume --id ID
  resize-pty --id ID [--exec-id E] ROWS COLS
  close-stdin --id ID [--exec-id E]
  update --id ID --resources FILE  (linux.resources JSON)
  delete --id ID [--force]
  events [--count N]               one JSON event per line
  raw                              send the request JSON read from stdin
Errors: one line on stderr, exit status 125.
";

struct Opts {
    target: Target,
    timeout: Duration,
}

enum Target {
    Unix(PathBuf),
    Vsock(PathBuf, u32),
}

impl Opts {
    fn connect(&self) -> Result<Client, String> {
        match &self.target {
            Target::Unix(p) => {
                let s =
                    UnixStream::connect(p).map_err(|e| format!("connect {}: {e}", p.display()))?;
                let mut c = Client::from_stream(s);
                c.set_timeout(self.timeout).map_err(|e| e.to_string())?;
                Ok(c)
            }
            Target::Vsock(p, port) => {
                Client::connect_uds_retry(p, *port, self.timeout).map_err(|e| e.to_string())
            }
        }
    }
}

/// Parsed `--flag value` / `--flag` options and positional arguments.
#[derive(Default)]
struct Args {
    kv: Vec<(String, String)>,
    flags: Vec<String>,
    pos: Vec<String>,
}

const VALUED: &[&str] = &[
    "--id",
    "--bundle",
    "--rootfs-path",
    "--rootfs-blk",
    "--fstype",
    "--rootfs-virtiofs",
    "--exec-id",
    "--resources",
    "--count",
];

impl Args {
    fn parse(a: &[String]) -> Result<Args, String> {
        let mut out = Args::default();
        let mut it = a.iter();
        while let Some(x) = it.next() {
            if x == "--" {
                out.pos.extend(it.by_ref().cloned());
            } else if VALUED.contains(&x.as_str()) {
                let v = it.next().ok_or_else(|| format!("{x} needs a value"))?;
                out.kv.push((x.clone(), v.clone()));
            } else if x.starts_with("--") {
                out.flags.push(x.clone());
            } else {
                out.pos.push(x.clone());
            }
        }
        Ok(out)
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.kv
            .iter()
            .rev()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
    fn need(&self, k: &str) -> Result<&str, String> {
        self.get(k).ok_or_else(|| format!("{k} is required"))
    }
    fn flag(&self, k: &str) -> bool {
        self.flags.iter().any(|f| f == k)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(u8::MAX)),
        Err(e) => {
            eprintln!("husk-client: {e}");
            ExitCode::from(125)
        }
    }
}

/// The options before the command: where the agent is and the timeout;
/// `None` after `--help`. Returns the index of the command too.
fn global_opts(args: &[String]) -> Result<Option<(Opts, usize)>, String> {
    let mut target = None;
    let mut port = AGENT_PORT;
    let mut timeout = Duration::from_secs(120);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "--unix" | "--vsock-uds" | "--port" | "--timeout" => {
                let v = args
                    .get(i + 1)
                    .ok_or_else(|| format!("{} needs a value", args[i]))?;
                match args[i].as_str() {
                    "--unix" => target = Some(Target::Unix(v.into())),
                    "--vsock-uds" => target = Some(Target::Vsock(v.into(), 0)),
                    "--port" => port = v.parse().map_err(|_| format!("--port: {v:?}"))?,
                    _ => {
                        timeout =
                            Duration::from_secs(v.parse().map_err(|_| format!("--timeout: {v:?}"))?)
                    }
                }
                i += 2;
            }
            _ => break,
        }
    }
    let target = match target.ok_or("give --unix PATH or --vsock-uds PATH")? {
        Target::Vsock(p, _) => Target::Vsock(p, port),
        t => t,
    };
    Ok(Some((Opts { target, timeout }, i)))
}

fn run(args: &[String]) -> Result<i32, String> {
    let Some((o, i)) = global_opts(args)? else {
        return Ok(0);
    };
    let cmd = args.get(i).ok_or("missing command (see --help)")?.as_str();
    let a = Args::parse(&args[i + 1..])?;
    command(cmd, &o, &a)
}

fn ce(e: ClientError) -> String {
    e.to_string()
}

/// Prints `v` as one line of JSON.
fn print_json<T: serde::Serialize>(v: &T) -> Result<(), String> {
    println!("{}", serde_json::to_string(v).map_err(|e| e.to_string())?);
    Ok(())
}

fn command(cmd: &str, o: &Opts, a: &Args) -> Result<i32, String> {
    match cmd {
        "ping" => {
            print_json(&o.connect()?.ping().map_err(ce)?)?;
            Ok(0)
        }
        "run" => run_container(o, a),
        "shutdown" => o.connect()?.shutdown().map(|()| 0).map_err(ce),
        "create" => create(o, a),
        "start" => o
            .connect()?
            .start_container(a.need("--id")?)
            .map(|()| 0)
            .map_err(ce),
        "exec" => exec(o, a),
        "kill" => kill(o, a),
        "wait" => {
            let mut c = o.connect()?;
            c.clear_timeout().map_err(ce)?;
            let e = c.wait(a.need("--id")?, a.get("--exec-id")).map_err(ce)?;
            print_json(&e)?;
            Ok(e.status)
        }
        "state" => {
            print_json(&o.connect()?.state(a.need("--id")?).map_err(ce)?)?;
            Ok(0)
        }
        "stats" => {
            print_json(&o.connect()?.stats(a.need("--id")?).map_err(ce)?)?;
            Ok(0)
        }
        "resize-pty" => resize_pty(o, a),
        "close-stdin" => o
            .connect()?
            .close_stdin(a.need("--id")?, a.get("--exec-id"))
            .map(|()| 0)
            .map_err(ce),
        "pause" => o.connect()?.pause(a.need("--id")?).map(|()| 0).map_err(ce),
        "resume" => o.connect()?.resume(a.need("--id")?).map(|()| 0).map_err(ce),
        "update" => update(o, a),
        "delete" => o
            .connect()?
            .remove(a.need("--id")?, a.flag("--force"))
            .map(|()| 0)
            .map_err(ce),
        "events" => events(o, a),
        "raw" => raw(o),
        other => Err(format!("unknown command {other:?} (see --help)")),
    }
}

fn create(o: &Opts, a: &Args) -> Result<i32, String> {
    let (spec, rootfs) = load(a)?;
    let (pid, warnings) = o
        .connect()?
        .create_container(a.need("--id")?, spec, rootfs, StdioConfig::default())
        .map_err(ce)?;
    for w in warnings {
        eprintln!("husk-client: warning: {w}");
    }
    println!("{pid}");
    Ok(0)
}

fn kill(o: &Opts, a: &Args) -> Result<i32, String> {
    let sig = a.pos.first().ok_or("kill: missing SIGNAL")?;
    let sig = signal_number(sig).ok_or_else(|| format!("kill: unknown signal {sig:?}"))?;
    o.connect()?
        .signal(a.need("--id")?, a.get("--exec-id"), sig, a.flag("--all"))
        .map(|()| 0)
        .map_err(ce)
}

fn resize_pty(o: &Opts, a: &Args) -> Result<i32, String> {
    let n = |i: usize| -> Result<u16, String> {
        a.pos
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| "resize-pty: give ROWS COLS".to_string())
    };
    o.connect()?
        .resize_pty(a.need("--id")?, a.get("--exec-id"), n(0)?, n(1)?)
        .map(|()| 0)
        .map_err(ce)
}

fn update(o: &Opts, a: &Args) -> Result<i32, String> {
    let f = a.need("--resources")?;
    let bytes = std::fs::read(f).map_err(|e| format!("{f}: {e}"))?;
    let r: oci::LinuxResources = serde_json::from_slice(&bytes).map_err(|e| format!("{f}: {e}"))?;
    o.connect()?
        .update_resources(a.need("--id")?, r)
        .map(|()| 0)
        .map_err(ce)
}

fn events(o: &Opts, a: &Args) -> Result<i32, String> {
    let n: usize = a.get("--count").map_or(Ok(usize::MAX), |v| {
        v.parse().map_err(|_| "--count: not a number")
    })?;
    let mut ev = o.connect()?.events().map_err(ce)?;
    for _ in 0..n {
        print_json(&ev.next_event().map_err(ce)?)?;
        let _ = std::io::stdout().flush();
    }
    Ok(0)
}

/// Sends the request JSON read from stdin, prints the response; exit
/// status 1 for an `Error` response.
fn raw(o: &Opts) -> Result<i32, String> {
    let mut body = String::new();
    std::io::stdin()
        .read_to_string(&mut body)
        .map_err(|e| e.to_string())?;
    let req: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("stdin: {e}"))?;
    let frame =
        serde_json::json!({"version": husk_protocol::PROTOCOL_VERSION, "id": 1, "request": req});
    let c = o.connect()?;
    let mut s = c.stream().try_clone().map_err(|e| e.to_string())?;
    husk_protocol::write_frame(&mut s, &frame).map_err(|e| e.to_string())?;
    let r: ResponseFrame = read_frame(&mut s).map_err(|e| e.to_string())?;
    print_json(&r.response)?;
    Ok(if matches!(r.response, husk_protocol::Response::Error(_)) {
        1
    } else {
        0
    })
}

/// Parses a spec; errors name the JSON path of the bad field.
fn parse_spec(bytes: &[u8]) -> Result<oci::Spec, String> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let spec = serde_path_to_error::deserialize(&mut *de)
        .map_err(|e| format!("config.json: {}: {}", e.path(), e.inner()))?;
    de.end().map_err(|e| format!("config.json: {e}"))?;
    Ok(spec)
}

fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse() {
        return Some(n);
    }
    let s = s.trim_start_matches("SIG");
    Some(match s {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        _ => return None,
    })
}

fn load(a: &Args) -> Result<(oci::Spec, RootfsSource), String> {
    let bundle = Path::new(a.need("--bundle")?);
    let p = bundle.join("config.json");
    let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let spec = parse_spec(&bytes)?;
    let rootfs = if let Some(d) = a.get("--rootfs-path") {
        RootfsSource::Path { path: d.into() }
    } else if let Some(dev) = a.get("--rootfs-blk") {
        RootfsSource::Block {
            device: dev.into(),
            fstype: a.get("--fstype").unwrap_or("ext4").into(),
            readonly: a.flag("--ro"),
            options: String::new(),
        }
    } else if let Some(tag) = a.get("--rootfs-virtiofs") {
        RootfsSource::VirtioFs {
            tag: tag.into(),
            subdir: None,
        }
    } else {
        let root = spec
            .root()
            .as_ref()
            .ok_or("root: missing (or give a rootfs option)")?;
        RootfsSource::Path {
            path: bundle.join(root.path()).to_string_lossy().into_owned(),
        }
    };
    Ok((spec, rootfs))
}

/// Attaches the piped streams of a process to ours; returns the output
/// relay threads (joined before the exit is printed).
fn attach(
    o: &Opts,
    id: &str,
    exec_id: Option<&str>,
    terminal: bool,
    stdin: bool,
) -> Result<Vec<std::thread::JoinHandle<()>>, String> {
    let ce = |e: ClientError| e.to_string();
    let mut outs = Vec::new();
    let streams: &[StdioStream] = if terminal {
        &[StdioStream::Pty]
    } else {
        &[StdioStream::Stdout, StdioStream::Stderr]
    };
    for &s in streams {
        let mut conn = o.connect()?.attach_stdio(id, exec_id, s).map_err(ce)?;
        if s == StdioStream::Pty && stdin {
            let mut w = conn.try_clone().map_err(|e| e.to_string())?;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut w);
            });
        }
        outs.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let res = if s == StdioStream::Stderr {
                    std::io::stderr().write_all(&buf[..n])
                } else {
                    std::io::stdout().write_all(&buf[..n])
                };
                if res.is_err() {
                    break;
                }
            }
            let _ = std::io::stdout().flush();
        }));
    }
    if stdin && !terminal {
        let mut conn = o
            .connect()?
            .attach_stdio(id, exec_id, StdioStream::Stdin)
            .map_err(ce)?;
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut conn);
            let _ = conn.shutdown(std::net::Shutdown::Write);
        });
    }
    Ok(outs)
}

fn finish(
    o: &Opts,
    id: &str,
    exec_id: Option<&str>,
    outs: Vec<std::thread::JoinHandle<()>>,
) -> Result<i32, String> {
    let mut c = o.connect()?;
    c.clear_timeout().map_err(|e| e.to_string())?;
    let e = c.wait(id, exec_id).map_err(|e| e.to_string())?;
    for t in outs {
        let _ = t.join();
    }
    if e.oom_killed {
        eprintln!("husk-client: {id}: OOM-killed");
    }
    Ok(e.status)
}

fn run_container(o: &Opts, a: &Args) -> Result<i32, String> {
    let id = a.need("--id")?;
    let (spec, rootfs) = load(a)?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let stdin = !a.flag("--no-stdin");
    let stdio = StdioConfig {
        stdin,
        stdout: true,
        stderr: true,
    };
    let (_, warnings) = o
        .connect()?
        .create_container(id, spec, rootfs, stdio)
        .map_err(|e| e.to_string())?;
    for w in warnings {
        eprintln!("husk-client: warning: {w}");
    }
    let res = (|| {
        let outs = attach(o, id, None, terminal, stdin)?;
        o.connect()?
            .start_container(id)
            .map_err(|e| e.to_string())?;
        finish(o, id, None, outs)
    })();
    if !a.flag("--keep") {
        if let Err(e) = o
            .connect()
            .and_then(|mut c| c.remove(id, true).map_err(|e| e.to_string()))
        {
            eprintln!("husk-client: remove {id}: {e}");
        }
    }
    res
}

fn exec(o: &Opts, a: &Args) -> Result<i32, String> {
    let id = a.need("--id")?;
    let exec_id = a.need("--exec-id")?;
    if a.pos.is_empty() {
        return Err("exec: missing ARGS after --".into());
    }
    let mut process: oci::Process = match a.get("--bundle") {
        Some(_) => load(a)?.0.process().clone().ok_or("process: missing")?,
        None => serde_json::from_value(serde_json::json!({
            "cwd": "/", "user": {"uid": 0, "gid": 0},
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        }))
        .map_err(|e| e.to_string())?,
    };
    process.set_args(Some(a.pos.clone()));
    let terminal = process.terminal().unwrap_or(false);
    let stdin = !a.flag("--no-stdin");
    let stdio = StdioConfig {
        stdin,
        stdout: true,
        stderr: true,
    };
    // Exec starts the process at once: its output waits in the pipes until
    // we attach (and the exit is reported only after it was delivered).
    o.connect()?
        .exec(id, exec_id, process, stdio)
        .map_err(|e| e.to_string())?;
    let outs = attach(o, id, Some(exec_id), terminal, stdin)?;
    finish(o, id, Some(exec_id), outs)
}
