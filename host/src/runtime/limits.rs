//! The per-instance memory cap.
//!
//! The cap is on the sum of every linear memory of the plugin's instance:
//! a component is made of several core modules, each may have its own
//! memory (wasmtime's pool allows up to 8 per component), and a cap per
//! memory would let one call use 8 × `limits.memory_mb`. wasmtime asks the
//! store's `ResourceLimiter` before it creates any memory (with
//! `current = 0`) and before every growth, for every memory in the store,
//! so a running total here sees them all.
//!
//! wasmtime's `StoreLimits` enforces a cap but cannot tell us afterwards
//! that the cap is why a guest died; a Rust guest that cannot grow memory
//! aborts with a plain `unreachable` trap. This limiter remembers that it
//! refused a growth, so the event fails with "out of memory" instead of a
//! puzzling trap.

use wasmtime::ResourceLimiter;

/// A store's memory cap: the `ResourceLimiter` of one call.
pub struct MemoryCap {
    max_memory_bytes: usize,
    max_table_elements: usize,
    /// Bytes granted so far to all memories of this store together.
    total_bytes: usize,
    /// What the store's memories would have held together had the refused
    /// growth been allowed.
    pub refused_growth: Option<usize>,
}

impl MemoryCap {
    /// A cap of `max_memory_bytes` over all the store's memories together.
    pub fn new(max_memory_bytes: usize) -> MemoryCap {
        MemoryCap {
            max_memory_bytes,
            max_table_elements: 100_000,
            total_bytes: 0,
            refused_growth: None,
        }
    }

    /// The cap, in bytes.
    pub fn max_memory_bytes(&self) -> usize {
        self.max_memory_bytes
    }

    /// The bytes all memories of the store hold together.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past the memory's own declared maximum wasmtime refuses the growth
        // after asking us; refusing here keeps it out of the total (the guest
        // sees the same -1) and is not the plugin's cap at work.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let growth = desired.saturating_sub(current);
        let wanted = self.total_bytes.saturating_add(growth);
        if wanted > self.max_memory_bytes {
            self.refused_growth = Some(wanted);
            return Ok(false);
        }
        // A growth we allow can still fail inside wasmtime (an mmap error);
        // the total then counts bytes the store does not hold, which only
        // errs towards the cap.
        self.total_bytes = wanted;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_cap_is_on_the_sum_of_all_memories() {
        let mut cap = MemoryCap::new(8 * MIB);
        // Three memories created at 3 MiB each: the third is refused.
        assert!(cap.memory_growing(0, 3 * MIB, None).unwrap());
        assert!(cap.memory_growing(0, 3 * MIB, None).unwrap());
        assert!(!cap.memory_growing(0, 3 * MIB, None).unwrap());
        assert_eq!(cap.refused_growth, Some(9 * MIB));
        // The first grows by 2 MiB: exactly at the cap.
        assert!(cap.memory_growing(3 * MIB, 5 * MIB, None).unwrap());
        assert_eq!(cap.total_bytes(), 8 * MIB);
        assert!(!cap.memory_growing(3 * MIB, 3 * MIB + 65536, None).unwrap());
    }

    #[test]
    fn growth_past_a_memory_s_own_maximum_is_not_counted() {
        let mut cap = MemoryCap::new(8 * MIB);
        assert!(!cap.memory_growing(MIB, 4 * MIB, Some(2 * MIB)).unwrap());
        assert_eq!(cap.total_bytes(), 0);
        assert_eq!(cap.refused_growth, None);
    }
}
