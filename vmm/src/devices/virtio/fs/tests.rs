use vm_memory::GuestAddress;

use super::*;
use crate::vstate::vcpu::VmExit;

#[test]
fn config_space_is_tag_and_one_request_queue() {
    let c = config_space("myfs");
    assert_eq!(&c[..4], b"myfs");
    assert!(c[4..36].iter().all(|&b| b == 0));
    assert_eq!(&c[36..], &1u32.to_le_bytes());
    let long = "a".repeat(36);
    let c = config_space(&long);
    assert_eq!(&c[..36], long.as_bytes());
    assert_eq!(&c[36..], &1u32.to_le_bytes());
}

#[test]
fn features_offered_are_the_backends_that_we_support() {
    let v1 = 1u64 << VIRTIO_F_VERSION_1;
    let proto = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
    let log_all = VhostUserVirtioFeatures::LOG_ALL.bits();
    let indirect = 1u64 << VIRTIO_RING_F_INDIRECT_DESC;
    let packed = 1u64 << 34;
    // What C virtiofsd (libvhost-user) offers, roughly.
    let backend = v1 | proto | log_all | indirect | (1 << VIRTIO_RING_F_EVENT_IDX) | packed;
    let offered = offered_features(backend).unwrap();
    assert_eq!(
        offered,
        v1 | indirect | (1 << VIRTIO_RING_F_EVENT_IDX),
        "{offered:#x}"
    );
    assert_eq!(offered & (proto | log_all | packed), 0);
    let e = offered_features(indirect | proto).unwrap_err();
    assert!(e.contains("VIRTIO_F_VERSION_1"), "{e}");
}

#[test]
fn backend_features_add_protocol_features_only_if_offered() {
    let v1 = 1u64 << VIRTIO_F_VERSION_1;
    let proto = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
    assert_eq!(backend_features(v1, true), v1 | proto);
    assert_eq!(backend_features(v1, false), v1);
    // A driver cannot smuggle the vhost-user bit in (it is never offered,
    // and it is replaced by what we negotiated anyway).
    assert_eq!(backend_features(v1 | proto, false), v1);
}

#[test]
fn missing_socket_is_a_bounded_error_naming_the_path() {
    let p = std::env::temp_dir().join(format!("husk-fs-missing-{}.sock", std::process::id()));
    let exit = Arc::new(ExitState::new().unwrap());
    let t0 = Instant::now();
    let e = Fs::new("t", &p, 128, exit, Duration::from_millis(200))
        .unwrap_err()
        .to_string();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(
        e,
        format!(
            "cannot connect to vhost-user socket {} within 200 ms: not found",
            p.display()
        )
    );
}

/// A temp dir removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("husk-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Memfd-backed guest memory like the VMM's when a vhost-user device is on.
fn shared_memory() -> GuestMemoryMmap {
    use crate::arch::ram;
    let r = ram::create(
        &[(
            GuestAddress(0),
            crate::devices::virtio::test_utils::MEM_SIZE,
        )],
        ram::Backing::SharedMemfd,
    )
    .unwrap();
    // The mappings stay until the test process exits.
    std::mem::forget(r.mappings);
    r.mem
}

const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";

/// Against the real C virtiofsd, when it is installed and we are root (its
/// sandbox needs namespaces): connect, activate through the MMIO transport,
/// and get a FUSE_INIT answered on the request queue.
#[test]
fn fuse_init_round_trip_with_virtiofsd() {
    use crate::devices::virtio::test_utils::Driver;
    // SAFETY: geteuid has no preconditions.
    if !Path::new(VIRTIOFSD).exists() || unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs {VIRTIOFSD} and root");
        return;
    }
    let dir = TempDir::new("virtiofsd");
    let src = dir.0.join("src");
    std::fs::create_dir(&src).unwrap();
    let sock = dir.0.join("v.sock");
    let mut child = std::process::Command::new(VIRTIOFSD)
        .arg(format!("--socket-path={}", sock.display()))
        .arg("-o")
        .arg(format!("source={}", src.display()))
        .args(["-o", "cache=none", "--thread-pool-size=1"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let exit = Arc::new(ExitState::new().unwrap());
        let fs = Fs::new("hostfs", &sock, 64, exit.clone(), CONNECT_TIMEOUT).unwrap();
        let features = fs.avail_features();
        assert_ne!(features & (1 << VIRTIO_F_VERSION_1), 0);
        let mem = shared_memory();
        let mut d = Driver::new(&mem, Box::new(fs));
        assert_eq!(d.read32(0x08), TYPE_FS);
        assert_eq!(&d.read_config(0, 6), b"hostfs");
        assert_eq!(d.read_config(36, 4), 1u32.to_le_bytes());
        assert!(d.activate(0));
        assert_eq!(d.read32(0x60) & 1, 1, "used-ring bit reads as set");

        let (error, unique) = fuse_init(&mut d, 1);
        assert_eq!((error, unique), (0, 1));
        assert!(!exit.stopping());

        // Reset: the backend stops its rings (GET_VRING_BASE) and stays up;
        // a second bring-up on fresh rings works again.
        d.write32(0x70, 0);
        d.reinit_queues();
        assert!(d.activate(0));
        let (_, unique) = fuse_init(&mut d, 2);
        assert_eq!(unique, 2, "answer on the restarted rings");
        assert!(!exit.stopping(), "{:?}", exit.reason());

        // The backend dies: the VM is told to stop, naming tag and socket.
        let _ = child.kill();
        let t0 = Instant::now();
        while !exit.stopping() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        match exit.reason() {
            Some(VmExit::Fatal(m)) => {
                assert!(
                    m.starts_with(&format!("fs hostfs: {}: ", sock.display())),
                    "{m}"
                );
                assert!(m.ends_with("the backend closed the connection"), "{m}");
            }
            r => panic!("backend death not reported: {r:?}"),
        }
    }));
    let _ = child.kill();
    let _ = child.wait();
    result.unwrap();
}

/// Sends FUSE_INIT with `unique` on the request queue and waits for the
/// answer: (error, unique) of the fuse_out_header.
fn fuse_init(d: &mut crate::devices::virtio::test_utils::Driver, unique: u64) -> (i32, u64) {
    // fuse_in_header (40 bytes) + fuse_init_in (64 bytes, protocol 7.36).
    let mut req = Vec::new();
    req.extend_from_slice(&104u32.to_le_bytes()); // len
    req.extend_from_slice(&26u32.to_le_bytes()); // FUSE_INIT
    req.extend_from_slice(&unique.to_le_bytes());
    req.extend_from_slice(&[0u8; 24]); // nodeid, uid, gid, pid, extlen, pad
    req.extend_from_slice(&7u32.to_le_bytes()); // major
    req.extend_from_slice(&31u32.to_le_bytes()); // minor
    req.extend_from_slice(&[0u8; 56]);
    let req_len = u32::try_from(req.len()).unwrap();
    let inb = d.alloc(req_len);
    d.write_mem(inb, &req);
    let outb = d.alloc(16 + 64);
    let head = d.add_chain(1, &[(inb, req_len, false), (outb, 80, true)]);
    d.kick(1);
    let mut used = Vec::new();
    assert!(
        d.run_until(10, |d| {
            used.extend(d.take_used(1));
            !used.is_empty()
        }),
        "virtiofsd did not answer FUSE_INIT {unique}"
    );
    assert_eq!(used[0].0, head);
    let out = d.read_mem(outb, 16);
    (
        i32::from_le_bytes(out[4..8].try_into().unwrap()),
        u64::from_le_bytes(out[8..16].try_into().unwrap()),
    )
}
