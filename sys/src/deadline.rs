//! Reads bounded by a deadline, for streams whose peer is not trusted to
//! send on time (the guest's DNS queries on the host, the host's answers
//! in the guest): each read waits at most the time left, and the whole
//! fill gives up at the deadline however the bytes trickle in.

use std::io::{self, Read};
use std::time::{Duration, Instant};

/// Fills `buf` from `r` by `deadline`. Before each read, `set_timeout(r,
/// left)` bounds its wait (`set_read_timeout` on a socket); a read that
/// times out or is interrupted is tried again until the deadline.
///
/// Errors: `TimedOut` at the deadline, `UnexpectedEof` when the peer
/// closes first, else the read's or `set_timeout`'s own.
pub fn read_exact_by<R: Read + ?Sized>(
    r: &mut R,
    buf: &mut [u8],
    deadline: Instant,
    mut set_timeout: impl FnMut(&mut R, Duration) -> io::Result<()>,
) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{got} of {} bytes by the deadline", buf.len()),
            ));
        }
        set_timeout(r, left)?;
        match r.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the peer closed the connection after {got} of {} bytes",
                        buf.len()
                    ),
                ))
            }
            Ok(n) => got += n,
            Err(e) if is_wait_over(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a read ended only because its wait did (a socket timeout,
/// `EAGAIN`, a signal): the caller tries again if its deadline allows.
pub fn is_wait_over(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;

    fn timeout(s: &mut UnixStream, t: Duration) -> io::Result<()> {
        s.set_read_timeout(Some(t))
    }

    #[test]
    fn bytes_in_pieces_fill_the_buffer() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            a.write_all(b"ab").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            a.write_all(b"cd").unwrap();
        });
        let mut buf = [0; 4];
        let deadline = Instant::now() + Duration::from_secs(5);
        read_exact_by(&mut b, &mut buf, deadline, timeout).unwrap();
        assert_eq!(&buf, b"abcd");
        t.join().unwrap();
    }

    #[test]
    fn a_silent_peer_hits_the_deadline() {
        let (_a, mut b) = UnixStream::pair().unwrap();
        let t0 = Instant::now();
        let e = read_exact_by(&mut b, &mut [0; 2], t0 + Duration::from_millis(50), timeout)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(t0.elapsed() >= Duration::from_millis(50));
        assert_eq!(e.to_string(), "0 of 2 bytes by the deadline");
    }

    #[test]
    fn a_peer_that_closes_early_is_an_eof() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(b"a").unwrap();
        drop(a);
        let deadline = Instant::now() + Duration::from_secs(5);
        let e = read_exact_by(&mut b, &mut [0; 2], deadline, timeout).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        assert_eq!(
            e.to_string(),
            "the peer closed the connection after 1 of 2 bytes"
        );
    }
}
