//! The per-instance memory cap.
//!
//! wasmtime's `StoreLimits` enforces a cap but cannot tell us afterwards
//! that the cap is why a guest died; a Rust guest that cannot grow memory
//! aborts with a plain `unreachable` trap. This limiter remembers that it
//! refused a growth, so the event fails with "out of memory" instead of a
//! puzzling trap.

use wasmtime::ResourceLimiter;

pub struct MemoryCap {
    max_memory_bytes: usize,
    max_table_elements: usize,
    pub refused_growth: Option<usize>,
}

impl MemoryCap {
    pub fn new(max_memory_bytes: usize) -> MemoryCap {
        MemoryCap {
            max_memory_bytes,
            max_table_elements: 100_000,
            refused_growth: None,
        }
    }

    pub fn max_memory_bytes(&self) -> usize {
        self.max_memory_bytes
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.refused_growth = Some(desired);
            return Ok(false);
        }
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
