//! The wasmtime engine every plugin shares, its epoch clock, and the
//! on-disk cache of compiled components.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::compile::{IncrementalCache, Reuse};
use crate::config::MAX_PLUGIN_MEMORY_MB;

/// How often the epoch advances: how often a running guest yields its
/// worker and has its deadline checked: the longest a neighbour waits
/// for a busy worker. The ticker thread waking 1,000 times a second costs
/// nothing measurable.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// What one component instance may take from the pool at most. Guests
/// built by componentize-py and componentize-js nest many core instances
/// and have large tables; the defaults are sized for small Rust components
/// and would refuse them. A component over any of these is refused when it
/// is compiled (wasmtime's pooling allocator checks it), before it can run.
pub const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 64;
/// The most linear memories one component instance may have.
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 8;
/// The most tables one component instance may have.
pub const MAX_TABLES_PER_COMPONENT: u32 = 16;

/// How much of a linear memory's slot is reset in place (kept resident)
/// when its instance ends, rather than handed back to the kernel; see
/// [`build_engine`]. A small plugin's stack and data fit; a JS or Python
/// guest's heap beyond it is still returned to the kernel.
pub const KEEP_RESIDENT_MEMORY_BYTES: usize = 1 << 20;
/// The same for a table's slot.
pub const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;

/// Sizes of the instance pool. Each concurrent call holds one component
/// instance slot and, with it, as many memory and table slots as the
/// component has memories and tables; a call that finds the pool empty
/// fails with a clear error instead of allocating more. Core instances are
/// only a count in wasmtime (their memory is allocated per instance), so
/// the pool has enough for every component instance to take its maximum:
/// they can never run out first.
#[derive(Debug, Clone)]
pub struct PoolSizes {
    /// Component instances: the most calls that can run at once.
    pub component_instances: u32,
    /// Linear memory slots, shared by all instances.
    pub memories: u32,
    /// Table slots, shared by all instances.
    pub tables: u32,
}

impl PoolSizes {
    /// A pool of `instances` component instances, with twice as many
    /// memories and tables (`runtime.pool_instances`). Slots are address
    /// space reserved up front and touched only when used.
    pub fn for_instances(instances: u32) -> PoolSizes {
        PoolSizes {
            component_instances: instances,
            memories: instances.saturating_mul(2),
            tables: instances.saturating_mul(2),
        }
    }
}

impl Default for PoolSizes {
    fn default() -> Self {
        PoolSizes::for_instances(crate::config::DEFAULT_POOL_INSTANCES)
    }
}

/// What one instance of a component takes from the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Memory slots one instance takes.
    pub memories: u32,
    /// Table slots one instance takes.
    pub tables: u32,
}

impl Footprint {
    /// From the component's own modules; a component that instantiates an
    /// imported module cannot be sized statically and counts as the most a
    /// component may take.
    pub fn of(component: &Component) -> Footprint {
        match component.resources_required() {
            Some(r) => Footprint {
                memories: r.num_memories,
                tables: r.num_tables,
            },
            None => Footprint {
                memories: MAX_MEMORIES_PER_COMPONENT,
                tables: MAX_TABLES_PER_COMPONENT,
            },
        }
    }
}

/// Builds the engine: async, component model, epoch interruption, pooling
/// allocator with copy-on-write memory images.
pub fn build_engine(pool: &PoolSizes) -> wasmtime::Result<Engine> {
    build_engine_with(pool, None)
}

/// [`build_engine`], with Cranelift's incremental compilation cache when
/// `incremental` is given (the dev loop; see [`super::compile`]). The code
/// it compiles is the same either way.
pub fn build_engine_with(
    pool: &PoolSizes,
    incremental: Option<&Arc<IncrementalCache>>,
) -> wasmtime::Result<Engine> {
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(pool.component_instances)
        .total_core_instances(
            pool.component_instances
                .saturating_mul(MAX_CORE_INSTANCES_PER_COMPONENT),
        )
        .total_memories(pool.memories)
        .total_tables(pool.tables)
        .total_stacks(pool.component_instances)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        .table_elements(100_000)
        .max_memory_size((MAX_PLUGIN_MEMORY_MB as usize) << 20)
        // A slot keeps the memory image of the module that used it last
        // (its "affinity"); an instance of another module in it must map
        // its own image first. With fewer warm slots kept than plugins
        // loaded, dispatching to the plugins in turn evicts each one's
        // slot, least recently used first, just before it is needed again:
        // every instance re-mapped (100 plugins ran at 0.78x one). Keeping
        // every used slot warm costs address space, not memory: a slot's
        // pages are released when its instance ends.
        .max_unused_warm_slots(pool.memories)
        // Resetting a slot with `madvise(MADV_DONTNEED)` when its instance
        // ends makes the kernel flush the TLB of every core running this
        // process (an inter-processor interrupt each time) and the next
        // instance fault its pages back in. A profile of two threads
        // dispatching showed that cost (flush_tlb_mm_range,
        // smp_call_function_many_cond, exc_page_fault) as the largest part
        // that grows with the second core. Up to these many bytes are
        // reset with `memset` instead; PAGEMAP_SCAN (Linux 6.7+, used when
        // present) makes that touch only the pages the instance dirtied.
        .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY_BYTES)
        .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    if let Some(cache) = incremental {
        config.enable_incremental_compilation(cache.clone())?;
    }
    Engine::new(&config)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a plain thread, so
/// deadlines fire even when every tokio worker is busy running guests.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts ticking `engine`'s epoch; dropping the ticker stops it.
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
    /// Loaded from the compile cache.
    Cache,
    /// Compiled now.
    Compiled,
    /// Compiled now, reusing what it could of earlier compiles (the dev
    /// loop's incremental cache). Never in `botbox run`.
    Incremental(Reuse),
}

/// Compiled components on disk, keyed by the component's content hash and
/// the engine's compatibility hash (wasmtime version, target, settings).
/// A restart or a revert to an earlier file costs a file read instead of a
/// compile.
///
/// A `.cwasm` is native code that wasmtime runs without checking it (its
/// header check is about versions, not integrity): whoever can write the
/// cache folder could otherwise run anything outside the sandbox. So every
/// entry carries an HMAC-SHA256 over its name and its bytes, with a key
/// that only this host holds (`<cache dir>.key`, outside the folder,
/// created 0600 on first use). An entry whose tag does not match — edited,
/// copied from another entry, written by anything else — is never loaded:
/// the component is compiled again and the entry rewritten (logged at WARN
/// once). The bytes checked are the bytes loaded (read into memory, then
/// deserialized), so the file cannot change between the check and the use.
#[derive(Debug, Clone)]
pub struct CompileCache {
    inner: Option<Arc<CacheInner>>,
    /// The engine's incremental cache, when it has one: compiles then say
    /// how much they reused.
    incremental: Option<Arc<IncrementalCache>>,
}

#[derive(Debug)]
struct CacheInner {
    dir: PathBuf,
    key_path: PathBuf,
    /// Read or created on first use; `None` when that failed (the cache is
    /// then off: every load compiles and nothing is written).
    key: OnceLock<Option<CacheKey>>,
    /// Whether a refused entry was logged at WARN yet.
    warned: AtomicBool,
}

/// The host-local key that signs cache entries. Redacted in `Debug`.
pub struct CacheKey(SecretBox<[u8; CACHE_KEY_BYTES]>);

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey([redacted])")
    }
}

const CACHE_KEY_BYTES: usize = 32;
/// Length of the HMAC-SHA256 tag appended to each entry.
const TAG_BYTES: usize = 32;
/// Domain separation for the tag, so the key can never sign anything else.
const TAG_CONTEXT: &[u8] = b"botbox compile cache entry v1\0";

/// Why the cache key cannot be used. Names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CacheKeyError {
    /// The key file could not be created.
    #[error("cannot create compile cache key `{path}`: {reason}")]
    Create {
        /// The key file.
        path: String,
        /// What the system said.
        reason: String,
    },
    /// The key file could not be read.
    #[error("cannot read compile cache key `{path}`: {reason}")]
    Read {
        /// The key file.
        path: String,
        /// What the system said.
        reason: String,
    },
    /// The key file has the wrong length.
    #[error(
        "compile cache key `{path}` is {found} bytes, not {CACHE_KEY_BYTES}; delete it and \
         the host makes a new one (the cache is then rebuilt)"
    )]
    Length {
        /// The key file.
        path: String,
        /// Its length in bytes.
        found: u64,
    },
    /// Others may read or write the key file.
    #[error(
        "compile cache key `{path}` can be read or written by other users (mode {mode:o}); \
         `chmod 600` it, or delete it and the host makes a new one"
    )]
    Mode {
        /// The key file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

/// Reads the cache key at `path`, or creates it (0600) when there is none.
/// Two hosts creating it at once agree on one: the key is written to a
/// temporary file first and hard-linked into place, which fails if the
/// other got there first.
pub fn load_or_create_cache_key(path: &Path) -> Result<CacheKey, CacheKeyError> {
    let shown = || path.display().to_string();
    if let Some(key) = read_cache_key(path)? {
        return Ok(key);
    }
    let create = |e: std::io::Error| CacheKeyError::Create {
        path: shown(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(create)?;
    }
    let mut key = [0u8; CACHE_KEY_BYTES];
    rand::rng().fill_bytes(&mut key);
    let tmp = temporary_name(path);
    let written = (|| {
        let mut file = open_private(&tmp)?;
        file.write_all(&key)?;
        file.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    })();
    key.fill(0);
    let _ = std::fs::remove_file(&tmp);
    written.map_err(create)?;
    read_cache_key(path)?.ok_or_else(|| CacheKeyError::Read {
        path: shown(),
        reason: "it vanished right after it was created".into(),
    })
}

/// The key at `path`; `None` if there is no such file.
fn read_cache_key(path: &Path) -> Result<Option<CacheKey>, CacheKeyError> {
    let shown = || path.display().to_string();
    let read = |e: std::io::Error| CacheKeyError::Read {
        path: shown(),
        reason: e.to_string(),
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read(e)),
    };
    let meta = file.metadata().map_err(read)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CacheKeyError::Mode {
                path: shown(),
                mode,
            });
        }
    }
    if meta.len() != CACHE_KEY_BYTES as u64 {
        return Err(CacheKeyError::Length {
            path: shown(),
            found: meta.len(),
        });
    }
    let mut key = Box::new([0u8; CACHE_KEY_BYTES]);
    file.read_exact(&mut key[..]).map_err(read)?;
    Ok(Some(CacheKey(SecretBox::new(key))))
}

/// A name beside `path` no other writer (process or thread) picks.
fn temporary_name(path: &Path) -> PathBuf {
    path.with_extension(format!(
        "tmp{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ))
}

/// Creates a new file only this user can read and write.
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

impl CacheKey {
    fn mac(&self, name: &str, bytes: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0.expose_secret()[..])
            .expect("HMAC takes a key of any length");
        mac.update(TAG_CONTEXT);
        mac.update(name.as_bytes());
        mac.update(b"\0");
        mac.update(bytes);
        mac
    }

    fn tag(&self, name: &str, bytes: &[u8]) -> [u8; TAG_BYTES] {
        self.mac(name, bytes).finalize().into_bytes().into()
    }

    /// Constant-time comparison, by `hmac`'s `verify_slice`.
    fn verify(&self, name: &str, bytes: &[u8], tag: &[u8]) -> bool {
        self.mac(name, bytes).verify_slice(tag).is_ok()
    }
}

impl CompileCache {
    /// A cache in `dir`, signed with the key in `<dir>.key` (beside the
    /// folder, not in it).
    pub fn new(dir: Option<PathBuf>) -> CompileCache {
        CompileCache {
            inner: dir.map(|dir| {
                Arc::new(CacheInner {
                    key_path: cache_key_path(&dir),
                    dir,
                    key: OnceLock::new(),
                    warned: AtomicBool::new(false),
                })
            }),
            incremental: None,
        }
    }

    /// No cache: every load compiles.
    pub fn disabled() -> CompileCache {
        CompileCache {
            inner: None,
            incremental: None,
        }
    }

    /// Compiles report what they reused from `incremental`, the cache the
    /// engine was built with ([`build_engine_with`]).
    pub fn with_incremental(mut self, incremental: Option<Arc<IncrementalCache>>) -> CompileCache {
        self.incremental = incremental;
        self
    }

    /// Compiles `bytes` now, counting what the incremental cache gave.
    fn compile(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<(Vec<u8>, CompileSource)> {
        match &self.incremental {
            Some(cache) => {
                let session = cache.session();
                let compiled = engine.precompile_component(bytes)?;
                Ok((compiled, CompileSource::Incremental(session.finish())))
            }
            None => Ok((engine.precompile_component(bytes)?, CompileSource::Compiled)),
        }
    }

    fn entry_name(engine: &Engine, bytes: &[u8]) -> String {
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let mut h = Sha256::new();
        h.update(engine_hash.finish().to_le_bytes());
        h.update(bytes);
        format!("{}.cwasm", hex::encode(h.finalize()))
    }

    /// Compiles `bytes`, or loads the compiled form from the cache.
    /// An entry not signed by this host's key is replaced, never loaded.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CompileSource)> {
        let uncached = || {
            let session = self.incremental.as_ref().map(|c| c.session());
            let component = Component::new(engine, bytes)?;
            let source = match session {
                Some(session) => CompileSource::Incremental(session.finish()),
                None => CompileSource::Compiled,
            };
            Ok((component, source))
        };
        let Some(inner) = &self.inner else {
            return uncached();
        };
        let key = inner.key.get_or_init(|| {
            load_or_create_cache_key(&inner.key_path)
                .inspect_err(|e| {
                    tracing::warn!("{e}; the compile cache is off until this is fixed");
                })
                .ok()
        });
        let Some(key) = key else {
            return uncached();
        };
        let name = Self::entry_name(engine, bytes);
        let path = inner.dir.join(&name);
        match std::fs::read(&path) {
            Ok(entry) => match split_verified(key, &name, &entry) {
                Ok(compiled) => {
                    // SAFETY: these exact bytes were signed by this host's
                    // key under this entry's name (which holds the source's
                    // hash and the engine's compatibility hash), so they are
                    // what `precompile_component` of a compatible engine
                    // made from this component. They are in memory, so the
                    // file cannot change after the check. wasmtime still
                    // checks the header; on any error we recompile.
                    match unsafe { Component::deserialize(engine, compiled) } {
                        Ok(component) => return Ok((component, CompileSource::Cache)),
                        Err(e) => inner.refused(&path, &format!("{e:#}")),
                    }
                }
                Err(reason) => inner.refused(&path, reason),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => inner.refused(&path, &e.to_string()),
        }
        let (mut compiled, source) = self.compile(engine, bytes)?;
        // SAFETY: `compiled` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        let tag = key.tag(&name, &compiled);
        compiled.extend_from_slice(&tag);
        if let Err(e) = write_atomically(&path, &compiled) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compile cache entry");
        }
        Ok((component, source))
    }
}

/// The key file of the cache in `dir`: `<dir>.key`, beside the folder.
pub fn cache_key_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".key");
    dir.with_file_name(name)
}

/// The compiled bytes of an entry whose tag is right.
fn split_verified<'a>(
    key: &CacheKey,
    name: &str,
    entry: &'a [u8],
) -> Result<&'a [u8], &'static str> {
    let Some(split) = entry.len().checked_sub(TAG_BYTES) else {
        return Err("shorter than its signature");
    };
    let (compiled, tag) = entry.split_at(split);
    if key.verify(name, compiled, tag) {
        Ok(compiled)
    } else {
        Err(
            "not signed by this host's cache key (changed, copied from another entry, or written by something else)",
        )
    }
}

impl CacheInner {
    fn refused(&self, path: &Path, reason: &str) {
        if self.warned.swap(true, Ordering::Relaxed) {
            tracing::debug!(path = %path.display(), reason, "compile cache entry refused; recompiling");
        } else {
            tracing::warn!(
                path = %path.display(),
                reason,
                "compile cache entry refused; recompiling (further refusals are logged at debug)"
            );
        }
    }
}

/// Writes via a temporary file and a rename, so a crash or a concurrent
/// host never leaves a half-written entry under the final name. The folder
/// is made 0700 and the entry 0600: nobody else needs to read native code
/// the host runs.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir)?;
    }
    let tmp = temporary_name(path);
    let written = open_private(&tmp).and_then(|mut f| f.write_all(bytes));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_key_is_made_private_once_and_refused_when_others_can_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_key_path(&dir.path().join("cache"));
        assert_eq!(path, dir.path().join("cache.key"));
        let first = load_or_create_cache_key(&path).unwrap();
        let again = load_or_create_cache_key(&path).unwrap();
        assert_eq!(first.0.expose_secret(), again.0.expose_secret());
        assert_eq!(format!("{first:?}"), "CacheKey([redacted])");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = load_or_create_cache_key(&path).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
    }

    #[test]
    fn a_tag_binds_the_bytes_to_the_entry_name() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_cache_key(&dir.path().join("k")).unwrap();
        let mut entry = b"compiled".to_vec();
        entry.extend_from_slice(&key.tag("a.cwasm", b"compiled"));
        assert_eq!(
            split_verified(&key, "a.cwasm", &entry),
            Ok(&b"compiled"[..])
        );
        assert!(split_verified(&key, "b.cwasm", &entry).is_err());
        entry[0] ^= 1;
        assert!(split_verified(&key, "a.cwasm", &entry).is_err());
        assert!(split_verified(&key, "a.cwasm", b"short").is_err());
    }
}
