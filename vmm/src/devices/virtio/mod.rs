//! virtio-mmio transport and virtio devices (being written).
