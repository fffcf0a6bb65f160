//! How components are compiled in the dev loop: Cranelift's incremental
//! compilation cache, kept in memory for the life of one `botbox dev`.
//!
//! A JavaScript or Python bot is mostly its language runtime
//! (StarlingMonkey, CPython): tens of thousands of functions that are the
//! same after every save; only the bot's own code (a few functions, or
//! just data, the snapshot of a pre-initialised heap) changes. Cranelift's
//! incremental cache keys each function's compiled code by a hash of the
//! function's IR and the target's flags, so a rebuilt component reuses
//! the machine code of every unchanged function and compiles only what
//! changed. The result is the same optimised code a cold compile makes
//! (wasmtime documents the cache as a pure compile-time saving:
//! <https://docs.rs/wasmtime/48.0.0/wasmtime/struct.Config.html#method.enable_incremental_compilation>),
//! so the dev loop serves what `botbox run` would serve, with nothing to
//! swap in later.
//!
//! The cache lives only in the memory of the process that made it: its
//! entries are machine code that wasmtime runs unchecked, and unlike the
//! on-disk compile cache ([`super::CompileCache`]) they carry no signature,
//! so they are never written to disk. `botbox run` never uses it.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hashlink::LinkedHashMap;
use wasmtime::CacheStore;

/// How many bytes of compiled functions the dev loop keeps by default:
/// the JS example bot's functions take about 42 MB (measured after a cold
/// compile and a save), so this holds several versions of a larger bot.
pub const DEFAULT_INCREMENTAL_CACHE_BYTES: usize = 512 << 20;

/// Cranelift's per-function cache, in memory, least recently used entries
/// dropped first once it holds more than its byte budget.
#[derive(Debug)]
pub struct IncrementalCache {
    entries: Mutex<Entries>,
    budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    /// One compile at a time, so each compile's reuse figures are its own.
    compiling: Mutex<()>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Least recently used at the front.
    map: LinkedHashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

/// How much of one compile came from the incremental cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// Functions whose machine code was reused.
    pub reused: u64,
    /// Functions compiled now.
    pub compiled: u64,
}

impl Reuse {
    /// The share of functions reused, 0–100.
    pub fn percent(&self) -> u64 {
        (self.reused * 100)
            .checked_div(self.reused + self.compiled)
            .unwrap_or(0)
    }
}

impl IncrementalCache {
    /// An empty cache that keeps at most `budget` bytes of compiled code.
    pub fn new(budget: usize) -> Arc<IncrementalCache> {
        Arc::new(IncrementalCache {
            entries: Mutex::new(Entries::default()),
            budget,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            compiling: Mutex::new(()),
        })
    }

    /// Bytes of compiled code held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Starts one compile: until the returned session ends, no other
    /// compile uses the cache, so [`Session::finish`] counts this one's.
    pub fn session(&self) -> Session<'_> {
        let guard = self
            .compiling
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Session {
            cache: self,
            _one_at_a_time: guard,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves a map that is still whole.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One compile's use of the cache.
pub struct Session<'a> {
    cache: &'a IncrementalCache,
    _one_at_a_time: MutexGuard<'a, ()>,
    hits: u64,
    misses: u64,
}

impl Session<'_> {
    /// What this compile reused and compiled.
    pub fn finish(self) -> Reuse {
        Reuse {
            reused: self.cache.hits.load(Ordering::Relaxed) - self.hits,
            compiled: self.cache.misses.load(Ordering::Relaxed) - self.misses,
        }
    }
}

impl CacheStore for IncrementalCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let mut entries = self.lock();
        match entries.map.to_back(key) {
            Some(value) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                // Copied out: the entry may be dropped once the lock is.
                Some(Cow::Owned(value.clone()))
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let size = key.len() + value.len();
        if size > self.budget {
            return false;
        }
        let mut entries = self.lock();
        if let Some(old) = entries.map.insert(key.to_vec(), value) {
            entries.bytes -= key.len() + old.len();
        }
        entries.bytes += size;
        while entries.bytes > self.budget {
            let Some((k, v)) = entries.map.pop_front() else {
                break;
            };
            entries.bytes -= k.len() + v.len();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entries_go_first_when_over_budget() {
        let cache = IncrementalCache::new(30);
        assert!(cache.insert(b"a", vec![0; 9]));
        assert!(cache.insert(b"b", vec![0; 9]));
        assert!(cache.insert(b"c", vec![0; 9]));
        assert_eq!(cache.bytes(), 30);
        // `a` is used, so `b` is now the oldest.
        assert!(cache.get(b"a").is_some());
        assert!(cache.insert(b"d", vec![0; 9]));
        assert!(cache.get(b"b").is_none(), "the least recently used went");
        assert!(cache.get(b"a").is_some() && cache.get(b"c").is_some());
        assert_eq!(cache.bytes(), 30);
        assert!(!cache.insert(b"e", vec![0; 40]), "larger than the budget");
    }

    #[test]
    fn a_session_counts_its_own_hits_and_misses() {
        let cache = IncrementalCache::new(1 << 10);
        cache.insert(b"k", vec![1]);
        let _ = cache.get(b"before");
        let session = cache.session();
        let _ = cache.get(b"k");
        let _ = cache.get(b"k");
        let _ = cache.get(b"missing");
        let reuse = session.finish();
        assert_eq!(
            reuse,
            Reuse {
                reused: 2,
                compiled: 1
            }
        );
        assert_eq!(reuse.percent(), 66);
    }
}
