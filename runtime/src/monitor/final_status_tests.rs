//! The monitor's last write: the exit file at once, the saved state only
//! under the container's lock.

use std::time::{Duration, Instant};

use super::*;
use crate::container::live_status;
use crate::state::State;

fn store_with_running(name: &str) -> Store {
    let root = std::env::temp_dir().join(format!("husk-final-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let store = Store::new(root);
    store.create_dir("c").unwrap();
    store
        .save(&State::running_for_test("c", util::pid(std::process::id())))
        .unwrap();
    store
}

#[test]
fn final_status_waits_for_the_lock_and_never_writes_under_another_holder() {
    let store = store_with_running("held");
    let held = store.lock("c").unwrap();
    let t0 = Instant::now();
    record_final_status(&store, "c", 7);
    let waited = t0.elapsed();
    assert!(waited >= FINAL_STATUS_LOCK_WAIT, "{waited:?}");
    assert!(
        waited < FINAL_STATUS_LOCK_WAIT + Duration::from_secs(3),
        "{waited:?}"
    );
    // The holder's view of the state is untouched; the exit file tells
    // every command the container stopped.
    let st = store.load("c").unwrap();
    assert_eq!((st.status, st.exit_status), (Status::Running, None));
    assert_eq!(recorded_exit(&store.dir("c")), Some(7));
    assert_eq!(live_status(&store, &st), Status::Stopped);
    drop(held);
    let _ = std::fs::remove_dir_all(&store.root);
}

#[test]
fn final_status_is_saved_when_the_lock_is_free() {
    let store = store_with_running("free");
    record_final_status(&store, "c", 137);
    let st = store.load("c").unwrap();
    assert_eq!((st.status, st.exit_status), (Status::Stopped, Some(137)));
    assert!(
        store.lock_within("c", Duration::ZERO).is_ok(),
        "the lock is let go"
    );
    let _ = std::fs::remove_dir_all(&store.root);
}

#[test]
fn final_status_of_a_deleted_container_writes_nothing() {
    let store = store_with_running("gone");
    std::fs::remove_dir_all(store.dir("c")).unwrap();
    record_final_status(&store, "c", 0);
    assert!(!store.dir("c").exists(), "no directory brought back");
    let _ = std::fs::remove_dir_all(&store.root);
}
