//! Building the guest kernel command line: base (default or `--cmdline`),
//! virtio-mmio device entries, then `--append`. Anything after a `--` token
//! (init arguments) stays at the end.

use linux_loader::cmdline::Cmdline;
use vm_memory::GuestAddress;

use crate::arch::layout::{virtio_slot, CMDLINE_MAX, VIRTIO_MMIO_SIZE};
use crate::config::ConfigError;

/// Splits `s` at its first `--` token (outside double quotes) into kernel
/// arguments and init arguments.
pub fn split_init_args(s: &str) -> (&str, &str) {
    let bytes = s.as_bytes();
    let mut in_quotes = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => in_quotes = !in_quotes,
            b'-' if !in_quotes
                && bytes.get(i + 1) == Some(&b'-')
                && (i == 0 || bytes[i - 1] == b' ')
                && matches!(bytes.get(i + 2), None | Some(b' ')) =>
            {
                return (s[..i].trim(), s[i + 2..].trim());
            }
            _ => {}
        }
        i += 1;
    }
    (s.trim(), "")
}

fn too_long(field: &str, e: linux_loader::cmdline::Error) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        msg: match e {
            linux_loader::cmdline::Error::TooLarge => format!(
                "the kernel command line would exceed {} bytes",
                CMDLINE_MAX - 1
            ),
            e => e.to_string(),
        },
    }
}

/// The full command line for `virtio_devices` virtio-mmio devices.
pub fn build(base: &str, append: &str, virtio_devices: usize) -> Result<Cmdline, ConfigError> {
    let mut cl = Cmdline::new(CMDLINE_MAX).map_err(|e| too_long("cmdline", e))?;
    let (base_kernel, base_init) = split_init_args(base);
    let (append_kernel, append_init) = split_init_args(append);
    if !base_kernel.is_empty() {
        cl.insert_str(base_kernel)
            .map_err(|e| too_long("cmdline", e))?;
    }
    for i in 0..virtio_devices {
        let (addr, gsi) = virtio_slot(i);
        cl.add_virtio_mmio_device(VIRTIO_MMIO_SIZE, GuestAddress(addr), gsi, None)
            .map_err(|e| too_long("cmdline", e))?;
    }
    if !append_kernel.is_empty() {
        cl.insert_str(append_kernel)
            .map_err(|e| too_long("append", e))?;
    }
    for (field, init) in [("cmdline", base_init), ("append", append_init)] {
        if !init.is_empty() {
            cl.insert_init_args(init).map_err(|e| too_long(field, e))?;
        }
    }
    // A command line of init arguments only is not representable.
    cl.as_cstring().map_err(|e| too_long("cmdline", e))?;
    Ok(cl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(cl: &Cmdline) -> String {
        cl.as_cstring().unwrap().into_string().unwrap()
    }

    #[test]
    fn split() {
        assert_eq!(split_init_args("a b -- c d"), ("a b", "c d"));
        assert_eq!(split_init_args("-- c"), ("", "c"));
        assert_eq!(split_init_args("a --"), ("a", ""));
        assert_eq!(split_init_args("a --x b"), ("a --x b", ""));
        assert_eq!(split_init_args("a x-- b"), ("a x-- b", ""));
        assert_eq!(
            split_init_args(r#"a="x -- y" -- z"#),
            (r#"a="x -- y""#, "z")
        );
    }

    #[test]
    fn virtio_entries_and_append() {
        let cl = build("console=ttyS0 quiet", "foo=1", 2).unwrap();
        assert_eq!(
            s(&cl),
            "console=ttyS0 quiet virtio_mmio.device=4K@0xd0000000:5 \
             virtio_mmio.device=4K@0xd0001000:6 foo=1"
        );
        assert_eq!(s(&build("quiet", "", 0).unwrap()), "quiet");
    }

    #[test]
    fn init_args_stay_last() {
        let cl = build("console=ttyS0 -- init1", "x=1 -- init2", 1).unwrap();
        assert_eq!(
            s(&cl),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 x=1 -- init1 init2"
        );
    }

    #[test]
    fn too_long_names_the_field() {
        let long = "x".repeat(3000);
        assert_eq!(
            build(&long, "", 0).unwrap_err().to_string(),
            "cmdline: the kernel command line would exceed 2047 bytes"
        );
        let e = build("quiet", &"y".repeat(2045), 0)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("append: "), "{e}");
        // Exactly at the limit fits.
        assert!(build(&"z".repeat(CMDLINE_MAX - 1), "", 0).is_ok());
        assert!(build(&"z".repeat(CMDLINE_MAX), "", 0).is_err());
    }

    #[test]
    fn init_args_only_is_rejected() {
        assert!(build("-- foo", "", 0).is_err());
    }
}
