//! The network section's own load: a small server (`husk-bench netserve`,
//! run inside the container or guest: husk-bench is static) and its
//! clients on the host. TCP throughput in either direction on
//! [`THROUGHPUT_PORT`], and an HTTP/1.1 keep-alive server on [`HTTP_PORT`]
//! answering every GET with [`HTTP_BODY`]. Every client socket has a
//! deadline and every parse a bound: the server runs in a guest.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// TCP throughput: the client's first byte says which way the data goes.
pub const THROUGHPUT_PORT: u16 = 5201;
/// HTTP/1.1 with keep-alive.
pub const HTTP_PORT: u16 = 8080;
/// What every GET answers.
pub const HTTP_BODY: &[u8] = b"hello from husk-bench\n";

/// Upload: the client sends until it shuts its side, the server answers
/// with the byte count it read (8 bytes, big-endian).
const MODE_UPLOAD: u8 = b'U';
/// Download: the server sends until the client closes.
const MODE_DOWNLOAD: u8 = b'D';
const CHUNK: usize = 128 << 10;
/// Most bytes of HTTP headers read (request or response).
const MAX_HEADERS: usize = 8 << 10;
/// Largest HTTP body accepted.
const MAX_BODY: usize = 1 << 20;
/// Most connections the server serves at once.
const MAX_CONNECTIONS: usize = 64;
/// Bound on every client read and write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// `husk-bench netserve`: serves both ports until killed.
pub fn serve() -> i32 {
    let bind = |port: u16| {
        TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("bind 0.0.0.0:{port}: {e}"))
    };
    let (tp, http) = match bind(THROUGHPUT_PORT).and_then(|t| Ok((t, bind(HTTP_PORT)?))) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("husk-bench netserve: {e}");
            return 1;
        }
    };
    let live = Arc::new(AtomicUsize::new(0));
    let l2 = live.clone();
    std::thread::spawn(move || accept_loop(&http, &l2, serve_http));
    accept_loop(&tp, &live, serve_throughput);
    1
}

fn accept_loop(l: &TcpListener, live: &Arc<AtomicUsize>, f: fn(TcpStream)) {
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        if live.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            live.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let live = live.clone();
        let _ = s.set_nodelay(true);
        std::thread::spawn(move || {
            f(s);
            live.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn serve_throughput(mut s: TcpStream) {
    let mut mode = [0u8; 1];
    if s.read_exact(&mut mode).is_err() {
        return;
    }
    let mut buf = vec![0u8; CHUNK];
    match mode[0] {
        MODE_UPLOAD => {
            let mut n: u64 = 0;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => n += k as u64,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
            let _ = s.write_all(&n.to_be_bytes());
        }
        MODE_DOWNLOAD => while s.write_all(&buf).is_ok() {},
        _ => {}
    }
}

fn serve_http(mut s: TcpStream) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = find_header_end(&buf) {
                break i;
            }
            if buf.len() > MAX_HEADERS {
                return;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        };
        let close = String::from_utf8_lossy(&buf[..end])
            .to_ascii_lowercase()
            .contains("connection: close");
        buf.drain(..end);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            HTTP_BODY.len()
        );
        let mut resp = head.into_bytes();
        resp.extend_from_slice(HTTP_BODY);
        if s.write_all(&resp).is_err() || close {
            return;
        }
    }
}

/// Index just past the `\r\n\r\n` ending the headers in `b`.
pub fn find_header_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The status code and `Content-Length` of response headers `head`.
pub fn parse_response_head(head: &[u8]) -> Result<(u16, usize), String> {
    let text = std::str::from_utf8(head).map_err(|_| "response headers are not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {:?}", status.escape_debug().to_string()))?;
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .ok_or("no Content-Length")?
        .1
        .trim()
        .parse::<usize>()
        .map_err(|_| "bad Content-Length")?;
    if len > MAX_BODY {
        return Err(format!("Content-Length {len} over {MAX_BODY}"));
    }
    Ok((code, len))
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| s.set_nodelay(true))
        .map_err(|e| format!("{addr}: {e}"))?;
    Ok(s)
}

/// Tries to connect to `addr` until `deadline`: the server is starting.
pub fn wait_listening(addr: SocketAddr, deadline: Instant) -> Result<(), String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = match TcpStream::connect_timeout(
            &addr,
            left.clamp(Duration::from_millis(10), Duration::from_secs(2)),
        ) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!("nothing listening on {addr} in time: {e}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bits per second over `secs`, in Gbit/s.
pub fn gbps(bytes: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    bytes as f64 * 8.0 / secs / 1e9
}

/// Host -> server for `dur`: Gbit/s of what the server says it received,
/// timed to its count.
pub fn upload(addr: SocketAddr, dur: Duration) -> Result<f64, String> {
    let mut s = connect(addr)?;
    let buf = vec![0x5a_u8; CHUNK];
    let t0 = Instant::now();
    s.write_all(&[MODE_UPLOAD])
        .map_err(|e| format!("upload: {e}"))?;
    while t0.elapsed() < dur {
        s.write_all(&buf).map_err(|e| format!("upload: {e}"))?;
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("upload: {e}"))?;
    let mut n = [0u8; 8];
    s.read_exact(&mut n)
        .map_err(|e| format!("upload: the server's byte count: {e}"))?;
    Ok(gbps(u64::from_be_bytes(n), t0.elapsed().as_secs_f64()))
}

/// Server -> host for `dur`: Gbit/s of what arrived.
pub fn download(addr: SocketAddr, dur: Duration) -> Result<f64, String> {
    let mut s = connect(addr)?;
    s.write_all(&[MODE_DOWNLOAD])
        .map_err(|e| format!("download: {e}"))?;
    let mut buf = vec![0u8; CHUNK];
    let mut n: u64 = 0;
    let t0 = Instant::now();
    while t0.elapsed() < dur {
        match s.read(&mut buf) {
            Ok(0) => return Err("download: the server closed early".into()),
            Ok(k) => n += k as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("download: {e}")),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = s.shutdown(Shutdown::Both);
    Ok(gbps(n, secs))
}

/// What a closed loop of HTTP requests measured.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct HttpResult {
    pub requests: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub requests_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One GET on `s` (keep-alive); `buf` holds bytes already read past the
/// previous answer.
fn get(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: husk-bench\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = find_header_end(buf) {
            break i;
        }
        if buf.len() > MAX_HEADERS {
            return Err(format!("no end of headers in {MAX_HEADERS} bytes"));
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err("closed before the answer".into()),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) => return Err(format!("receive: {e}")),
        }
    };
    let (code, len) = parse_response_head(&buf[..end])?;
    if code != 200 {
        return Err(format!("status {code}"));
    }
    while buf.len() < end + len {
        match s.read(&mut chunk) {
            Ok(0) => return Err("closed in the body".into()),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    buf.drain(..end + len);
    Ok(())
}

/// Most latencies kept per connection (the count goes on past it).
const MAX_SAMPLES: usize = 1 << 20;

/// `conns` keep-alive connections to `addr`, each sending GETs one after
/// the other (a closed loop) for `dur`; a failed connection is opened again.
pub fn http_load(addr: SocketAddr, conns: usize, dur: Duration) -> HttpResult {
    let t0 = Instant::now();
    let end = t0 + dur;
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            std::thread::spawn(move || {
                let (mut lat, mut n, mut errors, mut first_error) = (Vec::new(), 0, 0, None);
                let mut conn: Option<(TcpStream, Vec<u8>)> = None;
                while Instant::now() < end {
                    let (s, buf) = match conn.as_mut() {
                        Some(c) => c,
                        None => match connect(addr) {
                            Ok(s) => conn.insert((s, Vec::new())),
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert(e);
                                std::thread::sleep(Duration::from_millis(50));
                                continue;
                            }
                        },
                    };
                    let t = Instant::now();
                    match get(s, buf) {
                        Ok(()) => {
                            n += 1;
                            if lat.len() < MAX_SAMPLES {
                                lat.push(t.elapsed().as_secs_f64() * 1e3);
                            }
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                            conn = None;
                        }
                    }
                }
                (lat, n, errors, first_error)
            })
        })
        .collect();
    let mut r = HttpResult::default();
    let mut lat = Vec::new();
    for w in workers {
        if let Ok((l, n, e, f)) = w.join() {
            lat.extend(l);
            r.requests += n;
            r.errors += e;
            if r.first_error.is_none() {
                r.first_error = f;
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    r.requests_per_s = if secs > 0.0 {
        r.requests as f64 / secs
    } else {
        0.0
    };
    lat.sort_by(f64::total_cmp);
    r.p50_ms = percentile(&lat, 0.50);
    r.p99_ms = percentile(&lat, 0.99);
    r
}

/// The `q` quantile (nearest rank) of sorted `v`.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    // The rank is positive and at most n.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rank = (n as f64 * q).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        let h = b"HTTP/1.1 200 OK\r\ncontent-length: 22\r\nX: y\r\n\r\n";
        assert_eq!(find_header_end(h), Some(h.len()));
        assert_eq!(parse_response_head(h), Ok((200, 22)));
        assert_eq!(
            parse_response_head(b"HTTP/1.0 404 Not Found\r\nContent-Length:0\r\n\r\n"),
            Ok((404, 0))
        );
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n")
            .unwrap_err()
            .contains("Content-Length"));
        assert!(parse_response_head(b"SSH-2.0\r\n\r\n")
            .unwrap_err()
            .contains("status line"));
        assert!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n")
                .unwrap_err()
                .contains("over")
        );
        assert_eq!(find_header_end(b"HTTP/1.1 200 OK\r\n"), None);
    }

    #[test]
    fn percentiles_and_rates() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert!((gbps(1_250_000_000, 2.0) - 5.0).abs() < 1e-9);
        assert_eq!(gbps(1, 0.0), 0.0);
    }

    /// The server's two handlers and the clients, over loopback.
    #[test]
    fn clients_against_the_server_on_loopback() {
        let tp = TcpListener::bind("127.0.0.1:0").unwrap();
        let http = TcpListener::bind("127.0.0.1:0").unwrap();
        let (ta, ha) = (tp.local_addr().unwrap(), http.local_addr().unwrap());
        let live = Arc::new(AtomicUsize::new(0));
        let l2 = live.clone();
        std::thread::spawn(move || accept_loop(&tp, &live, serve_throughput));
        std::thread::spawn(move || accept_loop(&http, &l2, serve_http));
        let deadline = Instant::now() + Duration::from_secs(5);
        wait_listening(ta, deadline).unwrap();
        let d = Duration::from_millis(200);
        assert!(upload(ta, d).unwrap() > 0.0);
        assert!(download(ta, d).unwrap() > 0.0);
        let r = http_load(ha, 2, d);
        assert_eq!((r.errors, r.first_error.clone()), (0, None), "{r:?}");
        assert!(r.requests > 0 && r.requests_per_s > 0.0, "{r:?}");
        assert!(r.p50_ms.unwrap() <= r.p99_ms.unwrap(), "{r:?}");
        // Nothing listening: errors counted, no hang past the duration.
        let gone = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = gone.local_addr().unwrap();
        drop(gone);
        let t = Instant::now();
        let r = http_load(addr, 1, d);
        assert!(r.requests == 0 && r.errors > 0, "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(wait_listening(addr, Instant::now() + d).is_err());
    }
}
