//! Dispatch: one event through a trivial plugin that calls
//! `send-broadcast` once, in botbox, in bare wasmtime (the floor), in
//! Extism, and as a native Rust function; then botbox's throughput as
//! plugins and worker threads are added.

use std::future::Future;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use botbox::capabilities::rate::TokenBucket;
use botbox::config::Config;
use botbox::delivery::throttle::SystemClock;
use botbox::delivery::{Delivery, DeliveryObservers};
use botbox::providers::Registry;
use botbox::runtime::engine::build_engine;
use botbox::runtime::{Plugin, PoolSizes, Runtime, RuntimeOptions, Services};
use botbox::wit::BotPre;
use botbox::wit::types::{BroadcastError, ChatMessage, Content, Event, Message, Receipt};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

use crate::null_outbox::NullOutbox;
use crate::report::Report;
use crate::support::{Ask, WatPlugin, send_and_expect};

const SECTION: &str = "dispatch";

/// How many timed calls give the percentiles, and how long each
/// throughput run lasts.
pub struct Budget {
    pub samples: usize,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub p50_us: f64,
    pub p99_us: f64,
    pub per_second: f64,
}

impl Stats {
    /// Figures another process printed as JSON (`p50_us`, `p99_us`,
    /// `per_second`); a missing one reads as NaN.
    fn from_json(v: &serde_json::Value) -> Stats {
        let figure = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        Stats {
            p50_us: figure("p50_us"),
            p99_us: figure("p99_us"),
            per_second: figure("per_second"),
        }
    }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Warm-up, `samples` timed calls for the percentiles, then as many calls
/// as fit in `window` for the rate.
async fn measure<F, Fut>(mut one: F, budget: &Budget) -> Stats
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..budget.samples / 10 {
        one().await;
    }
    let mut times = Vec::with_capacity(budget.samples);
    for _ in 0..budget.samples {
        let started = Instant::now();
        one().await;
        times.push(started.elapsed());
    }
    times.sort();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < budget.window {
        for _ in 0..64 {
            one().await;
        }
        n += 64;
    }
    Stats {
        p50_us: percentile(&times, 0.5),
        p99_us: percentile(&times, 0.99),
        per_second: n as f64 / started.elapsed().as_secs_f64(),
    }
}

/// The trivial plugin: asks for `lobby` and chat messages, and sends "hi"
/// to `lobby` on every event, trapping if the host refuses it.
pub fn trivial_component() -> Vec<u8> {
    let mut p = WatPlugin::new(Ask {
        channels: &["lobby"],
        events: &[0],
        schedules: &[],
    });
    let msg = p.text_message("lobby", "hi");
    p.body(&send_and_expect(msg, 0)).build()
}

pub fn event() -> Event {
    Event::ChatMessage(ChatMessage {
        channel: "lobby".into(),
        conversation: "room-1".into(),
        sender_id: "u-42".into(),
        sender_name: Some("alice".into()),
        text: "hello bot".into(),
        message_id: Some("m-1".into()),
        sent_at_ms: Some(1_700_000_000_000),
    })
}

// ---- native ---------------------------------------------------------------

/// What the plugin does, as plain Rust: build the message, hand it to a sink.
fn native_handle(
    event: &Event,
    sink: &dyn Fn(Message) -> Result<Receipt, BroadcastError>,
) -> Result<(), String> {
    if !matches!(event, Event::ChatMessage(_)) {
        return Ok(());
    }
    let message = Message {
        channel: "lobby".into(),
        content: Content::Text("hi".into()),
        sender: None,
        extra: None,
        idempotency_key: None,
        reply_to: None,
        options: None,
    };
    sink(message).map(drop).map_err(|e| e.to_string())
}

fn null_sink(message: Message) -> Result<Receipt, BroadcastError> {
    black_box(&message);
    Ok(Receipt {
        id: String::new(),
        eta_ms: 0,
    })
}

// ---- bare wasmtime --------------------------------------------------------

static BARE_SENDS: AtomicU64 = AtomicU64::new(0);

/// The floor: the same component on an engine built by botbox's own
/// constructor (identical pooling, epoch and memory settings), a fresh
/// instance per event, and a `send-broadcast` that drops the message.
pub struct Bare {
    engine: Engine,
    pre: BotPre<()>,
}

impl Bare {
    pub fn new(component: &[u8]) -> wasmtime::Result<Bare> {
        let engine = build_engine(&PoolSizes::default())?;
        let component = Component::new(&engine, component)?;
        let mut linker = Linker::<()>::new(&engine);
        linker
            .instance("botbox:bot/broadcast@0.1.0")?
            .func_wrap_async("send-broadcast", |_store, (message,): (Message,)| {
                Box::new(async move {
                    BARE_SENDS.fetch_add(1, Ordering::Relaxed);
                    Ok((null_sink(message),))
                })
            })?;
        linker.define_unknown_imports_as_traps(&component)?;
        let pre = BotPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Bare { engine, pre })
    }

    pub async fn call(&self, event: &Event) {
        let mut store = Store::new(&self.engine, ());
        // Nothing advances this engine's epoch; any deadline will do.
        store.set_epoch_deadline(1 << 40);
        let bot = self
            .pre
            .instantiate_async(&mut store)
            .await
            .expect("bare instantiate");
        bot.botbox_bot_handler()
            .call_handle(&mut store, event)
            .await
            .expect("bare call")
            .expect("bare handle");
    }
}

// ---- botbox ---------------------------------------------------------------

/// A botbox runtime with `count` copies of the trivial plugin, whose
/// broadcasts go to a console channel backed by the null outbox.
pub struct BotboxHost {
    pub runtime: Arc<Runtime>,
    pub plugins: Vec<Arc<Plugin>>,
    pub outbox: Arc<NullOutbox>,
    _dir: tempfile::TempDir,
}

impl BotboxHost {
    pub async fn new(component: &[u8], count: usize) -> BotboxHost {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("trivial.wasm"), component).expect("write component");
        let mut toml = String::from(
            "[providers.console]\nkind = \"console\"\n[channels.lobby]\nprovider = \"console\"\n",
        );
        for i in 0..count {
            toml.push_str(&format!(
                "[plugins.p{i:03}]\npath = \"trivial.wasm\"\nchannels = [\"lobby\"]\nevents = [\"chat-message\"]\n"
            ));
        }
        let config = Config::parse(&toml, &dir.path().join("botbox.toml"), dir.path())
            .expect("bench config");
        let registry = Registry::from_config(&config).expect("providers");
        let outbox = Arc::new(NullOutbox::default());
        let delivery = Delivery::new(
            &config,
            &registry,
            outbox.clone(),
            Arc::new(SystemClock),
            DeliveryObservers::default(),
        )
        .expect("delivery");
        let kv = botbox::capabilities::kv::KvStore::open(&dir.path().join("kv.sqlite"))
            .expect("kv store");
        let services = Services {
            kv: Arc::new(kv),
            delivery: Arc::new(delivery),
            log_observers: tokio::sync::broadcast::channel(64).0,
        };
        let runtime = Runtime::new(
            RuntimeOptions {
                pool: PoolSizes::default(),
                cache_dir: Some(dir.path().join("cache")),
                wall_clock: Default::default(),
            },
            services,
        )
        .expect("runtime");
        let mut plugins = Vec::new();
        for (name, plugin_config) in &config.plugins {
            let plugin = runtime.load(name, plugin_config).await.expect("load");
            // A plugin's broadcast budget tops out at 100,000 a minute; the
            // benchmark sends more, so it gets a bucket that never runs dry.
            // The budget is still checked and charged on every send.
            if let Ok(mut bucket) = plugin.context.slices.broadcast.budget.lock() {
                *bucket = TokenBucket::new(u32::MAX, 1e12);
            }
            plugins.push(plugin);
        }
        BotboxHost {
            runtime: Arc::new(runtime),
            plugins,
            outbox,
            _dir: dir,
        }
    }

    pub fn accepted(&self) -> u64 {
        self.outbox.accepted.load(Ordering::Relaxed)
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The load generator's runtime: its threads are named so that their CPU
/// time can be told apart from the guests' (see [`cpu_of_threads`]).
fn multi_thread(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(LOAD_THREAD)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The name of the load generator's threads.
const LOAD_THREAD: &str = "bench-load";
/// The name botbox gives the threads guests run on (runtime/mod.rs).
const GUEST_THREAD: &str = "botbox-guest";

/// The CPU time this process's threads whose name starts with `prefix`
/// have used so far, from the kernel's scheduler statistics
/// (`/proc/self/task/*/schedstat`, nanoseconds on a CPU). Threads that
/// ended are not counted, so take both readings while they run.
fn cpu_of_threads(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut total = 0u64;
    for task in tasks.flatten() {
        let path = task.path();
        let named = std::fs::read_to_string(path.join("comm"))
            .is_ok_and(|comm| comm.trim_end().starts_with(prefix));
        if !named {
            continue;
        }
        total += std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(total)
}

/// One throughput run: events per second, and the CPU time its load
/// generator and the guest threads took.
pub struct Throughput {
    pub per_second: f64,
    pub events: u64,
    pub wall: Duration,
    pub generator_cpu: Duration,
    pub guest_cpu: Duration,
}

impl Throughput {
    /// The load generator's share of the CPU time the run took.
    fn generator_detail(&self) -> String {
        let per_event = |d: Duration| d.as_secs_f64() * 1e6 / self.events.max(1) as f64;
        format!(
            "load generator {:.2} µs CPU an event ({:.0}% of a core), guest threads {:.2} µs an event ({:.0}% of a core)",
            per_event(self.generator_cpu),
            self.generator_cpu.as_secs_f64() / self.wall.as_secs_f64() * 100.0,
            per_event(self.guest_cpu),
            self.guest_cpu.as_secs_f64() / self.wall.as_secs_f64() * 100.0,
        )
    }
}

/// Events per second with `workers` tasks on `workers` threads, each
/// dispatching to the plugins in turn for `window`.
fn throughput(host: &BotboxHost, workers: usize, window: Duration) -> Throughput {
    let rt = multi_thread(workers);
    let event = Arc::new(event());
    let count = Arc::new(AtomicU64::new(0));
    // The generator's threads are up before the first reading.
    rt.block_on(async {
        for _ in 0..workers {
            tokio::spawn(async {}).await.expect("warm-up task");
        }
    });
    let generator_before = cpu_of_threads(LOAD_THREAD);
    let guest_before = cpu_of_threads(GUEST_THREAD);
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..workers {
            let runtime = host.runtime.clone();
            let plugins = host.plugins.clone();
            let event = event.clone();
            let count = count.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = w;
                let mut n = 0;
                while started.elapsed() < window {
                    let plugin = &plugins[i % plugins.len()];
                    runtime.dispatch_to(plugin, &event).await.expect("dispatch");
                    i += workers;
                    n += 1;
                }
                count.fetch_add(n, Ordering::Relaxed);
            }));
        }
        for t in tasks {
            t.await.expect("worker");
        }
    });
    let wall = started.elapsed();
    let generator_cpu = cpu_of_threads(LOAD_THREAD).saturating_sub(generator_before);
    let guest_cpu = cpu_of_threads(GUEST_THREAD).saturating_sub(guest_before);
    let events = count.load(Ordering::Relaxed);
    Throughput {
        per_second: events as f64 / wall.as_secs_f64(),
        events,
        wall,
        generator_cpu,
        guest_cpu,
    }
}

/// The process's log as the binary sets it up: the log at `info` and the
/// trace layer, idle until `[telemetry]` starts it. The rows without
/// telemetry are measured with it in place, as `botbox run` has it.
///
/// With `trace_layer` false the trace layer is left out, as a host before
/// `[telemetry]` existed had it: the child process of [`untraced`] measures
/// that, since a process's subscriber is set once.
pub fn install_subscriber(trace_layer: bool) {
    use tracing_subscriber::prelude::*;
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(tracing_subscriber::EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(log);
    if trace_layer {
        registry.with(botbox::telemetry::layer()).init();
    } else {
        registry.init();
    }
}

/// Set in the child process that measures dispatch without the trace layer.
pub const UNTRACED_ENV: &str = "BOTBOX_BENCH_NO_TRACE_LAYER";
/// The hidden section the child runs.
pub const UNTRACED_SECTION: &str = "dispatch-untraced";

/// The child's side: botbox's dispatch measured as in [`run`], printed as
/// one line of JSON for the parent.
pub fn untraced_child(budget: &Budget) {
    let rt = current_thread();
    let host = rt.block_on(BotboxHost::new(&trivial_component(), 1));
    let stats = botbox_dispatch(&rt, &host, &event(), budget);
    println!(
        "{}",
        serde_json::json!({
            "p50_us": stats.p50_us,
            "p99_us": stats.p99_us,
            "per_second": stats.per_second,
        })
    );
}

/// One child run of this benchmark binary measuring botbox's dispatch,
/// with the trace layer or without it.
fn child_dispatch(trace_layer: bool) -> Result<Stats, String> {
    let exe = std::env::current_exe().map_err(|e| format!("no trace layer: {e}"))?;
    let mut command = std::process::Command::new(&exe);
    command.arg(UNTRACED_SECTION);
    if trace_layer {
        command.env_remove(UNTRACED_ENV);
    } else {
        command.env(UNTRACED_ENV, "1");
    }
    let output = command
        .output()
        .map_err(|e| format!("no trace layer: cannot run {}: {e}", exe.display()))?;
    if !output.status.success() {
        return Err(format!(
            "no trace layer: the child run failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let line = String::from_utf8_lossy(&output.stdout);
    let v: serde_json::Value = line
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("no trace layer: unreadable output: {}", line.trim()))?;
    Ok(Stats::from_json(&v))
}

/// How many child runs of each kind [`untraced`] alternates.
const UNTRACED_ROUNDS: usize = 5;

/// Telemetry off against no trace layer at all: child processes of this
/// binary, with and without the layer, alternated so that the machine's
/// drift falls on both; each side's median run (by p50) is returned, with
/// the layer first.
fn untraced() -> Result<(Stats, Stats), String> {
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..UNTRACED_ROUNDS {
        with.push(child_dispatch(true)?);
        without.push(child_dispatch(false)?);
    }
    let median = |mut runs: Vec<Stats>| {
        runs.sort_by(|a, b| a.p50_us.total_cmp(&b.p50_us));
        runs[runs.len() / 2]
    };
    Ok((median(with), median(without)))
}

/// The two thread hops a botbox dispatch makes, alone: a task handed to
/// another multi-thread tokio runtime (as many threads as the guest pool)
/// and awaited, and the same with a `spawn_blocking` round trip inside it
/// (the outbox write leaving the guest thread). Their cost is mostly the
/// kernel waking a sleeping thread, which on an idle virtual machine means
/// waking an idle virtual CPU: it varies with what else runs, so it is
/// measured in the same run as the dispatch it explains.
fn hops(rt: &tokio::runtime::Runtime, budget: &Budget) -> (Stats, Stats) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let other = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("bench-hop")
        .enable_all()
        .build()
        .expect("tokio runtime");
    let handle = other.handle().clone();
    let hop = {
        let handle = &handle;
        rt.block_on(measure(
            move || async move {
                handle.spawn(async {}).await.expect("hop");
            },
            budget,
        ))
    };
    let hop_blocking = {
        let handle = &handle;
        rt.block_on(measure(
            move || async move {
                handle
                    .spawn(async {
                        tokio::task::spawn_blocking(|| black_box(1))
                            .await
                            .expect("blocking hop")
                    })
                    .await
                    .expect("hop");
            },
            budget,
        ))
    };
    other.shutdown_background();
    (hop, hop_blocking)
}

/// botbox's dispatch of one event to `host`'s first plugin, one at a time,
/// checking that every event's broadcast reached the outbox: nothing was
/// refused on the way.
fn botbox_dispatch(
    rt: &tokio::runtime::Runtime,
    host: &BotboxHost,
    event: &Event,
    budget: &Budget,
) -> Stats {
    let runtime: &Runtime = &host.runtime;
    let plugin = &host.plugins[0];
    let before = host.accepted();
    let dispatched = AtomicU64::new(0);
    let stats = {
        let dispatched = &dispatched;
        rt.block_on(measure(
            move || {
                dispatched.fetch_add(1, Ordering::Relaxed);
                async move {
                    runtime
                        .dispatch_to(plugin, event)
                        .await
                        .expect("botbox dispatch");
                }
            },
            budget,
        ))
    };
    assert_eq!(
        host.accepted() - before,
        dispatched.load(Ordering::Relaxed),
        "every broadcast accepted"
    );
    stats
}

/// A collector that takes OTLP/HTTP exports and drops them, on loopback,
/// on a thread of its own; returns its base URL.
fn null_collector() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind collector");
    let url = format!(
        "http://{}",
        listener.local_addr().expect("collector address")
    );
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = current_thread();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("collector listener");
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(|_: axum::body::Bytes| async { Vec::<u8>::new() }),
            );
            let _ = axum::serve(listener, app).await;
        });
    });
    url
}

/// The same dispatch with `[telemetry]` exporting every span (sample ratio
/// 1.0) to a collector on loopback; telemetry is off again afterwards.
fn telemetry_on(
    rt: &tokio::runtime::Runtime,
    host: &BotboxHost,
    event: &Event,
    budget: &Budget,
) -> Stats {
    let config = botbox::config::TelemetryConfig {
        otlp_endpoint: null_collector(),
        protocol: botbox::config::OtlpProtocol::HttpProtobuf,
        service_name: "botbox-bench".into(),
        sample_ratio: 1.0,
    };
    let telemetry = botbox::telemetry::start(&config).expect("telemetry starts");
    let runtime: &Runtime = &host.runtime;
    let plugin = &host.plugins[0];
    let stats = rt.block_on(measure(
        move || async move {
            // A trigger's span, as the admin API and webhooks open one.
            let span = tracing::debug_span!(target: "botbox::bench", "admin event");
            tracing::Instrument::instrument(runtime.dispatch_to(plugin, event), span)
                .await
                .expect("botbox dispatch");
        },
        budget,
    ));
    rt.block_on(telemetry.shutdown());
    stats
}

pub struct ExtismFigures {
    pub version: String,
    pub reused: Stats,
    pub fresh: Stats,
}

/// Runs the Extism benchmark binary that `cargo xtask bench` builds.
fn extism(budget: &Budget) -> Result<ExtismFigures, String> {
    let (Some(binary), Some(plugin)) = (
        std::env::var_os("BOTBOX_BENCH_EXTISM"),
        std::env::var_os("BOTBOX_BENCH_EXTISM_PLUGIN"),
    ) else {
        return Err("Extism: BOTBOX_BENCH_EXTISM(_PLUGIN) not set; `cargo xtask bench` builds bench/extism and sets them".into());
    };
    let output = std::process::Command::new(&binary)
        .arg(&plugin)
        .arg(budget.samples.to_string())
        .arg(budget.window.as_millis().to_string())
        .output()
        .map_err(|e| format!("Extism: cannot run {}: {e}", Path::new(&binary).display()))?;
    if !output.status.success() {
        return Err(format!(
            "Extism: {} failed: {}",
            Path::new(&binary).display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("Extism: unreadable output: {e}"))?;
    let stats = |k: &str| Stats::from_json(&v[k]);
    Ok(ExtismFigures {
        version: v["extism_version"]
            .as_str()
            .unwrap_or("?")
            .trim_end_matches('\0')
            .to_string(),
        reused: stats("reused"),
        fresh: stats("fresh"),
    })
}

fn detail(s: &Stats, bare: &Stats) -> String {
    format!(
        "p50 {:.2} µs, p99 {:.2} µs; p50 {:.2}x bare wasmtime",
        s.p50_us,
        s.p99_us,
        s.p50_us / bare.p50_us
    )
}

pub fn run(report: &mut Report, budget: &Budget) {
    let component = trivial_component();
    let event = event();
    let rt = current_thread();

    let native = rt.block_on(measure(
        || {
            let r = native_handle(black_box(&event), &null_sink);
            black_box(r).expect("native");
            std::future::ready(())
        },
        budget,
    ));

    let bare = Bare::new(&component).expect("bare wasmtime");
    let bare_stats = {
        let (bare, event) = (&bare, &event);
        rt.block_on(measure(move || bare.call(event), budget))
    };
    assert!(BARE_SENDS.load(Ordering::Relaxed) > 0, "bare plugin sent");

    let host = rt.block_on(BotboxHost::new(&component, 1));
    let botbox = botbox_dispatch(&rt, &host, &event, budget);
    let (hop, hop_blocking) = hops(&rt, budget);

    let ratio = botbox.p50_us / bare_stats.p50_us;
    report.add(
        SECTION,
        "botbox: 1 event, fresh instance, send-broadcast to null provider",
        botbox.per_second,
        "events/s",
        detail(&botbox, &bare_stats),
    );
    report.target(
        format!("≤ 1.5x bare p50 (is {ratio:.2}x); ≥ 50,000/s on one core"),
        ratio <= 1.5 && botbox.per_second >= 50_000.0,
    );
    let over_floor = botbox.p50_us - bare_stats.p50_us;
    report.add(
        SECTION,
        "thread hops alone: a task on another tokio runtime and back, with a spawn_blocking inside",
        hop_blocking.per_second,
        "hops/s",
        format!(
            "p50 {:.2} µs (the runtime hop alone {:.2} µs), p99 {:.2} µs; botbox's p50 over bare wasmtime is {over_floor:.2} µs, the hops' p50 {:.0}% of it",
            hop_blocking.p50_us,
            hop.p50_us,
            hop_blocking.p99_us,
            hop_blocking.p50_us / over_floor.max(f64::EPSILON) * 100.0
        ),
    );
    report.reference(
        "what a botbox dispatch adds to the floor since guests run on threads of their own and the outbox write leaves them (runtime/mod.rs GuestPool, capabilities/broadcast.rs send)",
    );
    match untraced() {
        Ok((off, plain)) => {
            let ratio = off.p50_us / plain.p50_us;
            report.add(
                SECTION,
                "dispatch, no trace layer installed (a host before [telemetry]), child processes",
                plain.per_second,
                "events/s",
                format!(
                    "{}; median of {UNTRACED_ROUNDS} runs, alternated with as many of telemetry off (the idle layer): p50 {:.2} µs, {:.0}/s",
                    detail(&plain, &bare_stats),
                    off.p50_us,
                    off.per_second,
                ),
            );
            report.target(
                format!("telemetry off unchanged: its p50 within 1.1x no layer's (is {ratio:.2}x)"),
                ratio <= 1.1,
            );
        }
        Err(why) => report.skip(why),
    }
    let traced = telemetry_on(&rt, &host, &event, budget);
    report.add(
        SECTION,
        "dispatch, telemetry on: every span exported over OTLP to a loopback collector",
        traced.per_second,
        "events/s",
        format!(
            "{}; p50 {:.2}x telemetry off",
            detail(&traced, &bare_stats),
            traced.p50_us / botbox.p50_us
        ),
    );
    report.add(
        SECTION,
        "bare wasmtime: same component and engine settings (floor)",
        bare_stats.per_second,
        "events/s",
        detail(&bare_stats, &bare_stats),
    );
    match extism(budget) {
        Ok(x) => {
            report
                .facts
                .push(("extism_version".into(), x.version.clone().into()));
            report.add(
                SECTION,
                format!("Extism {}: one instance reused (its usual mode)", x.version),
                x.reused.per_second,
                "events/s",
                detail(&x.reused, &bare_stats),
            );
            report.target(
                format!(
                    "botbox faster (botbox p50 {:.2}x Extism's)",
                    botbox.p50_us / x.reused.p50_us
                ),
                botbox.p50_us < x.reused.p50_us,
            );
            report.add(
                SECTION,
                format!("Extism {}: fresh instance per event", x.version),
                x.fresh.per_second,
                "events/s",
                detail(&x.fresh, &bare_stats),
            );
            report.target(
                format!(
                    "botbox faster (botbox p50 {:.2}x Extism's)",
                    botbox.p50_us / x.fresh.p50_us
                ),
                botbox.p50_us < x.fresh.p50_us,
            );
        }
        Err(why) => report.skip(why),
    }
    report.add(
        SECTION,
        "native Rust function (no sandbox)",
        native.per_second,
        "events/s",
        detail(&native, &bare_stats),
    );
    drop(host);

    // Every scaling row in one run, so the ratios compare like with like
    // on a machine whose load changes: the six setups take turns, half a
    // window each, for several rounds, and each row is the median of its
    // rounds (one window each gave 0.76x–0.98x for 100 plugins against
    // one, for the same code in runs minutes apart).
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_string();
    const ROUNDS: u32 = 7;
    let counts = [1usize, 10, 100];
    let hosts: Vec<BotboxHost> = counts
        .iter()
        .map(|&count| rt.block_on(BotboxHost::new(&component, count)))
        .collect();
    let mut runs: std::collections::BTreeMap<(usize, usize), Vec<Throughput>> = Default::default();
    let mut sent: std::collections::BTreeMap<(usize, usize), u64> = Default::default();
    for _ in 0..ROUNDS {
        for (host, &count) in hosts.iter().zip(&counts) {
            for workers in [1usize, 2] {
                let before = host.accepted();
                let run = throughput(host, workers, budget.window / 2);
                *sent.entry((count, workers)).or_default() += host.accepted() - before;
                runs.entry((count, workers)).or_default().push(run);
            }
        }
    }
    drop(hosts);
    let mut rates = std::collections::BTreeMap::new();
    for count in counts {
        for workers in [1usize, 2] {
            let rounds = &runs[&(count, workers)];
            let sent = sent[&(count, workers)];
            assert!(sent > 0, "scaling run sent nothing");
            let mut per_second: Vec<f64> = rounds.iter().map(|r| r.per_second).collect();
            per_second.sort_by(f64::total_cmp);
            let median = per_second[per_second.len() / 2];
            let all = Throughput {
                per_second: median,
                events: rounds.iter().map(|r| r.events).sum(),
                wall: rounds.iter().map(|r| r.wall).sum(),
                generator_cpu: rounds.iter().map(|r| r.generator_cpu).sum(),
                guest_cpu: rounds.iter().map(|r| r.guest_cpu).sum(),
            };
            rates.insert((count, workers), median);
            report.add(
                "scaling",
                format!("{count} plugin(s) loaded, {workers} worker thread(s)"),
                median,
                "events/s",
                format!(
                    "median of {ROUNDS} rounds taken in turn with the other rows ({:.0}–{:.0}/s); {sent} broadcasts accepted; {}; load {load} at the start",
                    per_second[0],
                    per_second[per_second.len() - 1],
                    all.generator_detail()
                ),
            );
            let one_thread = rates[&(count, 1)];
            let one_plugin = rates[&(1, 1)];
            if workers == 2 {
                let ratio = median / one_thread;
                report.reference(format!(
                    "{count} plugin(s), 1 worker thread: {one_thread:.0}/s (0.62x before, 1 plugin)"
                ));
                let why = if count == 1 {
                    "; one plugin holds at most all guest turns but one (runtime/turns.rs)"
                } else {
                    ""
                };
                report.target(
                    format!("≥ 1.7x one thread (is {ratio:.2}x{why})"),
                    ratio >= 1.7,
                );
            } else if count == 100 {
                let ratio = median / one_plugin;
                report.reference(format!(
                    "1 plugin, 1 worker thread: {one_plugin:.0}/s (0.78x before)"
                ));
                report.target(
                    format!("≥ 0.95x one plugin (is {ratio:.2}x)"),
                    ratio >= 0.95,
                );
            }
        }
    }
}
