//! VM configuration: from `husk-vmm run` flags and/or a JSON file (same
//! fields), validated into a [`VmConfig`]. The types and their rules live in
//! the `husk-vm-config` crate, which hosts use to build what they hand
//! husk-vmm; this module is their name inside husk-vmm.

pub use husk_vm_config::*;

// The configuration's device limit is this VMM's memory layout's.
const _: () = assert!(MAX_VIRTIO_DEVICES == crate::arch::layout::MAX_VIRTIO_DEVICES);
