//! Integer conversions that are lossless on the hosts husk-vmm builds for,
//! in one place, so the cast lints stay on everywhere else.

// husk-vmm is x86_64-only (KVM on x86): a usize holds any u64.
const _: () = assert!(usize::BITS == u64::BITS);

/// `n` as a host size or index. Lossless: usize is 64 bits wide (asserted
/// at compile time above).
#[allow(clippy::cast_possible_truncation)] // usize is as wide as u64 (asserted above).
pub const fn usize_from(n: u64) -> usize {
    n as usize
}

#[cfg(test)]
mod tests {
    #[test]
    fn usize_from_is_lossless() {
        assert_eq!(super::usize_from(u64::MAX), usize::MAX);
    }
}
