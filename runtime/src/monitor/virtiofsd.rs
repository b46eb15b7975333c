//! How virtiofsd is started so that the guest's capabilities hold on the
//! files it creates.
//!
//! virtiofsd (QEMU 7.2's C one, which Debian 12 ships in
//! qemu-system-common; the Rust virtiofsd does the same) runs as root and
//! creates a file, directory, node or symlink under the guest caller's uid
//! and gid: it switches the worker thread's effective ids
//! (setresuid/setresgid) around the call, so that the new file gets the
//! caller's owner. FUSE carries the caller's ids but not its capabilities,
//! and the kernel clears the effective capabilities of a thread whose
//! effective uid goes from 0 to another. So a guest process of uid 10 with
//! CAP_DAC_OVERRIDE, which the guest kernel lets create a file in a
//! root-owned directory (virtio-fs checks permissions in the guest), got
//! EACCES from the host where runc allows it.
//!
//! With SECBIT_NO_SETUID_FIXUP the kernel leaves the capabilities alone on
//! that switch: the create runs under the caller's ids with virtiofsd's
//! capabilities, and the guest kernel stays the one that decides (as it
//! already is for every other request, which virtiofsd serves as root
//! with all its capabilities: the guest can do nothing more in the share
//! than before). No virtiofsd option does this (`-o modcaps` changes which
//! capabilities it holds, not whether the switch drops them; killpriv_v2,
//! posix_acl, the sandbox modes are about other things). The bit is
//! inherited across fork and exec, so it is set in the child before
//! virtiofsd is exec'd; QEMU's virtiofsd only reads it (its libcap-ng
//! set-up changes capability sets, not securebits).

use std::io;

/// Sets SECBIT_NO_SETUID_FIXUP on the calling process (for `pre_exec`:
/// only prctl(2), async-signal-safe, no allocation).
pub(super) fn keep_caps_across_uid_switch() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    if bits < 0 {
        return Err(io::Error::last_os_error());
    }
    let bits = libc::c_ulong::try_from(bits | libc::SECBIT_NO_SETUID_FIXUP)
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: as above.
    if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    /// Spawns /bin/true from a child that first (with `keep`) takes
    /// [`keep_caps_across_uid_switch`], then does what virtiofsd does for
    /// a guest uid-10 create: effective uid 10 on that thread, then
    /// open(O_CREAT) of `file`. The spawn fails with the open's error.
    fn create_as_uid_10(file: &std::path::Path, keep: bool) -> io::Result<()> {
        let c = CString::new(file.as_os_str().as_bytes()).unwrap();
        let mut cmd = Command::new("/bin/true");
        if keep {
            // SAFETY: the function only calls prctl(2).
            unsafe { cmd.pre_exec(keep_caps_across_uid_switch) };
        }
        let create = move || {
            // SAFETY: setresuid with integer arguments.
            if unsafe { libc::syscall(libc::SYS_setresuid, -1, 10, -1) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC;
            // SAFETY: a valid C string, made before the fork.
            let fd = unsafe { libc::open(c.as_ptr(), flags, 0o644) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: closes the descriptor just opened.
            unsafe { libc::close(fd) };
            Ok(())
        };
        // SAFETY: the closure only makes async-signal-safe calls and does
        // not allocate.
        unsafe { cmd.pre_exec(create) };
        cmd.status().map(|_| ())
    }

    /// A root-owned 0755 directory: uid 10 may create in it only with the
    /// capabilities kept across the switch of uid.
    #[test]
    fn a_create_under_another_uid_keeps_the_capabilities() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (switches uid, relies on CAP_DAC_OVERRIDE)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("husk-vfsd-caps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let without = create_as_uid_10(&dir.join("without"), false);
        assert_eq!(
            without.map_err(|e| e.raw_os_error()),
            Err(Some(libc::EACCES)),
            "the kernel's fix-up dropped CAP_DAC_OVERRIDE"
        );
        create_as_uid_10(&dir.join("with"), true).unwrap();
        assert_eq!(std::fs::metadata(dir.join("with")).unwrap().uid(), 10);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
