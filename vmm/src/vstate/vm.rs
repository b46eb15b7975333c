//! The KVM VM: /dev/kvm, the VM fd, the in-kernel interrupt controller and
//! PIT, guest RAM registered as memory slots, and irqfd interrupt lines.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::layout;
use crate::host;

/// The capabilities husk-vmm cannot run without.
const REQUIRED_CAPS: [Cap; 5] = [
    Cap::Irqchip,
    Cap::UserMemory,
    Cap::Ioeventfd,
    Cap::Irqfd,
    Cap::Pit2,
];

/// Opening /dev/kvm and creating the VM failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Open(#[from] host::Error),
    #[error("KVM_CREATE_VM: {0}")]
    Create(kvm_ioctls::Error),
    #[error("KVM lacks the {0:?} capability")]
    MissingCap(Cap),
}

/// Setting up the in-kernel interrupt controller and PIT failed.
#[derive(Debug, thiserror::Error)]
pub enum IrqchipError {
    #[error("KVM_SET_TSS_ADDR: {0}")]
    TssAddress(kvm_ioctls::Error),
    #[error("KVM_SET_IDENTITY_MAP_ADDR: {0}")]
    IdentityMapAddress(kvm_ioctls::Error),
    #[error("KVM_CREATE_IRQCHIP: {0}")]
    CreateIrqchip(kvm_ioctls::Error),
    #[error("KVM_CREATE_PIT2: {0}")]
    CreatePit(kvm_ioctls::Error),
}

/// Registering a guest RAM range with KVM failed.
#[derive(Debug, thiserror::Error)]
pub enum MemslotError {
    #[error("guest RAM range {index} does not fit in a KVM memory slot number")]
    TooMany { index: usize },
    #[error("KVM_SET_USER_MEMORY_REGION (slot {slot}, guest {gpa:#x}+{len:#x}): {source}")]
    Register {
        slot: u32,
        gpa: u64,
        len: u64,
        source: kvm_ioctls::Error,
    },
}

/// Creating an interrupt line (an eventfd registered as an irqfd) failed.
#[derive(Debug, thiserror::Error)]
pub enum IrqLineError {
    #[error("eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("KVM_IRQFD (GSI {gsi}): {source}")]
    Register { gsi: u32, source: kvm_ioctls::Error },
}

/// /dev/kvm and one VM on it.
pub struct KvmVm {
    kvm: Kvm,
    fd: VmFd,
}

impl KvmVm {
    /// Opens /dev/kvm (refusing a PVM host unless `allow_pvm`), creates the
    /// VM and checks the capabilities it needs.
    pub fn create(allow_pvm: bool) -> Result<KvmVm, VmError> {
        let kvm = host::open_kvm(allow_pvm)?;
        let fd = kvm.create_vm().map_err(VmError::Create)?;
        if let Some(cap) = REQUIRED_CAPS.into_iter().find(|c| !kvm.check_extension(*c)) {
            return Err(VmError::MissingCap(cap));
        }
        Ok(KvmVm { kvm, fd })
    }

    /// The TSS and identity-map pages, the in-kernel PIC/IOAPIC/LAPICs and
    /// the PIT (speaker port a dummy).
    pub fn setup_irqchip(&self) -> Result<(), IrqchipError> {
        let tss = usize::try_from(layout::KVM_TSS_ADDR).expect("the TSS address fits in usize");
        self.fd
            .set_tss_address(tss)
            .map_err(IrqchipError::TssAddress)?;
        self.fd
            .set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDR)
            .map_err(IrqchipError::IdentityMapAddress)?;
        self.fd
            .create_irq_chip()
            .map_err(IrqchipError::CreateIrqchip)?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd.create_pit2(pit).map_err(IrqchipError::CreatePit)
    }

    /// Registers every range of `mem` as a memory slot (slot = range index).
    ///
    /// The caller must keep the host mappings behind `mem` alive for as
    /// long as a vCPU of this VM may run.
    pub fn register_memory(&self, mem: &GuestMemoryMmap) -> Result<(), MemslotError> {
        for (index, region) in mem.iter().enumerate() {
            let slot = u32::try_from(index).map_err(|_| MemslotError::TooMany { index })?;
            let (gpa, len) = (region.start_addr().0, region.len());
            let r = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: gpa,
                memory_size: len,
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the host range is a live mapping of exactly
            // `memory_size` bytes owned by `mem`, which the VM keeps until
            // every vCPU thread has stopped (or forever, if one is stuck).
            unsafe { self.fd.set_user_memory_region(r) }.map_err(|source| {
                MemslotError::Register {
                    slot,
                    gpa,
                    len,
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// A new interrupt line: an eventfd whose every write raises `gsi`.
    pub fn irq_line(&self, gsi: u32) -> Result<EventFd, IrqLineError> {
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(IrqLineError::EventFd)?;
        self.fd
            .register_irqfd(&evt, gsi)
            .map_err(|source| IrqLineError::Register { gsi, source })?;
        Ok(evt)
    }

    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    pub fn fd(&self) -> &VmFd {
        &self.fd
    }
}
