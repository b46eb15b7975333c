//! Reads and writes bounded by a deadline, for streams whose peer is not
//! trusted to keep time (the guest's DNS queries on the host, the host's
//! answers in the guest, the agent's answers to the host): each read or
//! write waits at most the time left, and the whole exchange gives up at
//! the deadline however the bytes trickle in.

use std::io::{self, Read, Write};
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
        match read_by(r, &mut buf[got..], deadline, &mut set_timeout) {
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
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{got} of {} bytes by the deadline", buf.len()),
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One read of at least one byte (or the end of the stream) by
/// `deadline`: like [`read_exact_by`], each wait is bounded by the time
/// left, and a wait that ends early is tried again until the deadline.
/// Wraps a stream whose every read must end in time, such as a frame
/// reader's.
///
/// Errors: `TimedOut` at the deadline, else the read's or `set_timeout`'s.
pub fn read_by<R: Read + ?Sized>(
    r: &mut R,
    buf: &mut [u8],
    deadline: Instant,
    mut set_timeout: impl FnMut(&mut R, Duration) -> io::Result<()>,
) -> io::Result<usize> {
    loop {
        set_timeout(r, time_left(deadline)?)?;
        match r.read(buf) {
            Err(e) if is_wait_over(&e) => {}
            other => return other,
        }
    }
}

/// One write of at least one byte by `deadline`, as [`read_by`] reads
/// (`set_timeout` is then `set_write_timeout` on a socket): a peer that
/// takes our bytes one at a time cannot hold a writer past its deadline.
///
/// Errors: `TimedOut` at the deadline, else the write's or `set_timeout`'s.
pub fn write_by<W: Write + ?Sized>(
    w: &mut W,
    buf: &[u8],
    deadline: Instant,
    mut set_timeout: impl FnMut(&mut W, Duration) -> io::Result<()>,
) -> io::Result<usize> {
    loop {
        set_timeout(w, time_left(deadline)?)?;
        match w.write(buf) {
            Err(e) if is_wait_over(&e) => {}
            other => return other,
        }
    }
}

/// The time left until `deadline`; `TimedOut` once it passed.
fn time_left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the deadline passed",
        ));
    }
    Ok(left)
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

    #[test]
    fn read_by_and_write_by_give_up_at_the_deadline() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let t0 = Instant::now();
        let e = read_by(&mut b, &mut [0; 8], t0 + Duration::from_millis(50), timeout).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(t0.elapsed() >= Duration::from_millis(50));
        // Nobody reads `a`: writes fill its buffer, then wait until the deadline.
        let mut a = a;
        let deadline = Instant::now() + Duration::from_millis(100);
        let big = vec![0u8; 64 * 1024];
        let set = |s: &mut UnixStream, t| s.set_write_timeout(Some(t));
        let e = loop {
            match write_by(&mut a, &big, deadline, set) {
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(Instant::now() >= deadline);
        drop(b);
    }
}
