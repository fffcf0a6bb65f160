//! OpenTelemetry traces: one trace per event and per message, exported over
//! OTLP when `[telemetry]` asks for it.
//!
//! The host's own `tracing` spans are the trace: `tracing-opentelemetry`
//! turns them into OpenTelemetry spans. The spans on the dispatch path are
//! at `DEBUG` under `botbox::…`, and the layer here stays idle until
//! [`start`] installs an exporter; until then its filter wants nothing, so
//! with the default log level those spans are disabled at their call site
//! and cost a cached interest check.
//!
//! A message crosses the durable outbox and may be sent by another worker
//! or another host, so [`traceparent`] writes the current span's context as
//! a W3C `traceparent` (stored with the outbox row) and [`continue_from`]
//! continues it on the other side. The same strict parser reads an inbound
//! webhook's or admin call's `traceparent` header.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, Tracer};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Metadata, Span, Subscriber};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Filtered;
use tracing_subscriber::layer::{Context as LayerContext, Filter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{OtlpProtocol, TelemetryConfig};

/// The tracer [`start`] installed.
static TRACER: OnceLock<Tracer> = OnceLock::new();
/// Whether new spans are recorded: from [`start`] to [`Telemetry::shutdown`].
static RECORDING: AtomicBool = AtomicBool::new(false);

fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

/// The W3C header and outbox column name.
pub const TRACEPARENT: &str = "traceparent";

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built from `[telemetry]`.
    #[error("telemetry.otlp_endpoint `{endpoint}`: cannot export there ({reason}); check the URL")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// The exporter's error.
        reason: String,
    },
    /// [`start`] already ran in this process.
    #[error(
        "telemetry is already exporting in this process; [telemetry] is read once, at start: restart botbox to change it"
    )]
    AlreadyStarted,
}

/// A running exporter. [`Telemetry::shutdown`] sends the spans still
/// batched; dropping it without that may lose the last batch.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Installs the OTLP exporter `config` names and wakes the layer from
/// [`layer`]. Once per process: a reload that changes `[telemetry]` is
/// applied at the next start.
pub fn start(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    if TRACER.get().is_some() {
        return Err(TelemetryError::AlreadyStarted);
    }
    let url = config.traces_url();
    let protocol = match config.protocol {
        OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
    };
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_protocol(protocol)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: config.otlp_endpoint.clone(),
            reason: e.to_string(),
        })?;
    // A continued trace keeps its caller's decision; new traces are sampled
    // by ratio.
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("botbox");
    if TRACER.set(tracer).is_err() {
        let _ = provider.shutdown();
        return Err(TelemetryError::AlreadyStarted);
    }
    RECORDING.store(true, Ordering::Relaxed);
    // Call sites that asked before now cached "never": ask them again.
    tracing::callsite::rebuild_interest_cache();
    tracing::info!(endpoint = %config.otlp_endpoint, "exporting traces over OTLP");
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Sends the spans still batched and stops the exporter. It blocks on
    /// the exporter's thread, so it runs off the async workers.
    pub async fn shutdown(self) {
        // No new spans from here on; the ones open still end and are sent.
        RECORDING.store(false, Ordering::Relaxed);
        tracing::callsite::rebuild_interest_cache();
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || {
            let _ = provider.force_flush();
            provider.shutdown()
        })
        .await;
        if let Ok(Err(e)) = done {
            tracing::warn!("the last traces may not have reached the collector: {e}");
        }
    }
}

/// The layer to put on the process's subscriber, once, at start. It does
/// nothing (and enables nothing) until [`start`].
pub fn layer<S>() -> Filtered<IdleUntilStarted<S>, BotboxSpans, S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    IdleUntilStarted {
        inner: OnceLock::new(),
    }
    .with_filter(BotboxSpans)
}

/// The OpenTelemetry layer, built on first use after [`start`].
pub struct IdleUntilStarted<S> {
    inner: OnceLock<OpenTelemetryLayer<S, Tracer>>,
}

impl<S> IdleUntilStarted<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn active(&self) -> Option<&OpenTelemetryLayer<S, Tracer>> {
        if let Some(layer) = self.inner.get() {
            return Some(layer);
        }
        let tracer = TRACER.get()?;
        Some(self.inner.get_or_init(|| {
            tracing_opentelemetry::layer()
                .with_tracer(tracer.clone())
                // Spans name their own attributes; file paths, thread names
                // and busy/idle times would only add weight.
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_target(false)
        }))
    }
}

impl<S> Layer<S> for IdleUntilStarted<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: LayerContext<'_, S>,
    ) {
        if let Some(layer) = self.active() {
            layer.on_new_span(attrs, id, ctx);
        }
    }

    fn on_record(
        &self,
        span: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: LayerContext<'_, S>,
    ) {
        if let Some(layer) = self.active() {
            layer.on_record(span, values, ctx);
        }
    }

    fn on_follows_from(
        &self,
        span: &tracing::span::Id,
        follows: &tracing::span::Id,
        ctx: LayerContext<'_, S>,
    ) {
        if let Some(layer) = self.active() {
            layer.on_follows_from(span, follows, ctx);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: LayerContext<'_, S>) {
        if let Some(layer) = self.active() {
            layer.on_event(event, ctx);
        }
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: LayerContext<'_, S>) {
        if let Some(layer) = self.active() {
            layer.on_enter(id, ctx);
        }
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: LayerContext<'_, S>) {
        if let Some(layer) = self.active() {
            layer.on_exit(id, ctx);
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: LayerContext<'_, S>) {
        if let Some(layer) = self.active() {
            layer.on_close(id, ctx);
        }
    }

    fn on_id_change(
        &self,
        old: &tracing::span::Id,
        new: &tracing::span::Id,
        ctx: LayerContext<'_, S>,
    ) {
        if let Some(layer) = self.active() {
            layer.on_id_change(old, new, ctx);
        }
    }

    // `OpenTelemetrySpanExt` (set_parent, context) finds the OpenTelemetry
    // layer by downcasting through the subscriber: pass that on.
    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            return Some(self as *const Self as *const ());
        }
        let layer = self.inner.get()?;
        // SAFETY: the inner layer answers only for its own types and lives
        // as long as `self`.
        unsafe { layer.downcast_raw(id) }
    }
}

/// The spans the layer takes: botbox's own, at `DEBUG` or above, and only
/// once [`start`] ran. Events (log lines) stay out of the trace.
pub struct BotboxSpans;

impl BotboxSpans {
    fn wants(meta: &Metadata<'_>) -> bool {
        recording()
            && meta.is_span()
            && *meta.level() <= tracing::Level::DEBUG
            && (meta.target() == "botbox" || meta.target().starts_with("botbox::"))
    }
}

impl<S> Filter<S> for BotboxSpans {
    fn enabled(&self, meta: &Metadata<'_>, _: &LayerContext<'_, S>) -> bool {
        Self::wants(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if Self::wants(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(if recording() {
            LevelFilter::DEBUG
        } else {
            LevelFilter::OFF
        })
    }
}

/// The current span's context as a W3C `traceparent`, to store with a
/// message; `None` when no trace is being recorded.
pub fn traceparent() -> Option<String> {
    let span = Span::current();
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The longest `traceparent` read: version 00 is 55 characters; a future
/// version may append fields, which are ignored, but not without bound.
const MAX_TRACEPARENT: usize = 512;

/// Parses a W3C `traceparent` strictly (lowercase hex, no all-zero ids,
/// version `ff` refused): `None` for anything else, which then starts a new
/// trace.
pub fn parse_traceparent(value: &str) -> Option<Context> {
    if value.len() > MAX_TRACEPARENT || !well_formed(value.as_bytes()) {
        return None;
    }
    let mut carrier = HashMap::new();
    carrier.insert(TRACEPARENT.to_string(), value.to_string());
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// The shape W3C Trace Context gives `traceparent`
/// (https://www.w3.org/TR/trace-context/#traceparent-header-field-values):
/// `vv-{32 hex}-{16 hex}-ff`, lowercase; version 00 ends there, a later
/// version may add `-…` fields; version `ff` is invalid. OpenTelemetry's
/// propagator (which checks the ids and flags next) takes shorter ids and
/// surrounding spaces, so the shape is checked here first.
fn well_formed(b: &[u8]) -> bool {
    let hex = |r: std::ops::Range<usize>| {
        b[r].iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    if b.len() < 55 {
        return false;
    }
    let shape = hex(0..2)
        && b[2] == b'-'
        && hex(3..35)
        && b[35] == b'-'
        && hex(36..52)
        && b[52] == b'-'
        && hex(53..55);
    let rest = match &b[0..2] {
        b"00" => b.len() == 55,
        b"ff" => false,
        _ => b.len() == 55 || b[55] == b'-',
    };
    shape && rest
}

/// Makes `span` a child of the remote span `traceparent` names (a stored
/// message's, or an inbound header's). Nothing happens when the span is not
/// recorded or the value is missing or malformed: the span then starts a
/// trace of its own.
pub fn continue_from(span: &Span, traceparent: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    if let Some(parent) = traceparent.and_then(parse_traceparent) {
        let _ = span.set_parent(parent);
    }
}

/// The current trace and span ids (lowercase hex), for log lines; `None`
/// when no trace is being recorded.
pub fn current_ids() -> Option<(String, String)> {
    let span = Span::current();
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_ref = context.span();
    let ids = span_ref.span_context();
    ids.is_valid()
        .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_strictly() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse_traceparent(good).expect("valid");
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9\u{e9}2b7-01",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "accepted {bad:?}");
        }
        assert!(parse_traceparent(&"0".repeat(MAX_TRACEPARENT + 1)).is_none());
        // A later version may carry more fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later")
                .is_some()
        );
    }

    #[test]
    fn without_start_nothing_is_traced() {
        // No exporter in this test process: no ids, no stored traceparent.
        let span = tracing::debug_span!("probe");
        let _entered = span.enter();
        assert_eq!(traceparent(), None);
        assert_eq!(current_ids(), None);
    }
}
