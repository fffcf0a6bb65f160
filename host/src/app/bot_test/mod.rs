//! `botbox test`: a plugin's behaviour cases, run against the real host.
//!
//! Each case gets a host of its own, built from a config the case implies
//! (its settings, grants, limits and channels) through [`App::build_with`]:
//! the same runtime, router, grant checks, broadcast capability, outbox,
//! delivery workers and providers `botbox run` uses, over fresh storage.
//! Its events go through the router as the triggers send them; what the
//! plugin broadcast, logged and returned, and the delivery reports it was
//! handed, are compared with what the case expects ([`spec`]), and every
//! difference is reported as a diff ([`report`]).
//!
//! Channels are on the console provider (every message delivered), or, for
//! a case that chooses another delivery outcome, on the Tencent Cloud Chat
//! simulator with a fault injected into every request, so the message goes
//! the whole way through the worker's retries to its report.
//!
//! The wall clock a case fixes is the one plugins read through WASI and
//! the schedules fire by ([`WallClock`]); `{ advance = "…" }` moves it and
//! fires the schedules due, computed by the config's own
//! [`ScheduleSpec::next_after`].

pub mod report;
pub mod spec;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::TryRecvError;
use tokio_util::sync::CancellationToken;

use self::report::{CaseOutcome, CaseReport, DiffLine, FileReport};
use self::spec::{
    BroadcastSpec, Case, CaseSetup, LogSpec, OutcomeSpec, ReportSpec, ResultSpec, TestFile,
};
use super::{App, BuildOptions};
use crate::capabilities::log::{LogRecord, level_name};
use crate::config::{Config, ScheduleSpec, parse_duration};
use crate::delivery::Accepted;
use crate::events::{event_kind_name, parse_event};
use crate::router::{self, Refusal};
use crate::runtime::{HandleError, WallClock};
use crate::wit::types::{DeliveryOutcome, Event, Manifest, Message};

/// The plugin's name in every case's config.
pub const PLUGIN: &str = "plugin";

/// The file `botbox test` reads when given none.
pub const DEFAULT_FILE: &str = "bot.test.toml";

/// The most schedule firings one `advance` step may cause.
const MAX_FIRINGS: usize = 1000;

/// The most rounds of "deliver, report, and what the report sent" after
/// one event: a plugin that answers every report with a message would
/// otherwise never settle.
const MAX_REPORT_ROUNDS: usize = 20;

/// How `botbox test` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The component, instead of the file's `component`.
    pub component: Option<PathBuf>,
    /// Where to find the file's component by its file name, instead of
    /// the path the file gives (a build that writes components elsewhere,
    /// such as `cargo xtask plugins` into `$CARGO_TARGET_DIR/plugins`).
    pub component_dir: Option<PathBuf>,
    /// Where compiled components are cached between runs (shared with
    /// `botbox call`); cases' own storage is fresh and temporary.
    pub cache_dir: PathBuf,
    /// Only cases whose name contains this.
    pub filter: Option<String>,
}

/// Why a test file could not be run at all (as opposed to a case failing).
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// The file is missing or unreadable.
    #[error("cannot read test file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid test file.
    #[error("test file {path} is invalid: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with the TOML parser's position.
        message: String,
    },
    /// No component was named.
    #[error(
        "test file {path} names no component; add `component = \"my-bot.wasm\"` or pass --component"
    )]
    NoComponent {
        /// The file.
        path: String,
    },
    /// The component does not load (or does not say what it wants).
    #[error("component {component} does not load: {message}")]
    Load {
        /// The component.
        component: String,
        /// Why.
        message: String,
    },
    /// A temporary folder could not be made.
    #[error("cannot create a temporary folder for the cases: {0}")]
    Temp(std::io::Error),
}

/// Reads and checks a test file.
pub fn read_file(path: &Path) -> Result<TestFile, TestError> {
    let text = std::fs::read_to_string(path).map_err(|source| TestError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| TestError::Invalid {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Runs every case of one file (or those `options.filter` selects).
pub async fn run_file(path: &Path, options: &Options) -> Result<FileReport, TestError> {
    let started = Instant::now();
    let file = read_file(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let component = match (&options.component, &file.component) {
        (Some(c), _) => c.clone(),
        (None, Some(c)) => match (&options.component_dir, c.file_name()) {
            (Some(dir), Some(name)) => dir.join(name),
            _ => base.join(c),
        },
        (None, None) => {
            return Err(TestError::NoComponent {
                path: path.display().to_string(),
            });
        }
    };
    let temp = tempfile::Builder::new()
        .prefix("botbox-test-")
        .tempdir()
        .map_err(TestError::Temp)?;
    let manifest = ask_manifest(&component, temp.path(), &options.cache_dir).await?;
    let mut cases = Vec::new();
    for (index, case) in file.cases.iter().enumerate() {
        if let Some(filter) = &options.filter
            && !case.name.contains(filter.as_str())
        {
            continue;
        }
        let dir = temp.path().join(format!("case-{index}"));
        let case_started = Instant::now();
        let outcome =
            match run_case(case, &file.defaults, &component, &manifest, &dir, options).await {
                Ok(diff) if diff.iter().all(|d| d.matches()) => CaseOutcome::Passed,
                Ok(diff) => CaseOutcome::Failed(diff),
                Err(message) => CaseOutcome::Error(message),
            };
        cases.push(CaseReport {
            name: case.name.clone(),
            elapsed: case_started.elapsed(),
            outcome,
        });
    }
    Ok(FileReport {
        file: path.to_path_buf(),
        component,
        elapsed: started.elapsed(),
        cases,
    })
}

/// What the plugin asks for, from a host that grants it nothing.
async fn ask_manifest(
    component: &Path,
    dir: &Path,
    cache_dir: &Path,
) -> Result<Manifest, TestError> {
    let load_error = |message: String| TestError::Load {
        component: component.display().to_string(),
        message,
    };
    let mut root = toml::Table::new();
    root.insert(
        "storage".into(),
        table([("dir", dir.join("probe").display().to_string().into())]),
    );
    root.insert(
        "runtime".into(),
        table([("reload", false.into()), ("pool_instances", 16.into())]),
    );
    let mut plugins = toml::Table::new();
    plugins.insert(
        PLUGIN.into(),
        table([("path", component.display().to_string().into())]),
    );
    root.insert("plugins".into(), plugins.into());
    let config = parse_config(&root).map_err(load_error)?;
    let app = App::build_with(config, build_options(WallClock::System, cache_dir))
        .map_err(|e| load_error(e.to_string()))?;
    let loaded = app
        .runtime
        .load(PLUGIN, &app.config.plugins[PLUGIN])
        .await
        .map_err(|e| load_error(e.to_string()))?;
    loaded
        .context
        .manifest
        .clone()
        .ok_or_else(|| load_error("it did not describe itself".into()))
}

fn build_options(wall_clock: WallClock, cache_dir: &Path) -> BuildOptions {
    BuildOptions {
        wall_clock,
        cache_dir: Some(cache_dir.to_path_buf()),
        incremental: None,
    }
}

fn table<const N: usize>(entries: [(&str, toml::Value); N]) -> toml::Value {
    toml::Value::Table(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

fn parse_config(root: &toml::Table) -> Result<Config, String> {
    let text = toml::to_string(root).map_err(|e| e.to_string())?;
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    Config::parse(&text, Path::new("<botbox test case>"), &cwd).map_err(|e| e.to_string())
}

/// The grants of a case: its own, or what the plugin asks for (each
/// schedule `every 1m`).
fn grants_of(setup: &CaseSetup, manifest: &Manifest) -> spec::GrantsSpec {
    match &setup.grants {
        Some(g) => g.clone(),
        None => spec::GrantsSpec {
            channels: manifest.channels.clone(),
            events: manifest
                .events
                .iter()
                .map(|e| event_kind_name(*e).to_owned())
                .collect(),
            schedules: manifest
                .schedules
                .iter()
                .map(|s| (s.clone(), "every 1m".to_owned()))
                .collect(),
        },
    }
}

/// A case's `botbox.toml`, as an operator would write it.
fn case_config(
    setup: &CaseSetup,
    grants: &spec::GrantsSpec,
    component: &Path,
    dir: &Path,
    sim: Option<&simulated::Running>,
) -> Result<Config, String> {
    let mut root = toml::Table::new();
    root.insert(
        "storage".into(),
        table([("dir", dir.display().to_string().into())]),
    );
    let mut runtime = toml::Table::new();
    runtime.insert("reload".into(), false.into());
    runtime.insert("pool_instances".into(), 64.into());
    let mut providers = toml::Table::new();
    let channel_provider = match sim {
        Some(sim) => {
            // The simulator's clock runs faster, and the host's throttles
            // and retries count in the same scaled time.
            runtime.insert("time_scale".into(), SIM_TIME_SCALE.into());
            // On the simulator's calendar, so both see the same midnights.
            let origin = i64::try_from(sim.sim.calendar_origin_ms()).unwrap_or(i64::MAX);
            runtime.insert("time_origin_ms".into(), origin.into());
            providers.insert(sim.name.into(), sim.section.clone());
            sim.name
        }
        None => {
            providers.insert("console".into(), table([("kind", "console".into())]));
            "console"
        }
    };
    root.insert("runtime".into(), runtime.into());
    root.insert("providers".into(), providers.into());
    let mut channels = toml::Table::new();
    for c in &grants.channels {
        let mut channel = toml::Table::new();
        channel.insert("provider".into(), channel_provider.into());
        if let Some(target) = sim.and_then(|s| s.target.clone()) {
            channel.insert("target".into(), target);
        }
        channels.insert(c.clone(), channel.into());
    }
    root.insert("channels".into(), channels.into());
    let mut plugin = toml::Table::new();
    plugin.insert("path".into(), component.display().to_string().into());
    plugin.insert(
        "channels".into(),
        grants
            .channels
            .iter()
            .map(|c| toml::Value::from(c.as_str()))
            .collect::<Vec<_>>()
            .into(),
    );
    plugin.insert(
        "events".into(),
        grants
            .events
            .iter()
            .map(|e| toml::Value::from(e.as_str()))
            .collect::<Vec<_>>()
            .into(),
    );
    plugin.insert(
        "schedules".into(),
        grants
            .schedules
            .iter()
            .map(|(k, v)| (k.clone(), toml::Value::from(v.as_str())))
            .collect::<toml::Table>()
            .into(),
    );
    plugin.insert("settings".into(), setup.settings.clone().into());
    if let Some(limits) = &setup.limits {
        plugin.insert("limits".into(), limits.clone().into());
    }
    let mut plugins = toml::Table::new();
    plugins.insert(PLUGIN.into(), plugin.into());
    root.insert("plugins".into(), plugins.into());
    parse_config(&root)
}

/// The Tencent simulator's clock speed-up for cases with a chosen outcome:
/// the worker's backoff (1 s, 2 s, 4 s … of host time) passes in
/// milliseconds.
const SIM_TIME_SCALE: f64 = 1000.0;

/// What happened in one case.
#[derive(Default)]
struct Observed {
    /// Each step's result, in order (schedules fired by `advance` too).
    results: Vec<(String, Result<(), HandleError>)>,
    broadcasts: Vec<Accepted>,
    reports: Vec<Event>,
    logs: Vec<LogRecord>,
    /// Things the run itself noticed (lost log lines, undelivered messages).
    notes: Vec<String>,
}

async fn run_case(
    case: &Case,
    defaults: &CaseSetup,
    component: &Path,
    manifest: &Manifest,
    dir: &Path,
    options: &Options,
) -> Result<Vec<DiffLine>, String> {
    let setup = case.setup(defaults);
    let wall_clock = match &setup.clock {
        None => WallClock::System,
        Some(text) => {
            let at = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
                format!(
                    "clock `{text}` is not an RFC 3339 instant such as 2026-11-20T09:00:00Z: {e}"
                )
            })?;
            WallClock::fixed(at.into())
        }
    };
    let wait = match &setup.wait {
        Some(w) => parse_duration(w).map_err(|e| format!("wait: {e}"))?,
        None => Duration::from_secs(10),
    };
    let grants = grants_of(&setup, manifest);
    let outcome = setup.delivery.unwrap_or(OutcomeSpec::Delivered);
    let sim = match outcome {
        OutcomeSpec::Delivered => None,
        _ => Some(simulated::start(dir, outcome).await?),
    };
    let config = case_config(&setup, &grants, component, dir, sim.as_ref())?;
    let app = App::build_with(
        config,
        build_options(wall_clock.clone(), &options.cache_dir),
    )
    .map_err(|e| e.to_string())?;
    app.runtime
        .load(PLUGIN, &app.config.plugins[PLUGIN])
        .await
        .map_err(|e| e.to_string())?;
    let app = Arc::new(app);
    let mut logs = app.runtime.services().log_observers.subscribe();
    let mut accepted = app.delivery.observers().accepted.subscribe();
    let stop = CancellationToken::new();
    let workers = app.delivery.start(stop.clone());

    let mut observed = Observed::default();
    let steps = run_steps(case, &app, &wall_clock, wait, &mut accepted, &mut observed).await;
    stop.cancel();
    workers.wait().await;
    drain(
        &mut logs,
        &mut observed.logs,
        &mut observed.notes,
        "log lines",
    );
    if let Some(sim) = sim {
        sim.sim.shutdown().await;
    }
    steps?;
    Ok(compare(case, &observed))
}

/// Runs the case's steps, collecting what the plugin does after each.
async fn run_steps(
    case: &Case,
    app: &App,
    clock: &WallClock,
    wait: Duration,
    accepted: &mut Receiver<Accepted>,
    observed: &mut Observed,
) -> Result<(), String> {
    if case.events.is_empty() {
        return Err(
            "the case has no events; add `events = [{ custom = { name = \"…\" } }]`".into(),
        );
    }
    for (index, step) in case.events.iter().enumerate() {
        let label = format!("event {}", index + 1);
        if let Some(advance) = advance_of(step) {
            let by = parse_duration(advance).map_err(|e| format!("{label}: advance: {e}"))?;
            let (due, end) = firings(app, clock, by)?;
            for (at, schedule) in due {
                if let Ok(gap) = (at - clock.now_utc()).to_std() {
                    clock.advance(gap);
                }
                let event = Event::Schedule(schedule.clone());
                let result = dispatch(app, &event).await;
                let fired = format!("{label}: schedule `{schedule}` at {}", at.to_rfc3339());
                observed.results.push((fired, result));
                settle(app, wait, accepted, observed).await;
            }
            // The rest of the step's time passes with nothing due.
            if let Ok(rest) = (end - clock.now_utc()).to_std() {
                clock.advance(rest);
            }
            continue;
        }
        let json = serde_json::to_string(step).map_err(|e| format!("{label}: {e}"))?;
        let event = parse_event(&json).map_err(|e| format!("{label}: {e}"))?;
        let result = dispatch(app, &event).await;
        observed.results.push((label, result));
        settle(app, wait, accepted, observed).await;
    }
    Ok(())
}

/// The duration of an `{ advance = "…" }` step.
fn advance_of(step: &toml::Value) -> Option<&str> {
    let t = step.as_table()?;
    if t.len() != 1 {
        return None;
    }
    t.get("advance")?.as_str()
}

/// A time on the wall clock.
type Utc = chrono::DateTime<chrono::Utc>;

/// The granted schedules due in the next `by` of `clock`, in time order,
/// and the time `by` from now.
fn firings(
    app: &App,
    clock: &WallClock,
    by: Duration,
) -> Result<(Vec<(Utc, String)>, Utc), String> {
    if matches!(clock, WallClock::System) {
        return Err("`advance` needs a fixed clock: set `clock = \"2026-11-20T09:00:00Z\"`".into());
    }
    let start = clock.now_utc();
    let end = start + chrono::Duration::from_std(by).map_err(|e| e.to_string())?;
    let plugin = &app.config.plugins[PLUGIN];
    let mut due = Vec::new();
    for (name, spec) in &plugin.schedules {
        let mut at = start;
        while let Some(next) = ScheduleSpec::next_after(spec, at) {
            if next > end {
                break;
            }
            due.push((next, name.clone()));
            if due.len() > MAX_FIRINGS {
                return Err(format!(
                    "`advance` would fire more than {MAX_FIRINGS} schedules; advance less at a time"
                ));
            }
            at = next;
        }
    }
    due.sort();
    Ok((due, end))
}

/// One event to the plugin, routed as the triggers route it.
async fn dispatch(app: &App, event: &Event) -> Result<(), HandleError> {
    match router::to_plugin(&app.runtime, PLUGIN, event) {
        Ok(plugin) => app.runtime.dispatch_to(&plugin, event).await,
        Err(Refusal::NotGranted(kind)) => Err(HandleError::NotGranted {
            plugin: PLUGIN.into(),
            kind: event_kind_name(kind),
        }),
        Err(Refusal::NotAddressed) => Err(HandleError::NotGranted {
            plugin: PLUGIN.into(),
            kind: event_kind_name(crate::events::event_kind(event)),
        }),
        Err(Refusal::NotLoaded) => Err(HandleError::UnknownPlugin(PLUGIN.into())),
    }
}

/// Waits for what the last event sent to be delivered, then hands the
/// plugin its delivery reports, the way `triggers::reports` does, until
/// nothing more is sent.
async fn settle(
    app: &App,
    wait: Duration,
    accepted: &mut Receiver<Accepted>,
    observed: &mut Observed,
) {
    for _ in 0..MAX_REPORT_ROUNDS {
        let before = observed.broadcasts.len();
        drain(
            accepted,
            &mut observed.broadcasts,
            &mut observed.notes,
            "broadcasts",
        );
        let ids: Vec<String> = observed.broadcasts[before..]
            .iter()
            .map(|a| a.receipt.id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        for id in app.delivery.wait_for(&ids, wait).await {
            observed.notes.push(format!(
                "message {id} was not delivered within {wait:?} (`wait`)"
            ));
        }
        let records = match app.delivery.outbox().unreported_of(PLUGIN, 1000) {
            Ok(r) => r,
            Err(e) => {
                observed
                    .notes
                    .push(format!("cannot read delivery reports: {e}"));
                return;
            }
        };
        for record in records {
            let ids = app
                .delivery
                .outbox()
                .parts(&record.id)
                .map(|parts| parts.into_iter().flat_map(|p| p.provider_ids).collect())
                .unwrap_or_default();
            let event = crate::triggers::reports::report_event(&record, ids);
            // A plugin not granted reports is not handed them, as in `run`.
            if let Ok(plugin) = router::to_plugin(&app.runtime, PLUGIN, &event) {
                observed.reports.push(event.clone());
                let result = app.runtime.dispatch_to(&plugin, &event).await;
                if let Err(e) = result {
                    observed
                        .notes
                        .push(format!("the delivery report of {} failed: {e}", record.id));
                }
            }
            if let Err(e) = app.delivery.outbox().mark_reported(&record.id) {
                observed
                    .notes
                    .push(format!("cannot mark report {}: {e}", record.id));
            }
        }
    }
}

fn drain<T: Clone>(rx: &mut Receiver<T>, into: &mut Vec<T>, notes: &mut Vec<String>, what: &str) {
    loop {
        match rx.try_recv() {
            Ok(item) => into.push(item),
            Err(TryRecvError::Lagged(n)) => {
                notes.push(format!("{n} {what} were lost (too many at once)"))
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => return,
        }
    }
}

// ---- comparing --------------------------------------------------------------

/// Every line of the diff between what the case expects and what happened;
/// the case passes when every line matches.
fn compare(case: &Case, observed: &Observed) -> Vec<DiffLine> {
    let mut diff = Vec::new();
    for note in &observed.notes {
        diff.push(DiffLine::Note(note.clone()));
    }
    compare_results(case, observed, &mut diff);
    if let Some(expected) = &case.broadcasts {
        compare_broadcasts(expected, &observed.broadcasts, &mut diff);
    }
    compare_logs(&case.logs, &observed.logs, &mut diff);
    if let Some(expected) = &case.reports {
        compare_reports(expected, &observed.reports, &mut diff);
    }
    diff
}

fn compare_results(case: &Case, observed: &Observed, diff: &mut Vec<DiffLine>) {
    let last = observed.results.len().saturating_sub(1);
    let ok = ResultSpec::Named("ok".into());
    for (i, (label, actual)) in observed.results.iter().enumerate() {
        let expected = if i == last {
            case.result.as_ref().unwrap_or(&ok)
        } else {
            &ok
        };
        let actual_text = describe_result(actual);
        let line = format!("{label}: result");
        match result_matches(expected, actual) {
            Ok(true) => diff.push(DiffLine::Same(format!("{line} {actual_text}"))),
            Ok(false) => {
                diff.push(DiffLine::Expected(format!(
                    "{line} {}",
                    describe_expected_result(expected)
                )));
                diff.push(DiffLine::Actual(format!("{line} {actual_text}")));
            }
            Err(e) => diff.push(DiffLine::Expected(format!("{line}: {e}"))),
        }
    }
}

fn describe_result(result: &Result<(), HandleError>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(HandleError::Failed { message, .. }) => format!("error {message:?}"),
        Err(HandleError::Timeout { deadline_ms, .. }) => {
            format!("timeout (deadline {deadline_ms} ms)")
        }
        Err(HandleError::OutOfMemory { .. }) => "out-of-memory".into(),
        Err(HandleError::NotGranted { kind, .. }) => format!("not-granted ({kind})"),
        Err(
            e @ (HandleError::Trap { .. }
            | HandleError::Instantiate { .. }
            | HandleError::TooManyHandles { .. }),
        ) => {
            format!("trap ({e})")
        }
        Err(e) => format!("failed ({e})"),
    }
}

fn describe_expected_result(expected: &ResultSpec) -> String {
    match expected {
        ResultSpec::Named(n) => n.clone(),
        ResultSpec::Error { error } => format!("error matching /{error}/"),
    }
}

fn result_matches(expected: &ResultSpec, actual: &Result<(), HandleError>) -> Result<bool, String> {
    Ok(match expected {
        ResultSpec::Error { error } => match actual {
            Err(HandleError::Failed { message, .. }) => pattern(error)?.is_match(message),
            _ => false,
        },
        ResultSpec::Named(name) => match (name.as_str(), actual) {
            ("ok", Ok(())) => true,
            (
                "trap",
                Err(
                    HandleError::Trap { .. }
                    | HandleError::Instantiate { .. }
                    | HandleError::TooManyHandles { .. },
                ),
            ) => true,
            ("timeout", Err(HandleError::Timeout { .. })) => true,
            ("out-of-memory", Err(HandleError::OutOfMemory { .. })) => true,
            ("not-granted", Err(HandleError::NotGranted { .. })) => true,
            ("ok" | "trap" | "timeout" | "out-of-memory" | "not-granted", _) => false,
            (other, _) => {
                return Err(format!(
                    "result `{other}` is unknown; write ok, trap, timeout, out-of-memory, not-granted or {{ error = \"pattern\" }}"
                ));
            }
        },
    })
}

fn pattern(text: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(text)
        .map_err(|e| format!("pattern /{text}/ is not a regular expression: {e}"))
}

/// A broadcast as the diff shows it: only the fields `shown` asks for
/// (all when `None`), so a matching pair prints the same.
fn describe_broadcast(channel: &str, message: &Message, shown: Option<&BroadcastSpec>) -> String {
    let mut parts = Vec::new();
    let show = |f: fn(&BroadcastSpec) -> bool| shown.is_none_or(f);
    if show(|s| s.channel.is_some()) {
        parts.push(format!("#{channel}"));
    }
    if show(|s| s.reply_to.is_some()) {
        parts.push(format!(
            "reply-to={:?}",
            message.reply_to.as_deref().unwrap_or("")
        ));
    }
    if show(|s| s.sender.is_some()) {
        parts.push(format!(
            "sender={:?}",
            message.sender.as_deref().unwrap_or("")
        ));
    }
    if show(|s| s.text.is_some() || s.matches.is_some()) {
        parts.push(format!(
            "{:?}",
            crate::providers::console::content_line(&message.content)
        ));
    }
    parts.join(" ")
}

fn describe_broadcast_spec(spec: &BroadcastSpec) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &spec.channel {
        parts.push(format!("#{c}"));
    }
    if let Some(r) = &spec.reply_to {
        parts.push(format!("reply-to={r:?}"));
    }
    if let Some(s) = &spec.sender {
        parts.push(format!("sender={s:?}"));
    }
    match (&spec.text, &spec.matches) {
        (Some(t), _) => parts.push(format!("{t:?}")),
        (None, Some(m)) => parts.push(format!("/{m}/")),
        (None, None) => {}
    }
    parts.join(" ")
}

fn broadcast_matches(spec: &BroadcastSpec, actual: &Accepted) -> Result<bool, String> {
    let m = &actual.message;
    let text = crate::providers::console::content_line(&m.content);
    Ok(spec.channel.as_ref().is_none_or(|c| *c == actual.channel)
        && spec
            .reply_to
            .as_ref()
            .is_none_or(|r| *r == m.reply_to.clone().unwrap_or_default())
        && spec
            .sender
            .as_ref()
            .is_none_or(|s| *s == m.sender.clone().unwrap_or_default())
        && spec.text.as_ref().is_none_or(|t| *t == text)
        && match &spec.matches {
            Some(p) => pattern(p)?.is_match(&text),
            None => true,
        })
}

fn compare_broadcasts(expected: &[BroadcastSpec], actual: &[Accepted], diff: &mut Vec<DiffLine>) {
    for i in 0..expected.len().max(actual.len()) {
        let label = format!("broadcast {}:", i + 1);
        match (expected.get(i), actual.get(i)) {
            (Some(e), Some(a)) => match broadcast_matches(e, a) {
                Ok(true) => diff.push(DiffLine::Same(format!(
                    "{label} {}",
                    describe_broadcast(&a.channel, &a.message, Some(e))
                ))),
                Ok(false) => {
                    diff.push(DiffLine::Expected(format!(
                        "{label} {}",
                        describe_broadcast_spec(e)
                    )));
                    diff.push(DiffLine::Actual(format!(
                        "{label} {}",
                        describe_broadcast(&a.channel, &a.message, Some(e))
                    )));
                }
                Err(err) => diff.push(DiffLine::Expected(format!("{label} {err}"))),
            },
            (Some(e), None) => diff.push(DiffLine::Expected(format!(
                "{label} {}",
                describe_broadcast_spec(e)
            ))),
            (None, Some(a)) => diff.push(DiffLine::Actual(format!(
                "{label} {}",
                describe_broadcast(&a.channel, &a.message, None)
            ))),
            (None, None) => {}
        }
    }
}

/// Each expected line must match an actual line after the one the
/// previous expected line matched.
fn compare_logs(expected: &[LogSpec], actual: &[LogRecord], diff: &mut Vec<DiffLine>) {
    let mut from = 0;
    let mut shown_actual = false;
    for spec in expected {
        let described = format!(
            "log: {} /{}/",
            spec.level.as_deref().unwrap_or("any"),
            spec.matches
        );
        let re = match pattern(&spec.matches) {
            Ok(re) => re,
            Err(e) => {
                diff.push(DiffLine::Expected(format!("log: {e}")));
                continue;
            }
        };
        let found = actual[from..].iter().position(|r| {
            spec.level
                .as_deref()
                .is_none_or(|l| l == level_name(r.level))
                && re.is_match(&r.message)
        });
        match found {
            Some(offset) => {
                let r = &actual[from + offset];
                diff.push(DiffLine::Same(format!(
                    "log: {} {:?}",
                    level_name(r.level),
                    r.message
                )));
                from += offset + 1;
            }
            None => {
                diff.push(DiffLine::Expected(format!(
                    "{described} (no such line after the ones above)"
                )));
                // What there was, once, so the author sees the near miss.
                if shown_actual {
                    continue;
                }
                shown_actual = true;
                for r in actual[from..].iter().take(20) {
                    diff.push(DiffLine::Actual(format!(
                        "log: {} {:?}",
                        level_name(r.level),
                        r.message
                    )));
                }
                if actual.len() > from + 20 {
                    diff.push(DiffLine::Actual(format!(
                        "log: … {} more",
                        actual.len() - from - 20
                    )));
                }
            }
        }
    }
}

fn outcome_parts(outcome: &DeliveryOutcome) -> (&'static str, &str) {
    match outcome {
        DeliveryOutcome::Delivered => ("delivered", ""),
        DeliveryOutcome::PartiallyDelivered(why) => ("partially-delivered", why),
        DeliveryOutcome::Failed(why) => ("failed", why),
        DeliveryOutcome::Cancelled => ("cancelled", ""),
    }
}

fn describe_report(event: &Event, shown: Option<&ReportSpec>) -> String {
    let Event::Delivery(report) = event else {
        return String::new();
    };
    let (outcome, why) = outcome_parts(&report.outcome);
    let show = |f: fn(&ReportSpec) -> bool| shown.is_none_or(f);
    let mut parts = Vec::new();
    if show(|s| s.channel.is_some()) {
        parts.push(format!("#{}", report.channel));
    }
    if show(|s| s.outcome.is_some()) {
        parts.push(outcome.to_owned());
    }
    if show(|s| s.attempts.is_some()) {
        parts.push(format!("attempts={}", report.attempts));
    }
    if show(|s| s.matches.is_some()) && !why.is_empty() {
        parts.push(format!("{why:?}"));
    }
    parts.join(" ")
}

fn describe_report_spec(spec: &ReportSpec) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &spec.channel {
        parts.push(format!("#{c}"));
    }
    if let Some(o) = &spec.outcome {
        parts.push(o.clone());
    }
    if let Some(a) = spec.attempts {
        parts.push(format!("attempts={a}"));
    }
    if let Some(m) = &spec.matches {
        parts.push(format!("/{m}/"));
    }
    parts.join(" ")
}

fn report_matches(spec: &ReportSpec, event: &Event) -> Result<bool, String> {
    let Event::Delivery(report) = event else {
        return Ok(false);
    };
    let (outcome, why) = outcome_parts(&report.outcome);
    Ok(spec.channel.as_ref().is_none_or(|c| *c == report.channel)
        && spec.outcome.as_deref().is_none_or(|o| o == outcome)
        && spec.attempts.is_none_or(|a| a == report.attempts)
        && match &spec.matches {
            Some(p) => pattern(p)?.is_match(why),
            None => true,
        })
}

fn compare_reports(expected: &[ReportSpec], actual: &[Event], diff: &mut Vec<DiffLine>) {
    for i in 0..expected.len().max(actual.len()) {
        let label = format!("report {}:", i + 1);
        match (expected.get(i), actual.get(i)) {
            (Some(e), Some(a)) => match report_matches(e, a) {
                Ok(true) => diff.push(DiffLine::Same(format!(
                    "{label} {}",
                    describe_report(a, Some(e))
                ))),
                Ok(false) => {
                    diff.push(DiffLine::Expected(format!(
                        "{label} {}",
                        describe_report_spec(e)
                    )));
                    diff.push(DiffLine::Actual(format!(
                        "{label} {}",
                        describe_report(a, None)
                    )));
                }
                Err(err) => diff.push(DiffLine::Expected(format!("{label} {err}"))),
            },
            (Some(e), None) => diff.push(DiffLine::Expected(format!(
                "{label} {}",
                describe_report_spec(e)
            ))),
            (None, Some(a)) => diff.push(DiffLine::Actual(format!(
                "{label} {}",
                describe_report(a, None)
            ))),
            (None, None) => {}
        }
    }
}

mod simulated {
    //! The simulated provider behind a case's channels when the case
    //! chooses a delivery outcome other than `delivered`.

    use std::path::Path;

    use botbox_sim::{Fault, Sim, SimConfig, SimProvider};

    use super::spec::OutcomeSpec;

    /// A running simulator and the provider section that points at it.
    pub struct Running {
        pub sim: Sim,
        /// The `[providers.NAME]` section's name.
        pub name: &'static str,
        pub section: toml::Value,
        /// What every channel of the case targets, for providers that
        /// need one.
        pub target: Option<toml::Value>,
    }

    /// Starts the simulators with the provider behind the case's channels
    /// answering the way `outcome` says, at every attempt the host makes:
    /// Tencent Cloud Chat with a fault injected into every request for
    /// `rate-limited`, `server-error`, `timeout` (the simulator holds the
    /// request far past the provider's request timeout, set to
    /// [`CASE_PROVIDER_TIMEOUT`] for the case) and `credentials-expired`
    /// (Tencent's 70001 "UserSig expired", which the provider answers with
    /// a fresh UserSig once, refused too); BigBlueButton with a channel on a
    /// meeting that is not running for `rejected` (the server's own
    /// `notFound` answer, which no retry changes).
    pub async fn start(dir: &Path, outcome: OutcomeSpec) -> Result<Running, String> {
        let cfg = SimConfig::fast(super::SIM_TIME_SCALE);
        let secrets = dir.join("sim-secrets");
        botbox_sim::write_secrets(&secrets, &cfg).map_err(|e| format!("simulator secrets: {e}"))?;
        let sim = Sim::start(cfg).await.map_err(|e| e.to_string())?;
        let (provider, fault, target) = match outcome {
            OutcomeSpec::Delivered | OutcomeSpec::RateLimited => {
                (SimProvider::Tencent, Some(Fault::RateLimited), None)
            }
            OutcomeSpec::ServerError => {
                (SimProvider::Tencent, Some(Fault::server_error(502)), None)
            }
            OutcomeSpec::Timeout => (SimProvider::Tencent, Some(Fault::hang(HOLD)), None),
            OutcomeSpec::CredentialsExpired => (
                SimProvider::Tencent,
                Some(Fault::error_answer_with(
                    "70001",
                    200,
                    "UserSig expired, please regenerate it",
                )),
                None,
            ),
            OutcomeSpec::Rejected => {
                let mut target = toml::Table::new();
                target.insert(
                    "meetings".into(),
                    vec![toml::Value::from(IDLE_MEETING)].into(),
                );
                (SimProvider::Bbb, None, Some(toml::Value::Table(target)))
            }
        };
        if let Some(fault) = fault {
            // More than the worker's attempts (10), so every attempt meets it.
            sim.inject(provider, fault, 100);
        }
        let name = botbox_sim::section_name(provider);
        let url = sim.url(provider);
        let text = botbox_sim::provider_section(
            provider,
            sim.config(),
            name,
            &url,
            &mut |stem, _value| {
                let path = secrets.join(stem);
                format!(
                    "{{ file = {} }}",
                    toml::Value::String(path.display().to_string())
                )
            },
        );
        let parsed: toml::Table =
            toml::from_str(&text).map_err(|e| format!("simulator section: {e}"))?;
        let mut section = parsed
            .get("providers")
            .and_then(|p| p.get(name))
            .cloned()
            .ok_or_else(|| format!("the simulator wrote no [providers.{name}]"))?;
        if outcome == OutcomeSpec::Timeout
            && let Some(table) = section.as_table_mut()
        {
            // Short, so the worker's ten attempts time out in seconds, not
            // in ten times the default.
            table.insert(
                crate::providers::TIMEOUT_KEY.into(),
                CASE_PROVIDER_TIMEOUT.into(),
            );
        }
        Ok(Running {
            sim,
            name,
            section,
            target,
        })
    }

    /// The provider request timeout of a `timeout` case.
    pub const CASE_PROVIDER_TIMEOUT: &str = "200ms";

    /// How long the simulator holds a request in a `timeout` case: far
    /// past [`CASE_PROVIDER_TIMEOUT`]; shutting the simulator down at the
    /// end of the case ends the held connections.
    const HOLD: std::time::Duration = std::time::Duration::from_secs(60);

    /// The BigBlueButton simulator's meeting that exists and is not
    /// running (`SimConfig::demo`).
    const IDLE_MEETING: &str = "room-idle";
}
