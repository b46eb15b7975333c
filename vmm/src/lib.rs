//! husk-vmm: a small KVM virtual machine monitor built on the rust-vmm crates.

pub mod arch;
pub mod builder;
pub mod bus;
pub mod cast;
pub mod cli;
pub mod cmdline;
pub mod config;
pub mod confine;
pub mod devices;
pub mod host;
pub mod kernel;
pub mod logger;
pub mod timing;
pub mod virtio_attach;
pub mod vm;
pub mod vstate;

/// The vCPU module under its old path (`crate::vcpu`), which `cli` uses.
pub use vstate::vcpu;
