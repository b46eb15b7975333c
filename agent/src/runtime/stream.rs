//! What a connection turns into after an `AttachStdio` or `Events` reply:
//! a stdio relay or an event stream, run on the connection's thread.

use std::sync::mpsc::Receiver;
use std::sync::Arc;

use husk_protocol::{Event, Response, ResponseFrame, StdioStream};

use super::process::Proc;
use crate::server::Conn;

/// A claimed stdio stream of a process, or an events subscription.
pub enum StreamJob {
    Stdio(Arc<Proc>, StdioStream),
    Events(Receiver<Event>),
}

impl std::fmt::Debug for StreamJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamJob::Stdio(_, s) => write!(f, "Stdio({s:?})"),
            StreamJob::Events(_) => write!(f, "Events"),
        }
    }
}

impl PartialEq for StreamJob {
    fn eq(&self, _: &Self) -> bool {
        false
    }
}

impl StreamJob {
    /// The reply that hands this stream to its connection could not be
    /// sent, so the job will never run: release the claim. Otherwise the
    /// stream would stay "attached" with no relay reading it, and the
    /// process's exit, which waits for attached output to be read, would
    /// never be reported (a `Wait` would hang).
    pub fn release(self) {
        if let StreamJob::Stdio(p, stream) = self {
            p.stdio.release(stream);
        }
    }

    /// Runs on the connection's thread until the stream ends.
    pub fn run(self, mut conn: Box<dyn Conn>, request_id: u64) {
        let _ = conn.set_write_timeout(None);
        let _ = conn.set_read_timeout(None);
        match self {
            StreamJob::Events(rx) => {
                for event in rx {
                    let f = ResponseFrame::new(request_id, Response::Event { event });
                    if husk_protocol::write_frame(&mut conn, &f).is_err() {
                        return;
                    }
                }
            }
            StreamJob::Stdio(p, stream) => p.stdio.relay(stream, conn),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::events::Events;
    use crate::runtime::stdio::Stdio;
    use std::os::unix::net::UnixStream;

    #[test]
    fn events_are_framed_with_the_request_id() {
        let ev = Events::default();
        let job = StreamJob::Events(ev.subscribe());
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || job.run(Box::new(ours), 7));
        let e = Event::Oom {
            id: "c".into(),
            oom_kills: 1,
        };
        ev.emit(e.clone());
        let f: ResponseFrame = husk_protocol::read_frame(&mut theirs).unwrap();
        assert_eq!(f.id, 7);
        assert_eq!(f.response, Response::Event { event: e });
        drop(ev); // the sender goes: the stream ends
        t.join().unwrap();
    }

    #[test]
    fn release_frees_the_stream() {
        let cfg = husk_protocol::StdioConfig {
            stdin: false,
            stdout: true,
            stderr: false,
        };
        let (_fds, st) = Stdio::pipes(cfg, false).unwrap();
        let p = Arc::new(Proc::new(None, st));
        p.stdio.claim(StdioStream::Stdout).unwrap();
        StreamJob::Stdio(Arc::clone(&p), StdioStream::Stdout).release();
        assert!(p.stdio.claim(StdioStream::Stdout).is_ok());
    }
}
