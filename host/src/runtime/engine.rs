//! The wasmtime engine every plugin shares, its epoch clock, and the
//! on-disk cache of compiled components.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::MAX_PLUGIN_MEMORY_MB;

/// How often the epoch advances: how often a running guest yields its
/// worker and has its deadline checked: the longest a neighbour waits
/// for a busy worker. The ticker thread waking 1,000 times a second costs
/// nothing measurable.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Sizes of the instance pool. Each concurrent call holds one component
/// instance slot, so this bounds concurrency across all plugins; a call that
/// finds the pool empty fails with a clear error instead of allocating more.
#[derive(Debug, Clone)]
pub struct PoolSizes {
    pub component_instances: u32,
    pub memories: u32,
    pub tables: u32,
}

impl Default for PoolSizes {
    fn default() -> Self {
        PoolSizes {
            component_instances: 256,
            memories: 512,
            tables: 512,
        }
    }
}

/// Builds the engine: async, component model, epoch interruption, pooling
/// allocator with copy-on-write memory images.
pub fn build_engine(pool: &PoolSizes) -> wasmtime::Result<Engine> {
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(pool.component_instances)
        .total_core_instances(pool.component_instances * 4)
        .total_memories(pool.memories)
        .total_tables(pool.tables)
        .total_stacks(pool.component_instances)
        // Guests built by componentize-py and componentize-js nest many core
        // instances and have large tables; the defaults are sized for small
        // Rust components and would refuse them.
        .max_core_instances_per_component(64)
        .max_memories_per_component(8)
        .max_tables_per_component(16)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        .table_elements(100_000)
        .max_memory_size((MAX_PLUGIN_MEMORY_MB as usize) << 20)
        .max_unused_warm_slots(64);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    Engine::new(&config)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a plain thread, so
/// deadlines fire even when every tokio worker is busy running guests.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("botbox-epoch".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        EpochTicker { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where a compile came from, for logs, metrics and the cache tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileSource {
    Cache,
    Compiled,
}

/// Compiled components on disk, keyed by the component's content hash and
/// the engine's compatibility hash (wasmtime version, target, settings).
/// A restart or a revert to an earlier file costs a file read instead of a
/// compile.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
}

impl CompileCache {
    pub fn new(dir: Option<PathBuf>) -> CompileCache {
        CompileCache { dir }
    }

    pub fn disabled() -> CompileCache {
        CompileCache { dir: None }
    }

    fn entry_path(&self, engine: &Engine, bytes: &[u8]) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let mut h = Sha256::new();
        h.update(engine_hash.finish().to_le_bytes());
        h.update(bytes);
        Some(dir.join(format!("{}.cwasm", hex::encode(h.finalize()))))
    }

    /// Compiles `bytes`, or loads the compiled form from the cache.
    /// A corrupt or foreign cache entry is replaced, never trusted.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CompileSource)> {
        let Some(path) = self.entry_path(engine, bytes) else {
            return Ok((Component::new(engine, bytes)?, CompileSource::Compiled));
        };
        if path.exists() {
            // SAFETY: the file is in the host's own cache dir, written by
            // `precompile_component` of an engine with the same compatibility
            // hash (it is part of the name). wasmtime checks the header and
            // refuses files from other versions or settings; on any error we
            // recompile and overwrite.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, CompileSource::Cache)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "compile cache entry unusable; recompiling");
                }
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        // SAFETY: `compiled` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        if let Err(e) = write_atomically(&path, &compiled) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compile cache entry");
        }
        Ok((component, CompileSource::Compiled))
    }
}

/// Writes via a temporary file and a rename, so a crash or a concurrent
/// host never leaves a half-written entry under the final name.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
