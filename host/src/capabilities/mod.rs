//! The host side of each WIT import. Each capability borrows its slice of
//! the per-plugin [`PluginContext`] that every store of that plugin shares.

pub mod broadcast;
pub mod kv;
pub mod log;
pub mod rate;
pub mod settings;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use crate::config::{PluginConfig, PluginLimits};
use crate::delivery::Delivery;
use crate::wit::types::{EventKind, Manifest};

use self::kv::{KvLimits, KvStore};
use self::log::LogSink;
use self::rate::TokenBucket;

/// What a plugin may use: what it asked for in `describe`, intersected with
/// what the operator granted in `botbox.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub channels: BTreeSet<String>,
    pub events: Vec<EventKind>,
    pub schedules: BTreeSet<String>,
}

/// What a plugin asked for that the operator did not grant, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Denied {
    pub channels: Vec<String>,
    pub events: Vec<EventKind>,
    pub schedules: Vec<String>,
}

impl Grants {
    pub fn intersect(manifest: &Manifest, config: &PluginConfig) -> (Grants, Denied) {
        let mut grants = Grants::default();
        let mut denied = Denied::default();
        for c in &manifest.channels {
            if config.channels.contains(c) {
                grants.channels.insert(c.clone());
            } else {
                denied.channels.push(c.clone());
            }
        }
        for e in &manifest.events {
            if config.events.contains(e) {
                if !grants.events.contains(e) {
                    grants.events.push(*e);
                }
            } else {
                denied.events.push(*e);
            }
        }
        for s in &manifest.schedules {
            if config.schedules.contains_key(s) {
                grants.schedules.insert(s.clone());
            } else {
                denied.schedules.push(s.clone());
            }
        }
        (grants, denied)
    }

    pub fn allows_event(&self, kind: EventKind) -> bool {
        self.events.contains(&kind)
    }
}

/// Conversations a plugin has been told about (in chat-message and meeting
/// events), the only ones it may `reply-to`. Bounded: the oldest half is
/// forgotten when full.
#[derive(Debug, Default)]
pub struct Conversations {
    seen: HashSet<(String, String)>,
    order: Vec<(String, String)>,
}

impl Conversations {
    const MAX: usize = 10_000;

    pub fn remember(&mut self, channel: &str, conversation: &str) {
        let key = (channel.to_string(), conversation.to_string());
        if self.seen.insert(key.clone()) {
            self.order.push(key);
            if self.order.len() > Self::MAX {
                for old in self.order.drain(..Self::MAX / 2) {
                    self.seen.remove(&old);
                }
            }
        }
    }

    pub fn contains(&self, channel: &str, conversation: &str) -> bool {
        self.seen
            .contains(&(channel.to_string(), conversation.to_string()))
    }
}

/// Everything a plugin's stores share: its identity, grants, settings and
/// budgets, and handles to the host services its capabilities use.
pub struct PluginContext {
    pub name: String,
    pub manifest: Option<Manifest>,
    pub grants: Grants,
    pub settings: BTreeMap<String, String>,
    pub limits: PluginLimits,
    pub kv: Arc<KvStore>,
    pub kv_limits: KvLimits,
    pub log: Arc<LogSink>,
    pub broadcast_budget: Arc<Mutex<TokenBucket>>,
    pub conversations: Arc<Mutex<Conversations>>,
    pub delivery: Arc<Delivery>,
}

impl PluginContext {
    pub fn kv_limits(limits: &PluginLimits) -> KvLimits {
        KvLimits {
            max_key_bytes: limits.kv_max_key_bytes,
            max_value_bytes: limits.kv_max_value_bytes,
            max_total_bytes: limits.kv_max_total_bytes,
        }
    }

    pub fn broadcast_budget(limits: &PluginLimits) -> TokenBucket {
        TokenBucket::new(
            limits.broadcasts_per_minute,
            limits.broadcasts_per_minute as f64 / 60.0,
        )
    }
}
