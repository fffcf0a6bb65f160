//! Accepting messages and handing them to providers.
//!
//! `accept` is the last step of `send-broadcast`: it returns the receipt.
//! Delivery then runs on its own task, so a plugin never waits for a
//! provider. The durable outbox, throttles and retries build on this seam.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use tokio_util::task::TaskTracker;

use crate::config::{ChannelConfig, Config};
use crate::providers::{ChannelRules, DeliveryOutcome, Provider, Registry};
use crate::wit::types::{BroadcastError, Message, Receipt};

/// A configured channel bound to its provider account.
pub struct Channel {
    pub name: String,
    pub provider_name: String,
    pub provider: Arc<dyn Provider>,
    pub config: ChannelConfig,
    pub rules: ChannelRules,
}

/// A message the host accepted, as observers (the CLI, tests) see it.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub plugin: String,
    pub channel: String,
    pub receipt: Receipt,
    pub message: Message,
}

/// How an accepted message ended, as observers see it.
#[derive(Debug, Clone)]
pub struct Finished {
    pub plugin: String,
    pub receipt_id: String,
    pub channel: String,
    pub outcome: DeliveryOutcome,
}

/// Every accepted message and every finished delivery, for whoever listens.
#[derive(Clone)]
pub struct DeliveryObservers {
    pub accepted: broadcast::Sender<Accepted>,
    pub finished: broadcast::Sender<Finished>,
}

impl Default for DeliveryObservers {
    fn default() -> Self {
        DeliveryObservers {
            accepted: broadcast::channel(1024).0,
            finished: broadcast::channel(1024).0,
        }
    }
}

/// Receipts by (plugin, channel, idempotency key), bounded, oldest evicted.
#[derive(Default)]
struct IdempotencyIndex {
    receipts: HashMap<(String, String, String), Receipt>,
    order: VecDeque<(String, String, String)>,
}

impl IdempotencyIndex {
    const MAX: usize = 50_000;

    fn get(&self, key: &(String, String, String)) -> Option<Receipt> {
        self.receipts.get(key).cloned()
    }

    fn insert(&mut self, key: (String, String, String), receipt: Receipt) {
        if self.receipts.insert(key.clone(), receipt).is_none() {
            self.order.push_back(key);
            while self.order.len() > Self::MAX {
                if let Some(old) = self.order.pop_front() {
                    self.receipts.remove(&old);
                }
            }
        }
    }
}

pub struct Delivery {
    channels: BTreeMap<String, Arc<Channel>>,
    observers: DeliveryObservers,
    idempotency: Mutex<IdempotencyIndex>,
    sequence: AtomicU64,
    tasks: TaskTracker,
}

impl Delivery {
    pub fn new(config: &Config, registry: &Registry, observers: DeliveryObservers) -> Delivery {
        let mut channels = BTreeMap::new();
        for (name, channel_config) in &config.channels {
            // Config validation guarantees the provider exists.
            if let Some(provider) = registry.get(&channel_config.provider) {
                channels.insert(
                    name.clone(),
                    Arc::new(Channel {
                        name: name.clone(),
                        provider_name: channel_config.provider.clone(),
                        provider: provider.clone(),
                        config: channel_config.clone(),
                        rules: provider.rules(channel_config),
                    }),
                );
            }
        }
        Delivery {
            channels,
            observers,
            idempotency: Mutex::new(IdempotencyIndex::default()),
            sequence: AtomicU64::new(0),
            tasks: TaskTracker::new(),
        }
    }

    pub fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels.get(name).cloned()
    }

    pub fn observers(&self) -> &DeliveryObservers {
        &self.observers
    }

    fn next_receipt_id(&self) -> String {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("r{ms:x}-{seq:x}")
    }

    /// Accepts a checked message and starts its delivery.
    pub fn accept(
        &self,
        plugin: &str,
        channel: &Arc<Channel>,
        mut message: Message,
    ) -> Result<Receipt, BroadcastError> {
        let key = message
            .idempotency_key
            .as_ref()
            .map(|k| (plugin.to_string(), channel.name.clone(), k.clone()));
        let mut index = self
            .idempotency
            .lock()
            .map_err(|_| BroadcastError::Internal("idempotency index unavailable".into()))?;
        if let Some(key) = &key
            && let Some(existing) = index.get(key)
        {
            return Ok(existing);
        }
        if message.sender.is_none() {
            message.sender = channel.config.default_sender.clone();
        }
        let receipt = Receipt {
            id: self.next_receipt_id(),
            eta_ms: 0,
        };
        if let Some(key) = key {
            index.insert(key, receipt.clone());
        }
        drop(index);

        let _ = self.observers.accepted.send(Accepted {
            plugin: plugin.to_string(),
            channel: channel.name.clone(),
            receipt: receipt.clone(),
            message: message.clone(),
        });
        let channel = channel.clone();
        let finished = self.observers.finished.clone();
        let plugin = plugin.to_string();
        let receipt_id = receipt.id.clone();
        self.tasks.spawn(async move {
            let outcome = deliver_now(&channel, &message).await;
            match &outcome {
                DeliveryOutcome::Delivered { .. } => {
                    tracing::debug!(plugin = %plugin, channel = %channel.name, receipt = %receipt_id, "delivered")
                }
                other => {
                    tracing::warn!(plugin = %plugin, channel = %channel.name, receipt = %receipt_id, outcome = ?other, "not delivered")
                }
            }
            let _ = finished.send(Finished {
                plugin,
                receipt_id,
                channel: channel.name.clone(),
                outcome,
            });
        });
        Ok(receipt)
    }

    /// Waits until every delivery started so far has finished.
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }
}

/// Plans a message and sends its parts in order, stopping at the first
/// part that does not go through.
async fn deliver_now(channel: &Channel, message: &Message) -> DeliveryOutcome {
    let parts = match channel
        .provider
        .plan(&channel.name, &channel.config, message)
        .await
    {
        Ok(parts) => parts,
        Err(outcome) => return outcome,
    };
    let mut ids = Vec::new();
    for part in &parts {
        match channel.provider.send(&channel.config, part).await {
            DeliveryOutcome::Delivered { provider_ids } => ids.extend(provider_ids),
            other => return other,
        }
    }
    DeliveryOutcome::Delivered { provider_ids: ids }
}
