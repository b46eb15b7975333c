//! Runs the real husk-agent binary with `--listen-unix` and talks to it over
//! the Unix socket: the same serve loop the guest runs on vsock.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use husk_protocol::client::Client;
use husk_protocol::{
    encode_frame, read_frame, write_frame, ErrorCode, ErrorInfo, FrameError, Request, RequestFrame,
    Response, ResponseFrame, MAX_FRAME, PROTOCOL_VERSION,
};

struct Agent {
    child: Child,
    sock: PathBuf,
}

impl Agent {
    fn start(name: &str) -> Agent {
        // One directory per agent: tests run in parallel and each removes its own.
        let dir = std::env::temp_dir().join(format!("husk-agent-it-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("agent.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_husk-agent"))
            .arg("--listen-unix")
            .arg(&sock)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut agent = Agent { child, sock };
        // Generous: CI machines can be loaded by VM tests running beside us.
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&agent.sock).is_err() {
            if let Some(status) = agent.child.try_wait().unwrap() {
                let mut err = String::new();
                let _ = agent.child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("agent exited ({status}) before listening: {err}");
            }
            assert!(
                Instant::now() < deadline,
                "agent did not start listening within 30 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        agent
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    fn client(&self) -> Client {
        let mut c = Client::from_stream(self.connect());
        c.set_timeout(Duration::from_secs(10)).unwrap();
        c
    }

    /// Waits for exit and returns (success, stderr).
    fn wait(mut self) -> (bool, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (status.success(), err);
            }
            assert!(Instant::now() < deadline, "agent did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn still_serves(&self) {
        let info = self.client().ping().unwrap();
        assert_eq!(info.protocol_version, PROTOCOL_VERSION);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.sock.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn error_of(r: &ResponseFrame) -> &ErrorInfo {
    match &r.response {
        Response::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn assert_closed(s: &mut UnixStream) {
    // Closing with unread input makes a Unix socket report a reset instead of EOF.
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("agent should close the connection, got {other:?}"),
    }
}

#[test]
fn ping_then_shutdown_exits_cleanly() {
    let agent = Agent::start("ping");
    let mut c = agent.client();
    let info = c.ping().unwrap();
    assert_eq!(info.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.protocol_version, PROTOCOL_VERSION);
    assert!(info.vcpus >= 1);
    assert!(info.mem_total_kib > 0);
    assert!(info.uptime_ms > 0);
    // Several connections at once.
    let mut c2 = agent.client();
    assert_eq!(c2.ping().unwrap().agent_version, info.agent_version);
    assert!(c.ping().unwrap().uptime_ms >= info.uptime_ms);
    drop(c2);
    c.shutdown().unwrap();
    let sock = agent.sock.clone();
    let (ok, stderr) = agent.wait();
    assert!(ok, "exit status; stderr: {stderr}");
    assert_eq!(
        stderr,
        format!(
            "husk-agent: husk-agent {} listening on unix socket {}\n",
            env!("CARGO_PKG_VERSION"),
            sock.display()
        ),
        "start-up must print exactly one line"
    );
    assert!(!Path::new(&sock).exists(), "socket removed on exit");
}

#[test]
fn garbage_bytes_get_bad_request_and_close() {
    let agent = Agent::start("garbage");
    // Plausible length, body that is not JSON.
    let mut s = agent.connect();
    s.write_all(&[0, 0, 0, 5, 0xff, 0, b'x', 7, 9]).unwrap();
    let r: ResponseFrame = read_frame(&mut s).unwrap();
    assert_eq!(r.id, 0);
    assert_eq!(error_of(&r).code, ErrorCode::BadRequest);
    assert_closed(&mut s);
    // Pure noise: "GET " is a 1.2 GB length prefix.
    let mut s = agent.connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r: ResponseFrame = read_frame(&mut s).unwrap();
    assert_eq!(error_of(&r).code, ErrorCode::BadRequest);
    assert!(
        error_of(&r).message.contains("exceeds"),
        "{}",
        error_of(&r).message
    );
    assert_closed(&mut s);
    // Length 0.
    let mut s = agent.connect();
    s.write_all(&[0, 0, 0, 0]).unwrap();
    let r: ResponseFrame = read_frame(&mut s).unwrap();
    assert_eq!(error_of(&r).code, ErrorCode::BadRequest);
    assert_closed(&mut s);
    // Truncated frames and abrupt hang-ups.
    for bytes in [&[0u8, 0][..], &[0, 0, 0, 9, b'{'], &[]] {
        let mut s = agent.connect();
        s.write_all(bytes).unwrap();
        drop(s);
    }
    // Pseudo-random soup on many connections.
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for _ in 0..50 {
        let mut s = agent.connect();
        let n = usize::try_from(x % 200).unwrap();
        let bytes: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    agent.still_serves();
}

#[test]
fn oversized_frame_is_rejected_before_reading_it() {
    let agent = Agent::start("oversized");
    let mut s = agent.connect();
    s.write_all(&u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes())
        .unwrap();
    // No body sent at all: the agent must answer from the prefix alone.
    let r: ResponseFrame = read_frame(&mut s).unwrap();
    let e = error_of(&r);
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(
        e.message.contains(&(MAX_FRAME + 1).to_string()),
        "{}",
        e.message
    );
    assert_closed(&mut s);

    // Exactly MAX_FRAME is read (and rejected as not a request), then the
    // connection stays in sync.
    let mut s = agent.connect();
    let body = format!(
        r#"{{"version":1,"id":77,"request":{{"type":"ping"}},"pad":"{}"}}"#,
        "p".repeat(MAX_FRAME - 60)
    );
    let mut body = body.into_bytes();
    body.resize(MAX_FRAME, b' ');
    s.write_all(&u32::try_from(MAX_FRAME).unwrap().to_be_bytes())
        .unwrap();
    s.write_all(&body).unwrap();
    let r: ResponseFrame = read_frame(&mut s).unwrap();
    assert_eq!(r.id, 77);
    assert!(matches!(r.response, Response::Pong(_)), "{:?}", r.response);
    agent.still_serves();
}

#[test]
fn wrong_version_and_unknown_request_keep_connection() {
    let agent = Agent::start("version");
    let mut s = agent.connect();
    let mut f = RequestFrame::new(11, Request::Ping);
    f.version = PROTOCOL_VERSION + 1;
    write_frame(&mut s, &f).unwrap();
    let r: ResponseFrame = read_frame(&mut s).unwrap();
    assert_eq!((r.version, r.id), (PROTOCOL_VERSION, 11));
    assert_eq!(error_of(&r).code, ErrorCode::UnsupportedVersion);

    let unknown = br#"{"version":1,"id":12,"request":{"type":"teleport","id":"c1"}}"#;
    s.write_all(&u32::try_from(unknown.len()).unwrap().to_be_bytes())
        .unwrap();
    s.write_all(unknown).unwrap();
    let r: ResponseFrame = read_frame(&mut s).unwrap();
    assert_eq!(r.id, 12);
    assert_eq!(error_of(&r).code, ErrorCode::UnknownRequest);

    // A known request with missing fields is a bad request.
    let partial = br#"{"version":1,"id":14,"request":{"type":"create_container","id":"c1"}}"#;
    s.write_all(&u32::try_from(partial.len()).unwrap().to_be_bytes())
        .unwrap();
    s.write_all(partial).unwrap();
    let r: ResponseFrame = read_frame(&mut s).unwrap();
    assert_eq!(r.id, 14);
    assert_eq!(error_of(&r).code, ErrorCode::BadRequest);

    s.write_all(&encode_frame(&RequestFrame::new(13, Request::Ping)).unwrap())
        .unwrap();
    let r: ResponseFrame = read_frame(&mut s).unwrap();
    assert_eq!(r.id, 13);
    assert!(matches!(r.response, Response::Pong(_)));
    drop(s);
    let c = agent.client();
    c.shutdown().unwrap();
    assert!(agent.wait().0);
}

#[test]
fn client_sees_close_after_bad_frame() {
    let agent = Agent::start("close");
    let mut s = agent.connect();
    s.write_all(&[0, 0, 0, 0]).unwrap();
    let _: ResponseFrame = read_frame(&mut s).unwrap();
    assert!(matches!(
        read_frame::<_, ResponseFrame>(&mut s),
        Err(FrameError::Closed)
    ));
}

#[test]
fn refuses_to_start_without_a_target_and_mounts_nothing() {
    let out = Command::new(env!("CARGO_BIN_EXE_husk-agent"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("husk-agent: not PID 1"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_husk-agent"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--listen-unix"));
}

#[test]
fn connection_limit_answers_busy() {
    let agent = Agent::start("busy");
    // start()'s readiness probe may hold a slot until the agent notices its
    // hang-up: a client turned away as busy meanwhile tries again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut clients: Vec<Client> = Vec::new();
    while clients.len() < 64 {
        let mut c = agent.client();
        match c.ping() {
            Ok(_) => clients.push(c), // accepted and counted
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "client {} refused: {e}",
                    clients.len()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    let mut s = agent.connect();
    let r: ResponseFrame = read_frame(&mut s).unwrap();
    assert_eq!(error_of(&r).code, ErrorCode::Busy);
    drop(clients.pop());
    // The slot is freed once the agent notices the hang-up.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = agent.connect();
        // While the slot is still taken the agent answers busy and hangs up,
        // possibly before our write: a failed write means "not yet".
        if write_frame(&mut s, &RequestFrame::new(1, Request::Ping)).is_err() {
            assert!(Instant::now() < deadline, "slot never freed");
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match read_frame::<_, ResponseFrame>(&mut s) {
            Ok(r) if matches!(r.response, Response::Pong(_)) => break,
            _ => assert!(Instant::now() < deadline, "slot never freed"),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the agent as PID 1 of a fresh PID + mount namespace, chrooted into an
/// empty directory (as in the initramfs), and checks that it mounts the early
/// filesystems and keeps running. Needs root and util-linux `unshare`; the
/// namespaces make reboot(2) and the mounts local to the test.
#[test]
fn pid1_mounts_early_filesystems() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("unshare").arg("--help").output().is_err() {
        eprintln!("skipped: needs root and unshare(1)");
        return;
    }
    let root = std::env::temp_dir().join(format!("husk-agent-pid1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_husk-agent"), root.join("init")).unwrap();
    let mut unshare = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount",
            "--propagation",
            "private",
            "--kill-child",
        ])
        .arg(format!("--root={}", root.display()))
        .arg("/init")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let children = format!("/proc/{0}/task/{0}/children", unshare.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let agent_pid: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&children)
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        {
            break p;
        }
        assert!(Instant::now() < deadline, "unshare did not start the agent");
        std::thread::sleep(Duration::from_millis(5));
    };
    let want = [
        ("/proc", "proc"),
        ("/sys", "sysfs"),
        ("/dev", "devtmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/run", "tmpfs"),
        ("/tmp", "tmpfs"),
        ("/sys/fs/cgroup", "cgroup2"),
    ];
    let mut mounts = Vec::new();
    while Instant::now() < deadline {
        let info =
            std::fs::read_to_string(format!("/proc/{agent_pid}/mountinfo")).unwrap_or_default();
        mounts = info
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let sep = f.iter().position(|&x| x == "-")?;
                Some((f.get(4)?.to_string(), f.get(sep + 1)?.to_string()))
            })
            .collect();
        if want
            .iter()
            .all(|(p, t)| mounts.iter().any(|(mp, mt)| mp == p && mt == t))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    let alive = unshare.try_wait().unwrap().is_none();
    // SAFETY: kill(2) of the agent process this test started.
    unsafe { libc::kill(agent_pid, libc::SIGKILL) };
    let _ = unshare.wait();
    let _ = std::fs::remove_dir_all(&root);
    for (p, t) in want {
        assert!(
            mounts.iter().any(|(mp, mt)| mp == p && mt == t),
            "{p} ({t}) not mounted; mounts: {mounts:?}"
        );
    }
    assert!(alive, "agent as PID 1 must keep running");
}
