//! OOM reporting: an `Oom` event once per increase of a container's
//! `memory.events` oom_kill count, from a watcher thread (inotify on the
//! file) and once more when a process exits.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use husk_protocol::Event;

use super::events::Events;
use super::lock;
use crate::container::cgroup::Cgroup;

/// The highest oom_kill count of one container reported so far.
#[derive(Debug, Default)]
pub struct OomSeen(Mutex<u64>);

impl OomSeen {
    /// Records `count`; true if it is above every count seen before.
    pub fn update(&self, count: u64) -> bool {
        let mut s = lock(&self.0);
        if count > *s {
            *s = count;
            true
        } else {
            false
        }
    }

    /// Whether any OOM kill was seen.
    pub fn any(&self) -> bool {
        *lock(&self.0) > 0
    }
}

/// Reports an OOM kill once per increase of memory.events oom_kill.
pub fn check(events: &Events, id: &str, cg: &Cgroup, seen: &OomSeen) {
    let n = cg.keyed("memory.events", "oom_kill").unwrap_or(0);
    if seen.update(n) {
        events.emit(Event::Oom {
            id: id.to_string(),
            oom_kills: n,
        });
    }
}

/// What the watcher thread of one container needs.
pub struct Watch {
    pub events: Arc<Events>,
    pub id: String,
    pub cgroup: Cgroup,
    pub seen: Arc<OomSeen>,
    /// Set when the container is removed: the watcher ends.
    pub removed: Arc<AtomicBool>,
}

impl Watch {
    /// Starts the watcher thread (a failure to start it is survivable:
    /// the exit report still checks for OOM kills).
    pub fn start(self) {
        let _ = std::thread::Builder::new()
            .name("oom".into())
            .stack_size(64 * 1024)
            .spawn(move || self.run());
    }

    fn run(self) {
        // SAFETY: inotify_init1 with a flag; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return;
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let file = self.cgroup.dir.join("memory.events");
        let Ok(path) = CString::new(file.as_os_str().as_encoded_bytes()) else {
            return;
        };
        // SAFETY: a valid inotify descriptor and NUL-terminated path.
        unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY) };
        let mut buf = [0u8; 4096];
        while !self.removed.load(Ordering::SeqCst) {
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut p, 1, 1000) } > 0 {
                // SAFETY: reads into a valid buffer of its length.
                unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                check(&self.events, &self.id, &self.cgroup, &self.seen);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A cgroup that is a plain temporary directory (unit tests only
    /// read and write its files).
    pub(crate) fn fake_cgroup(name: &str) -> Cgroup {
        let dir: PathBuf =
            std::env::temp_dir().join(format!("husk-fake-cg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Cgroup {
            rel: format!("test/{name}"),
            dir,
        }
    }

    #[test]
    fn seen_counts_only_increases() {
        let s = OomSeen::default();
        assert!(!s.any());
        assert!(!s.update(0));
        assert!(s.update(2));
        assert!(!s.update(2));
        assert!(!s.update(1));
        assert!(s.update(3));
        assert!(s.any());
    }

    #[test]
    fn check_reports_each_new_kill_once() {
        let cg = fake_cgroup("oom");
        let ev = Events::default();
        let rx = ev.subscribe();
        let seen = OomSeen::default();
        check(&ev, "c", &cg, &seen); // no file yet: nothing
        std::fs::write(cg.dir.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        check(&ev, "c", &cg, &seen);
        check(&ev, "c", &cg, &seen);
        std::fs::write(cg.dir.join("memory.events"), "oom 2\noom_kill 3\n").unwrap();
        check(&ev, "c", &cg, &seen);
        let got: Vec<Event> = rx.try_iter().collect();
        let want = |n| Event::Oom {
            id: "c".into(),
            oom_kills: n,
        };
        assert_eq!(got, [want(1), want(3)]);
        std::fs::remove_dir_all(&cg.dir).unwrap();
    }
}
