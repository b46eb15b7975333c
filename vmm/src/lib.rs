//! husk-vmm: a small KVM virtual machine monitor built on the rust-vmm crates.

pub mod devices;
