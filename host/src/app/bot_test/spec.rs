//! The test file: a plugin's behaviour cases in TOML, the project's config
//! language (`botbox.toml`), read with the same parser and the same rules
//! for settings and limits.
//!
//! ```toml
//! component = "my-bot.wasm"            # relative to this file
//!
//! [defaults]                           # every case starts from these
//! settings = { sender = "Tester" }
//! clock = "2026-11-20T09:00:00Z"
//!
//! [[case]]
//! name = "hello greets on lobby"
//! events = [{ custom = { name = "hello", payload = "Ada" } }]
//! result = "ok"                        # of the last event; the others must be ok
//! broadcasts = [{ channel = "lobby", text = "Hello, Ada!", sender = "Tester" }]
//! logs = [{ level = "info", matches = "greeted" }]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// One test file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The component under test, relative to the file; `--component`
    /// overrides it.
    pub component: Option<PathBuf>,
    /// What every case starts from.
    #[serde(default)]
    pub defaults: CaseSetup,
    /// The cases, in the order they run.
    #[serde(default, rename = "case")]
    pub cases: Vec<Case>,
}

/// What a case runs with. Each key left out of a case comes from
/// `[defaults]`; settings are merged key by key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseSetup {
    /// The plugin's settings (`plugins.NAME.settings`).
    #[serde(default)]
    pub settings: toml::Table,
    /// What the operator grants; what the plugin asks for when absent.
    pub grants: Option<GrantsSpec>,
    /// The plugin's limits (`plugins.NAME.limits`, same keys).
    pub limits: Option<toml::Table>,
    /// The wall clock, fixed at this RFC 3339 instant; the system clock
    /// when absent.
    pub clock: Option<String>,
    /// What the provider does with every message: its delivery outcome.
    pub delivery: Option<OutcomeSpec>,
    /// How long to wait for deliveries, such as `10s` (default 10 s).
    pub wait: Option<String>,
}

/// The operator's grants for a case.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsSpec {
    /// Channels granted (each gets a channel of the case's provider).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Event kinds granted (`chat-message`, `meeting`, `schedule`,
    /// `delivery`, `custom`).
    #[serde(default)]
    pub events: Vec<String>,
    /// Schedules granted, name to spec (`every 5m`, `cron 0 9 * * *`).
    #[serde(default)]
    pub schedules: BTreeMap<String, String>,
}

/// What the provider behind every channel of a case does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeSpec {
    /// Delivered at the first attempt (the console provider).
    Delivered,
    /// The provider refuses every attempt with its rate-limit answer.
    RateLimited,
    /// The provider answers every attempt with an HTTP 502 from its proxy.
    ServerError,
    /// The provider refuses the message with its own error code, for good.
    Rejected,
    /// The provider holds every request without answering, past the
    /// provider's request timeout (set short for the case), at every
    /// attempt.
    Timeout,
    /// The provider refuses the host's credentials at every attempt
    /// (Tencent's "UserSig expired", 70001, even for a fresh one).
    CredentialsExpired,
}

/// One case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What it checks, shown in the report.
    pub name: String,
    /// Its own settings (merged over the defaults').
    #[serde(default)]
    pub settings: toml::Table,
    /// Its grants.
    pub grants: Option<GrantsSpec>,
    /// Its limits.
    pub limits: Option<toml::Table>,
    /// Its fixed clock.
    pub clock: Option<String>,
    /// Its delivery outcome.
    pub delivery: Option<OutcomeSpec>,
    /// Its wait for deliveries.
    pub wait: Option<String>,
    /// The steps, in order: events in the JSON shapes `botbox call`
    /// takes (`{ custom = { name = …, payload = … } }`, `{ schedule =
    /// "tick" }`, `{ chat-message = { … } }`, `{ meeting = { … } }`), and
    /// `{ advance = "90m" }`, which moves the fixed clock and fires the
    /// granted schedules due in that time.
    #[serde(default)]
    pub events: Vec<toml::Value>,
    /// The result of the last event (`ok`, `trap`, `timeout`,
    /// `out-of-memory`, `not-granted` or `{ error = "pattern" }`); every
    /// earlier event must be ok. Default `ok`.
    pub result: Option<ResultSpec>,
    /// Every broadcast accepted, in order; unchecked when absent.
    pub broadcasts: Option<Vec<BroadcastSpec>>,
    /// Log lines that must appear, in this order (others may come between).
    #[serde(default)]
    pub logs: Vec<LogSpec>,
    /// Every delivery report the plugin was handed, in order; unchecked
    /// when absent.
    pub reports: Option<Vec<ReportSpec>>,
}

impl Case {
    /// This case's setup: its own keys over the file's defaults.
    pub fn setup(&self, defaults: &CaseSetup) -> CaseSetup {
        let mut settings = defaults.settings.clone();
        settings.extend(self.settings.clone());
        CaseSetup {
            settings,
            grants: self.grants.clone().or_else(|| defaults.grants.clone()),
            limits: self.limits.clone().or_else(|| defaults.limits.clone()),
            clock: self.clock.clone().or_else(|| defaults.clock.clone()),
            delivery: self.delivery.or(defaults.delivery),
            wait: self.wait.clone().or_else(|| defaults.wait.clone()),
        }
    }
}

/// The expected result of an event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ResultSpec {
    /// `ok`, `trap`, `timeout`, `out-of-memory` or `not-granted`.
    Named(String),
    /// `handle` returned an error whose text matches this pattern.
    Error {
        /// A regular expression.
        error: String,
    },
}

/// An expected broadcast; a field left out is not checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastSpec {
    /// The channel.
    pub channel: Option<String>,
    /// The content as text: the text itself, or `[custom EVENT] DATA`,
    /// `[command] ACTION`, `[image] URL`… as `botbox call` shows it.
    pub text: Option<String>,
    /// A regular expression the content's text must match.
    pub matches: Option<String>,
    /// The sender the plugin set (`""`: none).
    pub sender: Option<String>,
    /// The conversation it answers into (`""`: none).
    #[serde(alias = "reply-to")]
    pub reply_to: Option<String>,
}

/// A log line that must appear.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSpec {
    /// `trace`, `debug`, `info`, `warn` or `error`; any when absent.
    pub level: Option<String>,
    /// A regular expression the line must match.
    pub matches: String,
}

/// An expected delivery report.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    /// The channel.
    pub channel: Option<String>,
    /// `delivered`, `partially-delivered`, `failed` or `cancelled`.
    pub outcome: Option<String>,
    /// A regular expression the outcome's text (the provider's code and
    /// reason) must match.
    pub matches: Option<String>,
    /// How many provider calls it took.
    pub attempts: Option<u32>,
}
