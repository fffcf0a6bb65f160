//! The `log` import, and the sink that guest stdout/stderr share with it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use std::sync::Arc;

use tokio::sync::broadcast;
use wasmtime::component::Linker;

use super::rate::TokenBucket;
use super::{Capability, Ctx, HasCapability, Setup, View};
use crate::sanitize::{self, MAX_LOG_LINE_CHARS};
use crate::wit::botbox::bot::log::{self, Host, Level};
use crate::wit::v0_2::botbox::bot::log as v0_2;

/// A log level's name as people write it (`info`), for printing and for
/// matching a test case's `level`.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

/// The `log` capability.
pub struct Log;

/// What every store of one plugin shares for `log`: its sink, which its
/// WASI stdout and stderr write to as well.
pub type LogSlice = Arc<LogSink>;

impl Capability for Log {
    type Slice = LogSlice;

    /// A reload with the same limits keeps the sink, and with it the rate.
    fn slice(setup: &Setup<'_>, previous: Option<&LogSlice>) -> LogSlice {
        match previous.filter(|_| setup.same_limits) {
            Some(sink) => sink.clone(),
            None => Arc::new(LogSink::new(
                setup.name,
                setup.config.limits.log_lines_per_second,
                setup.services.log_observers.clone(),
            )),
        }
    }

    fn add_to_linker<T: View<Self>>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        log::add_to_linker::<T, HasCapability<Self>>(linker, <T as View<Self>>::view)?;
        v0_2::add_to_linker::<T, HasCapability<Self>>(linker, <T as View<Self>>::view)
    }
}

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdStream {
    /// The guest's stdout: lines log at INFO.
    Stdout,
    /// The guest's stderr: lines log at WARN.
    Stderr,
}

/// One line a plugin wrote, already escaped and cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The plugin that wrote it.
    pub plugin: String,
    /// Its level.
    pub level: Level,
    /// The line, escaped and cut.
    pub message: String,
}

/// A plugin's log output: rate-limited, escaped, tagged with its name.
/// Shared by every instance of the plugin, so the rate holds across
/// concurrent calls.
pub struct LogSink {
    plugin: String,
    bucket: Mutex<TokenBucket>,
    dropped: AtomicU64,
    written: AtomicU64,
    observers: broadcast::Sender<LogRecord>,
}

impl LogSink {
    /// A sink for `plugin` that lets `lines_per_second` through and copies
    /// each line to `observers`.
    pub fn new(
        plugin: &str,
        lines_per_second: u32,
        observers: broadcast::Sender<LogRecord>,
    ) -> Self {
        LogSink {
            plugin: plugin.to_string(),
            // A burst of one second's worth, so a plugin that logs a few
            // lines per event never loses any.
            bucket: Mutex::new(TokenBucket::new(lines_per_second, lines_per_second as f64)),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            observers,
        }
    }

    /// Lines dropped for exceeding the rate since the plugin loaded.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Lines written since the plugin loaded.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Logs one line of the plugin's, if its rate allows; counts it as
    /// dropped otherwise.
    pub fn write(&self, level: Level, raw: &str) {
        let allowed = match self.bucket.lock() {
            Ok(mut b) => b.take(Instant::now()).is_ok(),
            Err(_) => false,
        };
        if !allowed {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let dropped_before = self.dropped.swap(0, Ordering::Relaxed);
        if dropped_before > 0 {
            tracing::warn!(plugin = %self.plugin, "dropped {dropped_before} log line(s) over the plugin's log rate");
        }
        self.written.fetch_add(1, Ordering::Relaxed);
        let message = sanitize::for_log(raw, MAX_LOG_LINE_CHARS);
        let plugin = &self.plugin;
        // Inside a recorded trace, the line names its trace and span.
        let ids = crate::telemetry::current_ids();
        let trace_id = ids.as_ref().map(|(trace, _)| trace.as_str());
        let span_id = ids.as_ref().map(|(_, span)| span.as_str());
        match level {
            Level::Trace => {
                tracing::trace!(target: "plugin", plugin = %plugin, trace_id, span_id, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "plugin", plugin = %plugin, trace_id, span_id, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "plugin", plugin = %plugin, trace_id, span_id, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "plugin", plugin = %plugin, trace_id, span_id, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "plugin", plugin = %plugin, trace_id, span_id, "{message}")
            }
        }
        let _ = self.observers.send(LogRecord {
            plugin: self.plugin.clone(),
            level,
            message,
        });
    }

    /// Logs one line the guest printed (stdout at INFO, stderr at WARN).
    pub fn stdio_line(&self, stream: StdStream, line: &str) {
        let level = match stream {
            StdStream::Stdout => Level::Info,
            StdStream::Stderr => Level::Warn,
        };
        self.write(level, line);
    }
}

impl From<v0_2::Level> for Level {
    fn from(level: v0_2::Level) -> Level {
        match level {
            v0_2::Level::Trace => Level::Trace,
            v0_2::Level::Debug => Level::Debug,
            v0_2::Level::Info => Level::Info,
            v0_2::Level::Warn => Level::Warn,
            v0_2::Level::Error => Level::Error,
        }
    }
}

/// `botbox:bot/log@0.2.0`: unchanged from 0.1.0 (its `level` is its own
/// type, converted).
impl v0_2::Host for Ctx<'_, LogSlice> {
    async fn log(&mut self, level: v0_2::Level, message: String) -> wasmtime::Result<()> {
        Host::log(self, level.into(), message).await
    }
}

impl Host for Ctx<'_, LogSlice> {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.slice.write(level, &message);
        Ok(())
    }
}
