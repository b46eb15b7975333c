//! KVM state: the VM ([`vm::KvmVm`]: its fd, in-kernel interrupt controller
//! and PIT, guest memory slots, interrupt lines) and the vCPUs
//! ([`vcpu`]: creation, CPUID and boot registers, the KVM_RUN loop on their
//! own threads). The builder (`crate::builder`) decides the order.

pub mod vcpu;
pub mod vm;
