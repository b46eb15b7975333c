//! `PR_SET_NO_NEW_PRIVS` and dropping every capability, for the calling
//! thread (and the threads it starts afterwards, which inherit both).

use super::ConfineError;

fn err(step: &'static str) -> ConfineError {
    ConfineError::Privileges {
        step,
        source: std::io::Error::last_os_error(),
    }
}

/// Sets `PR_SET_NO_NEW_PRIVS`, then empties the bounding set and the
/// ambient set, switches to the jail's ids if it has some
/// ([`super::jail::switch_ids`]), and empties the effective, permitted and
/// inheritable sets of the calling thread. Idempotent: a thread that has already dropped them (or never had
/// them) succeeds.
pub fn drop_privileges() -> Result<(), ConfineError> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(err("PR_SET_NO_NEW_PRIVS"));
    }
    // The bounding set first: dropping from it takes CAP_SETPCAP, which
    // the capset below removes. Capabilities the running kernel does not
    // know read as EINVAL, which ends the loop.
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only.
        let has = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) };
        if has < 0 {
            break;
        }
        // SAFETY: prctl with integer arguments only.
        if has == 1 && unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
                // Not root (no CAP_SETPCAP): the bounding set stays, but
                // with no_new_privs and no exec it grants nothing.
                break;
            }
            return Err(err("PR_CAPBSET_DROP"));
        }
    }
    // SAFETY: prctl with integer arguments only. EINVAL: a kernel without
    // ambient capabilities (before 4.3), which has nothing to clear.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(err("PR_CAP_AMBIENT_CLEAR_ALL"));
    }
    // The jail's ids, if any: before the capabilities that allow it go
    // (the switch itself empties the effective and permitted sets).
    if let Some((uid, gid)) = super::jail::ids() {
        super::jail::switch_ids(uid, gid)?;
    }
    husk_sys::caps::capset(0, 0, 0).map_err(|source| ConfineError::Privileges {
        step: "capset",
        source,
    })?;
    Ok(())
}
