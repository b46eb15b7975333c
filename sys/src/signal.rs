//! Signal sets: build one, block it in the calling thread, wait for one of
//! its signals (sigwait), the way a signal-relaying thread does.

use std::fmt;

/// A set of signal numbers (`sigset_t`).
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// No signals.
    pub fn empty() -> SignalSet {
        // SAFETY: sigset_t is plain data; all-zero is a valid value to fill in.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable sigset_t.
        unsafe { libc::sigemptyset(&mut set) };
        SignalSet(set)
    }

    /// Every signal.
    pub fn full() -> SignalSet {
        // SAFETY: sigset_t is plain data; all-zero is a valid value to fill in.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable sigset_t.
        unsafe { libc::sigfillset(&mut set) };
        SignalSet(set)
    }

    /// Exactly `signals`.
    pub fn of(signals: &[libc::c_int]) -> SignalSet {
        let mut set = SignalSet::empty();
        for &s in signals {
            set.add(s);
        }
        set
    }

    /// Adds `sig`; a number that is no signal is left out.
    pub fn add(&mut self, sig: libc::c_int) {
        // SAFETY: `self.0` is a valid sigset_t; an invalid number only fails.
        unsafe { libc::sigaddset(&mut self.0, sig) };
    }

    /// Takes `sig` out.
    pub fn remove(&mut self, sig: libc::c_int) {
        // SAFETY: `self.0` is a valid sigset_t; an invalid number only fails.
        unsafe { libc::sigdelset(&mut self.0, sig) };
    }

    pub fn contains(&self, sig: libc::c_int) -> bool {
        // SAFETY: `self.0` is a valid sigset_t; sigismember only reads it.
        unsafe { libc::sigismember(&self.0, sig) == 1 }
    }

    /// Blocks the set in the calling thread; threads it starts later inherit
    /// the mask. Call it before starting threads, so that only a thread that
    /// [`wait`](Self::wait)s receives these signals.
    pub fn block(&self) {
        // SAFETY: `self.0` is a valid sigset_t; SIG_BLOCK changes only this
        // thread's mask (the old mask is not asked for). With a valid `how`
        // and set, pthread_sigmask cannot fail.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut()) };
    }

    /// Makes the set the calling thread's whole mask (the signals it
    /// blocks); `empty().set_mask()` unblocks everything, as a process
    /// about to exec wants.
    pub fn set_mask(&self) {
        // SAFETY: `self.0` is a valid sigset_t; SIG_SETMASK changes only this
        // thread's mask (the old mask is not asked for) and cannot fail.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }

    /// Waits for one of the set's signals (blocked in every thread) and
    /// returns its number.
    pub fn wait(&self) -> libc::c_int {
        let mut sig: libc::c_int = 0;
        loop {
            // SAFETY: `self.0` is a valid sigset_t; sigwait writes `sig`.
            if unsafe { libc::sigwait(&self.0, &mut sig) } == 0 {
                return sig;
            }
        }
    }
}

impl fmt::Debug for SignalSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries((1..=libc::SIGRTMAX()).filter(|&s| self.contains(s)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_hold_what_was_put_in() {
        let s = SignalSet::of(&[libc::SIGCHLD, libc::SIGTERM]);
        assert!(s.contains(libc::SIGCHLD) && s.contains(libc::SIGTERM));
        assert!(!s.contains(libc::SIGINT));
        assert_eq!(
            format!("{s:?}"),
            format!("{{{}, {}}}", libc::SIGTERM, libc::SIGCHLD)
        );
        let mut full = SignalSet::full();
        assert!(full.contains(libc::SIGINT));
        full.remove(libc::SIGINT);
        assert!(!full.contains(libc::SIGINT) && full.contains(libc::SIGHUP));
        assert!(!SignalSet::empty().contains(libc::SIGHUP));
    }

    #[test]
    fn a_blocked_signal_is_waited_for() {
        // In a thread of its own: the mask stays there.
        std::thread::spawn(|| {
            let set = SignalSet::of(&[libc::SIGUSR2]);
            set.block();
            // SAFETY: pthread_self only names the calling thread.
            let me = unsafe { libc::pthread_self() };
            // SAFETY: SIGUSR2 goes to this thread only, where it is blocked
            // and so stays pending until sigwait takes it.
            let rc = unsafe { libc::pthread_kill(me, libc::SIGUSR2) };
            assert_eq!(rc, 0);
            assert_eq!(set.wait(), libc::SIGUSR2);
            SignalSet::empty().set_mask();
            let (none, mut now) = (SignalSet::empty(), SignalSet::empty());
            // SAFETY: blocking an empty set changes nothing; the current
            // mask is written to `now.0`, a valid sigset_t.
            unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &none.0, &mut now.0) };
            assert!(!now.contains(libc::SIGUSR2));
        })
        .join()
        .unwrap();
    }
}
