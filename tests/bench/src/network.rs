//! The network section: a server in the container or guest
//! (`husk-bench netserve`), clients on the host, side by side for
//! - husk, runc and crun (the runtime CLI, `create` + `start`) on one
//!   bundle whose spec names a network namespace prepared as Podman/CNI
//!   do (see [`netsetup`]), and
//! - husk-vmm and QEMU `-M microvm` (virtio-net on a tap; QEMU with
//!   vhost-net) booting the boot section's kernel and initramfs, the
//!   server started through the agent protocol from an ext4 image on a
//!   virtio-blk device.
//!
//! Per peer: TCP throughput both ways, and HTTP requests over keep-alive
//! connections through a published port (iptables DNAT) when iptables is
//! there. The whole section has a time budget; every peer cleans up after
//! itself (guards) and a failed peer is one line, not the end of the run.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use husk_protocol::net::{Interface, IpNet, MacAddr, Network, Route, SANDBOX_NETNS};
use husk_protocol::{Request, Response, RootfsSource, StdioConfig, READY_PORT};
use husk_vm_config::{DiskConfig, NetBackend, NetConfig};

use crate::mem;
use crate::netload::{self, HttpResult, HTTP_PORT, THROUGHPUT_PORT};
use crate::netsetup::{self, Dnat, NetNs, Tap, Veth, GUEST_ADDR, GUEST_IF, HOST_ADDR};
use crate::report::{NetPeer, NetRatio, NetworkReport};
use crate::start::{self, Runtime};
use crate::stats::ratio;
use crate::vmms::{self, BootSpec, Vmm, VsockReady};

/// The host port the published-port rule maps to the server's HTTP port.
pub const PUBLISHED_PORT: u16 = 18080;
/// The guest NIC's MAC for the bare VMMs.
const GUEST_MAC: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0xc9, 0x00, 0x02]);
/// Where the server is in the rootfs.
const SERVER: &str = "/husk-bench";
/// What one peer takes besides its measurements (set-up, boot): used to
/// skip peers that would overrun the section's budget.
const PEER_OVERHEAD: Duration = Duration::from_secs(15);

/// What the section runs.
pub struct NetPlan {
    /// Each workload's length.
    pub secs: Duration,
    pub connections: usize,
    /// The whole section, at most.
    pub budget: Duration,
    /// `io.husk.net.backend` values: the husk peer once per value (none:
    /// once, without the annotation).
    pub backends: Vec<String>,
    pub timeout: Duration,
}

/// One measured peer's figures.
struct Figures {
    setup_ms: f64,
    upload: f64,
    download: f64,
    http: HttpResult,
}

/// How the HTTP load reaches the server.
enum HttpPath {
    Dnat(PathBuf),
    Direct,
}

impl HttpPath {
    fn describe(&self) -> String {
        match self {
            HttpPath::Dnat(_) => format!(
                "published port: iptables -t nat OUTPUT DNAT {HOST_ADDR}:{PUBLISHED_PORT} -> {GUEST_ADDR}:{HTTP_PORT}"
            ),
            HttpPath::Direct => format!(
                "direct to {GUEST_ADDR}:{HTTP_PORT} (no iptables on PATH: no published port)"
            ),
        }
    }
}

/// The three workloads against the server at [`GUEST_ADDR`], once it
/// listens (by `deadline`); `t0` is when the peer's set-up began.
fn measure(
    plan: &NetPlan,
    via: &HttpPath,
    t0: Instant,
    deadline: Instant,
) -> Result<Figures, String> {
    let tp = SocketAddr::V4(SocketAddrV4::new(GUEST_ADDR, THROUGHPUT_PORT));
    let direct = SocketAddr::V4(SocketAddrV4::new(GUEST_ADDR, HTTP_PORT));
    netload::wait_listening(tp, deadline)?;
    netload::wait_listening(direct, deadline)?;
    let setup_ms = t0.elapsed().as_secs_f64() * 1e3;
    let upload = netload::upload(tp, plan.secs)?;
    let download = netload::download(tp, plan.secs)?;
    let (_rule, http_addr) = match via {
        HttpPath::Dnat(ipt) => (
            Some(Dnat::add(
                ipt,
                HOST_ADDR,
                PUBLISHED_PORT,
                GUEST_ADDR,
                HTTP_PORT,
            )?),
            SocketAddr::V4(SocketAddrV4::new(HOST_ADDR, PUBLISHED_PORT)),
        ),
        HttpPath::Direct => (None, direct),
    };
    let http = netload::http_load(http_addr, plan.connections, plan.secs);
    if http.requests == 0 {
        return Err(format!(
            "http: no answer: {}",
            http.first_error.as_deref().unwrap_or("?")
        ));
    }
    Ok(Figures {
        setup_ms,
        upload,
        download,
        http,
    })
}

/// The bundle (busybox and husk-bench as the server) every peer runs.
fn make_rootfs(busybox: &Path, dir: &Path) -> Result<(), String> {
    start::make_bundle(dir, busybox, &[SERVER, "netserve"])?;
    let me = std::env::current_exe().map_err(|e| format!("husk-bench's own path: {e}"))?;
    if !start::is_static_elf(&me)? {
        return Err(format!(
            "{} is not static: the server runs it in the container",
            me.display()
        ));
    }
    let to = dir.join("rootfs").join(SERVER.trim_start_matches('/'));
    std::fs::copy(&me, &to).map_err(|e| format!("{}: {e}", to.display()))?;
    Ok(())
}

/// The bundle's spec with the network namespace at `netns` and, for husk,
/// the `io.husk.net.backend` annotation.
fn spec_for(
    bundle: &Path,
    netns: &str,
    backend: Option<&str>,
) -> Result<serde_json::Value, String> {
    let cfg = bundle.join("config.json");
    let text = std::fs::read(&cfg).map_err(|e| format!("{}: {e}", cfg.display()))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", cfg.display()))?;
    if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
        for n in ns.iter_mut().filter(|n| n["type"] == "network") {
            n["path"] = netns.into();
        }
    }
    if let Some(b) = backend {
        spec["annotations"] = serde_json::json!({ "io.husk.net.backend": b });
    }
    Ok(spec)
}

/// A container deleted (`delete --force`) on drop.
struct Container<'a> {
    bin: &'a Path,
    root: PathBuf,
    id: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        start::force_delete(self.bin, &self.root, &self.id);
    }
}

/// One runtime CLI peer: fresh netns and veth, `create` + `start`, measure.
fn container_peer(
    bin: &Path,
    backend: Option<&str>,
    bundle: &Path,
    plan: &NetPlan,
    via: &HttpPath,
    deadline: Instant,
    n: usize,
) -> Result<Figures, String> {
    let pid = std::process::id();
    let ns = NetNs::create(&format!("husk-bench-{pid}-{n}"))?;
    let _veth = Veth::create(&format!("hb{pid}h"), &ns)?;
    let spec = spec_for(bundle, &ns.path.to_string_lossy(), backend)?;
    let cfg = bundle.join("config.json");
    std::fs::write(&cfg, serde_json::to_vec_pretty(&spec).unwrap_or_default())
        .map_err(|e| format!("{}: {e}", cfg.display()))?;
    let root = bundle.with_file_name(format!("net-root-{n}"));
    let _ = std::fs::create_dir_all(&root);
    let t0 = Instant::now();
    let c = Container {
        bin,
        root,
        id: format!("hb-net-{pid}-{n}"),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let rt = |args: &[&str]| {
        let mut cmd = Command::new(bin);
        cmd.arg("--root").arg(&c.root).args(args);
        start::run_bounded(&mut cmd, left).map_err(|e| format!("{}: {e}", args[0]))
    };
    rt(&["create", "--bundle", &bundle.to_string_lossy(), &c.id])?;
    rt(&["start", &c.id])?;
    measure(plan, via, t0, deadline)
}

/// The guest network the agent is asked for: the NIC by MAC, addressed,
/// default route to the tap's host address.
pub fn guest_network() -> Network {
    Network {
        interfaces: vec![Interface {
            name: GUEST_IF.into(),
            mac: GUEST_MAC,
            mtu: 1500,
            addresses: vec![IpNet {
                addr: GUEST_ADDR.into(),
                prefix: netsetup::PREFIX,
            }],
        }],
        routes: vec![Route {
            dest: None,
            gateway: Some(HOST_ADDR.into()),
            device: GUEST_IF.into(),
            metric: None,
        }],
        dns_forward: None,
    }
}

/// Through the agent: the network, then the server from the ext4 image
/// on `/dev/vda`, in the sandbox network namespace.
fn start_server_in_guest(
    bundle: &Path,
    call: &mut dyn FnMut(Request) -> Result<Response, String>,
) -> Result<(), String> {
    let spec = spec_for(bundle, SANDBOX_NETNS, None)?;
    let spec = husk_protocol::decode_tracked(spec, "spec")?;
    let id = "netserve".to_string();
    let steps = [
        (
            "ConfigureNetwork",
            Request::ConfigureNetwork {
                network: guest_network(),
            },
        ),
        (
            "CreateContainer",
            Request::CreateContainer {
                id: id.clone(),
                spec: Box::new(spec),
                rootfs: RootfsSource::Block {
                    device: "/dev/vda".into(),
                    fstype: "ext4".into(),
                    readonly: true,
                    options: String::new(),
                },
                stdio: StdioConfig::default(),
            },
        ),
        ("StartContainer", Request::StartContainer { id }),
    ];
    for (what, req) in steps {
        match call(req)? {
            Response::Error(e) => return Err(format!("{what}: {}", e.message)),
            _ => continue,
        }
    }
    Ok(())
}

/// The bundle's rootfs as an ext4 image (`mkfs.ext4 -d`), for virtio-blk.
fn make_image(bundle: &Path, img: &Path) -> Result<(), String> {
    let mkfs = mem::which("mkfs.ext4")
        .or_else(|| Some(PathBuf::from("/sbin/mkfs.ext4")).filter(|p| p.is_file()))
        .ok_or("no mkfs.ext4 (e2fsprogs) for the VMMs' rootfs image")?;
    let f = std::fs::File::create(img).map_err(|e| format!("{}: {e}", img.display()))?;
    f.set_len(64 << 20)
        .map_err(|e| format!("{}: {e}", img.display()))?;
    drop(f);
    let args: Vec<String> = ["-q", "-F", "-d"]
        .iter()
        .map(|s| s.to_string())
        .chain([
            bundle.join("rootfs").to_string_lossy().into_owned(),
            img.to_string_lossy().into_owned(),
        ])
        .collect();
    netsetup::run(&mkfs, &args)
}

/// vhost-net for QEMU, loading the module if need be: whether it is there.
fn vhost_net() -> bool {
    let dev = Path::new("/dev/vhost-net");
    if !dev.exists() {
        if let Some(m) = mem::which("modprobe") {
            let _ = netsetup::run(&m, &["vhost_net".to_string()]);
        }
    }
    dev.exists()
}

#[allow(clippy::too_many_arguments)]
/// One bare-VMM peer: a tap, the VMM with virtio-net on it and the
/// image on virtio-blk, the server through the agent, measure.
fn vmm_peer(
    vmm: BareVmm,
    spec: &BootSpec,
    img: &Path,
    bundle: &Path,
    plan: &NetPlan,
    via: &HttpPath,
    deadline: Instant,
) -> Result<Figures, String> {
    use std::os::fd::AsRawFd;
    let tmp = bundle.parent().unwrap_or(Path::new("/tmp"));
    let tap = Tap::create(&format!("hbt{}", std::process::id()))?;
    let fd = tap.fd.as_raw_fd();
    let t0 = Instant::now();
    let timeout = deadline.saturating_duration_since(t0);
    let figures = match vmm {
        BareVmm::Qemu(bin, vhost) => {
            let cid = 2900 + (std::process::id() % 1000);
            let ready = VsockReady::bind(READY_PORT)?;
            let mut cmd = vmms::qemu_command_with(
                bin,
                spec,
                cid,
                " virtio_mmio.device=512@0xfeb00200:6 virtio_mmio.device=512@0xfeb00400:7",
            );
            cmd.args([
                "-netdev",
                &format!(
                    "tap,id=n0,fd={fd},vhost={}",
                    if vhost { "on" } else { "off" }
                ),
                "-device",
                &format!("virtio-net-device,netdev=n0,mac={GUEST_MAC},bus=virtio-mmio-bus.1"),
                "-drive",
                &format!(
                    "id=d0,file={},format=raw,if=none,readonly=on",
                    img.display()
                ),
                "-device",
                "virtio-blk-device,drive=d0,bus=virtio-mmio-bus.2",
            ]);
            let mut vmm = Vmm::spawn(&mut cmd, &tmp.join("net-qemu.log"))?;
            let mut sock = vmms::qemu_wait_agent(&mut vmm, &ready, cid, t0, timeout)?;
            let mut id = 0;
            start_server_in_guest(bundle, &mut |r| {
                id += 1;
                vmms::vsock_call(&mut sock, id, r)
            })
            .map_err(|e| format!("{e}; console: {}", vmm.log_tail()))?;
            measure(plan, via, t0, deadline).map_err(|e| exited(&mut vmm, e))?
        }
        BareVmm::Husk(husk_vmm, backend) => {
            let uds = tmp.join("net-husk.vsock");
            let mut input = vmms::husk_config(spec, &uds);
            let backend = backend.map(str::parse::<NetBackend>).transpose()?;
            let nic = NetConfig::tap_fd(fd, GUEST_MAC, Some(1500));
            input.net = Some(vec![match backend {
                Some(b) => nic.with_backend(b),
                None => nic,
            }]);
            input.disks = Some(vec![DiskConfig {
                path: img.to_owned(),
                read_only: true,
            }]);
            let log = tmp.join("net-husk-vmm.log");
            let mut vmm = vmms::spawn_husk_config(husk_vmm, input, &uds, &log, false)?;
            let (mut client, _, _) = vmms::husk_wait_agent(&mut vmm, &uds, t0, timeout)?;
            start_server_in_guest(bundle, &mut |r| client.call(r).map_err(|e| e.to_string()))
                .map_err(|e| format!("{e}; console: {}", vmm.log_tail()))?;
            measure(plan, via, t0, deadline).map_err(|e| exited(&mut vmm, e))?
        }
    };
    drop(tap);
    Ok(figures)
}

/// `e`, with the VMM's last words if it is gone.
fn exited(vmm: &mut Vmm, e: String) -> String {
    match vmm.exited() {
        Some(st) => format!("{e}; the VMM exited ({st}): {}", vmm.log_tail()),
        None => e,
    }
}

/// A bare VMM: QEMU (vhost=on or not), or husk-vmm with a NIC backend.
enum BareVmm<'a> {
    Qemu(&'a Path, bool),
    Husk(&'a Path, Option<&'a str>),
}

/// Which peer, and how to run it.
enum Peer<'a> {
    Container(&'a Runtime, Option<String>),
    Qemu,
    /// husk-vmm, with the NIC backend named (virtio, vhost) or the default.
    HuskVmm(Option<String>),
}

impl Peer<'_> {
    fn name(&self) -> String {
        match self {
            Peer::Container(r, Some(b)) => format!("{} ({b})", r.name),
            Peer::Container(r, None) => r.name.clone(),
            Peer::Qemu => "qemu-microvm".into(),
            Peer::HuskVmm(Some(b)) => format!("husk-vmm ({b})"),
            Peer::HuskVmm(None) => "husk-vmm".into(),
        }
    }
}

pub struct NetInputs<'a> {
    pub runtimes: &'a [Runtime],
    pub husk_vmm: &'a Path,
    pub qemu: &'a Path,
    pub busybox: &'a Path,
    pub spec: &'a BootSpec,
}

/// The peers in the order they run: husk first (per backend), then the
/// VMMs, then runc and crun.
fn peers<'a>(inp: &NetInputs<'a>, backends: &[String]) -> Vec<Peer<'a>> {
    let mut v = Vec::new();
    let by = |n: &str| inp.runtimes.iter().find(|r| r.name == n);
    if let Some(h) = by("husk") {
        if backends.is_empty() {
            v.push(Peer::Container(h, None));
        }
        for b in backends {
            v.push(Peer::Container(h, Some(b.clone())));
        }
    }
    v.push(Peer::Qemu);
    if backends.is_empty() {
        v.push(Peer::HuskVmm(None));
    }
    for b in backends {
        v.push(Peer::HuskVmm(Some(b.clone())));
    }
    for n in ["runc", "crun"] {
        if let Some(r) = by(n) {
            v.push(Peer::Container(r, None));
        }
    }
    v
}

pub fn network_section(inp: &NetInputs, plan: &NetPlan, tmp: &Path) -> NetworkReport {
    let t_section = Instant::now();
    let bundle = tmp.join("net-bundle");
    let img = tmp.join("net-rootfs.ext4");
    let via = match mem::which("iptables") {
        Some(p) => HttpPath::Dnat(p),
        None => HttpPath::Direct,
    };
    eprintln!(
        "husk-bench: network: {:.0} s per workload; HTTP: {} keep-alive connections, {}",
        plan.secs.as_secs_f64(),
        plan.connections,
        via.describe()
    );
    let prepared = make_rootfs(inp.busybox, &bundle);
    let mut image: Option<Result<(), String>> = None;
    let vhost = vhost_net();
    let mut out = Vec::new();
    for (n, peer) in peers(inp, &plan.backends).into_iter().enumerate() {
        let name = peer.name();
        let mut p = NetPeer::new(&name, matches!(peer, Peer::Container(..)));
        let est = plan.secs * 3 + PEER_OVERHEAD;
        let left = plan.budget.saturating_sub(t_section.elapsed());
        let deadline = Instant::now() + plan.timeout.min(left.saturating_sub(plan.secs * 3));
        let r = if let Err(e) = &prepared {
            Err(format!("rootfs: {e}"))
        } else if left < est {
            p.status = format!("skipped: the section's {:?} budget is spent", plan.budget);
            eprintln!("  {name}: {}", p.status);
            out.push(p);
            continue;
        } else {
            match &peer {
                Peer::Container(rt, backend) => match &rt.bin {
                    None => {
                        p.status = format!("skipped: {}", rt.missing_reason());
                        out.push(p);
                        continue;
                    }
                    Some(bin) => {
                        container_peer(bin, backend.as_deref(), &bundle, plan, &via, deadline, n)
                    }
                },
                Peer::Qemu | Peer::HuskVmm(_) => {
                    let made = image
                        .get_or_insert_with(|| make_image(&bundle, &img))
                        .clone();
                    made.and_then(|()| {
                        if matches!(peer, Peer::Qemu) && !vhost {
                            p.note = Some("vhost=off: no /dev/vhost-net".into());
                        }
                        let vmm = match &peer {
                            Peer::HuskVmm(b) => BareVmm::Husk(inp.husk_vmm, b.as_deref()),
                            _ => BareVmm::Qemu(inp.qemu, vhost),
                        };
                        vmm_peer(vmm, inp.spec, &img, &bundle, plan, &via, deadline)
                    })
                }
            }
        };
        match r {
            Ok(f) => {
                p.set(f.setup_ms, f.upload, f.download, f.http);
                eprintln!(
                    "  {name}: up {:.2} / down {:.2} Gbit/s, {:.0} req/s",
                    f.upload,
                    f.download,
                    p.http.as_ref().map_or(0.0, |h| h.requests_per_s)
                );
            }
            Err(e) => {
                eprintln!("  {name}: FAILED: {e}");
                p.status = format!("failed: {e}");
            }
        }
        out.push(p);
    }
    NetworkReport {
        seconds: plan.secs.as_secs_f64(),
        http_connections: plan.connections,
        http_mode: format!(
            "{} keep-alive connections, closed loop (each sends its next GET after the answer)",
            plan.connections
        ),
        published: via.describe(),
        ratios: ratios(&out),
        peers: out,
        elapsed_s: t_section.elapsed().as_secs_f64(),
    }
}

/// husk (each backend) over QEMU, runc and crun; husk-vmm over QEMU.
pub fn ratios(peers: &[NetPeer]) -> Vec<NetRatio> {
    let find = |n: &str| peers.iter().find(|p| p.name == n && p.status == "ok");
    let mut v = Vec::new();
    let husks = peers
        .iter()
        .filter(|p| p.name == "husk" || p.name.starts_with("husk ("));
    let mut pairs: Vec<(&NetPeer, &str)> = Vec::new();
    for h in husks {
        for other in ["qemu-microvm", "runc", "crun"] {
            pairs.push((h, other));
        }
    }
    for h in peers
        .iter()
        .filter(|p| p.name == "husk-vmm" || p.name.starts_with("husk-vmm ("))
    {
        pairs.push((h, "qemu-microvm"));
    }
    for (a, other) in pairs {
        let Some(b) = find(other) else { continue };
        if a.status != "ok" {
            continue;
        }
        let rps = |p: &NetPeer| p.http.as_ref().map(|h| h.requests_per_s);
        v.push(NetRatio {
            what: format!("{}/{}", a.name, b.name),
            upload: ratio(a.upload_gbps, b.upload_gbps),
            download: ratio(a.download_gbps, b.download_gbps),
            requests_per_s: ratio(rps(a), rps(b)),
            p50: ratio(
                a.http.as_ref().and_then(|h| h.p50_ms),
                b.http.as_ref().and_then(|h| h.p50_ms),
            ),
            p99: ratio(
                a.http.as_ref().and_then(|h| h.p99_ms),
                b.http.as_ref().and_then(|h| h.p99_ms),
            ),
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_network_is_valid_and_routes_to_the_host_end() {
        let n = guest_network();
        n.validate().unwrap();
        assert_eq!(n.routes[0].gateway, Some(HOST_ADDR.into()));
        assert_eq!(n.interfaces[0].mac.to_string(), "02:42:0a:c9:00:02");
    }

    #[test]
    fn the_spec_names_the_netns_and_the_backend() {
        let dir = std::env::temp_dir().join(format!("husk-bench-netspec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = start::runc_spec(&[SERVER, "netserve"]);
        std::fs::write(dir.join("config.json"), spec.to_string()).unwrap();
        let s = spec_for(&dir, "/run/netns/x", Some("vhost")).unwrap();
        let net: Vec<_> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["type"] == "network")
            .collect();
        assert_eq!(net.len(), 1);
        assert_eq!(net[0]["path"], "/run/netns/x");
        assert_eq!(s["annotations"]["io.husk.net.backend"], "vhost");
        let s = spec_for(&dir, SANDBOX_NETNS, None).unwrap();
        assert!(s.get("annotations").is_none());
        let decoded: Result<husk_protocol::oci::Spec, _> = husk_protocol::decode_tracked(s, "spec");
        assert!(decoded.is_ok(), "{:?}", decoded.err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn peer(name: &str, up: f64, rps: f64) -> NetPeer {
        let mut p = NetPeer::new(name, true);
        p.set(
            100.0,
            up,
            up / 2.0,
            HttpResult {
                requests: 10,
                requests_per_s: rps,
                p50_ms: Some(1.0),
                p99_ms: Some(2.0),
                ..Default::default()
            },
        );
        p
    }

    #[test]
    fn ratios_pair_each_husk_with_qemu_runc_and_crun() {
        let mut crun = peer("crun", 1.0, 1.0);
        crun.status = "failed: x".into();
        let ps = [
            peer("husk (virtio)", 2.0, 300.0),
            peer("husk (vhost)", 4.0, 600.0),
            peer("qemu-microvm", 4.0, 300.0),
            peer("husk-vmm (virtio)", 2.0, 150.0),
            peer("husk-vmm (vhost)", 8.0, 300.0),
            peer("runc", 8.0, 1200.0),
            crun,
        ];
        let r = ratios(&ps);
        let names: Vec<&str> = r.iter().map(|x| x.what.as_str()).collect();
        assert_eq!(
            names,
            [
                "husk (virtio)/qemu-microvm",
                "husk (virtio)/runc",
                "husk (vhost)/qemu-microvm",
                "husk (vhost)/runc",
                "husk-vmm (virtio)/qemu-microvm",
                "husk-vmm (vhost)/qemu-microvm"
            ]
        );
        assert_eq!(r[0].upload, Some(0.5));
        assert_eq!(r[2].requests_per_s, Some(2.0));
        assert_eq!(r[4].download, Some(0.5));
        assert_eq!(r[5].download, Some(2.0));
    }
}
