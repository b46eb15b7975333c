//! The relay against a fake resolver on 127.0.0.1 and Unix-socket clients.

use super::*;

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::mpsc;

/// How the fake resolver treats each datagram, in order; past the list it
/// answers normally.
#[derive(Clone, Copy, Debug)]
enum Fake {
    Answer,
    Drop,
    WrongId,
}

/// A resolver on 127.0.0.1 that follows `script`, answering a query with
/// the query itself with QR set and `ANSWER` appended; counts datagrams.
/// Stops after 2 s without a query.
fn fake_resolver(script: Vec<Fake>) -> (SocketAddr, mpsc::Receiver<usize>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let addr = sock.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for i in 0.. {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            let _ = tx.send(i + 1);
            let mut answer = buf[..n].to_vec();
            answer[2] |= 0x80;
            answer.extend_from_slice(b"ANSWER");
            match script.get(i).copied().unwrap_or(Fake::Answer) {
                Fake::Answer => {}
                Fake::Drop => continue,
                Fake::WrongId => answer[0] ^= 0xff,
            }
            sock.send_to(&answer, from).unwrap();
        }
    });
    (addr, rx)
}

fn socket_path() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("husk-dns-test-{}-{n}.sock", std::process::id()))
}

/// A relay serving on a fresh socket until the returned guard is dropped.
struct Running {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    done: Option<thread::JoinHandle<io::Result<()>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.done.take() {
            d.join().unwrap().unwrap();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn run(relay: DnsRelay) -> Running {
    let path = socket_path();
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let done = thread::spawn(move || relay.serve(listener, &s));
    Running {
        path,
        stop,
        done: Some(done),
    }
}

fn fast(resolver: SocketAddr) -> DnsRelay {
    let mut r = DnsRelay::new(resolver);
    r.read_timeout = Duration::from_millis(300);
    r.reply_timeout = Duration::from_millis(600);
    r.retry_after = Duration::from_millis(150);
    r
}

fn query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    q
}

fn framed(msg: &[u8]) -> Vec<u8> {
    let mut f = u16::try_from(msg.len()).unwrap().to_be_bytes().to_vec();
    f.extend_from_slice(msg);
    f
}

/// Reads until EOF or 3 s; the bytes, and whether EOF came.
fn read_all(c: &mut UnixStream) -> (Vec<u8>, bool) {
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut got = Vec::new();
    let eof = c.read_to_end(&mut got).is_ok();
    (got, eof)
}

fn ask(path: &PathBuf, msg: &[u8]) -> (Vec<u8>, bool) {
    let mut c = UnixStream::connect(path).unwrap();
    c.write_all(&framed(msg)).unwrap();
    read_all(&mut c)
}

#[test]
fn a_query_is_answered_length_prefixed() {
    let (resolver, count) = fake_resolver(vec![]);
    let r = run(fast(resolver));
    let q = query(0x1234);
    let (got, eof) = ask(&r.path, &q);
    assert!(eof);
    let mut want = q.clone();
    want[2] |= 0x80;
    want.extend_from_slice(b"ANSWER");
    assert_eq!(got, framed(&want));
    assert_eq!(count.try_iter().count(), 1);
}

#[test]
fn an_unanswered_query_is_sent_once_more() {
    let (resolver, count) = fake_resolver(vec![Fake::Drop]);
    let r = run(fast(resolver));
    let (got, _) = ask(&r.path, &query(7));
    assert!(got.ends_with(b"ANSWER"), "{got:?}");
    assert_eq!(count.try_iter().count(), 2);
}

#[test]
fn an_answer_with_another_id_is_ignored() {
    // The wrong-id answer is ignored; the retry's answer is taken.
    let (resolver, _) = fake_resolver(vec![Fake::WrongId]);
    let r = run(fast(resolver));
    let (got, _) = ask(&r.path, &query(0x0102));
    assert_eq!(&got[2..4], &[0x01, 0x02], "{got:?}");
    // Only wrong ids: nothing comes back, the connection is closed.
    let (resolver, _) = fake_resolver(vec![Fake::WrongId, Fake::WrongId]);
    let r = run(fast(resolver));
    let t = Instant::now();
    let (got, eof) = ask(&r.path, &query(3));
    assert_eq!((got, eof), (vec![], true));
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn oversized_and_undersized_lengths_close_the_connection_unsent() {
    let (resolver, count) = fake_resolver(vec![]);
    let r = run(fast(resolver));
    for len in [5000u16, 65535, 0, 11] {
        let mut c = UnixStream::connect(&r.path).unwrap();
        c.write_all(&len.to_be_bytes()).unwrap();
        let (got, eof) = read_all(&mut c);
        assert_eq!((got, eof), (vec![], true), "length {len}");
    }
    thread::sleep(Duration::from_millis(50));
    assert_eq!(count.try_iter().count(), 0);
}

#[test]
fn a_client_that_sends_nothing_is_dropped_at_the_deadline() {
    let (resolver, _) = fake_resolver(vec![]);
    let r = run(fast(resolver));
    let t = Instant::now();
    let mut c = UnixStream::connect(&r.path).unwrap();
    // Half a length, then silence.
    c.write_all(&[0]).unwrap();
    let (got, eof) = read_all(&mut c);
    assert_eq!((got, eof), (vec![], true));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn connections_over_the_cap_are_closed_at_once() {
    let (resolver, _) = fake_resolver(vec![]);
    let mut relay = fast(resolver);
    relay.max_concurrent = 2;
    relay.read_timeout = Duration::from_secs(2);
    let r = run(relay);
    let mut held: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect(&r.path).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(300)); // both taken by workers
    let t = Instant::now();
    let mut third = UnixStream::connect(&r.path).unwrap();
    let (got, eof) = read_all(&mut third);
    assert_eq!((got, eof), (vec![], true));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // The two held are still open...
    for c in &mut held {
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let e = c.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
    // ...and once one is answered, a new query has a place again.
    held[0].write_all(&framed(&query(9))).unwrap();
    let (got, _) = read_all(&mut held[0]);
    assert!(got.ends_with(b"ANSWER"));
    thread::sleep(Duration::from_millis(50));
    let (got, _) = ask(&r.path, &query(10));
    assert!(got.ends_with(b"ANSWER"));
}

#[test]
fn serve_returns_when_stopped() {
    let (resolver, _) = fake_resolver(vec![]);
    let r = run(fast(resolver));
    let t = Instant::now();
    drop(r);
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn loopback_nameservers_are_forwarded() {
    let docker = "# Generated by Docker Engine.\nnameserver 127.0.0.11\nsearch example.com\noptions ndots:0\n";
    assert_eq!(
        dns_forward_address(docker),
        Some("127.0.0.11".parse().unwrap())
    );
    let resolved = "nameserver 10.0.0.1\nnameserver 127.0.0.53 # stub\n";
    assert_eq!(
        dns_forward_address(resolved),
        Some("127.0.0.53".parse().unwrap())
    );
    assert_eq!(
        dns_forward_address("nameserver ::1\n"),
        Some("::1".parse().unwrap())
    );
    for reachable in [
        "nameserver 8.8.8.8\nnameserver 2001:4860:4860::8888\n",
        "# nameserver 127.0.0.11\n; nameserver 127.0.0.1\n",
        "nameserver fe80::1%eth0\n",
        "nameserver\nnameserver not-an-address\nnameserver127.0.0.1\n",
        "",
    ] {
        assert_eq!(dns_forward_address(reachable), None, "{reachable}");
    }
}
