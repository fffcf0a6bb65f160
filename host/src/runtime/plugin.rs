//! Loading a plugin: read, check it is a component of our world version,
//! compile (or fetch from the cache), pre-link, ask it what it wants, and
//! work out its grants.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::engine::PoolSizes;
use super::engine::{CompileSource, Footprint};
use super::{HostState, PluginContext};
use crate::capabilities::{Denied, Grants};
use crate::config::PluginLimits;
use crate::events::event_kind_name;
use crate::sanitize;
use crate::wit::{PluginPre, WIT_PACKAGE, WIT_VERSION, WIT_VERSIONS, WitVersion};

/// Why a plugin could not be loaded. Each says which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("plugin `{plugin}`: cannot read `{path}`: {reason}")]
    Read {
        /// The plugin.
        plugin: String,
        /// Its file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is not WebAssembly.
    #[error("plugin `{plugin}`: `{path}` is not a WebAssembly file")]
    NotWasm {
        /// The plugin.
        plugin: String,
        /// Its file.
        path: String,
    },
    /// The file is a core module, not a component.
    #[error(
        "plugin `{plugin}`: `{path}` is a core WebAssembly module, not a component; \
         turn it into one with `wasm-tools component new` (or build it with `cargo xtask plugins`)"
    )]
    CoreModule {
        /// The plugin.
        plugin: String,
        /// Its file.
        path: String,
    },
    /// The component was built against another WIT version.
    #[error(
        "plugin `{plugin}`: `{path}` was built against WIT {found}, but this host serves \
         {}; rebuild it against the botbox SDK for {WIT_VERSION}",
        served_versions()
    )]
    WrongVersion {
        /// The plugin.
        plugin: String,
        /// Its file.
        path: String,
        /// The WIT package and version it was built against.
        found: String,
    },
    /// The component's imports and its handler name different versions.
    #[error(
        "plugin `{plugin}`: `{path}` exports the handler of {WIT_PACKAGE}@{handler} but imports \
         `{import}` of version {found}; build it against one version of the botbox WIT"
    )]
    MixedVersions {
        /// The plugin.
        plugin: String,
        /// Its file.
        path: String,
        /// The version of its handler export.
        handler: WitVersion,
        /// The import of another version, escaped.
        import: String,
        /// That import's version, escaped.
        found: String,
    },
    /// The component imports something botbox does not provide.
    #[error(
        "plugin `{plugin}`: `{path}` imports `{import}`, which botbox does not provide to it; \
         a plugin may import only {WIT_PACKAGE} interfaces and WASI (wasi:http only from \
         {WIT_PACKAGE}@0.2.0 on)"
    )]
    UnsupportedImport {
        /// The plugin.
        plugin: String,
        /// Its file.
        path: String,
        /// The import, escaped.
        import: String,
    },
    /// The component does not export the handler.
    #[error(
        "plugin `{plugin}`: `{path}` does not export the handler of any of {}; \
         is it built for the world {WIT_PACKAGE}/bot?",
        served_versions()
    )]
    NoHandler {
        /// The plugin.
        plugin: String,
        /// Its file.
        path: String,
    },
    /// One instance would take more than the pool allows per component.
    #[error(
        "plugin `{plugin}`: `{path}` needs more than one component instance may take from the \
         host's instance pool ({reason}); it cannot run in this host"
    )]
    TooLarge {
        /// The plugin.
        plugin: String,
        /// Its file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The plugins at their `max_concurrency` would over-commit the pool.
    #[error(
        "the plugins' limits.max_concurrency over-commit the host's instance pool: {over}; \
         `{plugin}` takes the most ({share}); lower its limits.max_concurrency (or others') \
         so the sum fits, or raise runtime.pool_instances"
    )]
    PoolOvercommit {
        /// The plugin.
        plugin: String,
        /// How many the plugins may need and the pool has.
        over: String,
        /// What this plugin takes.
        share: String,
    },
    /// The component does not compile.
    #[error("plugin `{plugin}`: `{path}` does not compile: {reason}")]
    Compile {
        /// The plugin.
        plugin: String,
        /// Its file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The component cannot be linked against the host.
    #[error("plugin `{plugin}`: `{path}` cannot be linked: {reason}")]
    Link {
        /// The plugin.
        plugin: String,
        /// Its file.
        path: String,
        /// Why.
        reason: String,
    },
    /// `describe()` failed or said something unusable.
    #[error("plugin `{plugin}`: describe() failed: {reason}")]
    Describe {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// The component could not be had (file, registry, pull cache) or is
    /// not the one its digest pin names.
    #[error(transparent)]
    Source(#[from] crate::distribution::SourceError),
}

/// A compiled, pre-linked component and the facts about it that do not
/// depend on the config.
pub struct Compiled {
    /// The component, linked against the host.
    pub pre: PluginPre<HostState>,
    /// Whether it came from the cache.
    pub source: CompileSource,
    /// The size of its file.
    pub bytes_len: usize,
    /// What one instance takes from the pool.
    pub footprint: Footprint,
}

/// Checks the header, the world version and the imports, then compiles.
/// `shown` names the component's file or registry reference in errors; the
/// bytes come from [`crate::distribution::fetch`], checked against the pin.
pub fn compile(
    engine: &Engine,
    linker: &Linker<HostState>,
    cache: &super::engine::CompileCache,
    plugin: &str,
    shown: &str,
    bytes: &[u8],
) -> Result<Compiled, LoadError> {
    let shown = shown.to_string();
    check_header(plugin, &shown, bytes)?;
    let (component, source) = cache.load(engine, bytes).map_err(|e| {
        let reason = sanitize::for_log(&format!("{e:#}"), 2000);
        // wasmtime's pooling allocator refuses a component over the
        // per-component bounds when it is compiled.
        if reason.contains("in the pooling allocator") {
            LoadError::TooLarge {
                plugin: plugin.into(),
                path: shown.clone(),
                reason,
            }
        } else {
            LoadError::Compile {
                plugin: plugin.into(),
                path: shown.clone(),
                reason,
            }
        }
    })?;
    let footprint = Footprint::of(&component);
    let version = check_world(engine, &component, plugin, &shown)?;
    let pre = PluginPre::new(version, linker, &component).map_err(|e| LoadError::Link {
        plugin: plugin.into(),
        path: shown.clone(),
        reason: sanitize::for_log(&format!("{e:#}"), 2000),
    })?;
    Ok(Compiled {
        pre,
        source,
        bytes_len: bytes.len(),
        footprint,
    })
}

fn check_header(plugin: &str, path: &str, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm {
            plugin: plugin.into(),
            path: path.into(),
        });
    }
    // Bytes 4..8 are the version and layer: 1.0 is a core module, a
    // component has layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::CoreModule {
            plugin: plugin.into(),
            path: path.into(),
        });
    }
    Ok(())
}

/// Splits `ns:pkg/iface@ver` into (`ns:pkg`, version).
fn package_and_version(name: &str) -> Option<(&str, &str)> {
    let (path, version) = name.split_once('@')?;
    let (package, _iface) = path.split_once('/')?;
    Some((package, version))
}

/// The served versions, for errors: `botbox:bot@0.1.0, botbox:bot@0.2.0`.
fn served_versions() -> String {
    WIT_VERSIONS
        .iter()
        .map(|v| format!("{WIT_PACKAGE}@{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which served version the component targets: the version of its
/// `handler` export, which every `botbox:bot` import must share (a
/// component mixing versions is refused: no world has that shape).
fn check_world(
    engine: &Engine,
    component: &Component,
    plugin: &str,
    path: &str,
) -> Result<WitVersion, LoadError> {
    let ty = component.component_type();
    let mut handler_versions = Vec::new();
    for (name, _item) in ty.exports(engine) {
        if let Some((WIT_PACKAGE, version)) = package_and_version(name)
            && name.starts_with(&format!("{WIT_PACKAGE}/handler@"))
        {
            handler_versions.push(version.to_string());
        }
    }
    let version = match handler_versions.iter().find_map(|v| WitVersion::parse(v)) {
        Some(v) => v,
        None => {
            return Err(match handler_versions.first() {
                Some(other) => LoadError::WrongVersion {
                    plugin: plugin.into(),
                    path: path.into(),
                    found: format!("{WIT_PACKAGE}@{}", sanitize::for_log(other, 64)),
                },
                None => LoadError::NoHandler {
                    plugin: plugin.into(),
                    path: path.into(),
                },
            });
        }
    };
    for (name, _item) in ty.imports(engine) {
        let package = package_and_version(name);
        match package {
            Some((WIT_PACKAGE, v)) if v == version.as_str() => {}
            Some((WIT_PACKAGE, other)) => {
                return Err(LoadError::MixedVersions {
                    plugin: plugin.into(),
                    path: path.into(),
                    handler: version,
                    import: sanitize::for_log(name, 200),
                    found: sanitize::for_log(other, 64),
                });
            }
            // Outbound HTTP is a 0.2.0 capability: a 0.1.0 component that
            // imports it is refused at load, as every host before 0.2.0 did.
            _ if name.starts_with("wasi:http/") && !version.has_http() => {
                return Err(LoadError::UnsupportedImport {
                    plugin: plugin.into(),
                    path: path.into(),
                    import: sanitize::for_log(name, 200),
                });
            }
            // WASI's own version matching is left to the linker, which
            // accepts any compatible 0.2.x.
            _ if name.starts_with("wasi:") => {}
            _ => {
                return Err(LoadError::UnsupportedImport {
                    plugin: plugin.into(),
                    path: path.into(),
                    import: sanitize::for_log(name, 200),
                });
            }
        }
    }
    Ok(version)
}

/// Counters for one plugin since it loaded, across reloads.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Events handled without error.
    pub handled: AtomicU64,
    /// Events that failed otherwise (`handle` returned an error, no instance).
    pub failed: AtomicU64,
    /// Events whose guest trapped.
    pub traps: AtomicU64,
    /// Events stopped at the deadline.
    pub timeouts: AtomicU64,
    /// Events stopped at the memory cap.
    pub out_of_memory: AtomicU64,
    /// Events refused at `max_concurrency`.
    pub busy: AtomicU64,
    /// How long each event took, handled or not.
    pub latency: Latency,
    /// The last few failures with their messages, for the web console.
    pub recent_failures: RecentFailures,
}

/// How many failures a plugin keeps for the console.
pub const RECENT_FAILURES: usize = 20;

/// One failed event: when, which kind of failure, and what was said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// When it failed, Unix ms.
    pub at_ms: u64,
    /// `trap`, `timeout`, `out-of-memory`, `busy` or `failed`.
    pub kind: &'static str,
    /// The error, escaped and cut (it may quote the guest).
    pub message: String,
}

/// The last [`RECENT_FAILURES`] failures of a plugin, oldest first; a ring,
/// so a plugin failing in a loop costs a fixed amount of memory.
#[derive(Debug, Default)]
pub struct RecentFailures(std::sync::Mutex<std::collections::VecDeque<Failure>>);

impl RecentFailures {
    /// Keeps `failure`, forgetting the oldest past [`RECENT_FAILURES`].
    pub fn push(&self, failure: Failure) {
        let mut ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == RECENT_FAILURES {
            ring.pop_front();
        }
        ring.push_back(failure);
    }

    /// The failures kept, oldest first.
    pub fn snapshot(&self) -> Vec<Failure> {
        let ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().cloned().collect()
    }
}

/// Upper bounds of the handle-latency histogram buckets, in ms.
pub const LATENCY_BUCKETS_MS: [f64; 12] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
];

/// A fixed-bucket latency histogram of atomics (Prometheus style).
#[derive(Debug, Default)]
pub struct Latency {
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Latency {
    /// Counts one event that took `elapsed`.
    pub fn record(&self, elapsed: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let ms = elapsed.as_secs_f64() * 1000.0;
        if let Some(i) = LATENCY_BUCKETS_MS.iter().position(|le| ms <= *le) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    /// Per-bucket (not cumulative) counts, the total count and the sum in µs.
    pub fn snapshot(&self) -> ([u64; LATENCY_BUCKETS_MS.len()], u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            self.count.load(Relaxed),
            self.sum_us.load(Relaxed),
        )
    }
}

/// A loaded plugin, ready to handle events. Replaced whole on reload;
/// calls in flight keep the `Arc` of the version they started on.
pub struct Plugin {
    /// Its name in `botbox.toml`.
    pub name: String,
    /// The component, linked against the host for the WIT version it
    /// targets.
    pub pre: PluginPre<HostState>,
    /// What its stores share: who it is, what it may do, each capability's
    /// slice.
    pub context: Arc<PluginContext>,
    /// Its budgets.
    pub limits: PluginLimits,
    /// One per call it may run at once (`limits.max_concurrency`).
    pub permits: Arc<Semaphore>,
    /// Its counters, kept across reloads.
    pub stats: Arc<PluginStats>,
    /// Whether its component came from the compile cache.
    pub compile_source: CompileSource,
    /// What one instance takes from the pool; `limits.max_concurrency` of
    /// them may exist at once.
    pub footprint: Footprint,
    /// Increases with every successful load of this plugin name.
    pub generation: u64,
}

/// Refuses a set of plugins whose `max_concurrency` instances could take
/// more component instances, memories or tables than the pool has, so no
/// plugin at its cap can leave another without a slot.
pub fn check_pool<'a>(
    pool: &PoolSizes,
    plugins: impl IntoIterator<Item = &'a Plugin>,
) -> Result<(), LoadError> {
    let plugins: Vec<&Plugin> = plugins.into_iter().collect();
    // (what, how many the pool has, how many one instance of each takes)
    let resources = [
        (
            "component instances",
            pool.component_instances,
            plugins.iter().map(|_| 1).collect::<Vec<u64>>(),
        ),
        (
            "memories",
            pool.memories,
            plugins
                .iter()
                .map(|p| p.footprint.memories.into())
                .collect(),
        ),
        (
            "tables",
            pool.tables,
            plugins.iter().map(|p| p.footprint.tables.into()).collect(),
        ),
    ];
    for (what, have, each) in resources {
        let shares: Vec<u64> = plugins
            .iter()
            .zip(&each)
            .map(|(p, each)| (p.limits.max_concurrency as u64).saturating_mul(*each))
            .collect();
        let total = shares.iter().fold(0u64, |sum, s| sum.saturating_add(*s));
        let Some((top, share)) = shares.iter().enumerate().max_by_key(|(_, s)| **s) else {
            continue;
        };
        if total > u64::from(have) {
            let plugin = plugins[top];
            return Err(LoadError::PoolOvercommit {
                plugin: plugin.name.clone(),
                over: format!(
                    "they may need {total} {what} at once, the pool has {have}: {} too many",
                    total - u64::from(have)
                ),
                share: format!(
                    "{} concurrent calls × {} = {share} {what}",
                    plugin.limits.max_concurrency, each[top]
                ),
            });
        }
    }
    Ok(())
}

/// Logs what a plugin asked for and did not get: the operator's first
/// clue when a bot "does nothing".
pub fn log_denied(plugin: &str, denied: &Denied, grants: &Grants) {
    for c in &denied.channels {
        tracing::warn!(
            plugin,
            "asks for channel `{}`, which is not granted; denied",
            sanitize::for_log(c, 64)
        );
    }
    for e in &denied.events {
        tracing::warn!(
            plugin,
            "asks for `{}` events, which are not granted; denied",
            event_kind_name(*e)
        );
    }
    for s in &denied.schedules {
        tracing::warn!(
            plugin,
            "asks for schedule `{}`, which is not configured; denied",
            sanitize::for_log(s, 64)
        );
    }
    for h in &denied.http {
        tracing::warn!(
            plugin,
            "asks to reach `{h}` over HTTP, which is not granted; denied"
        );
    }
    tracing::debug!(plugin, http = ?grants.http, channels = ?grants.channels, events = ?grants.events, schedules = ?grants.schedules, "granted");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_package_and_version() {
        assert_eq!(
            package_and_version("botbox:bot/log@0.1.0"),
            Some(("botbox:bot", "0.1.0"))
        );
        assert_eq!(
            package_and_version("wasi:io/streams@0.2.3"),
            Some(("wasi:io", "0.2.3"))
        );
        assert_eq!(package_and_version("env"), None);
    }

    #[test]
    fn header_check_tells_core_modules_apart() {
        let core = wat::parse_str("(module)").unwrap();
        assert!(matches!(
            check_header("p", "p.wasm", &core),
            Err(LoadError::CoreModule { .. })
        ));
        let component = wat::parse_str("(component)").unwrap();
        assert!(check_header("p", "p.wasm", &component).is_ok());
        assert!(matches!(
            check_header("p", "p.wasm", b"hello world"),
            Err(LoadError::NotWasm { .. })
        ));
    }
}
