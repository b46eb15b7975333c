//! The host's client against a hostile agent: the agent's whole output
//! stream is the fuzzer's (frames, bad lengths, wrong ids or versions,
//! unexpected response types, odd JSON), and the client makes a sequence
//! of calls on it, each by a deadline, until the connection breaks; or it
//! reads it as an event stream; the vsock handshake reply line is parsed
//! too.
#![no_main]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use husk_protocol::client::Client;
use husk_protocol::handshake::read_handshake_reply;
use husk_protocol::StdioStream;
use libfuzzer_sys::fuzz_target;

#[derive(Debug)]
enum Call {
    Ping,
    Start,
    Wait(bool),
    State,
    Stats,
    Signal,
    Remove(bool),
    /// These two end the calls: the connection becomes a stream.
    Attach,
    Events,
}

/// Input: a byte `k`, then `k % 8` bytes choosing the calls, then what
/// the agent's side of the socket says: the vsock handshake reply line
/// (`OK <port>` or `ERR <reason>`), and after its newline, the frames.
/// Everything past the calls' byte is the agent's output.
fn split(data: &[u8]) -> Option<(Vec<Call>, &[u8])> {
    let (&k, rest) = data.split_first()?;
    let k = usize::from(k % 8).min(rest.len());
    let (sel, output) = rest.split_at(k);
    let calls = sel
        .iter()
        .map(|&b| match b % 11 {
            0 => Call::Ping,
            1 => Call::Start,
            2 | 3 => Call::Wait(b % 11 == 3),
            4 => Call::State,
            5 => Call::Stats,
            6 => Call::Signal,
            7 | 8 => Call::Remove(b % 11 == 8),
            9 => Call::Attach,
            _ => Call::Events,
        })
        .collect();
    Some((calls, output))
}

fuzz_target!(|data: &[u8]| {
    let Some((calls, output)) = split(data) else {
        return;
    };
    let (mut host, mut agent) = UnixStream::pair().expect("socket pair");
    // Fits the socket buffer: the write never blocks.
    let out = &output[..output.len().min(64 * 1024)];
    agent.write_all(out).expect("agent output");
    agent
        .shutdown(std::net::Shutdown::Write)
        .expect("agent end of stream");
    // As Client::connect_uds: the handshake line, then frames.
    host.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    if read_handshake_reply(&mut host).is_err() {
        return;
    }
    let mut c = Client::from_stream(host);
    c.set_timeout(Duration::from_secs(5)).expect("timeout");
    for call in calls.iter() {
        let r = match call {
            Call::Ping => c.ping().map(drop),
            Call::Start => c.start_container("c1"),
            Call::Wait(exec) => c.wait("c1", exec.then_some("e1")).map(drop),
            Call::State => c.state("c1").map(drop),
            Call::Stats => c.stats("c1").map(drop),
            Call::Signal => c.signal("c1", None, 15, false),
            Call::Remove(force) => c.remove("c1", *force),
            Call::Attach => {
                let _ = c.attach_stdio("c1", None, StdioStream::Stdout);
                return;
            }
            Call::Events => {
                if let Ok(mut ev) = c.events() {
                    for _ in 0..8 {
                        if ev.next_event().is_err() {
                            break;
                        }
                    }
                }
                return;
            }
        };
        if r.is_err() && c.call(husk_protocol::Request::Ping).is_err() {
            // Broken or at end of stream: nothing more to read.
            return;
        }
    }
});
