//! Providers: one module per chat service, behind one small trait.
//!
//! A provider knows three things about its service: which messages it
//! accepts (checked at `send-broadcast` time, so a plugin hears "invalid" at
//! once rather than in a failed delivery report), how to build, sign and send
//! a request, and how to read the answer. Adding a provider means one new
//! module, one line in [`Registry::build_provider`], and its tests.

pub mod console;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{ChannelConfig, Config, ConfigIssue};
use crate::wit::types::{BroadcastError, ContentKind, Message};

/// What a channel can carry, as its provider decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRules {
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

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Accepted by the provider, with its ids for what it stored.
    Delivered { provider_ids: Vec<String> },
    /// Refused for good, with the provider's code and text.
    Rejected { code: String, reason: String },
    /// Try again later: rate limited, a 5xx or a network error.
    RetryLater {
        after: Option<std::time::Duration>,
        reason: String,
    },
    /// The host's credentials were refused; retrying needs new ones.
    CredentialsExpired { reason: String },
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

    /// Sends one message to the channel's targets.
    async fn deliver(
        &self,
        channel_name: &str,
        channel: &ChannelConfig,
        message: &Message,
    ) -> DeliveryOutcome;
}

/// Every configured provider account, by its config name.
#[derive(Clone, Default)]
pub struct Registry {
    providers: BTreeMap<String, Arc<dyn Provider>>,
}

impl Registry {
    /// Builds every provider of a config and checks every channel against
    /// its provider, reporting all problems at once.
    pub fn from_config(config: &Config) -> Result<Registry, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut providers = BTreeMap::new();
        for (name, provider_config) in &config.providers {
            let key = format!("providers.{name}");
            match Self::build_provider(
                &provider_config.kind,
                &key,
                &provider_config.options,
                config,
            ) {
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
            Ok(Registry { providers })
        } else {
            Err(issues)
        }
    }

    fn build_provider(
        kind: &str,
        key: &str,
        options: &toml::Table,
        _config: &Config,
    ) -> Result<Arc<dyn Provider>, Vec<ConfigIssue>> {
        match kind {
            "console" => Ok(Arc::new(console::Console::from_options(key, options)?)),
            other => Err(vec![ConfigIssue {
                key: format!("{key}.kind"),
                message: format!("unknown provider kind `{other}`; known: console"),
            }]),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.get(name)
    }
}

/// Rejects keys a provider does not know, so a typo is an error and not a
/// silently ignored setting.
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
