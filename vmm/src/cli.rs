//! `husk-vmm run | smoke | ping`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use husk_protocol::client::{Client, ReadyListener};
use husk_protocol::AGENT_PORT;

use crate::config::{ConfigError, ConfigInput, DiskConfig, FsConfig, NetConfig, VmConfig};
use crate::confine::{self, ThreadKind};
use crate::timing;
use crate::vcpu::VmExit;
use crate::vm::{self, format_tail, Outcome, Vm};

#[derive(Parser, Debug)]
#[command(name = "husk-vmm", version, about = "husk's microVM monitor")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // One value per process, parsed once.
pub enum Cmd {
    /// Boot a VM and run it until the guest reboots, powers off or fails.
    Run(RunArgs),
    /// Boot the default kernel + initramfs, ping the agent over vsock, shut down.
    Smoke(SmokeArgs),
    /// Ping the agent of a running VM through its vsock Unix socket.
    Ping(PingArgs),
}

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// JSON file with the same fields (flags given here override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Uncompressed ELF vmlinux with a PVH entry [default: $HUSK_KERNEL or /usr/share/husk/vmlinux]
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// initramfs [default: $HUSK_INITRAMFS or /usr/share/husk/initramfs.img]
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Replace the base kernel command line.
    #[arg(long, allow_hyphen_values = true)]
    pub cmdline: Option<String>,
    /// Add to the kernel command line.
    #[arg(long, allow_hyphen_values = true)]
    pub append: Option<String>,
    /// Number of vCPUs, 1..=32 [default: 1]
    #[arg(long, value_name = "N")]
    pub vcpus: Option<u32>,
    /// Guest memory in MiB, at least 64 [default: 128]
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,
    /// virtio-blk disk (repeatable).
    #[arg(long = "disk", value_name = "PATH[,ro]")]
    pub disks: Vec<String>,
    /// virtio-fs device served by a vhost-user backend such as virtiofsd
    /// (repeatable); queue_size defaults to 1024.
    #[arg(long = "fs", value_name = "tag=TAG,socket=PATH[,queue_size=N]")]
    pub fs: Vec<String>,
    /// virtio-net NIC on a tap (repeatable): fd=N is a descriptor husk-vmm
    /// inherits (opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, passed without
    /// close-on-exec), tap=NAME a tap it opens in its own network
    /// namespace. backend=vhost has the host kernel's vhost-net serve the
    /// queues (needs /dev/vhost-net); the default, virtio, serves them in
    /// husk-vmm. Attached after every other virtio device.
    #[arg(
        long = "net",
        value_name = "fd=N|tap=NAME,mac=MAC[,mtu=N][,backend=virtio|vhost]"
    )]
    pub net: Vec<String>,
    /// Host Unix socket of the virtio-vsock device.
    #[arg(long, value_name = "PATH")]
    pub vsock_uds: Option<PathBuf>,
    /// Guest vsock CID [default: 3]
    #[arg(long, value_name = "CID")]
    pub vsock_cid: Option<u64>,
    /// Guest console: stdout, file:PATH or none [default: stdout]
    #[arg(long, value_name = "SPEC")]
    pub serial: Option<String>,
    /// Set everything up, then stop right before the first KVM_RUN and exit
    /// 0: measures the VMM's own start-up (with HUSK_VMM_TIMING=1). No guest
    /// code runs, so it also works on a PVM host.
    #[arg(long)]
    pub startup_only: bool,
    /// Debugging only: run without the seccomp filters (the privileges are
    /// still dropped). Same as HUSK_VMM_SECCOMP=off; HUSK_VMM_SECCOMP=log
    /// has the kernel log what the filters would refuse instead.
    #[arg(long)]
    pub no_seccomp: bool,
    /// The jail's uid (see below), from the end of setup on; the host makes
    /// the vsock socket's directory, and the sockets husk-vmm connects to in
    /// it, usable by it. Without it husk-vmm stays uid 0, with no
    /// capabilities. Unique per VM (RLIMIT_NPROC counts per uid).
    #[arg(long, value_name = "UID")]
    pub jail_uid: Option<u32>,
    /// The jail's gid [default: the uid]
    #[arg(long, value_name = "GID", requires = "jail_uid")]
    pub jail_gid: Option<u32>,
    /// Debugging only: no jail. By default husk-vmm jails itself once set up:
    /// a mount namespace whose root is an empty read-only tmpfs holding only
    /// the vsock socket's directory, rlimits on files, file size and
    /// threads, and --jail-uid/--jail-gid. Same as HUSK_VMM_JAIL=off.
    #[arg(long)]
    pub no_jail: bool,
}

#[derive(Args, Debug)]
pub struct SmokeArgs {
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub vcpus: u32,
    #[arg(long, value_name = "MIB", default_value_t = 128)]
    pub memory: u64,
    /// Seconds to wait for the agent's answer.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    /// Guest console: stdout, file:PATH or none.
    #[arg(long, value_name = "SPEC", default_value = "none")]
    pub serial: String,
    /// virtio-fs device (repeatable), as for `run`.
    #[arg(long = "fs", value_name = "tag=TAG,socket=PATH[,queue_size=N]")]
    pub fs: Vec<String>,
    /// Debugging only: run without the seccomp filters, as for `run`.
    #[arg(long)]
    pub no_seccomp: bool,
    /// Debugging only: no jail, as for `run` (smoke's jail ids are
    /// husk_vm_config::jail_id of its own pid).
    #[arg(long)]
    pub no_jail: bool,
}

#[derive(Args, Debug)]
pub struct PingArgs {
    #[arg(long, value_name = "PATH")]
    pub vsock_uds: PathBuf,
    /// Seconds to keep retrying the connection.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub timeout: u64,
}

/// Time allowed between the agent's Shutdown answer and the VM's end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Time the smoke client gets to finish once the VM has stopped.
const CLIENT_GRACE: Duration = Duration::from_secs(2);

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("husk-vmm: {msg}");
    1
}

/// Entry point; `t0` is the process start as seen by `main`.
pub fn main(t0: Instant) -> i32 {
    timing::init(t0);
    crate::logger::init();
    let cli = Cli::parse();
    timing::mark("arguments parsed");
    match cli.cmd {
        Cmd::Run(a) => {
            let ids = a.jail_uid.map(|u| (u, a.jail_gid.unwrap_or(u)));
            match set_confinement(a.no_seccomp).and_then(|()| set_jail(a.no_jail, ids)) {
                Ok(_) => run(a),
                Err(code) => code,
            }
        }
        Cmd::Smoke(a) => {
            let id = husk_vm_config::jail_id(std::process::id());
            match set_confinement(a.no_seccomp).and_then(|()| set_jail(a.no_jail, Some((id, id)))) {
                Ok(jailed) => smoke(a, t0, jailed),
                Err(code) => code,
            }
        }
        Cmd::Ping(a) => ping(a),
    }
}

/// Turns confinement on (see [`crate::confine`]) in the mode that
/// `--no-seccomp` and `HUSK_VMM_SECCOMP` select; `Err` is the exit code.
fn set_confinement(no_seccomp: bool) -> Result<(), i32> {
    let m = confine::Mode::from_flag_and_env(no_seccomp, env("HUSK_VMM_SECCOMP").as_deref())
        .map_err(fail)?;
    if m != confine::Mode::Enforce {
        eprintln!("husk-vmm: seccomp: {m:?} mode (debugging only)");
    }
    confine::set_mode(m);
    Ok(())
}

/// Enters the jail's mount namespace (see [`confine::jail`]) unless
/// `--no-jail` or `HUSK_VMM_JAIL=off` says not to; the rest of the jail
/// follows at the end of setup. Runs first, before any thread starts.
/// `Ok(true)`: jailed; `Err` is the exit code.
fn set_jail(no_jail: bool, ids: Option<(u32, u32)>) -> Result<bool, i32> {
    let on = match env("HUSK_VMM_JAIL").as_deref().map(str::trim) {
        _ if no_jail => false,
        None | Some("" | "on" | "1") => true,
        Some("off" | "0") => false,
        Some(other) => {
            return Err(fail(format_args!(
                "HUSK_VMM_JAIL={other}: expected on or off"
            )))
        }
    };
    if !on {
        eprintln!("husk-vmm: jail: off (debugging only)");
        return Ok(false);
    }
    confine::jail::enter(ids).map_err(fail)?;
    Ok(true)
}

/// `None` for no flags, so a config file's list is kept.
fn parse_all<T: std::str::FromStr<Err = ConfigError>>(
    specs: &[String],
) -> Result<Option<Vec<T>>, ConfigError> {
    if specs.is_empty() {
        return Ok(None);
    }
    specs
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map(Some)
}

fn run_input(a: RunArgs) -> Result<ConfigInput, ConfigError> {
    let file = match &a.config {
        Some(p) => ConfigInput::from_json_file(p)?,
        None => ConfigInput::default(),
    };
    let disks = parse_all::<DiskConfig>(&a.disks)?;
    let fs = parse_all::<FsConfig>(&a.fs)?;
    let net = parse_all::<NetConfig>(&a.net)?;
    Ok(file.merge(ConfigInput {
        kernel: a.kernel,
        initrd: a.initrd,
        cmdline: a.cmdline,
        append: a.append,
        vcpus: a.vcpus,
        memory: a.memory,
        disks,
        fs,
        net,
        vsock_uds: a.vsock_uds,
        vsock_cid: a.vsock_cid,
        serial: a.serial,
    }))
}

/// Validates, prepares and starts a VM. On failure, removes the vsock socket
/// if it was created.
fn start(config: VmConfig, startup_only: bool) -> Result<Vm, String> {
    let uds = config.vsock.as_ref().map(|v| v.uds.clone());
    let mut prepared = vm::prepare(config).map_err(|e| e.to_string())?;
    if startup_only {
        prepared = prepared.startup_only();
    }
    timing::mark("kernel and initrd validated");
    Vm::start(prepared).map_err(|e| {
        if let Some(p) = uds {
            let _ = std::fs::remove_file(p);
        }
        e.to_string()
    })
}

fn report(outcome: &Outcome) {
    match outcome.exit {
        VmExit::Signal(_) => eprintln!("husk-vmm: {}", outcome.describe()),
        _ => eprintln!(
            "husk-vmm: {}\n{}",
            outcome.describe(),
            format_tail(&outcome.serial_tail)
        ),
    }
}

fn run(a: RunArgs) -> i32 {
    let startup_only = a.startup_only;
    let mut config = match run_input(a).and_then(|i| VmConfig::from_input(i, env)) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = absolute_vsock(&mut config) {
        return fail(e);
    }
    let vm = match start(config, startup_only) {
        Ok(vm) => vm,
        Err(e) => return fail(e),
    };
    timing::mark("vCPUs started");
    let outcome = vm.run(None);
    if !outcome.is_clean() {
        report(&outcome);
    }
    outcome.exit_code()
}

/// The vsock socket's path made absolute: jailed, husk-vmm's working
/// directory becomes the jail's root.
fn absolute_vsock(config: &mut VmConfig) -> Result<(), String> {
    if let Some(v) = config.vsock.as_mut() {
        v.uds = std::path::absolute(&v.uds)
            .map_err(|e| format!("vsock-uds: {}: {e}", v.uds.display()))?;
    }
    Ok(())
}

/// A private directory for the smoke test's socket.
fn temp_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut last = None;
    for i in 0..16u32 {
        let dir = base.join(format!("husk-smoke-{}-{:x}", std::process::id(), nanos ^ i));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no temp dir")))
}

fn smoke(a: SmokeArgs, t0: Instant, jailed: bool) -> i32 {
    if jailed {
        // The sockets' directory on a tmpfs of smoke's own mount namespace:
        // it goes with the process, so the jailed husk-vmm (which cannot
        // remove the directory it is bound on) leaves nothing on the host.
        let tmp = std::env::temp_dir();
        if let Err(e) = confine::jail::private_tmpfs(&tmp) {
            return fail(e);
        }
    }
    let dir = match temp_dir() {
        Ok(d) => d,
        Err(e) => return fail(format_args!("creating a temp dir: {e}")),
    };
    if let Err(e) = jail_owns(&dir) {
        return fail(e);
    }
    // Removed by the confined main thread: empty by then (the VM removed
    // its vsock socket, the client its ready socket).
    confine::paths::register(&dir);
    let code = smoke_in(&a, t0, &dir);
    if !jailed && confine::paths::remove_dir(&dir).is_err() && confine::mode() == confine::Mode::Off
    {
        let _ = std::fs::remove_dir_all(&dir);
    }
    code
}

/// Gives `path` to the jail's ids, if any: the jailed husk-vmm connects to
/// the ready socket and removes its own in smoke's directory.
fn jail_owns(path: &Path) -> Result<(), String> {
    match confine::jail::ids() {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| format!("giving {} to the jail's ids: {e}", path.display())),
        None => Ok(()),
    }
}

fn smoke_in(a: &SmokeArgs, t0: Instant, dir: &Path) -> i32 {
    let uds = dir.join("vsock.sock");
    let fs = match parse_all::<FsConfig>(&a.fs) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let input = ConfigInput {
        fs,
        vcpus: Some(a.vcpus),
        memory: Some(a.memory),
        vsock_uds: Some(uds.clone()),
        serial: Some(a.serial.clone()),
        ..Default::default()
    };
    let config = match VmConfig::from_input(input, env) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // Before the VM starts, so the agent's ready signal cannot be missed.
    let ready = match ReadyListener::bind(&uds) {
        Ok(r) => r,
        Err(e) => return fail(format_args!("the agent's ready socket: {e}")),
    };
    if let Err(e) = jail_owns(ready.path()) {
        return fail(e);
    }
    let vm = match start(config, false) {
        Ok(vm) => vm,
        Err(e) => return fail(e),
    };
    timing::mark("vCPUs started");
    let timeout = Duration::from_secs(a.timeout.max(1));
    let exit = vm.exit_state();
    let client = std::thread::Builder::new()
        .name("smoke-client".into())
        .spawn(move || -> Result<(), String> {
            if let Err(e) = confine::confine_thread(ThreadKind::SmokeClient, "smoke-client") {
                exit.request(VmExit::Fatal(e.to_string()));
                return Err(e.to_string());
            }
            let r = (|| {
                // Connect once the agent says it listens: every earlier
                // attempt costs the booting guest a REQUEST and a RST.
                let deadline = Instant::now() + timeout;
                let poll_from = Instant::now() + husk_protocol::READY_FALLBACK_AFTER;
                let (mut c, how) = loop {
                    match ready.wait(Duration::from_millis(250)) {
                        Ok(true) => {
                            let c = Client::connect_uds_retry(&uds, AGENT_PORT, timeout)?;
                            break (c, "after its ready signal");
                        }
                        Ok(false) => {}
                        Err(_) => {
                            let c = Client::connect_uds_retry(&uds, AGENT_PORT, timeout)?;
                            break (c, "by polling (ready socket failed)");
                        }
                    }
                    // No signal for a while: try now and then anyway (an
                    // agent without one is still found).
                    let now = Instant::now();
                    if now < poll_from && now < deadline {
                        continue;
                    }
                    match Client::connect_uds(&uds, AGENT_PORT, timeout) {
                        Ok(c) => break (c, "by polling, without a ready signal"),
                        Err(e) if Instant::now() >= deadline => return Err(e),
                        Err(_) => {}
                    }
                };
                let info = c.ping()?;
                let ms = t0.elapsed().as_millis();
                let json = serde_json::to_string(&info)
                    .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
                // Write errors (a closed stdout) must not abort the shutdown.
                let _ = writeln!(
                    std::io::stdout(),
                    "agent {} ready in {ms} ms",
                    info.agent_version
                );
                let _ = writeln!(std::io::stderr(), "ping: {json}");
                let _ = writeln!(std::io::stderr(), "agent reached {how}");
                c.shutdown()
            })();
            r.map_err(|e: husk_protocol::client::ClientError| {
                let msg = format!("agent: {e}");
                exit.request(VmExit::Timeout(msg.clone()));
                msg
            })
        });
    let client = match client {
        Ok(c) => c,
        Err(e) => return fail(format_args!("starting the smoke client: {e}")),
    };
    let outcome = vm.run(Some(Instant::now() + timeout + SHUTDOWN_GRACE));
    // If the VM died first, the client may still be retrying its connection:
    // give it a moment to notice, but never wait out its whole timeout.
    let until = Instant::now() + CLIENT_GRACE;
    while !client.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let client_result = if client.is_finished() {
        client
            .join()
            .unwrap_or_else(|_| Err("smoke client panicked".into()))
    } else {
        Err("the VM stopped before the agent answered".into())
    };
    match client_result {
        Ok(()) if outcome.is_clean() => 0,
        _ => {
            report(&outcome);
            1
        }
    }
}

fn ping(a: PingArgs) -> i32 {
    let r = Client::connect_uds_retry(
        &a.vsock_uds,
        AGENT_PORT,
        Duration::from_secs(a.timeout.max(1)),
    )
    .and_then(|mut c| c.ping());
    match r {
        Ok(info) => match serde_json::to_string(&info) {
            Ok(s) => {
                println!("{s}");
                0
            }
            Err(e) => fail(e),
        },
        Err(e) => fail(format_args!("{}: {e}", a.vsock_uds.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("husk-vmm").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn run_flags() {
        let Cmd::Run(a) = parse(&[
            "run",
            "--vcpus",
            "2",
            "--memory",
            "256",
            "--disk",
            "/a,ro",
            "--disk",
            "/b",
            "--append",
            "-- init-arg",
            "--serial",
            "none",
        ])
        .cmd
        else {
            panic!("not run")
        };
        assert_eq!(a.append.as_deref(), Some("-- init-arg"));
        let i = run_input(a).unwrap();
        assert_eq!((i.vcpus, i.memory), (Some(2), Some(256)));
        let disks = i.disks.unwrap();
        assert_eq!(disks.len(), 2);
        assert!(i.fs.is_none());
        let Cmd::Run(a) = parse(&[
            "run",
            "--fs",
            "tag=rootfs,socket=/r.sock",
            "--fs",
            "tag=data,socket=/d.sock,queue_size=64",
        ])
        .cmd
        else {
            panic!("not run")
        };
        let fs = run_input(a).unwrap().fs.unwrap();
        assert_eq!(
            fs.iter()
                .map(|f| (f.tag.as_str(), f.queue_size))
                .collect::<Vec<_>>(),
            [("rootfs", 1024), ("data", 64)]
        );
        assert!(disks[0].read_only && !disks[1].read_only);
        let Cmd::Run(a) = parse(&[
            "run",
            "--net",
            "fd=3,mac=02:42:ac:11:00:02,mtu=1500",
            "--net",
            "tap=tap1,mac=02:42:ac:11:00:03",
        ])
        .cmd
        else {
            panic!("not run")
        };
        let net = run_input(a).unwrap().net.unwrap();
        assert_eq!(
            net.iter().map(NetConfig::describe).collect::<Vec<_>>(),
            ["fd 3", "tap tap1"]
        );
        assert_eq!((net[0].mtu, net[1].mtu), (Some(1500), None));
    }

    #[test]
    fn net_from_the_config_file_and_flags() {
        let p = std::env::temp_dir().join(format!("husk-cli-net-{}.json", std::process::id()));
        std::fs::write(
            &p,
            r#"{"net": [{"tap_fd": 3, "mac": "02:42:ac:11:00:02", "mtu": 1500}]}"#,
        )
        .unwrap();
        let Cmd::Run(a) = parse(&["run", "--config", p.to_str().unwrap()]).cmd else {
            panic!()
        };
        let net = run_input(a).unwrap().net.unwrap();
        assert_eq!((net[0].tap_fd, net[0].mtu), (Some(3), Some(1500)));
        let Cmd::Run(a) = parse(&[
            "run",
            "--config",
            p.to_str().unwrap(),
            "--net",
            "fd=4,mac=02:42:ac:11:00:09",
        ])
        .cmd
        else {
            panic!()
        };
        let net = run_input(a).unwrap().net.unwrap();
        assert_eq!(net.len(), 1, "flags replace the file's list");
        assert_eq!(net[0].tap_fd, Some(4));
        std::fs::remove_file(&p).unwrap();
        let Cmd::Run(a) = parse(&["run", "--net", "fd=3"]).cmd else {
            panic!()
        };
        assert!(run_input(a)
            .unwrap_err()
            .to_string()
            .starts_with("net: no mac= in 'fd=3'"));
    }

    #[test]
    fn flags_override_the_config_file() {
        let p = std::env::temp_dir().join(format!("husk-cli-{}.json", std::process::id()));
        std::fs::write(
            &p,
            r#"{"vcpus": 4, "memory": 512, "disks": [{"path": "/x"}]}"#,
        )
        .unwrap();
        let Cmd::Run(a) = parse(&["run", "--config", p.to_str().unwrap(), "--vcpus", "2"]).cmd
        else {
            panic!()
        };
        let i = run_input(a).unwrap();
        assert_eq!((i.vcpus, i.memory), (Some(2), Some(512)));
        assert_eq!(i.disks.unwrap()[0].path, PathBuf::from("/x"));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn bad_values_are_usage_errors_or_named() {
        assert!(Cli::try_parse_from(["husk-vmm", "run", "--vcpus", "two"]).is_err());
        let Cmd::Run(a) = parse(&["run", "--disk", "/a,rx"]).cmd else {
            panic!()
        };
        assert_eq!(
            run_input(a).unwrap_err().to_string(),
            "disk: unknown option 'rx' in '/a,rx' (expected PATH[,ro])"
        );
        let Cmd::Run(a) = parse(&["run", "--fs", "tag=x"]).cmd else {
            panic!()
        };
        assert!(run_input(a)
            .unwrap_err()
            .to_string()
            .starts_with("fs: no socket= in 'tag=x'"));
        let Cmd::Smoke(s) = parse(&["smoke"]).cmd else {
            panic!()
        };
        assert_eq!(
            (s.vcpus, s.memory, s.timeout, s.serial.as_str()),
            (1, 128, 60, "none")
        );
    }
}
