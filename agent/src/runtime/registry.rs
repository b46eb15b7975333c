//! The containers the agent holds, by id: lookup, and the reservation of
//! an id while its container is being created (so two creates of one id
//! cannot both proceed, and a failed create leaves no entry behind).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::RuntimeError;
use super::oom::OomSeen;
use super::process::Proc;
use super::{lock, Res};
use crate::container::Container;

/// One container the runtime holds.
pub struct Entry {
    pub c: Container,
    /// Its init process.
    pub init: Arc<Proc>,
    /// Its exec'd processes by exec id (a placeholder while one is starting).
    pub execs: Mutex<HashMap<String, Arc<Proc>>>,
    pub paused: AtomicBool,
    pub removed: Arc<AtomicBool>,
    pub oom_seen: Arc<OomSeen>,
}

impl Entry {
    /// The init's process (`None`) or an exec's.
    pub fn proc_of(&self, exec_id: Option<&str>) -> Res<Arc<Proc>> {
        match exec_id {
            None => Ok(Arc::clone(&self.init)),
            Some(x) => lock(&self.execs)
                .get(x)
                .cloned()
                .ok_or_else(|| RuntimeError::NoExec {
                    id: self.c.id.clone(),
                    exec_id: x.into(),
                }),
        }
    }

    /// Whether the init has exited.
    pub fn stopped(&self) -> bool {
        self.c.init.exit.wait(Some(Duration::ZERO)).is_some()
    }

    /// Whether the init was started and has not exited.
    pub fn running(&self) -> bool {
        !self.stopped() && self.c.init.is_started()
    }

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
}

/// Items by id, with ids reserved while their item is being made.
pub struct Registry<T> {
    items: Mutex<HashMap<String, Arc<T>>>,
    creating: Mutex<HashSet<String>>,
}

impl<T> Default for Registry<T> {
    fn default() -> Registry<T> {
        Registry {
            items: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
        }
    }
}

/// An id reserved by [`Registry::reserve`]; dropping it frees the id
/// unless [`Reservation::insert`] filled it.
pub struct Reservation<'a, T> {
    reg: &'a Registry<T>,
    id: String,
}

impl<T> Reservation<'_, T> {
    /// Makes `item` the registry's entry for the reserved id.
    pub fn insert(self, item: Arc<T>) {
        lock(&self.reg.items).insert(self.id.clone(), item);
    }
}

impl<T> Drop for Reservation<'_, T> {
    fn drop(&mut self) {
        lock(&self.reg.creating).remove(&self.id);
    }
}

impl<T> Registry<T> {
    /// Reserves `id` for an item being made; `AlreadyExists` if the id is
    /// taken or reserved.
    pub fn reserve(&self, id: &str) -> Res<Reservation<'_, T>> {
        let items = lock(&self.items);
        let mut creating = lock(&self.creating);
        if items.contains_key(id) || !creating.insert(id.to_string()) {
            return Err(RuntimeError::Exists { id: id.into() });
        }
        Ok(Reservation {
            reg: self,
            id: id.to_string(),
        })
    }

    /// The item of `id`; `NotFound` if there is none (yet).
    pub fn get(&self, id: &str) -> Res<Arc<T>> {
        lock(&self.items)
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NoContainer { id: id.into() })
    }

    pub fn remove(&self, id: &str) -> Option<Arc<T>> {
        lock(&self.items).remove(id)
    }

    pub fn len(&self) -> usize {
        lock(&self.items).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_protocol::{ErrorCode, ErrorInfo};

    fn info<T>(r: Res<T>) -> ErrorInfo {
        ErrorInfo::from(r.err().expect("an error"))
    }

    #[test]
    fn reserve_insert_get_remove() {
        let r: Registry<u32> = Registry::default();
        assert_eq!(info(r.get("a")).code, ErrorCode::NotFound);
        assert_eq!(info(r.get("a")).message, "no container \"a\"");
        let res = r.reserve("a").unwrap();
        // Reserved but not made yet: not found, and not reservable again.
        assert_eq!(info(r.get("a")).code, ErrorCode::NotFound);
        let e = info(r.reserve("a"));
        assert_eq!(e.code, ErrorCode::AlreadyExists);
        assert_eq!(e.message, "container \"a\" exists");
        res.insert(Arc::new(7));
        assert_eq!(*r.get("a").unwrap(), 7);
        assert_eq!(info(r.reserve("a")).code, ErrorCode::AlreadyExists);
        assert_eq!(r.len(), 1);
        assert_eq!(r.remove("a").as_deref(), Some(&7));
        assert!(r.is_empty());
        assert!(r.reserve("a").is_ok());
    }

    #[test]
    fn a_failed_create_frees_its_id() {
        let r: Registry<u32> = Registry::default();
        drop(r.reserve("b").unwrap());
        assert!(r.is_empty());
        r.reserve("b").unwrap().insert(Arc::new(1));
        assert_eq!(*r.get("b").unwrap(), 1);
    }

    #[test]
    fn concurrent_creates_of_one_id_admit_one() {
        let r: Arc<Registry<usize>> = Arc::default();
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (r, b) = (Arc::clone(&r), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    b.wait();
                    match r.reserve("x") {
                        Ok(res) => {
                            res.insert(Arc::new(i));
                            true
                        }
                        Err(_) => false,
                    }
                })
            })
            .collect();
        let won = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|w| *w)
            .count();
        assert_eq!(won, 1);
        assert_eq!(r.len(), 1);
    }
}
