//! `kill -9` and `delete --force` against a hostile agent: one that
//! trickles its answers a byte a second, and another command that keeps
//! the container's lock. The "monitor" is a sleeping child of the test.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::*;
use crate::state::State;

/// A fake VMM vsock socket whose agent takes each connection, answers the
/// handshake, reads one request and then sends its answer one byte a second.
fn trickling_agent(path: &std::path::Path) {
    let listener = UnixListener::bind(path).unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(s) = conn else { return };
            thread::spawn(move || trickle(s));
        }
    });
}

fn trickle(mut s: UnixStream) {
    let mut b = [0u8; 1];
    while s.read(&mut b).is_ok_and(|n| n == 1) && b[0] != b'\n' {}
    if s.write_all(b"OK 77\n").is_err() {
        return;
    }
    let _ = husk_protocol::frame::read_frame_body(&mut s);
    let mut answer = 1000u32.to_be_bytes().to_vec();
    answer.resize(1004, b' ');
    for b in answer {
        if s.write_all(&[b]).is_err() {
            return;
        }
        thread::sleep(Duration::from_secs(1));
    }
}

/// A container `c` under a fresh root whose monitor is a sleeping child,
/// and whose agent trickles; the child is killed and the root removed on
/// drop.
struct Fixture {
    root: PathBuf,
    store: Store,
    vsock: PathBuf,
    monitor: Child,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let root = std::env::temp_dir().join(format!("husk-stop-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = Store::new(root.clone());
        store.create_dir("c").unwrap();
        let monitor = Command::new("sleep").arg("1000").spawn().unwrap();
        let pid = util::pid(monitor.id());
        let st = State::running_for_test("c", pid);
        store.save(&st).unwrap();
        let vsock = root.join("vsock");
        trickling_agent(&vsock);
        Fixture {
            root: root.clone(),
            store: Store::new(root),
            vsock,
            monitor,
        }
    }

    fn target(&self) -> impl Fn(&State) -> Target + Send + 'static {
        let vsock = self.vsock.clone();
        move |st: &State| Target {
            vsock: vsock.clone(),
            guest_id: st.guest_id.clone(),
            exec_id: None,
        }
    }

    /// Whether the "monitor" was killed by SIGKILL (reaps it).
    fn monitor_killed(&mut self) -> bool {
        self.monitor
            .try_wait()
            .unwrap()
            .is_some_and(|s| s.signal() == Some(libc::SIGKILL))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.monitor.kill();
        let _ = self.monitor.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs `f` in a thread and waits at most `limit` for it: an operation
/// that never ends fails the test instead of hanging it.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("kill or delete did not end within its bound")
}

#[test]
fn kill_9_stops_the_vm_of_a_trickling_agent() {
    let mut fx = Fixture::new("kill");
    let (root, target) = (fx.root.clone(), fx.target());
    within(Duration::from_secs(10), move || {
        kill_via(&Store::new(root), "c", libc::SIGKILL, false, target)
    })
    .unwrap();
    assert!(fx.monitor_killed());
    let st = fx.store.load("c").unwrap();
    assert_eq!((st.status, st.exit_status), (Status::Stopped, Some(137)));
    assert_eq!(monitor::recorded_exit(&fx.store.dir("c")), Some(137));
    assert_eq!(live_status(&fx.store, &st), Status::Stopped);
}

#[test]
fn delete_force_removes_a_container_whose_agent_trickles() {
    let mut fx = Fixture::new("delete");
    let (root, target) = (fx.root.clone(), fx.target());
    within(Duration::from_secs(10), move || {
        delete_via(&Store::new(root), "c", true, target)
    })
    .unwrap();
    assert!(fx.monitor_killed());
    assert!(!fx.store.dir("c").exists());
}

#[test]
fn delete_force_stops_the_vm_when_another_command_keeps_the_lock() {
    let mut fx = Fixture::new("locked");
    let held = fx.store.lock("c").unwrap();
    let (root, target) = (fx.root.clone(), fx.target());
    let e = within(Duration::from_secs(15), move || {
        delete_via(&Store::new(root), "c", true, target)
    })
    .unwrap_err();
    assert!(
        matches!(e, Error::State(StateError::LockTimeout { ref id, .. }) if id == "c"),
        "{e}"
    );
    // The VM is gone and says so; the state is left to the lock's holder.
    assert!(fx.monitor_killed());
    let st = fx.store.load("c").unwrap();
    assert_eq!(live_status(&fx.store, &st), Status::Stopped);
    drop(held);
}

#[test]
fn kill_9_stops_the_vm_when_another_command_keeps_the_lock() {
    let mut fx = Fixture::new("kill-locked");
    let held = fx.store.lock("c").unwrap();
    let (root, target) = (fx.root.clone(), fx.target());
    within(Duration::from_secs(15), move || {
        kill_via(&Store::new(root), "c", libc::SIGKILL, false, target)
    })
    .unwrap();
    assert!(fx.monitor_killed());
    assert_eq!(monitor::recorded_exit(&fx.store.dir("c")), Some(137));
    drop(held);
}
