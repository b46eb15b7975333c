//! The configuration of one husk microVM, as a host hands it to husk-vmm.
//!
//! [`ConfigInput`] is the typed form callers build (the husk runtime,
//! husk-bench, `husk-vmm smoke`) and the JSON of `husk-vmm run --config
//! FILE` (the same fields as husk-vmm's flags); [`VmConfig::from_input`]
//! validates it, filling defaults, into what husk-vmm runs. Every error is
//! a [`ConfigError`]: one line naming the offending field or path.
//!
//! | field                | JSON                                          | flag          |
//! |----------------------|-----------------------------------------------|---------------|
//! | kernel, initrd       | `"kernel": PATH`, `"initrd": PATH`            | `--kernel`, `--initrd` |
//! | kernel command line  | `"cmdline"` (replaces the base), `"append"`   | `--cmdline`, `--append` |
//! | vCPUs, memory (MiB)  | `"vcpus": N`, `"memory": MIB`                 | `--vcpus`, `--memory` |
//! | virtio-blk disks     | `"disks": [{"path", "read_only"}]`            | `--disk PATH[,ro]` |
//! | virtio-fs shares     | `"fs": [{"tag", "socket", "queue_size"}]`     | `--fs tag=T,socket=P` |
//! | virtio-vsock         | `"vsock_uds": PATH`, `"vsock_cid": CID`       | `--vsock-uds`, `--vsock-cid` |
//! | virtio-net NICs      | `"net": [{"tap_fd", "mac", "mtu"}]` or `{"tap_name", "mac", "mtu"}` | `--net fd=N,mac=MAC[,mtu=N]`, `--net tap=NAME,mac=MAC[,mtu=N]` |
//! | serial console       | `"serial": "stdout" \| "none" \| "file:PATH"` | `--serial`    |
//!
//! A NIC's `tap_fd` is a descriptor husk-vmm inherits: the host opens the
//! tap (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`) and passes it without
//! close-on-exec. NICs are attached after every other virtio device, so
//! adding one moves no other device's slot. Unknown fields are refused, so
//! an older husk-vmm says which one it does not know.

mod input;
mod validate;

pub use husk_protocol::container::{check_share_tag, ShareTagError};
pub use husk_protocol::net::MacAddr;
pub use input::{
    ConfigInput, DiskConfig, FsConfig, NetBackend, NetConfig, SerialConfig, VHOST_NET_PATH,
};
pub use validate::{VmConfig, VsockConfig};

/// The guest kernel and initramfs a host installs (`HUSK_KERNEL`,
/// `HUSK_INITRAMFS` override them).
pub const DEFAULT_KERNEL: &str = "/usr/share/husk/vmlinux";
pub const DEFAULT_INITRD: &str = "/usr/share/husk/initramfs.img";
pub const DEFAULT_VCPUS: u32 = 1;
pub const DEFAULT_MEMORY_MIB: u64 = 128;
pub const DEFAULT_VSOCK_CID: u64 = 3;
/// Default size of each virtio-fs queue (libvhost-user's, and so C
/// virtiofsd's, maximum).
pub const DEFAULT_FS_QUEUE_SIZE: u16 = 1024;
pub const MAX_FS_QUEUE_SIZE: u16 = 1024;
/// virtio-fs config space holds the tag in 36 bytes (spec §5.11.4); the
/// whole tag rule is [`husk_protocol::container::check_share_tag`].
pub const FS_TAG_MAX: usize = husk_protocol::container::SHARE_TAG_MAX;
pub const MAX_VCPUS: u32 = 32;
pub const MIN_MEMORY_MIB: u64 = 64;
/// 256 GiB: far beyond what a husk sandbox needs; catches unit mistakes.
pub const MAX_MEMORY_MIB: u64 = 256 << 10;
/// virtio-mmio devices husk-vmm has room for: GSIs 5..=23 of the IOAPIC
/// (husk-vmm checks that its memory layout agrees).
pub const MAX_VIRTIO_DEVICES: usize = 19;
/// First uid and gid of a jailed husk-vmm (`--jail-uid`, `--jail-gid`):
/// each VM gets `JAIL_ID_BASE` + the pid of a process that lives exactly as
/// long as it ([`jail_id`]), so no two running VMs share an id. The range
/// (pids stay below 2^22) lies just above systemd's container range
/// (524288..=1879048191) and far below its foreign-uid range
/// (2147352576..), where no account lives.
pub const JAIL_ID_BASE: u32 = 0x7000_0000;

/// The jail id of the VM whose lifetime is that of process `pid`.
pub fn jail_id(pid: u32) -> u32 {
    JAIL_ID_BASE.saturating_add(pid)
}

/// `sun_path` is 108 bytes including the NUL.
pub const UNIX_PATH_MAX: usize = 107;

/// The default kernel command line (before virtio-mmio entries). Every
/// option here is on the boot-latency path:
/// - `console=ttyS0`, `8250.nr_uarts=1`: one UART, no probing of the others;
/// - `reboot=k`, `panic=-1`: reboot and panic reset through the i8042, which
///   ends the VMM;
/// - `pci=off`: no PCI scan on kernels built with PCI (`nomodule` is left
///   out: it is no kernel parameter and would end up in init's argv);
/// - `i8042.*`: no AUX/MUX probing, no keyboard LED/ID exchange;
/// - `tsc=reliable`, `no_timer_check`: skip the TSC watchdog and the IO-APIC
///   timer sanity check;
/// - `quiet`: every console byte is a VM exit.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 8250.nr_uarts=1 reboot=k panic=-1 pci=off \
     i8042.noaux i8042.nomux i8042.dumbkbd i8042.nopnp tsc=reliable no_timer_check quiet";

/// A configuration error: `field` is the flag or JSON field at fault
/// (`memory`, `fs`, `vsock-uds`, `config` for the file itself).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {msg}")]
pub struct ConfigError {
    pub field: String,
    pub msg: String,
}

pub(crate) fn err(field: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        msg: msg.into(),
    }
}

/// Short message for an I/O error ("not found", "permission denied", ...).
pub fn io_msg(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "not found".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
