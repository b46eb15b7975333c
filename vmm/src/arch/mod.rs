//! x86_64 specifics: guest memory layout, boot structures (PVH start info,
//! MP table, GDT), CPUID and the initial register state of the vCPUs.

pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod pvh;
pub mod ram;
pub mod regs;
