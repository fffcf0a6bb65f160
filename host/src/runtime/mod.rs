//! The plugin runtime: one engine, one linker, a registry of loaded
//! plugins, and the dispatch path that runs one event in a fresh instance
//! under a deadline, a memory cap and a concurrency cap.

pub mod clock;
pub mod compile;
pub mod engine;
pub mod limits;
pub mod plugin;
pub mod reload;
pub mod state;
pub mod stdio;
pub mod turns;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::component::{Linker, ResourceTableError};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

pub use self::clock::WallClock;
pub use self::engine::{CompileCache, CompileSource, Footprint, PoolSizes};
pub use self::plugin::{LATENCY_BUCKETS_MS, Latency, LoadError, Plugin, PluginStats};
pub use self::state::{HostState, PluginContext, Slices};
pub use crate::capabilities::Services;

use self::compile::IncrementalCache;
use self::engine::{EpochTicker, build_engine_with};
use self::turns::Turns;
use crate::capabilities::{CallTurn, Grants, PluginInfo, Setup};
use crate::config::{Config, PluginConfig, is_valid_name};
use crate::events::{event_kind, event_kind_name};
use crate::sanitize;
use crate::wit::Described;
use crate::wit::types::{Event, Manifest};

/// How long past its deadline a call may take before the host gives up on
/// it from the outside. The epoch deadline stops guest code; this backstop
/// catches a call stuck in a host import.
const DEADLINE_GRACE: Duration = Duration::from_millis(250);
/// Longest failure message kept for the console (a trap quotes the guest).
const MAX_FAILURE_CHARS: usize = 1000;

/// Why one event failed in one plugin. Nothing else is affected.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HandleError {
    /// No plugin of that name is loaded (the name, escaped).
    #[error("no plugin named `{0}` is loaded")]
    UnknownPlugin(String),
    /// The plugin is not granted events of this kind.
    #[error("plugin `{plugin}` is not granted `{kind}` events")]
    NotGranted {
        /// The plugin.
        plugin: String,
        /// The event kind's name.
        kind: &'static str,
    },
    /// The plugin is at its `max_concurrency`.
    #[error("plugin `{plugin}` is busy: {max} calls already running (limits.max_concurrency)")]
    Busy {
        /// The plugin.
        plugin: String,
        /// Its `max_concurrency`.
        max: usize,
    },
    /// The call ran past the plugin's deadline.
    #[error(
        "plugin `{plugin}` ran past its deadline of {deadline_ms} ms and was stopped (limits.deadline_ms)"
    )]
    Timeout {
        /// The plugin.
        plugin: String,
        /// Its deadline.
        deadline_ms: u64,
    },
    /// The guest tried to grow its memory past the cap.
    #[error(
        "plugin `{plugin}` ran out of memory: it tried to grow to {wanted} bytes, over its cap of {cap} bytes (limits.memory_mb)"
    )]
    OutOfMemory {
        /// The plugin.
        plugin: String,
        /// What its memories would have held together.
        wanted: usize,
        /// Its cap.
        cap: usize,
    },
    /// The guest held more host handles than [`state::MAX_HOST_HANDLES`].
    #[error(
        "plugin `{plugin}` holds more than {max} host handles (WASI streams, pollables) at once and was stopped; \
         it must drop the handles it no longer uses"
    )]
    TooManyHandles {
        /// The plugin.
        plugin: String,
        /// The cap.
        max: usize,
    },
    /// The guest trapped.
    #[error("plugin `{plugin}` crashed: {message}")]
    Trap {
        /// The plugin.
        plugin: String,
        /// The trap, escaped.
        message: String,
    },
    /// No instance could be made (pool exhausted, start function trapped).
    #[error("plugin `{plugin}` could not start an instance: {message}")]
    Instantiate {
        /// The plugin.
        plugin: String,
        /// Why, escaped.
        message: String,
    },
    /// `handle` returned an error.
    #[error("plugin `{plugin}` returned an error: {message}")]
    Failed {
        /// The plugin.
        plugin: String,
        /// The plugin's message, escaped.
        message: String,
    },
}

/// How the runtime is set up (`runtime.*` of `botbox.toml`).
pub struct RuntimeOptions {
    /// The instance pool's sizes.
    pub pool: PoolSizes,
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// The wall clock plugins and cron schedules read.
    pub wall_clock: WallClock,
}

/// The plugin runtime: the engine, the linker, the loaded plugins and the
/// threads guests run on.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: CompileCache,
    pool: PoolSizes,
    /// Swapped whole when a config reload rebuilds the delivery engine.
    services: RwLock<Services>,
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
    generation: AtomicU64,
    wall_clock: WallClock,
    /// Guest code runs only on these threads, and only while its call holds
    /// one of `turns`: webhook answers, delivery and the admin API stay on
    /// the host's own runtime and never wait behind a guest.
    guests: GuestPool,
    _ticker: EpochTicker,
}

/// The threads guest code runs on: a tokio runtime of its own, one thread
/// per turn.
struct GuestPool {
    runtime: Option<tokio::runtime::Runtime>,
    turns: Arc<Turns>,
}

impl GuestPool {
    fn new(engine: &Engine) -> std::io::Result<GuestPool> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("botbox-guest")
            .enable_all()
            .build()?;
        let kick = engine.clone();
        Ok(GuestPool {
            runtime: Some(runtime),
            turns: Turns::new(threads, move || kick.increment_epoch()),
        })
    }

    /// Runs `work` on a guest thread; dropping the returned future stops it.
    async fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        let Some(runtime) = &self.runtime else {
            return Err("the runtime is shutting down".into());
        };
        struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
        impl<T> Drop for AbortOnDrop<T> {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let mut task = AbortOnDrop(runtime.spawn(work));
        (&mut task.0)
            .await
            .map_err(|e| format!("guest task failed: {e}"))
    }
}

impl Drop for GuestPool {
    fn drop(&mut self) {
        // A runtime may not be dropped (blocking) inside another's context.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

thread_local! {
    static GUEST_TICKS_HERE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many epoch ticks of guest code ran on the calling thread: zero on
/// every thread but the guest pool's.
pub fn guest_ticks_on_this_thread() -> u64 {
    GUEST_TICKS_HERE.with(|c| c.get())
}

impl Runtime {
    /// Builds the engine and the linker (WASI and every capability) and
    /// starts the guest threads and the epoch ticker.
    pub fn new(options: RuntimeOptions, services: Services) -> wasmtime::Result<Runtime> {
        Runtime::new_with(options, services, None)
    }

    /// [`Runtime::new`], compiling with `incremental`, the dev loop's
    /// incremental compile cache, when given (see [`compile`]).
    pub fn new_with(
        options: RuntimeOptions,
        services: Services,
        incremental: Option<Arc<IncrementalCache>>,
    ) -> wasmtime::Result<Runtime> {
        let engine = build_engine_with(&options.pool, incremental.as_ref())?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Outbound HTTP; every request passes `capabilities::http`'s checks.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        state::add_to_linker(&mut linker)?;
        let guests = GuestPool::new(&engine)
            .map_err(|e| wasmtime::Error::msg(format!("cannot start the guest threads: {e}")))?;
        Ok(Runtime {
            guests,
            _ticker: EpochTicker::start(engine.clone()),
            cache: CompileCache::new(options.cache_dir).with_incremental(incremental),
            pool: options.pool,
            engine,
            linker,
            services: RwLock::new(services),
            plugins: RwLock::new(BTreeMap::new()),
            generation: AtomicU64::new(0),
            wall_clock: options.wall_clock,
        })
    }

    /// The engine every plugin shares.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The wall clock plugins and cron schedules read.
    pub fn wall_clock(&self) -> &WallClock {
        &self.wall_clock
    }

    /// The CPU turns guests take (see [`turns`]).
    pub fn turns(&self) -> &Arc<Turns> {
        &self.guests.turns
    }

    /// The host services plugins prepared now are given.
    pub fn services(&self) -> Services {
        match self.services.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Plugins prepared after this use the new services; plugins already
    /// loaded keep theirs until they are replaced.
    pub fn set_services(&self, services: Services) {
        match self.services.write() {
            Ok(mut s) => *s = services,
            Err(poisoned) => *poisoned.into_inner() = services,
        }
    }

    /// The loaded plugin of this name.
    pub fn plugin(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.read().ok()?.get(name).cloned()
    }

    /// Every loaded plugin, by name, as of now: one lock, no lookups.
    pub fn loaded(&self) -> Vec<Arc<Plugin>> {
        self.plugins
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The names of the loaded plugins, in order.
    pub fn plugin_names(&self) -> Vec<String> {
        self.plugins
            .read()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Loads every plugin of a config, reporting every failure. A set
    /// whose concurrency caps over-commit the instance pool is refused
    /// whole: none of it is put in service.
    pub async fn load_all(&self, config: &Config) -> Vec<LoadError> {
        let mut errors = Vec::new();
        let mut prepared = Vec::new();
        for (name, plugin_config) in &config.plugins {
            match self.prepare(name, plugin_config, &self.services()).await {
                Ok(p) => prepared.push(Arc::new(p)),
                Err(e) => errors.push(e),
            }
        }
        if let Err(e) = self.check_pool(prepared.iter().map(|p| &**p)) {
            errors.push(e);
            return errors;
        }
        for p in prepared {
            self.install(p);
        }
        errors
    }

    /// Whether these plugins, all at their `max_concurrency`, fit in the
    /// instance pool.
    pub fn check_pool<'a>(
        &self,
        plugins: impl IntoIterator<Item = &'a Plugin>,
    ) -> Result<(), LoadError> {
        plugin::check_pool(&self.pool, plugins)
    }

    /// Loads (or reloads) one plugin and swaps it in atomically. On error
    /// (including a pool the plugins in service and this one would
    /// over-commit) the previous version, if any, keeps running.
    pub async fn load(&self, name: &str, config: &PluginConfig) -> Result<Arc<Plugin>, LoadError> {
        let plugin = Arc::new(self.prepare(name, config, &self.services()).await?);
        let others: Vec<Arc<Plugin>> = self
            .plugins
            .read()
            .map(|p| p.values().filter(|p| p.name != name).cloned().collect())
            .unwrap_or_default();
        self.check_pool(others.iter().map(|p| &**p).chain([&*plugin]))?;
        self.install(plugin.clone());
        Ok(plugin)
    }

    /// Puts a prepared plugin in service. Calls in flight keep the version
    /// they started on; the next call gets this one.
    pub fn install(&self, plugin: Arc<Plugin>) {
        let name = plugin.name.clone();
        match self.plugins.write() {
            Ok(mut plugins) => {
                plugins.insert(name, plugin);
            }
            Err(poisoned) => {
                poisoned.into_inner().insert(name, plugin);
            }
        }
    }

    /// Replaces every plugin at once: a config reload takes effect whole.
    pub fn replace_all(&self, plugins: BTreeMap<String, Arc<Plugin>>) {
        match self.plugins.write() {
            Ok(mut p) => *p = plugins,
            Err(poisoned) => *poisoned.into_inner() = plugins,
        }
    }

    /// Compiles (or fetches from the cache), asks the plugin what it wants
    /// and works out its grants, without putting it in service.
    pub async fn prepare(
        &self,
        name: &str,
        config: &PluginConfig,
        services: &Services,
    ) -> Result<Plugin, LoadError> {
        let engine = self.engine.clone();
        let linker = self.linker.clone();
        let cache = self.cache.clone();
        // The file, the pull cache or the registry; checked against the pin.
        let component = crate::distribution::fetch(name, config).await?;
        let (digest, origin) = (component.digest, component.origin);
        let shown = config.source.to_string();
        let plugin_name = name.to_string();
        // Cranelift is CPU-bound for up to seconds; keep it off the event path.
        let compiled = tokio::task::spawn_blocking(move || {
            plugin::compile(
                &engine,
                &linker,
                &cache,
                &plugin_name,
                &shown,
                &component.bytes,
            )
        })
        .await
        .map_err(|e| LoadError::Compile {
            plugin: name.into(),
            path: config.source.to_string(),
            reason: format!("compiler task failed: {e}"),
        })??;

        let previous = self.plugin(name);
        // A reload of the same plugin keeps its budgets, so reloading is no
        // way around them; changed limits start fresh ones. Each capability
        // decides what of its slice outlives a reload.
        let setup = Setup {
            name,
            config,
            services,
            same_limits: previous.as_ref().is_some_and(|p| p.limits == config.limits),
        };
        let slices = Slices::new(&setup, previous.as_ref().map(|p| &p.context.slices));
        let make_context = |manifest: Option<Manifest>, grants: Grants, slices: Slices| {
            Arc::new(PluginContext {
                info: PluginInfo {
                    name: name.to_string(),
                    manifest,
                    grants,
                    limits: config.limits.clone(),
                },
                slices,
            })
        };

        // describe() runs with no grants: a plugin cannot act while it is
        // still saying what it wants.
        let probe = Arc::new(Plugin {
            name: name.to_string(),
            pre: compiled.pre.clone(),
            context: make_context(None, Grants::default(), slices.clone()),
            limits: config.limits.clone(),
            permits: Arc::new(Semaphore::new(1)),
            stats: Arc::new(PluginStats::default()),
            compile_source: compiled.source,
            footprint: compiled.footprint,
            generation: 0,
        });
        let described = self
            .call_describe(&probe)
            .await
            .map_err(|e| LoadError::Describe {
                plugin: name.into(),
                reason: e.to_string(),
            })?;
        let wants_http = described.http;
        let manifest =
            sanitize_manifest(described.manifest).map_err(|reason| LoadError::Describe {
                plugin: name.into(),
                reason,
            })?;
        if wants_http.len() > 256 {
            return Err(LoadError::Describe {
                plugin: name.into(),
                reason: "manifest lists more than 256 http hosts".into(),
            });
        }
        let (grants, denied) = Grants::intersect(&manifest, &wants_http, config);
        plugin::log_denied(name, &denied, &grants);

        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            plugin = name,
            generation,
            wit = %compiled.pre.version(),
            bytes = compiled.bytes_len,
            %digest,
            from = ?origin,
            compile = ?compiled.source,
            "loaded"
        );
        Ok(Plugin {
            name: name.to_string(),
            pre: compiled.pre,
            context: make_context(Some(manifest), grants, slices),
            limits: config.limits.clone(),
            permits: Arc::new(Semaphore::new(config.limits.max_concurrency)),
            stats: previous
                .as_ref()
                .map(|p| p.stats.clone())
                .unwrap_or_default(),
            compile_source: compiled.source,
            footprint: compiled.footprint,
            generation,
        })
    }

    /// Removes a plugin. Calls in flight finish on the version they hold.
    pub fn unload(&self, name: &str) -> bool {
        self.plugins
            .write()
            .map(|mut p| p.remove(name).is_some())
            .unwrap_or(false)
    }

    async fn call_describe(&self, plugin: &Arc<Plugin>) -> Result<Described, HandleError> {
        let guest = self.guest_context();
        let name = plugin.name.clone();
        let deadline = plugin.limits.deadline + DEADLINE_GRACE;
        let turn = guest.first_turn(plugin).await?;
        let plugin = plugin.clone();
        let work = async move {
            let mut store = guest.new_store(&plugin, turn);
            let work = async {
                let bot = plugin.pre.instantiate_async(&mut store).await?;
                bot.call_describe(&mut store).await
            };
            match tokio::time::timeout(deadline, work).await {
                Ok(Ok(manifest)) => Ok(manifest),
                Ok(Err(e)) => Err(classify(&plugin, &store, e)),
                Err(_) => Err(timeout_error(&plugin)),
            }
        };
        self.guests.run(work).await.unwrap_or_else(|message| {
            Err(HandleError::Trap {
                plugin: name,
                message,
            })
        })
    }

    fn guest_context(&self) -> GuestContext {
        GuestContext {
            engine: self.engine.clone(),
            turns: self.guests.turns.clone(),
            wall_clock: self.wall_clock.clone(),
        }
    }

    /// Runs one event in a fresh instance of one plugin.
    pub async fn dispatch(&self, name: &str, event: &Event) -> Result<(), HandleError> {
        let plugin = self
            .plugin(name)
            .ok_or_else(|| HandleError::UnknownPlugin(sanitize::for_log(name, 64)))?;
        self.dispatch_to(&plugin, event).await
    }

    /// Runs one event in a fresh instance of a plugin already looked up
    /// (see [`crate::router`]), if it is granted the event's kind.
    pub async fn dispatch_to(
        &self,
        plugin: &Arc<Plugin>,
        event: &Event,
    ) -> Result<(), HandleError> {
        // Triggers choose their plugins through `crate::router`, which asks
        // this same `Grants::allows_event`. The check stays here as the
        // defence for callers that name a plugin without the router:
        // `dispatch` from the admin API's events, `botbox call` and
        // `botbox dev`.
        let kind = event_kind(event);
        if !plugin.context.grants.allows_event(kind) {
            return Err(HandleError::NotGranted {
                plugin: plugin.name.clone(),
                kind: event_kind_name(kind),
            });
        }
        plugin.context.slices.before_event(event);
        let started = std::time::Instant::now();
        let span = tracing::debug_span!(
            "handle",
            plugin = %plugin.name,
            event = event_kind_name(kind),
            otel.status_code = tracing::field::Empty,
        );
        let result =
            tracing::Instrument::instrument(self.run_handle(plugin, event), span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        let stats = &plugin.stats;
        stats.latency.record(started.elapsed());
        match &result {
            Ok(()) => stats.handled.fetch_add(1, Ordering::Relaxed),
            Err(HandleError::Timeout { .. }) => stats.timeouts.fetch_add(1, Ordering::Relaxed),
            Err(HandleError::OutOfMemory { .. }) => {
                stats.out_of_memory.fetch_add(1, Ordering::Relaxed)
            }
            Err(HandleError::Trap { .. }) => stats.traps.fetch_add(1, Ordering::Relaxed),
            Err(HandleError::Busy { .. }) => stats.busy.fetch_add(1, Ordering::Relaxed),
            Err(_) => stats.failed.fetch_add(1, Ordering::Relaxed),
        };
        if let Err(e) = &result {
            stats.recent_failures.push(plugin::Failure {
                at_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                kind: match e {
                    HandleError::Timeout { .. } => "timeout",
                    HandleError::OutOfMemory { .. } => "out-of-memory",
                    HandleError::Trap { .. } => "trap",
                    HandleError::Busy { .. } => "busy",
                    _ => "failed",
                },
                message: crate::sanitize::for_log(&e.to_string(), MAX_FAILURE_CHARS),
            });
        }
        result
    }

    async fn run_handle(&self, plugin: &Arc<Plugin>, event: &Event) -> Result<(), HandleError> {
        // The concurrency cap is taken before an instance slot, so a plugin
        // stuck at its cap never drains the shared pool. A call past the cap
        // fails at once instead of queueing: the plugin is saturated, and a
        // queue would only turn its slowness into everyone's latency.
        // Callers report it (a webhook answers 503, a schedule tick is
        // skipped and logged).
        let Ok(permit) = plugin.permits.clone().try_acquire_owned() else {
            return Err(HandleError::Busy {
                plugin: plugin.name.clone(),
                max: plugin.limits.max_concurrency,
            });
        };
        let guest = self.guest_context();
        let name = plugin.name.clone();
        // The first turn is waited for here, on the caller's side: a call
        // that waits takes no guest thread, and its arrival is known to the
        // running guests (see `turns`) before it needs one.
        let turn = guest.first_turn(plugin).await?;
        // The guest runs on its own runtime: it takes the `handle` span along.
        let work = tracing::Instrument::in_current_span(guest.handle(
            plugin.clone(),
            event.clone(),
            permit,
            turn,
        ));
        // A caller collecting the call's broadcasts (the admin API) keeps
        // them in a task-local; the guest runs as a task of its own.
        let ran = match crate::capabilities::broadcast::SentLog::current() {
            Some(log) => self.guests.run(log.scope(work)).await,
            None => self.guests.run(work).await,
        };
        ran.unwrap_or_else(|message| {
            Err(HandleError::Trap {
                plugin: name,
                message,
            })
        })
    }
}

/// What a call needs on a guest thread.
struct GuestContext {
    engine: Engine,
    turns: Arc<Turns>,
    wall_clock: WallClock,
}

impl GuestContext {
    /// A store for one call that holds `turn`. At an epoch tick the guest
    /// gives its turn back if another call waits for one and it has held
    /// its turn for a [`turns::QUANTUM`] (see [`turns`]), and waits in the
    /// rotation for the next; past its deadline it traps.
    fn new_store(&self, plugin: &Plugin, turn: turns::Turn) -> Store<HostState> {
        let slot = turns::TurnSlot::holding(self.turns.clone(), &plugin.name, turn);
        let mut store = Store::new(
            &self.engine,
            HostState::new(plugin.context.clone(), self.wall_clock.clone()).with_turn(slot.clone()),
        );
        store.limiter(|s| &mut s.memory);
        let deadline = plugin.limits.deadline;
        let started = std::time::Instant::now();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            GUEST_TICKS_HERE.with(|c| c.set(c.get() + 1));
            if started.elapsed() >= deadline {
                return Ok(UpdateDeadline::Interrupt);
            }
            if !slot.should_yield() {
                return Ok(UpdateDeadline::Continue(1));
            }
            let slot = slot.clone();
            // wasmtime 48 awaits this future before the guest goes on
            // (`UpdateDeadline::YieldCustom`, vm/libcalls.rs): the turn is
            // handed on and this call waits in the rotation for the next.
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    slot.give_back();
                    slot.take_again().await;
                }),
            ))
        });
        store
    }

    /// Waits for a call's first turn, within the call's deadline.
    async fn first_turn(&self, plugin: &Plugin) -> Result<turns::Turn, HandleError> {
        let limit = plugin.limits.deadline + DEADLINE_GRACE;
        tokio::time::timeout(limit, self.turns.acquire(&plugin.name))
            .await
            .map_err(|_| timeout_error(plugin))
    }

    async fn handle(
        self,
        plugin: Arc<Plugin>,
        event: Event,
        _permit: tokio::sync::OwnedSemaphorePermit,
        turn: turns::Turn,
    ) -> Result<(), HandleError> {
        let plugin = &*plugin;
        let limit = plugin.limits.deadline + DEADLINE_GRACE;
        let mut store = self.new_store(plugin, turn);
        let instantiated =
            tokio::time::timeout(limit, plugin.pre.instantiate_async(&mut store)).await;
        let bot = match instantiated {
            Ok(Ok(bot)) => bot,
            Ok(Err(e)) => {
                let classified = classify(plugin, &store, e);
                return Err(match classified {
                    HandleError::Trap { plugin, message } => {
                        HandleError::Instantiate { plugin, message }
                    }
                    other => other,
                });
            }
            Err(_) => return Err(timeout_error(plugin)),
        };
        let call = bot.call_handle(&mut store, &event);
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(message))) => Err(HandleError::Failed {
                plugin: plugin.name.clone(),
                message: sanitize::for_log(&message, 2000),
            }),
            Ok(Err(e)) => Err(classify(plugin, &store, e)),
            Err(_) => Err(timeout_error(plugin)),
        }
    }
}

fn timeout_error(plugin: &Plugin) -> HandleError {
    HandleError::Timeout {
        plugin: plugin.name.clone(),
        deadline_ms: plugin.limits.deadline.as_millis() as u64,
    }
}

/// Turns a wasmtime error into what the operator needs to know.
fn classify(plugin: &Plugin, store: &Store<HostState>, error: wasmtime::Error) -> HandleError {
    let memory = &store.data().memory;
    if let Some(wanted) = memory.refused_growth {
        return HandleError::OutOfMemory {
            plugin: plugin.name.clone(),
            wanted,
            cap: memory.max_memory_bytes(),
        };
    }
    if matches!(
        error.downcast_ref::<ResourceTableError>(),
        Some(ResourceTableError::Full)
    ) {
        return HandleError::TooManyHandles {
            plugin: plugin.name.clone(),
            max: state::MAX_HOST_HANDLES,
        };
    }
    let message = match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return timeout_error(plugin),
        Some(Trap::StackOverflow) => "stack overflow: recursion too deep".to_string(),
        // Trap's Display already reads "wasm trap: …".
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    };
    HandleError::Trap {
        plugin: plugin.name.clone(),
        message: sanitize::for_log(&message, 2000),
    }
}

/// Bounds what a plugin says about itself before it reaches logs and grants.
fn sanitize_manifest(m: Manifest) -> Result<Manifest, String> {
    const MAX_ITEMS: usize = 256;
    if m.channels.len() > MAX_ITEMS || m.schedules.len() > MAX_ITEMS || m.events.len() > MAX_ITEMS {
        return Err(format!(
            "manifest lists more than {MAX_ITEMS} channels, events or schedules"
        ));
    }
    for name in m.channels.iter().chain(m.schedules.iter()) {
        if !is_valid_name(name) {
            return Err(format!(
                "manifest names `{}`, which is not a valid channel or schedule name",
                sanitize::for_log(name, 64)
            ));
        }
    }
    Ok(Manifest {
        name: sanitize::for_log(&m.name, 64),
        version: sanitize::for_log(&m.version, 64),
        ..m
    })
}
