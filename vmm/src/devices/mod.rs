//! Emulated devices and the trait the VMM's I/O buses dispatch to.

pub mod i8042;
pub mod serial;
pub mod virtio;

/// A device on the PIO or MMIO bus. vCPU threads call these on every exit that
/// hits the device's range, so they must be quick and must never panic on any
/// guest-supplied offset or access size: the guest is hostile.
pub trait BusDevice: Send {
    /// Guest read of `data.len()` bytes at `offset` from the device's base.
    /// Unknown offsets read as zero.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset` from the device's base. Unknown
    /// offsets are ignored.
    fn write(&mut self, offset: u64, data: &[u8]);
}
