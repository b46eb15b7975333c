use std::sync::mpsc;
use std::sync::Mutex;

use super::*;

/// What the fake host does with a connection.
#[derive(Clone, Copy)]
enum Host {
    /// Answers with the query's id and this many bytes in all.
    Answer(usize),
    /// Answers with another id.
    WrongId,
    /// Sends this length prefix and nothing else.
    Claims(u16),
    /// Reads the query and never answers.
    Silent,
    /// Announces 100 bytes, then sends one every 100 ms.
    Trickle,
}

fn read_query(s: &mut UnixStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut q = vec![0; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut q).unwrap();
    q
}

fn play(mut s: UnixStream, host: Host, kept: &Mutex<Vec<UnixStream>>) {
    let q = read_query(&mut s);
    match host {
        Host::Answer(n) => {
            let mut a = vec![0xab; n];
            a[..2].copy_from_slice(&q[..2]);
            let mut framed = u16::try_from(n).unwrap().to_be_bytes().to_vec();
            framed.extend_from_slice(&a);
            s.write_all(&framed).unwrap();
        }
        Host::WrongId => {
            let mut framed = vec![0, 12, !q[0], q[1]];
            framed.resize(14, 0);
            s.write_all(&framed).unwrap();
        }
        Host::Claims(n) => s.write_all(&n.to_be_bytes()).unwrap(),
        Host::Silent => kept.lock().unwrap().push(s),
        Host::Trickle => {
            s.write_all(&100u16.to_be_bytes()).unwrap();
            for _ in 0..20 {
                if s.write_all(&[0]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A connect function whose host end plays `host`; the connections a
/// silent host keeps stay open as long as the returned Arc.
fn fake(host: Host) -> (Connect, Arc<Mutex<Vec<UnixStream>>>) {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let k = Arc::clone(&kept);
    let connect: Connect = Arc::new(move || {
        let (guest, h) = UnixStream::pair()?;
        let k = Arc::clone(&k);
        std::thread::spawn(move || play(h, host, &k));
        Ok(Box::new(guest) as Box<dyn HostStream>)
    });
    (connect, kept)
}

fn query(id: u16) -> Vec<u8> {
    let mut q = vec![0u8; 29];
    q[..2].copy_from_slice(&id.to_be_bytes());
    q
}

#[test]
fn a_query_is_relayed_and_answered() {
    let (c, _k) = fake(Host::Answer(100));
    let a = Relay::new(c).exchange(&query(0x1234)).unwrap();
    assert_eq!(a.len(), 100);
    assert_eq!(a[..2], [0x12, 0x34]);
}

#[test]
fn answers_too_large_short_or_foreign_are_refused() {
    let (c, _k) = fake(Host::Claims(65535));
    let e = Relay::new(c).exchange(&query(1)).unwrap_err();
    assert!(matches!(e, RelayError::TooLarge(65535)), "{e}");
    assert_eq!(e.to_string(), "an answer of 65535 bytes is over 65507");
    let (c, _k) = fake(Host::Claims(3));
    let e = Relay::new(c).exchange(&query(1)).unwrap_err();
    assert!(matches!(e, RelayError::Short(3)), "{e}");
    // The length is there, the rest never comes and the host hangs up.
    let (c, _k) = fake(Host::Claims(40));
    let e = Relay::new(c).exchange(&query(1)).unwrap_err();
    assert!(matches!(e, RelayError::Recv(_)), "{e}");
    let (c, _k) = fake(Host::Answer(MAX_REPLY));
    let r = Relay::new(c);
    assert_eq!(r.exchange(&query(7)).unwrap().len(), MAX_REPLY);
    let (c, _k) = fake(Host::WrongId);
    let e = Relay::new(c).exchange(&query(1)).unwrap_err();
    assert!(matches!(e, RelayError::Id), "{e}");
}

#[test]
fn a_host_that_never_answers_hits_the_deadline() {
    for host in [Host::Silent, Host::Trickle] {
        let (c, _k) = fake(host);
        let t0 = Instant::now();
        let e = Relay::new(c)
            .with_bounds(Duration::from_millis(300), 4)
            .exchange(&query(1))
            .unwrap_err();
        assert!(matches!(e, RelayError::Deadline(_)), "{e}");
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }
}

#[test]
fn a_failed_connect_is_reported() {
    let c: Connect = Arc::new(|| Err(io::ErrorKind::ConnectionRefused.into()));
    let e = Relay::new(c).exchange(&query(1)).unwrap_err();
    assert!(e.to_string().starts_with("connect to the host: "), "{e}");
}

#[test]
fn queries_over_the_in_flight_cap_are_dropped() {
    let (c, _k) = fake(Host::Silent);
    let relay = Relay::new(c).with_bounds(Duration::from_millis(400), 2);
    let (tx, rx) = mpsc::channel();
    for _ in 0..2 {
        let tx = tx.clone();
        assert!(relay.spawn(query(1), move |r| tx.send(r.is_err()).unwrap()));
    }
    assert_eq!(relay.in_flight(), 2);
    assert!(!relay.spawn(query(2), |_| panic!("a dropped query ran")));
    for _ in 0..2 {
        assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap());
    }
    // The counter drops when each relay thread ends, just after `done`.
    let t0 = Instant::now();
    while relay.in_flight() > 0 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(relay.in_flight(), 0);
    let tx2 = tx.clone();
    assert!(relay.spawn(query(3), move |r| tx2.send(r.is_err()).unwrap()));
    assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap());
}

#[test]
fn the_forwarder_answers_udp_clients_and_ignores_runts() {
    let (c, _k) = fake(Host::Answer(64));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let fwd = Forwarder::start(sock, Relay::new(c)).unwrap();
    let server = fwd.local_addr().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Too short to be DNS: no answer (the next answer is the real query's).
    client.send_to(&[1, 2, 3], server).unwrap();
    client.send_to(&[], server).unwrap();
    client.send_to(&query(0xbeef), server).unwrap();
    let mut buf = [0u8; 512];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!((n, from), (64, server));
    assert_eq!(buf[..2], [0xbe, 0xef]);
    fwd.stop();
}
