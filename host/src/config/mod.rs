//! `botbox.toml`: parsing, validation and secret resolution.
//!
//! Parsing happens in two passes. Serde turns the text into raw sections and
//! reports syntax and type errors with their line. Then [`Config::validate`]
//! checks meaning (references between sections, ranges, grants) and reports
//! every problem at once, each with its key path, so an operator fixes a
//! config in one round instead of ten.

pub mod http;
mod schedule;
mod secret;
mod source;
mod telemetry;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use schedule::{ScheduleSpec, parse_duration, parse_schedule};
pub use secret::{Secret, SecretError, SecretRef};
pub use source::{
    DEFAULT_MAX_BLOB_MB, OCI_SCHEME, OciReference, OciVersion, PluginSource, RegistryAccess,
    Sha256Digest, cached_component,
};
pub use telemetry::{OtlpProtocol, TelemetryConfig};

use crate::events::parse_event_kind;
use crate::wit::types::EventKind;

/// One problem in a config, located by file and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, such as `plugins.welcome.limits.memory_mb`.
    pub key: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Everything wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config `{path}`: {reason}")]
    Unreadable {
        /// The config file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The file is not TOML.
    #[error("{path}: {message}")]
    Syntax {
        /// The config file.
        path: String,
        /// The TOML parser's message, with line and column.
        message: String,
    },
    /// The file is TOML but its values are wrong: every problem at once.
    #[error("{path} has {} problem(s):\n{}", issues.len(), render_issues(issues))]
    Invalid {
        /// The config file.
        path: String,
        /// Each problem, by key.
        issues: Vec<ConfigIssue>,
    },
}

fn render_issues(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// The problems by key, when the values were wrong; none otherwise.
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Invalid { issues, .. } => issues,
            _ => &[],
        }
    }
}

/// A validated config. Provider- and channel-specific keys stay as TOML
/// tables here; each provider module validates its own (see
/// [`crate::providers::Registry::from_config`]).
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for error messages.
    pub source: PathBuf,
    /// The folder relative paths are resolved against.
    pub base_dir: PathBuf,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
    /// `[providers.NAME]`, by name.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// `[channels.NAME]`, by name.
    pub channels: BTreeMap<String, ChannelConfig>,
    /// `[plugins.NAME]`, by name.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// `[webhooks]`: the inbound callback listener, validated by
    /// [`crate::triggers::webhooks::WebhookSettings::from_config`].
    pub webhooks: Option<toml::Table>,
    /// `[admin]`: the admin API and metrics listener, validated by
    /// [`crate::triggers::admin::AdminSettings::from_config`].
    pub admin: Option<toml::Table>,
    /// `[telemetry]`: where traces are exported; `None` exports nothing.
    pub telemetry: Option<TelemetryConfig>,
}

/// `[storage]`: where the host keeps its state.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Holds `kv.sqlite`, the outbox and the compile cache.
    pub dir: PathBuf,
    /// Where the outbox and the throttles' history live.
    pub backend: StorageBackend,
    /// `storage.retention`: how long a finished, reported message stays in
    /// the outbox (for `botbox outbox` and idempotency keys) before the
    /// host deletes it.
    pub retention: Duration,
}

/// Default `storage.retention`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// `storage.backend`: one host on its own SQLite file, or several hosts on
/// one shared PostgreSQL database.
#[derive(Debug, Clone)]
pub enum StorageBackend {
    /// `outbox.sqlite` in `storage.dir` (the default).
    Sqlite,
    /// A PostgreSQL database several hosts share.
    Postgres {
        /// `storage.postgres_url`, such as
        /// `postgres://botbox:PASSWORD@db.internal:5432/botbox`.
        url: Secret,
        /// `storage.lease`: how long after a host dies (stops renewing) the
        /// messages it had taken go to another host.
        lease: Duration,
    },
}

/// Default `storage.lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The shortest lease: a host renews its claims about three times per lease.
pub const MIN_LEASE: Duration = Duration::from_secs(2);

/// `[runtime]`: how the host runs plugins.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Watch plugin files and the config, and swap in changes.
    pub reload: bool,
    /// How much faster than real time the throttles' clock runs. Only for
    /// demos and tests against a simulator scaled the same way.
    pub time_scale: f64,
    /// Under `time_scale`, the wall time (ms since the epoch) the scaled
    /// clock counts from: at wall time `w` it reads `origin + (w - origin)
    /// × scale`. A simulator started at `origin` reads the same calendar,
    /// so both see the same midnights (`3/day utc`). `None`: the host's start.
    pub time_origin_ms: Option<u64>,
    /// Component instances in the shared instance pool (each concurrent
    /// call holds one); the pool has twice as many memories and tables.
    pub pool_instances: u32,
}

/// The default of `runtime.pool_instances`: room for 100 plugins at the
/// default `max_concurrency` of 8, with some to spare.
pub const DEFAULT_POOL_INSTANCES: u32 = 1024;

/// One `[providers.NAME]` section, raw but for `kind`.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Which provider this is, such as "bigbluebutton".
    pub kind: String,
    /// Every key but `kind` and `inbound`, raw: the provider parses its own
    /// (`providers::<p>`, through the registry `providers::KINDS`).
    pub options: toml::Table,
    /// `[providers.NAME.inbound]`, raw: how this account's callbacks
    /// (webhooks to botbox) are authenticated. `secret` is read by the
    /// webhook settings (`triggers::webhooks`), the rest by the provider's
    /// own inbound (`providers::<p>::inbound`).
    pub inbound: Option<toml::Value>,
}

/// One `[channels.NAME]` section: the generic keys read, the provider's
/// own left raw.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// The `[providers.*]` account it goes through.
    pub provider: String,
    /// Provider-specific: which meetings, groups, rooms or dialogs.
    pub target: Option<toml::Value>,
    /// Sender shown when a message names none.
    pub default_sender: Option<String>,
    /// The longest a message may wait for its provider's throttle; past
    /// it, `send-broadcast` answers `quota-exhausted` instead of queueing.
    pub max_delay: Duration,
    /// Every other key, for the provider module to read.
    pub options: toml::Table,
}

/// Default `max_delay` of a channel.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(600);

/// One `[plugins.NAME]` section: what the operator grants a plugin.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// The component file the host compiles: the `path` file resolved
    /// against the config's folder, or for an `oci://` source the pull
    /// cache's copy of the pinned digest ([`cached_component`]).
    pub path: PathBuf,
    /// `path` as written: a file or a registry reference.
    pub source: PluginSource,
    /// `sha256`: the digest the component must have (required for
    /// `oci://`); a component with another is refused.
    pub sha256: Option<Sha256Digest>,
    /// `[plugins.NAME.registry]`, for an `oci://` source.
    pub registry: RegistryAccess,
    /// Channels granted (it may send on them and hear from them).
    pub channels: Vec<String>,
    /// Event kinds granted.
    pub events: Vec<EventKind>,
    /// Schedules granted, by name.
    pub schedules: BTreeMap<String, ScheduleSpec>,
    /// Its containment limits.
    pub limits: PluginLimits,
    /// Values as the plugin sees them: strings verbatim, everything else as JSON.
    pub settings: BTreeMap<String, String>,
    /// `http`: the hosts it may reach over outbound HTTP (what it asks for
    /// in `describe()` is intersected with these). Empty: none.
    pub http: Vec<http::HostPattern>,
    /// `http_plain_loopback`: plain `http://` is allowed to loopback
    /// addresses granted by their literal (local services, tests). Every
    /// other request must be `https://`.
    pub http_plain_loopback: bool,
}

/// Per-plugin containment limits. Defaults are safe for untrusted code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLimits {
    /// `limits.memory_mb`: all linear memories of one instance together.
    pub memory_bytes: usize,
    /// `limits.deadline_ms`: per call.
    pub deadline: Duration,
    /// `limits.max_concurrency`: calls at once; more fail with "busy".
    pub max_concurrency: usize,
    /// `limits.broadcasts_per_minute`: the plugin's broadcast budget.
    pub broadcasts_per_minute: u32,
    /// `limits.log_lines_per_second`: lines past it are dropped and counted.
    pub log_lines_per_second: u32,
    /// `limits.kv_max_key_bytes`.
    pub kv_max_key_bytes: u32,
    /// `limits.kv_max_value_bytes`.
    pub kv_max_value_bytes: u32,
    /// `limits.kv_max_total_kb`, in bytes: keys, values and 64 bytes a row.
    pub kv_max_total_bytes: u64,
    /// `limits.http_*`: outbound HTTP.
    pub http: http::HttpLimits,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_bytes: 64 << 20,
            deadline: Duration::from_secs(1),
            max_concurrency: 8,
            broadcasts_per_minute: 60,
            log_lines_per_second: 50,
            kv_max_key_bytes: 256,
            kv_max_value_bytes: 64 << 10,
            kv_max_total_bytes: 4 << 20,
            http: http::HttpLimits::default(),
        }
    }
}

/// The largest memory a plugin may be granted; also sizes the pooling allocator.
pub const MAX_PLUGIN_MEMORY_MB: u64 = 1024;
/// The longest deadline a plugin may be granted.
pub const MAX_DEADLINE_MS: u64 = 60_000;

// ---- raw shapes, as serde reads them ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    providers: BTreeMap<String, toml::Table>,
    #[serde(default)]
    channels: BTreeMap<String, toml::Table>,
    #[serde(default)]
    plugins: BTreeMap<String, RawPlugin>,
    webhooks: Option<toml::Table>,
    admin: Option<toml::Table>,
    telemetry: Option<telemetry::RawTelemetry>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    dir: Option<PathBuf>,
    backend: Option<String>,
    postgres_url: Option<toml::Value>,
    lease: Option<String>,
    retention: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    reload: Option<bool>,
    time_scale: Option<f64>,
    time_origin_ms: Option<u64>,
    pool_instances: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    path: String,
    sha256: Option<String>,
    registry: Option<toml::Table>,
    #[serde(default)]
    channels: Vec<String>,
    events: Option<Vec<String>>,
    #[serde(default)]
    schedules: BTreeMap<String, String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    settings: toml::Table,
    #[serde(default)]
    http: Vec<String>,
    #[serde(default)]
    http_plain_loopback: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_mb: Option<u64>,
    deadline_ms: Option<u64>,
    max_concurrency: Option<u64>,
    broadcasts_per_minute: Option<u64>,
    log_lines_per_second: Option<u64>,
    kv_max_key_bytes: Option<u64>,
    kv_max_value_bytes: Option<u64>,
    kv_max_total_kb: Option<u64>,
    http_request_max_kb: Option<u64>,
    http_response_max_kb: Option<u64>,
    http_timeout_ms: Option<u64>,
    http_max_in_flight: Option<u64>,
    http_requests_per_minute: Option<u64>,
}

/// Event kinds a plugin gets when the operator lists none: the ones that
/// come from the operator or the host itself. Chat and meeting events carry
/// other people's words and must be granted by name.
pub const DEFAULT_EVENTS: [EventKind; 3] =
    [EventKind::Custom, EventKind::Delivery, EventKind::Schedule];

/// Names used as channel, provider, plugin and schedule keys: short, printable,
/// and safe to show in a log line or a metric label.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, path, &base_dir)
    }

    /// Parses config text; `source` is only used to name the file in errors.
    pub fn parse(text: &str, source: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        let display = source.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: display.clone(),
            message: describe_toml_error(text, &e),
        })?;
        let mut issues = Vec::new();
        let config = Config::validate(raw, source, base_dir, &mut issues);
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: display,
                issues,
            })
        }
    }

    fn validate(
        raw: RawConfig,
        source: &Path,
        base_dir: &Path,
        issues: &mut Vec<ConfigIssue>,
    ) -> Config {
        let mut issue = |key: String, message: String| issues.push(ConfigIssue { key, message });

        let backend = storage_backend(&raw.storage, base_dir, &mut issue);
        let retention = match raw.storage.retention.as_deref().map(parse_duration) {
            None => DEFAULT_RETENTION,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                issue("storage.retention".into(), e);
                DEFAULT_RETENTION
            }
        };
        let storage = StorageConfig {
            dir: base_dir.join(raw.storage.dir.unwrap_or_else(|| PathBuf::from(".botbox"))),
            backend,
            retention,
        };
        let time_scale = raw.runtime.time_scale.unwrap_or(1.0);
        if !(0.001..=1_000_000.0).contains(&time_scale) {
            issue(
                "runtime.time_scale".into(),
                format!("is {time_scale}; it must be between 0.001 and 1000000"),
            );
        }
        let pool_instances = raw.runtime.pool_instances.unwrap_or(DEFAULT_POOL_INSTANCES);
        if !(16..=16_384).contains(&pool_instances) {
            issue(
                "runtime.pool_instances".into(),
                format!("is {pool_instances}; it must be between 16 and 16384"),
            );
        }
        let runtime = RuntimeConfig {
            reload: raw.runtime.reload.unwrap_or(true),
            time_scale,
            time_origin_ms: raw.runtime.time_origin_ms,
            pool_instances,
        };

        let mut providers = BTreeMap::new();
        for (name, mut table) in raw.providers {
            let key = format!("providers.{name}");
            if !is_valid_name(&name) {
                issue(key.clone(), name_rule());
            }
            let inbound = table.remove("inbound");
            match table.remove("kind") {
                Some(toml::Value::String(kind)) => {
                    providers.insert(
                        name,
                        ProviderConfig {
                            kind,
                            options: table,
                            inbound,
                        },
                    );
                }
                Some(_) => issue(format!("{key}.kind"), "must be a string".into()),
                None => issue(
                    format!("{key}.kind"),
                    "is missing: say which provider this is (for example \"bigbluebutton\" or \"console\")".into(),
                ),
            }
        }

        let mut channels = BTreeMap::new();
        for (name, mut table) in raw.channels {
            let key = format!("channels.{name}");
            if !is_valid_name(&name) {
                issue(key.clone(), name_rule());
            }
            let provider = match table.remove("provider") {
                Some(toml::Value::String(p)) => p,
                Some(_) => {
                    issue(format!("{key}.provider"), "must be a string".into());
                    continue;
                }
                None => {
                    issue(
                        format!("{key}.provider"),
                        "is missing: name one of the [providers.*] sections".into(),
                    );
                    continue;
                }
            };
            if !providers.contains_key(&provider) {
                issue(
                    format!("{key}.provider"),
                    format!(
                        "names provider `{provider}`, which is not defined; defined: {}",
                        list_or_none(providers.keys())
                    ),
                );
            }
            let default_sender = match table.remove("sender") {
                Some(toml::Value::String(s)) => Some(s),
                Some(_) => {
                    issue(format!("{key}.sender"), "must be a string".into());
                    None
                }
                None => None,
            };
            let target = table.remove("target");
            let max_delay = match table.remove("max_delay") {
                None => DEFAULT_MAX_DELAY,
                Some(toml::Value::String(text)) => match parse_duration(&text) {
                    Ok(d) => d,
                    Err(message) => {
                        issue(format!("{key}.max_delay"), message);
                        DEFAULT_MAX_DELAY
                    }
                },
                Some(_) => {
                    issue(
                        format!("{key}.max_delay"),
                        "must be a string such as \"30m\"".into(),
                    );
                    DEFAULT_MAX_DELAY
                }
            };
            channels.insert(
                name,
                ChannelConfig {
                    provider,
                    target,
                    default_sender,
                    max_delay,
                    options: table,
                },
            );
        }

        let mut plugins = BTreeMap::new();
        for (name, raw_plugin) in raw.plugins {
            let key = format!("plugins.{name}");
            if !is_valid_name(&name) {
                issue(key.clone(), name_rule());
            }
            let (source, sha256, registry) = plugin_source(&raw_plugin, &key, base_dir, &mut issue);
            for channel in &raw_plugin.channels {
                if !channels.contains_key(channel) {
                    issue(
                        format!("{key}.channels"),
                        format!(
                            "grants channel `{channel}`, which is not defined; defined: {}",
                            list_or_none(channels.keys())
                        ),
                    );
                }
            }
            let events = match raw_plugin.events {
                None => DEFAULT_EVENTS.to_vec(),
                Some(names) => names
                    .iter()
                    .filter_map(|n| {
                        let kind = parse_event_kind(n);
                        if kind.is_none() {
                            issue(
                                format!("{key}.events"),
                                format!(
                                    "unknown event kind `{n}`; known: chat-message, meeting, schedule, delivery, custom"
                                ),
                            );
                        }
                        kind
                    })
                    .collect(),
            };
            let mut schedules = BTreeMap::new();
            for (sched_name, spec) in raw_plugin.schedules {
                let sched_key = format!("{key}.schedules.{sched_name}");
                if !is_valid_name(&sched_name) {
                    issue(sched_key.clone(), name_rule());
                }
                match parse_schedule(&spec) {
                    Ok(parsed) => {
                        schedules.insert(sched_name, parsed);
                    }
                    Err(message) => issue(sched_key, message),
                }
            }
            let limits = validate_limits(&raw_plugin.limits, &format!("{key}.limits"), &mut issue);
            let mut settings = BTreeMap::new();
            for (k, v) in raw_plugin.settings {
                let setting_key = format!("{key}.settings.{k}");
                if looks_like_secret_ref(&v) {
                    issue(
                        setting_key,
                        "plugin settings are visible to the plugin, so they cannot hold secret references; give the credential to a provider instead".into(),
                    );
                    continue;
                }
                let text = match v {
                    toml::Value::String(s) => s,
                    other => match serde_json::to_string(&other) {
                        Ok(json) => json,
                        Err(e) => {
                            issue(setting_key, format!("cannot be shown to the plugin: {e}"));
                            continue;
                        }
                    },
                };
                settings.insert(k, text);
            }
            let mut http = Vec::new();
            for pattern in &raw_plugin.http {
                match http::HostPattern::parse(pattern) {
                    Ok(p) => http.push(p),
                    Err(message) => issue(
                        format!("{key}.http"),
                        format!("`{}`: {message}", crate::sanitize::for_log(pattern, 64)),
                    ),
                }
            }
            let path = match (&source, &sha256) {
                (PluginSource::File(file), _) => file.clone(),
                (PluginSource::Oci(_), Some(digest)) => cached_component(&storage.dir, digest),
                // Refused above (sha256 is required for oci://); any path will do.
                (PluginSource::Oci(_), None) => storage.dir.join("components"),
            };
            plugins.insert(
                name,
                PluginConfig {
                    path,
                    source,
                    sha256,
                    registry,
                    channels: raw_plugin.channels,
                    events,
                    schedules,
                    limits,
                    settings,
                    http,
                    http_plain_loopback: raw_plugin.http_plain_loopback,
                },
            );
        }

        Config {
            source: source.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
            storage,
            runtime,
            providers,
            channels,
            plugins,
            webhooks: raw.webhooks,
            admin: raw.admin,
            telemetry: raw
                .telemetry
                .and_then(|t| telemetry::validate(t, &mut issue)),
        }
    }
}

/// `path`, `sha256` and `[plugins.NAME.registry]` of one plugin.
fn plugin_source(
    raw: &RawPlugin,
    key: &str,
    base_dir: &Path,
    issue: &mut impl FnMut(String, String),
) -> (PluginSource, Option<Sha256Digest>, RegistryAccess) {
    let sha256 = raw
        .sha256
        .as_deref()
        .and_then(|text| match Sha256Digest::parse(text) {
            Ok(digest) => Some(digest),
            Err(message) => {
                issue(format!("{key}.sha256"), message);
                None
            }
        });
    let source = if raw.path.starts_with(OCI_SCHEME) {
        match OciReference::parse(&raw.path) {
            Ok(reference) => {
                if raw.sha256.is_none() {
                    issue(
                        format!("{key}.sha256"),
                        format!(
                            "is required for a registry source ({reference}): a tag can move, so                              the host runs only the component it was told to; write the digest                              `botbox plugin push` or `botbox plugin pull` printed"
                        ),
                    );
                }
                PluginSource::Oci(reference)
            }
            Err(message) => {
                issue(format!("{key}.path"), message);
                PluginSource::File(base_dir.join(&raw.path))
            }
        }
    } else {
        PluginSource::File(base_dir.join(&raw.path))
    };
    let mut registry = RegistryAccess::default();
    if let Some(table) = &raw.registry {
        let prefix = format!("{key}.registry");
        if matches!(source, PluginSource::File(_)) {
            issue(
                prefix.clone(),
                "is only for a plugin whose path is oci://…; remove it".into(),
            );
        }
        for field in table.keys() {
            if !["username", "password", "max_blob_mb"].contains(&field.as_str()) {
                issue(
                    format!("{prefix}.{field}"),
                    "unknown key; known: username, password, max_blob_mb".into(),
                );
            }
        }
        match table.get("username") {
            None => {}
            Some(toml::Value::String(user)) if !user.is_empty() => {
                registry.username = Some(user.clone())
            }
            Some(_) => issue(
                format!("{prefix}.username"),
                "must be a non-empty string".into(),
            ),
        }
        match take_secret(table, "password", &prefix, base_dir) {
            Ok(password) => registry.password = password,
            Err(problem) => issue(problem.key, problem.message),
        }
        if registry.username.is_some() != registry.password.is_some() {
            issue(
                prefix.clone(),
                "needs both username and password, or neither (anonymous pulls)".into(),
            );
        }
        match table.get("max_blob_mb") {
            None => {}
            Some(toml::Value::Integer(mb)) if (1..=source::MAX_MAX_BLOB_MB as i64).contains(mb) => {
                registry.max_blob_bytes = (*mb as u64) << 20;
            }
            Some(_) => issue(
                format!("{prefix}.max_blob_mb"),
                format!(
                    "must be a whole number of MiB from 1 to {}",
                    source::MAX_MAX_BLOB_MB
                ),
            ),
        }
    }
    (source, sha256, registry)
}

fn validate_limits(
    raw: &RawLimits,
    key: &str,
    issue: &mut impl FnMut(String, String),
) -> PluginLimits {
    let defaults = PluginLimits::default();
    let mut check = |name: &str, value: Option<u64>, min: u64, max: u64, default: u64| -> u64 {
        match value {
            None => default,
            Some(v) if v < min || v > max => {
                issue(
                    format!("{key}.{name}"),
                    format!("is {v}; it must be between {min} and {max}"),
                );
                default
            }
            Some(v) => v,
        }
    };
    let memory_mb = check(
        "memory_mb",
        raw.memory_mb,
        1,
        MAX_PLUGIN_MEMORY_MB,
        (defaults.memory_bytes >> 20) as u64,
    );
    let deadline_ms = check(
        "deadline_ms",
        raw.deadline_ms,
        1,
        MAX_DEADLINE_MS,
        defaults.deadline.as_millis() as u64,
    );
    let max_concurrency = check(
        "max_concurrency",
        raw.max_concurrency,
        1,
        256,
        defaults.max_concurrency as u64,
    );
    let broadcasts_per_minute = check(
        "broadcasts_per_minute",
        raw.broadcasts_per_minute,
        0,
        100_000,
        defaults.broadcasts_per_minute.into(),
    );
    let log_lines_per_second = check(
        "log_lines_per_second",
        raw.log_lines_per_second,
        0,
        10_000,
        defaults.log_lines_per_second.into(),
    );
    let kv_max_key_bytes = check(
        "kv_max_key_bytes",
        raw.kv_max_key_bytes,
        1,
        4096,
        defaults.kv_max_key_bytes.into(),
    );
    let kv_max_value_bytes = check(
        "kv_max_value_bytes",
        raw.kv_max_value_bytes,
        1,
        16 << 20,
        defaults.kv_max_value_bytes.into(),
    );
    let kv_max_total_kb = check(
        "kv_max_total_kb",
        raw.kv_max_total_kb,
        1,
        1 << 20,
        defaults.kv_max_total_bytes >> 10,
    );
    let http_defaults = http::HttpLimits::default();
    let http_request_max_kb = check(
        "http_request_max_kb",
        raw.http_request_max_kb,
        0,
        16 << 10,
        http_defaults.request_max_bytes >> 10,
    );
    let http_response_max_kb = check(
        "http_response_max_kb",
        raw.http_response_max_kb,
        1,
        64 << 10,
        http_defaults.response_max_bytes >> 10,
    );
    let http_timeout_ms = check(
        "http_timeout_ms",
        raw.http_timeout_ms,
        1,
        MAX_DEADLINE_MS,
        http_defaults.timeout.as_millis() as u64,
    );
    let http_max_in_flight = check(
        "http_max_in_flight",
        raw.http_max_in_flight,
        1,
        64,
        http_defaults.max_in_flight.into(),
    );
    let http_requests_per_minute = check(
        "http_requests_per_minute",
        raw.http_requests_per_minute,
        0,
        100_000,
        http_defaults.requests_per_minute.into(),
    );
    PluginLimits {
        http: http::HttpLimits {
            request_max_bytes: http_request_max_kb << 10,
            response_max_bytes: http_response_max_kb << 10,
            timeout: Duration::from_millis(http_timeout_ms),
            max_in_flight: http_max_in_flight as u32,
            requests_per_minute: http_requests_per_minute as u32,
        },
        memory_bytes: (memory_mb as usize) << 20,
        deadline: Duration::from_millis(deadline_ms),
        max_concurrency: max_concurrency as usize,
        broadcasts_per_minute: broadcasts_per_minute as u32,
        log_lines_per_second: log_lines_per_second as u32,
        kv_max_key_bytes: kv_max_key_bytes as u32,
        kv_max_value_bytes: kv_max_value_bytes as u32,
        kv_max_total_bytes: kv_max_total_kb << 10,
    }
}

fn looks_like_secret_ref(v: &toml::Value) -> bool {
    match v {
        toml::Value::Table(t) => t.len() == 1 && (t.contains_key("env") || t.contains_key("file")),
        _ => false,
    }
}

fn name_rule() -> String {
    "names may use only letters, digits, '-', '_' and '.', 1 to 64 of them".into()
}

fn list_or_none<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let all: Vec<&str> = names.map(String::as_str).collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

/// toml's messages carry a span; turn it into "line L, column C" so the
/// operator can jump there.
fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim_end().to_string();
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Reads `[storage]`'s backend keys; SQLite unless told otherwise.
fn storage_backend(
    raw: &RawStorage,
    base_dir: &Path,
    issue: &mut impl FnMut(String, String),
) -> StorageBackend {
    let lease = match raw.lease.as_deref().map(parse_duration) {
        None => DEFAULT_LEASE,
        Some(Ok(d)) if d >= MIN_LEASE => d,
        Some(Ok(d)) => {
            issue(
                "storage.lease".into(),
                format!(
                    "is {}s; it must be at least {}s, so that a host renews its claims in time",
                    d.as_secs(),
                    MIN_LEASE.as_secs()
                ),
            );
            DEFAULT_LEASE
        }
        Some(Err(e)) => {
            issue("storage.lease".into(), e);
            DEFAULT_LEASE
        }
    };
    let mut table = toml::Table::new();
    if let Some(url) = &raw.postgres_url {
        table.insert("postgres_url".into(), url.clone());
    }
    let url = match take_secret(&table, "postgres_url", "storage", base_dir) {
        Ok(url) => url,
        Err(e) => {
            issue(e.key, e.message);
            None
        }
    };
    match raw.backend.as_deref().unwrap_or("sqlite") {
        "sqlite" => {
            if raw.postgres_url.is_some() {
                issue(
                    "storage.postgres_url".into(),
                    "is set but storage.backend is \"sqlite\"; set backend = \"postgres\" to use it, or remove it".into(),
                );
            }
            StorageBackend::Sqlite
        }
        "postgres" => match url {
            Some(url) => StorageBackend::Postgres { url, lease },
            None => {
                if raw.postgres_url.is_none() {
                    issue(
                        "storage.postgres_url".into(),
                        "is missing: backend \"postgres\" needs a connection string, such as { env = \"BOTBOX_POSTGRES_URL\" }".into(),
                    );
                }
                StorageBackend::Sqlite
            }
        },
        other => {
            issue(
                "storage.backend".into(),
                format!(
                    "is `{}`; it must be \"sqlite\" (one host) or \"postgres\" (several hosts)",
                    other.escape_debug()
                ),
            );
            StorageBackend::Sqlite
        }
    }
}

/// Rejects keys a section does not know (a provider's options, `[webhooks]`,
/// `[admin]`), so a typo is an error and not a silently ignored setting.
pub fn unknown_keys(table: &toml::Table, known: &[&str], key_prefix: &str) -> Vec<ConfigIssue> {
    table
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| ConfigIssue {
            key: format!("{key_prefix}.{k}"),
            message: format!(
                "unknown key; known here: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        })
        .collect()
}

/// Reads a secret reference out of a provider's options, with a clear error
/// for inline secrets.
pub fn take_secret(
    options: &toml::Table,
    field: &str,
    key_prefix: &str,
    base_dir: &Path,
) -> Result<Option<Secret>, ConfigIssue> {
    let key = format!("{key_prefix}.{field}");
    let Some(value) = options.get(field) else {
        return Ok(None);
    };
    if value.is_str() {
        return Err(ConfigIssue {
            key,
            message:
                "inline secrets are not allowed; write { env = \"VAR\" } or { file = \"path\" }"
                    .into(),
        });
    }
    let reference: SecretRef = value.clone().try_into().map_err(|_| ConfigIssue {
        key: key.clone(),
        message: "must be { env = \"VAR\" } or { file = \"path\" }".into(),
    })?;
    reference
        .resolve(base_dir)
        .map(Some)
        .map_err(|e| ConfigIssue {
            key,
            message: format!("{e} (from {reference})"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("botbox.toml"), Path::new("/cfg"))
    }

    #[test]
    fn minimal_config_gets_safe_defaults() {
        let c = parse(
            r#"
            [providers.out]
            kind = "console"
            [channels.lobby]
            provider = "out"
            [plugins.p]
            path = "p.wasm"
            channels = ["lobby"]
            "#,
        )
        .unwrap();
        let p = &c.plugins["p"];
        assert_eq!(p.limits, PluginLimits::default());
        assert_eq!(p.events, DEFAULT_EVENTS.to_vec());
        assert_eq!(p.path, Path::new("/cfg/p.wasm"));
        assert_eq!(c.storage.dir, Path::new("/cfg/.botbox"));
        assert!(matches!(c.storage.backend, StorageBackend::Sqlite));
        assert_eq!(c.storage.retention, DEFAULT_RETENTION);
    }

    #[test]
    fn the_instance_pool_is_sized_by_runtime_pool_instances() {
        let c = parse("").unwrap();
        assert_eq!(c.runtime.pool_instances, DEFAULT_POOL_INSTANCES);
        let c = parse("[runtime]\npool_instances = 4096\n").unwrap();
        assert_eq!(c.runtime.pool_instances, 4096);
        let err = parse("[runtime]\npool_instances = 8\n").unwrap_err();
        assert!(err.to_string().contains("runtime.pool_instances"), "{err}");
    }

    #[test]
    fn storage_retention_is_a_duration() {
        let c = parse("[storage]\nretention = \"36h\"\n").unwrap();
        assert_eq!(c.storage.retention, Duration::from_secs(36 * 3600));
        let err = parse("[storage]\nretention = \"a week\"\n").unwrap_err();
        assert!(err.to_string().contains("storage.retention"), "{err}");
    }

    #[test]
    fn postgres_storage_reads_its_url_from_a_secret_and_a_lease() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pg-url"),
            "postgres://u:hunter2@127.0.0.1/b\n",
        )
        .unwrap();
        let c = Config::parse(
            "[storage]\nbackend = \"postgres\"\npostgres_url = { file = \"pg-url\" }\nlease = \"10s\"\n",
            Path::new("botbox.toml"),
            dir.path(),
        )
        .unwrap();
        let StorageBackend::Postgres { url, lease } = &c.storage.backend else {
            panic!("{:?}", c.storage.backend);
        };
        assert_eq!(url.expose(), "postgres://u:hunter2@127.0.0.1/b");
        assert_eq!(*lease, Duration::from_secs(10));
        assert!(!format!("{:?}", c.storage).contains("hunter2"));
    }

    #[test]
    fn storage_problems_are_reported_together() {
        let err = parse(
            "[storage]\nbackend = \"redis\"\npostgres_url = \"postgres://u:hunter2@h/b\"\nlease = \"1s\"\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.issues().iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["storage.lease", "storage.postgres_url", "storage.backend"],
            "{err}"
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let missing = parse("[storage]\nbackend = \"postgres\"\n").unwrap_err();
        assert!(
            missing.to_string().contains("storage.postgres_url"),
            "{missing}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let err = parse(
            r#"
            [providers.out]
            [channels.lobby]
            provider = "nope"
            [plugins.p]
            path = "p.wasm"
            channels = ["lobby", "ghost"]
            events = ["chat-message", "telepathy"]
            schedules = { tick = "every banana" }
            limits = { memory_mb = 0, deadline_ms = 999999 }
            settings = { token = { env = "X" } }
            "#,
        )
        .unwrap_err();
        let keys: Vec<&str> = err.issues().iter().map(|i| i.key.as_str()).collect();
        for expected in [
            "providers.out.kind",
            "channels.lobby.provider",
            "plugins.p.channels",
            "plugins.p.events",
            "plugins.p.schedules.tick",
            "plugins.p.limits.memory_mb",
            "plugins.p.limits.deadline_ms",
            "plugins.p.settings.token",
        ] {
            assert!(keys.contains(&expected), "missing {expected} in {keys:?}");
        }
        let text = err.to_string();
        assert!(text.starts_with("botbox.toml has 8 problem(s)"), "{text}");
        assert!(text.contains("ghost"), "{text}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = parse("[plugins.p]\npath = \n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("botbox.toml: line 2"), "{text}");
    }

    #[test]
    fn typos_in_known_sections_are_refused() {
        let err = parse("[plugins.p]\npath = \"p.wasm\"\nchanels = []\n").unwrap_err();
        assert!(err.to_string().contains("chanels"), "{err}");
    }

    #[test]
    fn a_registry_plugin_is_pinned_and_compiled_from_the_pull_cache() {
        let hex = "3b1f5c6e0d4a2b8f9e7c1d0a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8";
        let c = parse(&format!(
            "[plugins.p]\npath = \"oci://127.0.0.1:5000/bots/p:1.0\"\nsha256 = \"sha256:{hex}\"\n\
             [plugins.p.registry]\nmax_blob_mb = 8\n"
        ))
        .unwrap();
        let p = &c.plugins["p"];
        assert!(matches!(&p.source, PluginSource::Oci(r) if r.repository == "bots/p"));
        assert_eq!(p.sha256.map(|d| d.hex()), Some(hex.to_string()));
        assert_eq!(
            p.path,
            Path::new("/cfg/.botbox/components/sha256").join(format!("{hex}.wasm"))
        );
        assert_eq!(p.registry.max_blob_bytes, 8 << 20);
        assert!(p.registry.username.is_none());
        // A file keeps its path; its pin is optional.
        let c = parse("[plugins.p]\npath = \"p.wasm\"\n").unwrap();
        assert_eq!(
            c.plugins["p"].source,
            PluginSource::File("/cfg/p.wasm".into())
        );
        assert_eq!(c.plugins["p"].sha256, None);
    }

    #[test]
    fn registry_credentials_are_read_from_a_secret_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hunter2-registry\n").unwrap();
        let hex = "3b1f5c6e0d4a2b8f9e7c1d0a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8";
        let c = Config::parse(
            &format!(
                "[plugins.p]\npath = \"oci://r.example/p:1\"\nsha256 = \"{hex}\"\n\
                 [plugins.p.registry]\nusername = \"ci\"\npassword = {{ file = \"token\" }}\n"
            ),
            Path::new("botbox.toml"),
            dir.path(),
        )
        .unwrap();
        let registry = &c.plugins["p"].registry;
        assert_eq!(registry.username.as_deref(), Some("ci"));
        assert_eq!(
            registry.password.as_ref().map(Secret::expose),
            Some("hunter2-registry")
        );
        assert!(!format!("{:?}", c.plugins).contains("hunter2"));
    }

    #[test]
    fn registry_plugin_mistakes_are_reported_by_key() {
        let err = parse(
            "[plugins.a]\npath = \"oci://r.example/bots/a:1\"\n\
             [plugins.b]\npath = \"oci://r.example/Bots\"\nsha256 = \"xyz\"\n\
             [plugins.c]\npath = \"c.wasm\"\n[plugins.c.registry]\nusername = \"u\"\n\
             [plugins.d]\npath = \"oci://r.example/d:1\"\nsha256 = \"00\"\n\
             [plugins.d.registry]\npassword = \"hunter2\"\nmax_blob_mb = 0\nproxy = 1\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.issues().iter().map(|i| i.key.as_str()).collect();
        for expected in [
            "plugins.a.sha256",
            "plugins.b.path",
            "plugins.b.sha256",
            "plugins.c.registry",
            "plugins.d.registry.password",
            "plugins.d.registry.max_blob_mb",
            "plugins.d.registry.proxy",
        ] {
            assert!(keys.contains(&expected), "missing {expected} in {keys:?}");
        }
        let text = err.to_string();
        assert!(text.contains("is required for a registry source"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn inline_secrets_are_refused() {
        let mut t = toml::Table::new();
        t.insert("secret".into(), toml::Value::String("plain".into()));
        let e = take_secret(&t, "secret", "providers.x", Path::new(".")).unwrap_err();
        assert_eq!(e.key, "providers.x.secret");
        assert!(e.message.contains("inline secrets"));
        assert!(!e.message.contains("plain"));
    }
}
