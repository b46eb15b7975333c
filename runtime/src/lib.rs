//! husk's container runtime: every container in its own microVM.
//!
//! A front end (the runc-compatible `husk` CLI; later a containerd shim)
//! drives containers through [`container`]: an OCI bundle becomes a microVM
//! sized by its spec ([`bundle`]), whose root file system and bind mounts
//! virtiofsd serves, booted by husk-vmm with a typed configuration
//! ([`husk_vm_config`]); a monitor process ([`monitor`]) owns the sandbox
//! for the container's lifetime, relays its stdio ([`session`]) and records
//! its exit in the state store ([`state`]). OCI hooks run on the host
//! ([`hooks`]).

pub mod bundle;
pub mod container;
pub mod error;
pub mod hooks;
pub mod host_cgroup;
pub mod host_config;
pub mod layers;
pub mod log;
pub mod monitor;
pub mod net;
pub mod session;
pub mod spawn;
pub mod state;
pub mod sys;
#[cfg(test)]
mod testutil;
pub mod util;

pub use error::{Error, Result};

/// The OCI runtime-spec version husk reports.
pub const OCI_VERSION: &str = "1.0.2";
