//! The sandbox of one container: its share (the rootfs and bind sources,
//! bind-mounted into a directory virtiofsd serves), virtiofsd and husk-vmm
//! started with the microVM's typed configuration, watched while they run,
//! and the wait for the guest agent.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use husk_protocol::client::{Client, ReadyListener};
use husk_protocol::AGENT_PORT;
use husk_vm_config::{ConfigInput as VmConfigInput, FsConfig, SerialConfig};

use super::{helper_log, mount_points, Ev, Helpers};
use crate::bundle::{self, Bundle, Shared};
use crate::error::{Error, IoContext, Result};
use crate::host_config::HostConfig;
use crate::log;
use crate::session::{self, SessionError};
use crate::{sys, util};

pub(super) struct Sandbox {
    /// The container's state directory (logs, console, share).
    pub(super) dir: PathBuf,
    /// husk-vmm's vsock socket.
    pub(super) vsock: PathBuf,
    /// virtiofsd and husk-vmm, in the order they started.
    pub(super) helpers: Vec<(&'static str, i32)>,
    /// Word that a helper's log has all it wrote, by helper.
    pub(super) logs: Vec<(&'static str, helper_log::Drained)>,
    pub(super) tx: mpsc::Sender<Ev>,
    /// The VM's network: taps until husk-vmm has them, tc redirects to
    /// remove at the end.
    pub(super) net: super::network::Plan,
    /// The container's cgroup on the host, which the monitor joined.
    pub(super) cgroup: Option<crate::host_cgroup::Joined>,
}

impl Sandbox {
    pub(super) fn spawn(
        &mut self,
        name: &'static str,
        cmd: &mut Command,
        log: &Path,
    ) -> Result<(i32, Child)> {
        let (out, drained) = helper_log::start(log, helper_log::LOG_CAP).at(log)?;
        let err = out.try_clone().at(log)?;
        let me = crate::util::pid(std::process::id());
        // SAFETY: child_setup only makes async-signal-safe calls.
        let spawned = unsafe { cmd.pre_exec(move || sys::child_setup(me)) }
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn();
        // The helper's copies alone keep the log's pipe open: it ends with it.
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let child = spawned.map_err(|source| Error::StartHelper {
            name,
            program: PathBuf::from(cmd.get_program()),
            source,
        })?;
        self.logs.push((name, drained));
        let pid = util::pid(child.id());
        self.helpers.push((name, pid));
        let h = Helpers {
            pids: self
                .helpers
                .iter()
                .filter_map(|(_, p)| util::proc_start_time(*p).map(|s| (*p, s)))
                .collect(),
        };
        let _ = util::write_atomic(
            &self.dir.join("helpers.json"),
            &serde_json::to_vec(&h).unwrap_or_default(),
        );
        Ok((pid, child))
    }

    /// Watches a helper in a thread; its death is an event.
    pub(super) fn watch(&self, name: &'static str, mut child: Child) {
        let tx = self.tx.clone();
        let _ = std::thread::Builder::new()
            .name(format!("wait-{name}"))
            .spawn(move || {
                if let Ok(s) = child.wait() {
                    let _ = tx.send(Ev::HelperDied(name, s));
                }
            });
    }

    /// Kills the helpers (virtiofsd last: the VM may still use it).
    pub(super) fn stop(&self) {
        for (_, pid) in self.helpers.iter().rev() {
            // SAFETY: kill(2) on our own unreaped children (their waiter
            // threads hold them until they exit).
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        self.net.teardown();
    }
}

/// Bind-mounts the bundle's rootfs and bind sources into `dir`/share (in
/// this process's mount namespace); returns the share directory. Each bind
/// is what virtiofsd serves, so it carries the share's mode on the host:
/// read-only for a read-only share (a guest that mounts the virtio-fs tag
/// itself cannot write through it), nosuid and nodev for all, recursive
/// only for an `rbind` (and the rootfs); see [`sys::restrict_bind`].
///
/// A read-only rootfs gets `root_points` (see [`mount_points`]) made in it
/// first, while its bind is still writable.
///
/// The share's top level, which holds only the binds' mount points, is a
/// tmpfs of its own, small and made read-only once they are in place: a
/// guest that mounts the tag itself can write nothing there (the state
/// directory is on the host's /run, whose memory it would otherwise fill).
pub(super) fn mount_shares(
    dir: &Path,
    shares: &[Shared],
    root_points: &[mount_points::MountPoint],
) -> Result<PathBuf> {
    let share = dir.join("share");
    util::create_private_dir_all(&share).at(&share)?;
    sys::mount_skeleton_tmpfs(&share, shares.len() + 8)?;
    for s in shares {
        let at = share.join(&s.name);
        if s.is_dir {
            util::create_private_dir_all(&at).at(&at)?;
        } else {
            util::create_private_file(&at).at(&at)?;
        }
        sys::bind(&s.source, &at, s.recursive)?;
        if s.readonly && s.name == bundle::ROOTFS_DIR {
            mount_points::make_all(&at, root_points);
        }
        sys::restrict_bind(&at, s.readonly, s.recursive)?;
    }
    sys::restrict_bind(&share, true, false)?;
    Ok(share)
}

impl Sandbox {
    /// Starts virtiofsd on `share` and husk-vmm, their sockets in `sdir`;
    /// returns where the agent's ready signal arrives. `phase` logs each
    /// step's time.
    pub(super) fn start_helpers(
        &mut self,
        cfg: &HostConfig,
        b: &Bundle,
        share: &Path,
        sdir: &Path,
        phase: impl Fn(&str),
    ) -> Result<ReadyListener> {
        let _ = std::fs::remove_dir_all(sdir);
        util::create_private_dir_all(sdir).at(sdir)?;
        // husk-vmm's jail ids (see `jail_vmm`): the socket directory is
        // theirs, so the jailed husk-vmm can remove its socket there.
        jail_owns(sdir)?;
        let fs_sock = sdir.join("fs.sock");
        self.vsock = sdir.join("vsock");

        let mut vfsd_cmd = Command::new(&cfg.virtiofsd);
        vfsd_cmd
            .arg(format!("--socket-path={}", fs_sock.display()))
            .arg("-o")
            .arg(format!("source={}", share.display()))
            .args(["-o", "cache=auto", "-o", "xattr"]);
        // SAFETY: the function only calls prctl(2), async-signal-safe.
        unsafe { vfsd_cmd.pre_exec(super::virtiofsd::keep_caps_across_uid_switch) };
        let (_, vfsd) = self.spawn("virtiofsd", &mut vfsd_cmd, &self.dir.join("virtiofsd.log"))?;
        self.watch("virtiofsd", vfsd);
        phase("virtiofsd spawned");

        // Before the VMM starts, so the agent's ready signal cannot be missed.
        let ready = ReadyListener::bind(&self.vsock).map_err(Error::ReadySocket)?;
        // The jailed husk-vmm connects to it when the agent signals.
        jail_owns(ready.path())?;
        let vm_json = self.dir.join("vm.json");
        let mut vm = vm_config(cfg, b, &self.vsock, &self.dir, &fs_sock);
        let net = self.net.vm_devices();
        if !net.is_empty() {
            vm.net = Some(net);
        }
        util::write_atomic(&vm_json, vm.to_json()?.as_bytes())?;
        // husk-vmm writes the console into the file as it finds it.
        let console = self.dir.join("console.log");
        util::create_private_file(&console).at(&console)?;
        let mut vmm_cmd = Command::new(&cfg.vmm);
        vmm_cmd.arg("run").arg("--config").arg(&vm_json);
        jail_vmm(&mut vmm_cmd);
        // The taps, by the numbers vm.json names: inherited by husk-vmm
        // alone (they are close-on-exec for everything else).
        let taps: Vec<RawFd> = self.net.taps.iter().map(AsRawFd::as_raw_fd).collect();
        let inherit = move || {
            for fd in &taps {
                // SAFETY: fcntl(2) is async-signal-safe; `fd` is open (the
                // monitor holds it until husk-vmm runs).
                if unsafe { libc::fcntl(*fd, libc::F_SETFD, 0) } < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        };
        // SAFETY: `inherit` only makes async-signal-safe calls and does not
        // allocate.
        unsafe { vmm_cmd.pre_exec(inherit) };
        if log::debug_enabled() {
            // husk-vmm's boot phases in vmm.log.
            vmm_cmd.env("HUSK_VMM_TIMING", "1");
        }
        let (_, vmm) = self.spawn("husk-vmm", &mut vmm_cmd, &self.dir.join("vmm.log"))?;
        self.watch("husk-vmm", vmm);
        phase("husk-vmm spawned");
        Ok(ready)
    }
}

/// husk-vmm jails itself once set up (vmm/src/confine/jail.rs): a root of
/// its own holding only the socket directory, rlimits, and these ids: the
/// monitor's pid past `husk_vm_config::JAIL_ID_BASE`, so each container's
/// husk-vmm has a uid of its own (it dies with its monitor:
/// `PR_SET_PDEATHSIG`, so the pid is not reused while it runs).
fn jail_vmm(cmd: &mut Command) {
    let id = husk_vm_config::jail_id(std::process::id());
    cmd.arg("--jail-uid")
        .arg(id.to_string())
        .arg("--jail-gid")
        .arg(id.to_string());
}

/// Gives `path` to husk-vmm's jail id (uid and gid, see [`jail_vmm`]):
/// the socket directory, and every socket the host listens on at
/// `<vsock>_<port>` for guest-initiated connections, which the jailed
/// husk-vmm connects to (that takes write permission on the socket).
pub(super) fn jail_owns(path: &Path) -> Result<()> {
    let id = husk_vm_config::jail_id(std::process::id());
    std::os::unix::fs::chown(path, Some(id), Some(id)).at(path)?;
    Ok(())
}

/// The microVM of a container: sized by its bundle, its share served by
/// virtiofsd at `fs_sock`, the agent reached at `vsock`, the console in
/// `dir`/console.log.
pub(super) fn vm_config(
    cfg: &HostConfig,
    b: &Bundle,
    vsock: &Path,
    dir: &Path,
    fs_sock: &Path,
) -> VmConfigInput {
    // husk.share: the agent mounts the share as soon as it listens, while
    // the ready signal, the hooks and the create request are on their way.
    let mut append = format!("husk.share={}", bundle::SHARE_TAG);
    if cfg.agent_debug {
        // The agent's debug lines (each request, the phases of a create
        // and a start) on the console: console.log.
        append += " husk.debug";
    }
    VmConfigInput {
        kernel: Some(cfg.kernel.clone()),
        initrd: Some(cfg.initramfs.clone()),
        append: Some(append),
        vcpus: Some(b.vcpus),
        memory: Some(b.memory_mib),
        fs: Some(vec![FsConfig::new(bundle::SHARE_TAG, fs_sock)]),
        vsock_uds: Some(vsock.to_path_buf()),
        serial: Some(SerialConfig::File(dir.join("console.log")).to_string()),
        ..Default::default()
    }
}

/// How often the agent is tried without its ready signal, once
/// [`husk_protocol::READY_FALLBACK_AFTER`] has passed (an agent that does
/// not send one still gets found).
const BOOT_FALLBACK_POLL: Duration = Duration::from_millis(250);

/// Waits for the agent's ready signal, then for its answer; fails at once
/// if a helper dies. Connecting only once the agent listens spares the
/// booting guest a REQUEST and a RST per early attempt.
pub(super) fn boot_wait(
    sb: &Sandbox,
    cfg: &HostConfig,
    b: &Bundle,
    ready: &ReadyListener,
) -> Result<Client> {
    let start = Instant::now();
    let deadline = start + cfg.boot_timeout;
    let mut last = "no ready signal yet".to_string();
    let mut signalled = false;
    let mut next_try = start + husk_protocol::READY_FALLBACK_AFTER;
    let timed_out = |last: &str| Error::BootTimeout {
        secs: cfg.boot_timeout.as_secs(),
        last: last.to_string(),
        console_tail: session::tail(&sb.dir.join("console.log"), 3),
    };
    let dead_now = || -> Vec<(&str, i32)> {
        sb.helpers
            .iter()
            .filter(|(_, p)| util::proc_start_time(*p).is_none())
            .map(|(n, p)| (*n, *p))
            .collect()
    };
    loop {
        let mut dead = dead_now();
        // husk-vmm first: when it goes, virtiofsd follows (its frontend hung
        // up), possibly before husk-vmm is gone itself, and husk-vmm's log
        // says why; when only virtiofsd went, its own log.
        if !dead.is_empty() && dead.len() < sb.helpers.len() {
            std::thread::sleep(Duration::from_millis(300));
            dead = dead_now();
        }
        if let Some(&(n, p)) = dead.iter().find(|(n, _)| *n == "husk-vmm").or(dead.first()) {
            // Its last words, which say why, are on their way to its log.
            if let Some((_, d)) = sb.logs.iter().find(|(m, _)| *m == n) {
                d.wait(Duration::from_secs(1));
            }
            let log = sb.dir.join(if n == "virtiofsd" {
                "virtiofsd.log"
            } else {
                "vmm.log"
            });
            let also = dead
                .iter()
                .filter(|(m, _)| *m != n)
                .map(|(m, q)| format!(" ({m}, pid {q}, exited too)"))
                .collect::<String>();
            return Err(Error::HelperExited {
                name: n,
                pid: p,
                also,
                log_tail: session::tail(&log, 3),
            });
        }
        if !signalled {
            // Short slices: the helpers are checked between them.
            match ready.wait(Duration::from_millis(50)) {
                Ok(s) => signalled = s,
                Err(e) => {
                    last = format!("waiting for the ready signal: {e}");
                    signalled = true; // poll instead
                }
            }
        }
        let now = Instant::now();
        if !signalled && now < next_try {
            if now >= deadline {
                return Err(timed_out(&last));
            }
            continue;
        }
        next_try = now + BOOT_FALLBACK_POLL;
        match Client::connect_uds(&sb.vsock, AGENT_PORT, Duration::from_secs(2)) {
            Ok(mut c) => match c.ping() {
                Ok(info) => {
                    crate::debug!(
                        "agent {} ready after {} ms ({} vCPUs, {} MiB), reached {}",
                        husk_protocol::printable(&info.agent_version, 64),
                        start.elapsed().as_millis(),
                        b.vcpus,
                        b.memory_mib,
                        if signalled {
                            "after its ready signal"
                        } else {
                            "by polling, without a ready signal"
                        }
                    );
                    c.set_timeout(session::CALL_TIMEOUT)
                        .map_err(SessionError::from)?;
                    return Ok(c);
                }
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(timed_out(&last));
        }
        if signalled {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
#[path = "share_tests.rs"]
mod share_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use husk_protocol::oci;
    use husk_vm_config::VmConfig;

    #[test]
    fn the_vm_is_sized_by_the_bundle_and_serves_its_share() {
        let dir = std::env::temp_dir().join(format!("husk-vmcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = HostConfig {
            vmm: "husk-vmm".into(),
            virtiofsd: "virtiofsd".into(),
            kernel: "/k".into(),
            initramfs: "/i".into(),
            boot_timeout: Duration::from_secs(1),
            agent_debug: true,
            enable_annotations: vec![],
        };
        let b = Bundle {
            dir: dir.clone(),
            spec: oci::Spec::default(),
            guest_spec: oci::Spec::default(),
            rootfs: dir.join("rootfs"),
            shares: vec![],
            vcpus: 2,
            memory_mib: 320,
            terminal: false,
            netns: None,
            net_backend: Some(husk_vm_config::NetBackend::Vhost),
        };
        let (vsock, fs_sock) = (dir.join("vsock"), dir.join("fs.sock"));
        let input = vm_config(&cfg, &b, &vsock, &dir, &fs_sock);
        let c = VmConfig::from_input(input, |_| None).unwrap();
        assert_eq!((c.vcpus, c.memory_mib), (2, 320));
        assert_eq!(
            (c.kernel.to_str(), c.initrd.to_str()),
            (Some("/k"), Some("/i"))
        );
        assert_eq!(c.append, "husk.share=husk husk.debug");
        assert_eq!(c.cmdline, husk_vm_config::DEFAULT_CMDLINE);
        assert_eq!(c.fs, [FsConfig::new(bundle::SHARE_TAG, &fs_sock)]);
        assert_eq!(c.vsock.map(|v| v.uds), Some(vsock));
        assert_eq!(c.serial, SerialConfig::File(dir.join("console.log")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
