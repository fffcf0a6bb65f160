//! The process's log on stderr: lines for people (`text`, the default) or
//! one JSON object a line for machines (`BOTBOX_LOG_FORMAT=json`), filtered
//! by `BOTBOX_LOG` (see [`super::log_directives`]).
//!
//! A JSON line holds `time` (RFC 3339, UTC), `level`, `target`, `message`,
//! then the event's own fields (`plugin` on every plugin line), and, when the
//! event happened inside spans, `span` (the innermost one's fields and name)
//! and `spans` (all of them, outermost first), which is where a trace id
//! recorded on a span appears.
//!
//! The event formatter is our own rather than tracing-subscriber's `json()`
//! because that one writes an event's fields one by one into the object, so
//! `warn!(message = %id, "giving up")` (a field named like the message, as
//! the delivery worker writes) produced an object with the key `message`
//! twice, which JSON parsers resolve differently (RFC 8259 §4). Here every
//! key is written once: a field whose name is taken gets `_2`, `_3`, ….
//! Span fields are still stored by tracing-subscriber's `JsonFields`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::layer::Filter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

use super::{Cli, log_directives, log_filter};

/// The environment variable that picks the log's format.
pub const FORMAT_VARIABLE: &str = "BOTBOX_LOG_FORMAT";

/// The environment variable that filters the log.
pub const FILTER_VARIABLE: &str = "BOTBOX_LOG";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For a person: `time LEVEL target: message field=value`.
    Text,
    /// For a machine: one JSON object a line.
    Json,
}

/// `BOTBOX_LOG_FORMAT` holds neither `text` nor `json`.
#[derive(Debug, thiserror::Error)]
#[error(
    "{FORMAT_VARIABLE} is `{value}`, which is no log format; set it to `text` (the default) or `json`, or unset it"
)]
pub struct UnknownLogFormat {
    /// The value, escaped and cut for the terminal.
    value: String,
}

impl LogFormat {
    /// The format `BOTBOX_LOG_FORMAT`'s value names: `text` when unset or
    /// empty; `text` or `json` in any case, around any blanks.
    pub fn parse(value: Option<&str>) -> Result<LogFormat, UnknownLogFormat> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(LogFormat::Text);
        };
        match value.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(UnknownLogFormat {
                value: crate::sanitize::for_log(value, 64),
            }),
        }
    }
}

/// Sets up the process's log for `cli` from `BOTBOX_LOG_FORMAT` and
/// `BOTBOX_LOG`. An unknown format is an error (nothing is logged yet); a
/// filter that does not parse is a warning on stderr, in the chosen
/// format, and the command's default filter applies.
pub fn init(cli: &Cli) -> Result<(), UnknownLogFormat> {
    let format = LogFormat::parse(std::env::var(FORMAT_VARIABLE).ok().as_deref())?;
    let value = std::env::var(FILTER_VARIABLE).ok();
    let (filter, refused) = match EnvFilter::try_new(log_directives(value.as_deref(), cli)) {
        Ok(filter) => (filter, None),
        Err(e) => (EnvFilter::new(log_filter(cli)), Some(e)),
    };
    let filter = without_credential_lines(filter);
    // The filter is the log's own (per layer), so the trace layer, idle
    // until `[telemetry]` starts it, picks its spans by itself.
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(log.with_ansi(colour()).with_filter(filter))
            .with(crate::telemetry::layer())
            .init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                log.with_ansi(false)
                    .fmt_fields(JsonFields::new())
                    .event_format(JsonLines)
                    .with_filter(filter),
            )
            .with(crate::telemetry::layer())
            .init(),
    }
    if let Some(e) = refused {
        // Written straight to stderr, not through the log: the default
        // filter of `call` and `dev` (errors only) would drop a warning.
        let message = format!(
            "{FILTER_VARIABLE} is not a log filter ({e}); logging at the default. \
             Write a level such as `debug`, or directives such as `info,botbox=debug`."
        );
        match format {
            LogFormat::Text => eprintln!("warning: {message}"),
            LogFormat::Json => {
                let mut line = Map::new();
                line.insert("time".into(), now().into());
                line.insert("level".into(), "WARN".into());
                line.insert("target".into(), module_path!().into());
                line.insert("message".into(), message.into());
                eprintln!("{}", Value::Object(line));
            }
        }
    }
    Ok(())
}

/// Crates beneath botbox that write credentials into their own debug
/// lines, whatever filter the operator writes: `oci_client` logs a
/// registry's token answers at `debug`.
const CREDENTIAL_LOGGING_CRATES: &[&str] = &["oci_client"];

/// `filter`, except that [`CREDENTIAL_LOGGING_CRATES`] never write below
/// `info`, so `BOTBOX_LOG=debug,oci_client=trace` cannot put a registry
/// token in the log.
fn without_credential_lines<S>(filter: EnvFilter) -> impl Filter<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let capped = CREDENTIAL_LOGGING_CRATES.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |t, name| t.with_target(*name, LevelFilter::INFO),
    );
    FilterExt::and(filter, capped)
}

/// The time of a line: RFC 3339 in UTC, to the microsecond.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Colour only for a person at a terminal: never into a pipe, file or
/// journal, and never with NO_COLOR set (<https://no-color.org>).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The JSON event format: one object a line, every key once (see the
/// module's comment).
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Lines from crates that log through `log` (wasmtime, Cranelift)
        // arrive with the target `log`; their own target is in the record.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut line = Map::new();
        line.insert("time".into(), now().into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        // The message first, so that a field named `message` is the one
        // renamed; `span` and `spans` are claimed before the fields too.
        line.insert("message".into(), Value::Null);
        line.insert("span".into(), Value::Null);
        line.insert("spans".into(), Value::Null);
        event.record(&mut FieldsInto {
            line: &mut line,
            message_seen: false,
            from_log: normalized.is_some(),
        });
        let spans: Vec<Value> = ctx
            .event_scope()
            .into_iter()
            .flat_map(|scope| scope.from_root())
            .map(|span| {
                let extensions = span.extensions();
                let mut fields = extensions
                    .get::<FormattedFields<JsonFields>>()
                    .and_then(|f| serde_json::from_str::<Map<String, Value>>(&f.fields).ok())
                    .unwrap_or_default();
                fields.insert("name".into(), span.name().into());
                Value::Object(fields)
            })
            .collect();
        match spans.last().cloned() {
            Some(innermost) => {
                line.insert("span".into(), innermost);
                line.insert("spans".into(), Value::Array(spans));
            }
            None => {
                line.remove("span");
                line.remove("spans");
            }
        }
        if line.get("message").is_some_and(Value::is_null) {
            line.insert("message".into(), "".into());
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writer.write_str(&text)?;
        writeln!(writer)
    }
}

/// Puts an event's fields into a line under their own names, or under
/// `name_2`, `name_3`, … when the name is taken.
struct FieldsInto<'a> {
    line: &'a mut Map<String, Value>,
    /// Whether the event's message (its first field named `message`) was
    /// put already.
    message_seen: bool,
    /// Whether the event came through `log`: its `log.target`, `log.file`
    /// … fields are already in `target`, or of no use to a reader.
    from_log: bool,
}

impl FieldsInto<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if self.from_log && name.starts_with("log.") {
            return;
        }
        if name == "message" && !self.message_seen {
            self.message_seen = true;
            self.line.insert(name.into(), value);
            return;
        }
        let key = if self.line.contains_key(name) {
            (2..)
                .map(|n| format!("{name}_{n}"))
                .find(|k| !self.line.contains_key(k))
                .unwrap_or_else(|| name.to_owned())
        } else {
            name.to_owned()
        };
        self.line.insert(key, value);
    }
}

impl Visit for FieldsInto<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field, value.to_string().into());
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field, value.to_string().into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those become strings.
        let number = serde_json::Number::from_f64(value).map(Value::Number);
        self.put(field, number.unwrap_or_else(|| value.to_string().into()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_clients_debug_lines_stay_out_whatever_the_filter_says() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let filter = EnvFilter::try_new("debug,oci_client=trace").unwrap();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .with_filter(without_credential_lines(filter)),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "oci_client::token_cache", "token answer: secret-token");
            tracing::info!(target: "oci_client::client", "pulling a manifest");
            tracing::debug!(target: "botbox::distribution", "own debug line");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("secret-token"), "{text}");
        assert!(text.contains("pulling a manifest"), "{text}");
        assert!(text.contains("own debug line"), "{text}");
    }

    #[test]
    fn the_format_is_text_unless_json_is_asked_and_anything_else_is_refused() {
        assert_eq!(LogFormat::parse(None).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some(" ")).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some("text")).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some(" JSON ")).unwrap(), LogFormat::Json);
        let refused = LogFormat::parse(Some("yaml\x1b[2J"))
            .unwrap_err()
            .to_string();
        assert!(
            refused.starts_with("BOTBOX_LOG_FORMAT is `yaml"),
            "{refused}"
        );
        assert!(!refused.contains('\x1b'), "{refused}");
        assert!(
            refused.contains("`text` (the default) or `json`"),
            "{refused}"
        );
    }
}
