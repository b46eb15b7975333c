//! husk-vmm library (placeholder, being written).
