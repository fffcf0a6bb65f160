//! Delivery: the outbox, one throttled worker per provider endpoint, retries.
//!
//! `accept` (`admit.rs`) is the last step of `send-broadcast`:
//! it estimates when the message can go out under the endpoint's throttle,
//! refuses it if that is past the channel's `max_delay`, and otherwise
//! writes it to the outbox and returns the receipt. A worker per (provider
//! account, endpoint) (`worker.rs`) then takes messages in
//! turn across plugins, plans them into parts, waits for the throttle
//! before each request, and records every outcome ([`retry`]).
//!
//! The throttle's decision is [`throttle`]'s; where its state lives, and
//! where messages live, is [`store`]'s: this module builds the channels and
//! endpoints from the config and holds the engine together.

mod admit;
pub mod retry;
pub mod store;
pub mod throttle;
mod view;
mod worker;

pub use self::admit::{MAX_BACKLOG, MAX_BACKLOG_REQUESTS, admission};
pub use self::view::{EndpointView, EndpointsNow, Refusal};
pub use self::worker::{MAX_IN_FLIGHT, SHARED_POLL, in_flight_limit};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

use crate::config::{ChannelConfig, Config, ConfigIssue};
use crate::providers::{ChannelRules, Provider, Registry};
use crate::wit::types::{Message, Receipt};

use self::retry::RetryPolicy;
use self::store::{MessageState, OutboxError, OutboxStore, Stores, ThrottleStore};
use self::throttle::{SharedClock, ThrottleKey};

/// A provider account's rate-limited endpoint and its worker's state.
pub struct Endpoint {
    /// `provider-name/endpoint`, such as `em/all-users-broadcast`.
    pub key: String,
    /// The endpoint's name at its provider, such as `send_group_msg`.
    pub name: &'static str,
    /// The provider account that sends through it.
    pub provider: Arc<dyn Provider>,
    /// Its limits, as the throttle store is asked about them.
    pub throttle: ThrottleKey,
    wake: Notify,
    /// The provider's last refusal (see `view.rs`).
    last_refusal: view::LastRefusal,
}

/// A configured channel bound to its provider account and endpoint.
pub struct Channel {
    /// The channel's name in the config.
    pub name: String,
    /// The name of the provider account it sends through.
    pub provider_name: String,
    /// That provider account.
    pub provider: Arc<dyn Provider>,
    /// The channel's config section.
    pub config: ChannelConfig,
    /// What the provider accepts on this channel (sizes, formats).
    pub rules: ChannelRules,
    /// Where broadcasts go.
    pub endpoint: Arc<Endpoint>,
    /// Every endpoint the channel's messages may count against, `endpoint`
    /// included, by name.
    pub routes: BTreeMap<&'static str, Arc<Endpoint>>,
}

impl Channel {
    /// The endpoint, and so the worker and throttle, a message goes through.
    pub fn endpoint_for(&self, message: &Message) -> &Arc<Endpoint> {
        let name = self.provider.route(&self.config, message);
        self.routes.get(name).unwrap_or(&self.endpoint)
    }
}

/// A message the host accepted, as observers (the CLI, tests) see it.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The plugin that sent it.
    pub plugin: String,
    /// The channel it was sent to.
    pub channel: String,
    /// The receipt the plugin got.
    pub receipt: Receipt,
    /// The message as accepted.
    pub message: Message,
}

/// How an accepted message ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The plugin that sent it.
    pub plugin: String,
    /// The id of the receipt the plugin got.
    pub receipt_id: String,
    /// The channel it was sent to.
    pub channel: String,
    /// Its final state.
    pub state: MessageState,
    /// Provider requests made for it.
    pub attempts: u32,
    /// The provider's ids of what it delivered.
    pub provider_ids: Vec<String>,
    /// What went wrong, per failed part, when something did.
    pub detail: Option<String>,
}

/// How long one request waited for its endpoint's throttle.
#[derive(Debug, Clone)]
pub struct Throttled {
    /// The plugin whose message waited.
    pub plugin: String,
    /// `provider-name/endpoint`.
    pub endpoint: String,
    /// How long it waited.
    pub waited: Duration,
}

/// A provider said "too fast", and one of an endpoint's histories slowed
/// down (see [`throttle::Slowdown`]).
#[derive(Debug, Clone)]
pub struct Slowed {
    /// The provider kind, such as `tencent`.
    pub provider_kind: &'static str,
    /// `provider-name/endpoint`.
    pub endpoint: String,
    /// Which of its histories: `endpoint`, `key` or `account`.
    pub limit: &'static str,
    /// The fraction of the documented rate now allowed (0.5 after one cut).
    pub factor: f64,
}

/// Every accepted message, every throttle wait, every slowdown and every
/// finished message, for whoever listens.
#[derive(Clone)]
pub struct DeliveryObservers {
    /// Every message accepted.
    pub accepted: broadcast::Sender<Accepted>,
    /// Every throttle wait.
    pub throttled: broadcast::Sender<Throttled>,
    /// Every slowdown after a provider's "too fast".
    pub slowed: broadcast::Sender<Slowed>,
    /// Every message finished.
    pub finished: broadcast::Sender<Finished>,
}

impl Default for DeliveryObservers {
    fn default() -> Self {
        DeliveryObservers {
            accepted: broadcast::channel(4096).0,
            throttled: broadcast::channel(4096).0,
            slowed: broadcast::channel(1024).0,
            finished: broadcast::channel(4096).0,
        }
    }
}

/// The delivery engine of one config: its channels and endpoints, the stores, the clock, the retry policy.
pub struct Delivery {
    channels: BTreeMap<String, Arc<Channel>>,
    endpoints: BTreeMap<String, Arc<Endpoint>>,
    outbox: Arc<dyn OutboxStore>,
    throttles: Arc<dyn ThrottleStore>,
    clock: SharedClock,
    retry: RetryPolicy,
    observers: DeliveryObservers,
    /// Wakes whoever reports finished messages to plugins.
    pub reports: Notify,
    /// `storage.retention`: finished messages older than this are pruned.
    retention: Duration,
    /// At most this many requests in flight per endpoint, below what its
    /// limits allow ([`in_flight_limit`]).
    max_in_flight: AtomicUsize,
    /// How often an idle worker on a shared store looks for other hosts'
    /// messages, in milliseconds ([`SHARED_POLL`] unless set).
    shared_poll_ms: AtomicU64,
}

impl Delivery {
    /// Builds the channels and endpoints of `config` over `stores` (one backend that is both stores converts: `Arc::new(SqliteOutbox::…)`). Every throttle problem in the config is reported together.
    pub fn new(
        config: &Config,
        registry: &Registry,
        stores: impl Into<Stores>,
        clock: SharedClock,
        observers: DeliveryObservers,
    ) -> Result<Delivery, Vec<ConfigIssue>> {
        let Stores { outbox, throttles } = stores.into();
        // Read once, then monotonic: see `Steady`.
        let clock: SharedClock = Arc::new(throttle::Steady::new(clock));
        let mut issues = Vec::new();
        let mut channels = BTreeMap::new();
        let mut endpoints: BTreeMap<String, Arc<Endpoint>> = BTreeMap::new();
        let now = clock.now_ms();
        for (name, channel_config) in &config.channels {
            // Config validation guarantees the provider exists.
            let Some(provider) = registry.get(&channel_config.provider) else {
                continue;
            };
            let broadcast = provider.endpoint(channel_config);
            let mut routes = BTreeMap::new();
            for endpoint_name in std::iter::once(broadcast)
                .chain(provider.reply_endpoints(channel_config).iter().copied())
            {
                let key = format!("{}/{endpoint_name}", channel_config.provider);
                let endpoint = match endpoints.get(&key) {
                    Some(e) => e.clone(),
                    None => {
                        let spec = match registry.throttle(&channel_config.provider, endpoint_name)
                        {
                            Ok(spec) => spec,
                            Err((issue, default)) => {
                                issues.push(issue);
                                default
                            }
                        };
                        let throttle = ThrottleKey {
                            endpoint: key.clone(),
                            spec,
                            margin_ms: clock.clock_ms(throttle::ARRIVAL_JITTER),
                            per_key: provider.key_throttle(endpoint_name),
                            // One ceiling per account: its history is
                            // named after the account, so only that
                            // account's endpoints share it.
                            ceiling: provider.account_ceiling(endpoint_name).map(
                                |(ceiling, spec)| {
                                    (format!("{}/@{ceiling}", channel_config.provider), spec)
                                },
                            ),
                        };
                        // Daily counters survive restarts: the store reloads
                        // the sends still inside the longest window.
                        if let Err(e) = throttles.prepare(&throttle, now, false) {
                            tracing::warn!(endpoint = %key, "cannot read the throttle's history: {e}");
                        }
                        let endpoint = Arc::new(Endpoint {
                            key: key.clone(),
                            name: endpoint_name,
                            provider: provider.clone(),
                            throttle,
                            wake: Notify::new(),
                            last_refusal: Default::default(),
                        });
                        endpoints.insert(key, endpoint.clone());
                        endpoint
                    }
                };
                routes.insert(endpoint_name, endpoint);
            }
            let Some(endpoint) = routes.get(broadcast).cloned() else {
                continue;
            };
            channels.insert(
                name.clone(),
                Arc::new(Channel {
                    name: name.clone(),
                    provider_name: channel_config.provider.clone(),
                    provider: provider.clone(),
                    config: channel_config.clone(),
                    rules: provider.rules(channel_config),
                    endpoint,
                    routes,
                }),
            );
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Delivery {
            channels,
            endpoints,
            outbox,
            throttles,
            clock,
            retry: RetryPolicy::default(),
            observers,
            reports: Notify::new(),
            retention: config.storage.retention,
            max_in_flight: AtomicUsize::new(MAX_IN_FLIGHT),
            shared_poll_ms: AtomicU64::new(SHARED_POLL.as_millis() as u64),
        })
    }

    /// Caps the requests each endpoint's worker has in flight at `n` (at
    /// least 1), below what the endpoint's limits allow; workers started
    /// after this read it. 1 sends one request at a time, as hosts before
    /// concurrent delivery did.
    pub fn set_max_in_flight(&self, n: usize) {
        self.max_in_flight.store(n.max(1), Ordering::Relaxed);
    }

    fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    /// Sets how often an idle worker on a shared store looks for messages
    /// other hosts accepted ([`SHARED_POLL`] by default). This host's own
    /// accepts wake it at once whatever this is.
    pub fn set_shared_poll(&self, every: Duration) {
        let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
        self.shared_poll_ms.store(ms, Ordering::Relaxed);
    }

    fn shared_poll(&self) -> Duration {
        Duration::from_millis(self.shared_poll_ms.load(Ordering::Relaxed))
    }

    /// Wakes `endpoint`'s worker: a message for it was just committed to
    /// the outbox. The one place an accept reaches the worker, called
    /// after the write that makes the message durable, so the worker never
    /// looks before the row is there; a wake with the worker busy is kept
    /// for its next look (`Notify` stores one permit).
    pub(crate) fn committed(&self, endpoint: &Endpoint) {
        endpoint.wake.notify_one();
    }

    /// The channel configured under `name`.
    pub fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels.get(name).cloned()
    }

    /// Every endpoint a channel sends through, once each.
    pub fn endpoints(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.endpoints.values()
    }

    /// Who hears about accepted, throttled and finished messages.
    pub fn observers(&self) -> &DeliveryObservers {
        &self.observers
    }

    /// The outbox.
    pub fn outbox(&self) -> &Arc<dyn OutboxStore> {
        &self.outbox
    }

    /// Where the throttles keep their state.
    pub fn throttles(&self) -> &Arc<dyn ThrottleStore> {
        &self.throttles
    }

    /// Both stores, for the next generation after a reload.
    pub fn stores(&self) -> Stores {
        Stores {
            outbox: self.outbox.clone(),
            throttles: self.throttles.clone(),
        }
    }

    /// The clock the throttles count in (monotonic; see [`throttle::Steady`]).
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Reloads every endpoint's send history from the outbox: after a
    /// config reload, the previous engine's last sends count here too.
    pub fn reload_history(&self) {
        let now = self.clock.now_ms();
        for endpoint in self.endpoints.values() {
            if let Err(e) = self.throttles.prepare(&endpoint.throttle, now, true) {
                tracing::warn!(endpoint = %endpoint.key, "cannot read the throttle's history: {e}");
            }
        }
    }

    /// Cancels a queued message, reporting it to its plugin.
    pub fn cancel(&self, id: &str) -> Result<bool, OutboxError> {
        let cancelled = self.outbox.cancel(id, self.clock.now_ms())?;
        if cancelled {
            self.reports.notify_one();
        }
        Ok(cancelled)
    }

    /// Queues a failed, partial or cancelled message again, as
    /// `botbox outbox retry` does, and wakes its endpoint's worker so it goes
    /// out now rather than at the worker's next look at the outbox.
    pub fn retry(&self, id: &str) -> Result<bool, OutboxError> {
        let retried = self.outbox.retry(id, self.clock.now_ms())?;
        if retried
            && let Some(record) = self.outbox.get(id)?
            && let Some(endpoint) = self.endpoints.get(&record.endpoint)
        {
            endpoint.wake.notify_one();
        }
        Ok(retried)
    }

    /// Waits until each receipt has a final state, or the timeout passes.
    /// Returns the ids still open.
    pub async fn wait_for(&self, ids: &[String], timeout: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let open: Vec<String> = ids
                .iter()
                .filter(|id| !matches!(self.outbox.get(id), Ok(Some(r)) if r.state.is_final()))
                .cloned()
                .collect();
            if open.is_empty() || tokio::time::Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
