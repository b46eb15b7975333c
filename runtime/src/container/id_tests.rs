//! Every operation refuses an id that is not one before it touches a path:
//! `start /etc` must not open /etc/lock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::state::{StateError, Store};

struct Tmp(PathBuf);
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a user sees for each operation on `id`.
fn errors(store: &Store, id: &str) -> Vec<(&'static str, String)> {
    let e = |r: Result<()>| r.err().map_or("accepted".into(), |e| e.to_string());
    let exec_monitor =
        super::exec_monitor(store, id, "e".into(), Path::new("/nonexistent"), None, None);
    vec![
        ("start", e(start(store, id))),
        ("state", e(state(store, id).map(drop))),
        ("pids", e(pids(store, id).map(drop))),
        ("pause", e(pause(store, id, true))),
        ("resume", e(pause(store, id, false))),
        ("update", e(update(store, id, Default::default()))),
        ("running", e(running(store, id).map(drop))),
        ("kill", e(kill(store, id, libc::SIGKILL, false))),
        ("delete", e(delete(store, id, true))),
        ("exec", e(exec_state(store, id, false).map(drop))),
        ("exec monitor", e(exec_monitor.map(drop))),
        (
            "monitor",
            e(crate::monitor::run(
                store,
                id,
                crate::monitor::Opts {
                    term: crate::session::Terminal::No,
                    ready: None,
                    start: false,
                },
            )
            .map(drop)),
        ),
        (
            "store lock",
            e(store
                .lock_within(id, Duration::ZERO)
                .map(drop)
                .map_err(Into::into)),
        ),
        (
            "store load",
            e(store.load(id).map(drop).map_err(Into::into)),
        ),
        (
            "store create",
            e(store.create_dir(id).map(drop).map_err(Into::into)),
        ),
        ("store remove", e(store.remove(id).map_err(Into::into))),
    ]
}

#[test]
fn ids_that_are_paths_are_refused_before_anything_is_touched() {
    let t = Tmp(std::env::temp_dir().join(format!("husk-ids-{}", std::process::id())));
    let root = t.0.join("root");
    // An existing directory outside the root, named by an absolute id, by
    // `..` and by a relative path.
    let outside = t.0.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let store = Store::new(root.clone());
    let abs = outside.to_str().unwrap().to_string();
    for id in [
        abs.as_str(),
        "..",
        ".",
        "../outside",
        "sub/..",
        "",
        "a b",
        "-x",
    ] {
        for (op, got) in errors(&store, id) {
            let shown: String = id.chars().take(80).collect();
            assert_eq!(
                got,
                format!("invalid container id {shown:?}: must match [A-Za-z0-9][A-Za-z0-9_.+-]*"),
                "{op} {id:?}"
            );
        }
    }
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "something was made outside the root"
    );
    assert!(!t.0.join("lock").exists() && !root.join("lock").exists());
    let long = "a".repeat(1025);
    assert!(matches!(store.load(&long), Err(StateError::Id(_))));
}
