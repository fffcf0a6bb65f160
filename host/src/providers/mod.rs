//! Providers: one module per chat service, behind one small trait.
//!
//! A provider knows three things about its service: which messages it
//! accepts (checked at `send-broadcast` time, so a plugin hears "invalid" at
//! once rather than in a failed delivery report), how to build, sign and send
//! a request, and how to read the answer. A provider that sends callbacks
//! also knows how to authenticate and read them ([`inbound::Inbound`]).
//! Adding a provider means its folder under `providers/` (outbound, inbound,
//! options, tests), its `mod` line and one line in [`KINDS`].

pub mod bigbluebutton;
pub mod bitrix24;
mod common;
pub mod console;
pub mod easemob;
pub mod inbound;
pub mod limits;
#[cfg(test)]
mod setup_tests;
pub mod target;
pub mod tencent;
#[cfg(test)]
mod testing;

/// The unknown-key check every provider runs on its options (it lives with
/// the generic config checks).
pub use crate::config::unknown_keys;
pub use common::redact_text;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{ChannelConfig, Config, ConfigIssue};
use crate::wit::types::{BroadcastError, ContentKind, Message};

/// Every content kind, for providers that carry them all.
pub const ALL_CONTENT_KINDS: [ContentKind; 8] = [
    ContentKind::Text,
    ContentKind::Custom,
    ContentKind::Command,
    ContentKind::Image,
    ContentKind::File,
    ContentKind::Audio,
    ContentKind::Video,
    ContentKind::Location,
];

/// What a channel can carry, as its provider decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRules {
    /// The content kinds a message may have.
    pub accepts: Vec<ContentKind>,
    /// Longest text in one provider message, in characters.
    pub max_text_chars: u32,
    /// Whether longer text is split into ordered parts instead of refused.
    pub splits_long_text: bool,
    /// How many parts one message may be split into, when it splits.
    pub max_split_parts: u32,
    /// Longest sender name, in characters.
    pub max_sender_chars: u32,
}

/// How one provider request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Accepted by the provider, with its ids for what it stored.
    Delivered {
        /// The provider's ids of what it stored.
        provider_ids: Vec<String>,
    },
    /// Refused for good, with the provider's code and text.
    Rejected {
        /// The provider's error code.
        code: String,
        /// What the provider said, bounded and scrubbed.
        reason: String,
    },
    /// Try again later: rate limited, a 5xx or a network error. `after` is
    /// the provider's own hint, when it gives one.
    RetryLater {
        /// When the provider asked to be called again.
        after: Option<std::time::Duration>,
        /// Why it failed this time.
        reason: String,
    },
    /// The provider said "too fast" (HTTP 429, Tencent 10023, Bitrix24
    /// `QUERY_LIMIT_EXCEEDED`): the request was not processed, and the
    /// history `limit` names is slowed down for every worker that uses it,
    /// not only this message retried.
    Throttled {
        /// When the provider asked to be called again, when it said.
        after: Option<std::time::Duration>,
        /// Which of the request's histories the provider refused.
        limit: RateLimited,
        /// What the provider said.
        reason: String,
    },
    /// The provider says a quota is used up until a reset (Easemob's daily
    /// limit); retrying sooner is pointless.
    QuotaExhausted {
        /// How long until the quota resets, when known.
        until: Option<std::time::Duration>,
        /// What the provider said.
        reason: String,
    },
    /// The host's credentials were refused; retrying needs new ones.
    CredentialsExpired {
        /// What the provider said.
        reason: String,
    },
}

/// Which history a provider's "too fast" was about (see
/// [`DeliveryOutcome::Throttled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimited {
    /// The endpoint's own limit (all its requests together).
    Endpoint,
    /// The request's key's limit (Tencent's per-group 40 per second).
    Key,
    /// The account-wide ceiling (Bitrix24's per-portal bucket).
    Account,
}

/// One provider request's worth of a message: a message is planned into
/// parts (one per BigBlueButton meeting or Bitrix24 dialog, times the parts
/// of a split text), and each part is sent, retried and recorded on its own.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Part {
    /// The conversation this part goes to (a meeting id, a dialog id), or
    /// empty when the provider call itself is the broadcast.
    pub target: String,
    /// The content of this part (a text part holds its slice of the text).
    pub message: Message,
    /// The provider's dedup value, fixed when the part is planned so every
    /// retry reuses it (Tencent's `Random`).
    pub dedup_key: Option<String>,
    /// Further messages carried in the same request, after `message`, when
    /// the provider merges a backed-up queue (see [`Provider::merge`]).
    #[serde(default)]
    pub merged: Vec<Message>,
}

/// What every provider gets when it is built.
#[derive(Clone)]
pub struct ProviderContext {
    /// One HTTP client for the whole host: rustls, timeouts, connection reuse.
    pub http: reqwest::Client,
    /// The folder relative paths (secret files) are resolved against.
    pub base_dir: std::path::PathBuf,
    /// Where rotating credentials (Bitrix24's OAuth pair) are kept.
    pub tokens: Arc<crate::storage::tokens::TokenStore>,
}

/// The HTTP client every provider shares.
///
/// It follows no redirects and sends no `Referer`: provider requests carry
/// credentials in the path (Bitrix24's webhook code), the query (Tencent's
/// UserSig) and the body (client secrets, refresh tokens), and a 307/308
/// would replay all of them to wherever `Location` points. A redirect is
/// reported as a provider error instead (see `common::read_reply`).
/// reqwest's own default is `Policy::limited(10)` with `Referer` on
/// (docs.rs/reqwest `ClientBuilder::redirect`, `ClientBuilder::referer`).
///
/// It is an error, not a fallback to `reqwest::Client::new()`, when the
/// client cannot be built: the default client follows redirects.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    http_client_with_timeout(DEFAULT_TIMEOUT)
}

/// The same client as [`http_client`], with `timeout` for each whole
/// request (connecting, sending and reading the answer); connecting alone
/// may take at most 5 s of it.
pub fn http_client_with_timeout(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("botbox/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// `providers.NAME.timeout`: how long one request to the provider may take
/// before the host gives up on it and the worker retries it later. Read by
/// the registry for every kind that makes requests.
pub const TIMEOUT_KEY: &str = "timeout";

/// A provider request's timeout when `timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// The shortest `timeout`: below it a loaded machine times out answers
/// that were on their way.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);

/// The longest `timeout`: a delivery worker waits this long for one
/// answer, while the endpoint's other messages wait behind it.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest a connection may take to open, within the timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads `providers.NAME.timeout` (`key` is `providers.NAME`): `None` when
/// it is absent. Written as the config's other durations (`15s`, `2m`) or
/// in milliseconds (`500ms`), from [`MIN_TIMEOUT`] to [`MAX_TIMEOUT`].
pub fn provider_timeout(options: &toml::Table, key: &str) -> Result<Option<Duration>, ConfigIssue> {
    let Some(value) = options.get(TIMEOUT_KEY) else {
        return Ok(None);
    };
    let issue = |message: String| ConfigIssue {
        key: format!("{key}.{TIMEOUT_KEY}"),
        message,
    };
    let usage = "write a duration such as \"15s\", \"2m\" or \"500ms\"";
    let Some(text) = value.as_str() else {
        return Err(issue(format!("must be a string; {usage}")));
    };
    let parsed = match text.trim().strip_suffix("ms") {
        Some(ms) => ms
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("`{}` is not a duration; {usage}", text.escape_debug())),
        None => crate::config::parse_duration(text)
            .map_err(|_| format!("`{}` is not a duration; {usage}", text.escape_debug())),
    };
    let timeout = parsed.map_err(issue)?;
    if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout) {
        return Err(issue(format!(
            "`{}` is out of range; a provider request timeout is from {}ms to {}s (default {}s)",
            text.escape_debug(),
            MIN_TIMEOUT.as_millis(),
            MAX_TIMEOUT.as_secs(),
            DEFAULT_TIMEOUT.as_secs()
        )));
    }
    Ok(Some(timeout))
}

/// A configured provider account.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The `kind` in the config, such as "bigbluebutton".
    fn kind(&self) -> &'static str;

    /// Checks a channel's provider-specific keys (`target` and the rest).
    fn check_channel(&self, name: &str, channel: &ChannelConfig) -> Vec<ConfigIssue>;

    /// What a channel of this provider carries.
    fn rules(&self, channel: &ChannelConfig) -> ChannelRules;

    /// Refuses a message the provider would refuse, before it is accepted.
    /// The generic checks of [`ChannelRules`] have already passed.
    fn validate(&self, channel: &ChannelConfig, message: &Message) -> Result<(), BroadcastError>;

    /// The rate-limited endpoint a channel's requests count against, such
    /// as "users-broadcast"; the throttle keys on (provider name, endpoint).
    fn endpoint(&self, _channel: &ChannelConfig) -> &'static str {
        "default"
    }

    /// Other endpoints a channel's replies may go through, each with its
    /// own documented limits and throttle (Tencent answers into one group
    /// with `send_group_msg`, not with the broadcast).
    fn reply_endpoints(&self, _channel: &ChannelConfig) -> &'static [&'static str] {
        &[]
    }

    /// The endpoint one message counts against: `endpoint`, unless a reply
    /// goes through one of `reply_endpoints`.
    fn route(&self, channel: &ChannelConfig, _message: &Message) -> &'static str {
        self.endpoint(channel)
    }

    /// The provider's documented limits for an endpoint; the operator may
    /// override them with `throttle` in the provider's config.
    fn default_throttle(&self, _endpoint: &str) -> crate::providers::limits::ThrottleSpec {
        // No documented limit: a conservative default.
        crate::providers::limits::ThrottleSpec::windows(&[(5, 1000)])
    }

    /// The limits each key of a keyed endpoint has on its own (Tencent's
    /// `send_group_msg`: 40 per second per group), on top of the endpoint's
    /// own; `None`: the provider does not key the endpoint.
    fn key_throttle(&self, _endpoint: &str) -> Option<crate::providers::limits::ThrottleSpec> {
        None
    }

    /// The key a part counts against on a keyed endpoint (a group id), as
    /// the provider keys it; `None`: no key.
    fn throttle_key(&self, _endpoint: &str, _part: &Part) -> Option<String> {
        None
    }

    /// The account-wide ceiling an endpoint counts against beside its own
    /// limits, shared with the account's other endpoints that name it: its
    /// name and limits. `None`: no documented ceiling above the endpoint.
    fn account_ceiling(
        &self,
        _endpoint: &str,
    ) -> Option<(&'static str, crate::providers::limits::ThrottleSpec)> {
        None
    }

    /// The execution time the provider reported for the endpoint's
    /// requests since this was last asked (Bitrix24's `time.operating`),
    /// which the endpoint's budget counts; `None`: none reported. The
    /// worker asks after each request, so it is that request's.
    fn take_reported_cost(&self, _endpoint: &str) -> Option<std::time::Duration> {
        None
    }

    /// How many requests `plan` is expected to make of `message`: targets
    /// times split parts. Admission counts these, not messages, against the
    /// endpoint's throttle. Where the targets are known only when sending
    /// (BigBlueButton's running meetings), the count last seen.
    fn requests(&self, _channel: &ChannelConfig, _message: &Message) -> usize {
        1
    }

    /// Expands a message into provider requests: targets times split parts.
    /// May call the provider (BigBlueButton lists running meetings). An
    /// empty plan means there is nobody to send to, which is not an error.
    async fn plan(
        &self,
        channel_name: &str,
        channel: &ChannelConfig,
        message: &Message,
    ) -> Result<Vec<Part>, DeliveryOutcome>;

    /// Whether [`Provider::merge`] can fold anything into a request of
    /// `channel` at all. A channel that cannot merge (the default) has its
    /// backlog left unread when a message is planned: one outbox read
    /// fewer for every message, which is most of them.
    fn merges(&self, _channel: &ChannelConfig) -> bool {
        false
    }

    /// Folds `next` into `part`, when the provider can carry both in one
    /// request and the channel allows it (Tencent: several messages in one
    /// `MsgBody` of at most 12,000 bytes). The engine offers this only when
    /// the endpoint's queue has backed up.
    fn merge(&self, _channel: &ChannelConfig, _part: &Part, _next: &Message) -> Option<Part> {
        None
    }

    /// Gets credentials ready (an app token, a signature) before the
    /// throttle grants a slot, so the request follows the slot at once.
    async fn prepare(&self, _channel: &ChannelConfig) -> Result<(), DeliveryOutcome> {
        Ok(())
    }

    /// Builds, signs and sends one part, and reads the answer.
    async fn send(&self, channel: &ChannelConfig, part: &Part) -> DeliveryOutcome;
}

/// Builds one provider account from its options: `(key, options, context)`,
/// `key` being `providers.NAME`.
pub type BuildProvider =
    fn(&str, &toml::Table, &ProviderContext) -> Result<Arc<dyn Provider>, Vec<ConfigIssue>>;

/// One provider kind's registration: how its accounts are built, and how
/// their callbacks are received. [`KINDS`] lists every kind.
#[derive(Clone, Copy)]
pub struct Kind {
    /// The `kind` in the config, such as "bigbluebutton".
    pub name: &'static str,
    /// Builds one account from its `[providers.NAME]` options (`key` is
    /// `providers.NAME`), reporting every problem with its key.
    pub build: BuildProvider,
    /// How its callbacks are received, when it sends any.
    pub inbound: Option<inbound::InboundKind>,
}

/// Every provider kind: the one registry, used for outbound
/// ([`Registry::from_config`]) and inbound (the webhook listener).
pub const KINDS: &[Kind] = &[
    console::KIND,
    bigbluebutton::KIND,
    tencent::KIND,
    easemob::KIND,
    bitrix24::KIND,
];

/// The registration of a provider kind.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// The kinds that send callbacks, as a sentence: "a, b and c".
pub fn inbound_kinds_text() -> String {
    let names: Vec<&str> = KINDS
        .iter()
        .filter(|k| k.inbound.is_some())
        .map(|k| k.name)
        .collect();
    match names.split_last() {
        None => "none".into(),
        Some((last, [])) => (*last).into(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// Every configured provider account, by its config name.
#[derive(Clone, Default)]
pub struct Registry {
    providers: BTreeMap<String, Arc<dyn Provider>>,
    /// Each account's `providers.NAME.throttle`, taken out of its options
    /// here, once for every kind, so no provider has to know the key.
    throttles: BTreeMap<String, toml::Table>,
}

impl Registry {
    /// Builds every provider of a config and checks every channel against
    /// its provider, reporting all problems at once.
    pub fn from_config(config: &Config) -> Result<Registry, Vec<ConfigIssue>> {
        let http = http_client().map_err(|e| {
            vec![ConfigIssue {
                key: "providers".into(),
                message: format!(
                    "cannot start the HTTP client for providers ({}); check the system's TLS setup",
                    e.without_url()
                ),
            }]
        })?;
        let context = ProviderContext {
            http,
            base_dir: config.base_dir.clone(),
            tokens: crate::storage::tokens::TokenStore::from_config(&config.storage),
        };
        let mut issues = Vec::new();
        let mut providers = BTreeMap::new();
        let mut throttles = BTreeMap::new();
        for (name, provider_config) in &config.providers {
            let key = format!("providers.{name}");
            let mut options = provider_config.options.clone();
            if let Some(throttle) = options.remove(limits::THROTTLE_KEY) {
                throttles.insert(
                    name.clone(),
                    toml::Table::from_iter([(limits::THROTTLE_KEY.to_owned(), throttle)]),
                );
            }
            // An account with its own timeout gets a client of its own;
            // the others share one (and its connection pool).
            let own_context;
            let account_context = match provider_timeout(&options, &key) {
                Ok(Some(timeout)) if timeout != DEFAULT_TIMEOUT => {
                    match http_client_with_timeout(timeout) {
                        Ok(http) => {
                            own_context = ProviderContext {
                                http,
                                ..context.clone()
                            };
                            &own_context
                        }
                        Err(e) => {
                            issues.push(ConfigIssue {
                                key: format!("{key}.{TIMEOUT_KEY}"),
                                message: format!(
                                    "cannot start the HTTP client for this provider ({}); check the system's TLS setup",
                                    e.without_url()
                                ),
                            });
                            continue;
                        }
                    }
                }
                Ok(_) => &context,
                Err(issue) => {
                    issues.push(issue);
                    &context
                }
            };
            match Self::build_provider(&provider_config.kind, &key, &options, account_context) {
                Ok(p) => {
                    providers.insert(name.clone(), p);
                }
                Err(mut e) => issues.append(&mut e),
            }
        }
        for (name, channel) in &config.channels {
            if let Some(p) = providers.get(&channel.provider) {
                issues.extend(p.check_channel(name, channel));
            }
        }
        if issues.is_empty() {
            Ok(Registry {
                providers,
                throttles,
            })
        } else {
            Err(issues)
        }
    }

    fn build_provider(
        kind: &str,
        key: &str,
        options: &toml::Table,
        context: &ProviderContext,
    ) -> Result<Arc<dyn Provider>, Vec<ConfigIssue>> {
        match self::kind(kind) {
            Some(k) => (k.build)(key, options, context),
            None => Err(vec![ConfigIssue {
                key: format!("{key}.kind"),
                message: format!(
                    "unknown provider kind `{kind}`; known: {}",
                    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
                ),
            }]),
        }
    }

    /// The provider account of that config name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.get(name)
    }

    /// The throttle of `endpoint` on account `name`: what
    /// `providers.NAME.throttle` says for it, else the provider's own
    /// default. A malformed override is an issue naming its key, and the
    /// default applies meanwhile.
    pub fn throttle(
        &self,
        name: &str,
        endpoint: &str,
    ) -> Result<limits::ThrottleSpec, (ConfigIssue, limits::ThrottleSpec)> {
        let default = || {
            self.providers
                .get(name)
                .map(|p| p.default_throttle(endpoint))
                .unwrap_or_default()
        };
        let Some(table) = self.throttles.get(name) else {
            return Ok(default());
        };
        match limits::throttle_override(table, endpoint, &format!("providers.{name}")) {
            Ok(Some(spec)) => Ok(spec),
            Ok(None) => Ok(default()),
            Err(issue) => Err((issue, default())),
        }
    }
}

#[cfg(test)]
mod registry_tests {
    use super::*;

    #[test]
    fn the_registry_names_every_kind_in_its_messages() {
        let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        assert_eq!(
            names,
            ["console", "bigbluebutton", "tencent", "easemob", "bitrix24"]
        );
        assert_eq!(
            inbound_kinds_text(),
            "bigbluebutton, tencent, easemob and bitrix24"
        );
        let context = testing::context();
        let Err(issues) =
            Registry::build_provider("slack", "providers.s", &toml::Table::new(), &context)
        else {
            panic!("an unknown kind was built");
        };
        assert_eq!(issues[0].key, "providers.s.kind");
        assert_eq!(
            issues[0].message,
            "unknown provider kind `slack`; known: console, bigbluebutton, tencent, easemob, bitrix24"
        );
    }

    /// `providers.NAME.timeout` is read for every kind that makes requests:
    /// in the config's durations or in milliseconds, within its bounds;
    /// anything else is an issue naming the key, and the console, which
    /// makes no requests, refuses it as unknown.
    #[test]
    fn the_registry_reads_and_bounds_every_accounts_request_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "tencent-test-key-0123456789").unwrap();
        let account = |name: &str, timeout: &str| {
            format!(
                r#"
[providers.{name}]
kind = "tencent"
url = "http://127.0.0.1:9"
sdkappid = 1400000001
identifier = "admin"
secret_key = {{ file = {key:?} }}
timeout = {timeout}
"#
            )
        };
        let good = [
            account("seconds", "\"30s\""),
            account("minutes", "\"2m\""),
            account("millis", "\"250ms\""),
            account("default", "\"15s\""),
        ]
        .concat();
        let config = Config::parse(&good, &dir.path().join("botbox.toml"), dir.path())
            .unwrap_or_else(|e| panic!("{e}"));
        if let Err(issues) = Registry::from_config(&config) {
            panic!("good timeouts were refused: {issues:?}");
        }
        let table: toml::Table = toml::from_str("timeout = \"250ms\"").unwrap();
        assert_eq!(
            provider_timeout(&table, "providers.t"),
            Ok(Some(Duration::from_millis(250)))
        );
        assert_eq!(
            provider_timeout(&toml::Table::new(), "providers.t"),
            Ok(None)
        );

        let bad = [
            account("short", "\"50ms\""),
            account("long", "\"1h\""),
            account("words", "\"soon\""),
            account("number", "15"),
        ]
        .concat()
            + "\n[providers.screen]\nkind = \"console\"\ntimeout = \"5s\"\n";
        let config = Config::parse(&bad, &dir.path().join("botbox.toml"), dir.path()).unwrap();
        let Err(issues) = Registry::from_config(&config) else {
            panic!("bad timeouts were accepted");
        };
        let message = |k: &str| {
            issues
                .iter()
                .find(|i| i.key == k)
                .map(|i| i.message.clone())
                .unwrap_or_else(|| panic!("no issue for {k}: {issues:?}"))
        };
        assert_eq!(
            message("providers.short.timeout"),
            "`50ms` is out of range; a provider request timeout is from 100ms to 300s (default 15s)"
        );
        assert!(message("providers.long.timeout").contains("out of range"));
        assert_eq!(
            message("providers.words.timeout"),
            "`soon` is not a duration; write a duration such as \"15s\", \"2m\" or \"500ms\""
        );
        assert!(message("providers.number.timeout").starts_with("must be a string"));
        assert!(message("providers.screen.timeout").starts_with("unknown key"));
        assert_eq!(issues.len(), 5, "{issues:?}");
    }

    /// `providers.NAME.throttle` is read by the registry for every kind: no
    /// provider lists it, each one's unknown-key message still names it, an
    /// override replaces the provider's default, and a malformed one is an
    /// issue with its key while the default applies.
    #[test]
    fn the_registry_reads_every_accounts_throttle_override() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "tencent-test-key-0123456789").unwrap();
        let text = format!(
            r#"
[providers.plain]
kind = "tencent"
url = "http://127.0.0.1:9"
sdkappid = 1400000001
identifier = "admin"
secret_key = {{ file = {key:?} }}

[providers.slow]
kind = "tencent"
url = "http://127.0.0.1:9"
sdkappid = 1400000001
identifier = "admin"
secret_key = {{ file = {key:?} }}
throttle = ["2/1s", "100/1d"]

[providers.bad]
kind = "tencent"
url = "http://127.0.0.1:9"
sdkappid = 1400000001
identifier = "admin"
secret_key = {{ file = {key:?} }}
throttle = 5

[providers.screen]
kind = "console"
throttle = {{ default = ["1/1s"] }}
"#
        );
        let config = Config::parse(&text, &dir.path().join("botbox.toml"), dir.path())
            .unwrap_or_else(|e| panic!("{e}"));
        let registry = Registry::from_config(&config).unwrap_or_else(|e| panic!("{e:?}"));
        let endpoint = "send_broadcast_msg";
        let default = registry.get("plain").unwrap().default_throttle(endpoint);
        assert_eq!(registry.throttle("plain", endpoint), Ok(default.clone()));
        assert_eq!(
            registry.throttle("slow", endpoint),
            Ok(limits::ThrottleSpec::parse(&["2/1s".into(), "100/1d".into()]).unwrap())
        );
        let Err((issue, fallback)) = registry.throttle("bad", endpoint) else {
            panic!("a malformed throttle was taken");
        };
        assert_eq!(issue.key, "providers.bad.throttle");
        assert_eq!(fallback, default);
        assert_eq!(
            registry.throttle("screen", "default"),
            Ok(limits::ThrottleSpec::parse(&["1/1s".into()]).unwrap())
        );

        // A misspelt key is refused, and the message names `throttle` among
        // the keys an account may have.
        let typo = text.replace("throttle = 5", "throtle = 5");
        let config = Config::parse(&typo, &dir.path().join("botbox.toml"), dir.path()).unwrap();
        let Err(issues) = Registry::from_config(&config) else {
            panic!("a misspelt key was accepted");
        };
        let issue = issues
            .iter()
            .find(|i| i.key == "providers.bad.throtle")
            .unwrap_or_else(|| panic!("{issues:?}"));
        assert!(issue.message.contains("throttle"), "{}", issue.message);
    }
}
