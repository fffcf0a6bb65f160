//! Delivery: the outbox, one throttled worker per provider endpoint, retries.
//!
//! `accept` is the last step of `send-broadcast`: it estimates when the
//! message can go out under the endpoint's throttle, refuses it if that is
//! past the channel's `max_delay`, and otherwise writes it to the outbox and
//! returns the receipt. A worker per (provider account, endpoint) then takes
//! messages in turn across plugins, plans them into parts, waits for the
//! throttle before each request, and records every outcome.

pub mod retry;
pub mod store;
pub mod throttle;

/// The outbox's earlier path: everything in it lives in [`store`] now.
pub use self::store as outbox;
/// The shared backend's earlier path.
pub use self::store::postgres;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ChannelConfig, Config, ConfigIssue};
use crate::providers::{ChannelRules, DeliveryOutcome, Part, Provider, Registry};
use crate::sanitize;
use crate::wit::types::{BroadcastError, Message, Receipt};

use self::retry::RetryPolicy;
use self::store::{
    Inserted, MessageState, OutboxError, OutboxRecord, OutboxStore, PartRecord, PartState,
    PluginBacklog, Reservation, Stores, ThrottleStore,
};
use self::throttle::{SharedClock, ThrottleKey};
use crate::providers::limits;

/// The most messages an endpoint holds waiting before `send-broadcast`
/// answers `backlog-full`.
pub const MAX_BACKLOG: usize = 1000;

/// The most provider requests an endpoint's waiting messages may take
/// (a message to ten Bitrix24 dialogs takes ten): past this, `backlog-full`.
pub const MAX_BACKLOG_REQUESTS: usize = 10 * MAX_BACKLOG;

/// Admission of plugin `plugin`'s next message, which takes `requests`
/// provider requests, onto an endpoint where `backlog` waits. Returns how
/// many requests go out before the message's last one, which is what the
/// throttle's estimate counts.
///
/// Fair between plugins (max-min): the endpoint's worker takes plugins in
/// turn, one message each, so the plugin's k-th waiting message goes after
/// at most k of each neighbour's, not after a neighbour's whole backlog: a
/// plugin that floods an endpoint does not push a neighbour's estimate (or
/// its `quota-exhausted`) back. The backlog of [`MAX_BACKLOG`] messages is
/// shared the same way: a plugin may fill what its neighbours leave idle,
/// but once it is full each plugin with messages waiting may still bring
/// its fair share (an equal part), up to twice [`MAX_BACKLOG`] in all.
pub fn admission(
    plugin: &str,
    backlog: &[PluginBacklog],
    requests: usize,
) -> Result<usize, BroadcastError> {
    let own = backlog.iter().find(|b| b.plugin == plugin);
    let (own_messages, own_requests) = own.map_or((0, 0), |b| (b.messages, b.requests));
    let total: usize = backlog.iter().map(|b| b.messages).sum();
    let active = 1 + backlog
        .iter()
        .filter(|b| b.plugin != plugin && b.messages > 0)
        .count();
    let share = MAX_BACKLOG / active;
    let idle = total < MAX_BACKLOG;
    if own_messages >= MAX_BACKLOG || total >= 2 * MAX_BACKLOG || (!idle && own_messages >= share) {
        return Err(BroadcastError::BacklogFull);
    }
    // The new message is the plugin's k-th; each neighbour sends at most k
    // of its messages (at their average cost) before it.
    let k = own_messages + 1;
    let neighbours: usize = backlog
        .iter()
        .filter(|b| b.plugin != plugin && b.messages > 0)
        .map(|b| (b.requests * k.min(b.messages)).div_ceil(b.messages))
        .sum();
    let position = neighbours + own_requests + requests;
    if position > MAX_BACKLOG_REQUESTS {
        return Err(BroadcastError::BacklogFull);
    }
    Ok(position)
}

/// How often an idle worker looks for messages other hosts accepted, when
/// the outbox is shared: only this host's own `send-broadcast` wakes it.
pub const SHARED_POLL: Duration = Duration::from_millis(200);

/// What waiting for the throttle came to.
enum Slot {
    /// Send now. The throttle counted the request at this time (in the
    /// clock the store used), to be moved later if the request left late
    /// (see [`ThrottleStore::answered`]).
    Go(u64),
    /// The host is stopping.
    Stopped,
    /// Another host holds the message now.
    Lost,
}

/// A provider account's rate-limited endpoint and its worker's state.
pub struct Endpoint {
    /// `provider-name/endpoint`, such as `em/all-users-broadcast`.
    pub key: String,
    pub provider: Arc<dyn Provider>,
    /// Its limits, as the throttle store is asked about them.
    pub throttle: ThrottleKey,
    wake: Notify,
}

/// A configured channel bound to its provider account and endpoint.
pub struct Channel {
    pub name: String,
    pub provider_name: String,
    pub provider: Arc<dyn Provider>,
    pub config: ChannelConfig,
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
    pub plugin: String,
    pub channel: String,
    pub receipt: Receipt,
    pub message: Message,
}

/// How an accepted message ended.
#[derive(Debug, Clone)]
pub struct Finished {
    pub plugin: String,
    pub receipt_id: String,
    pub channel: String,
    pub state: MessageState,
    pub attempts: u32,
    pub provider_ids: Vec<String>,
    /// What went wrong, per failed part, when something did.
    pub detail: Option<String>,
}

/// How long one request waited for its endpoint's throttle.
#[derive(Debug, Clone)]
pub struct Throttled {
    pub plugin: String,
    /// `provider-name/endpoint`.
    pub endpoint: String,
    pub waited: Duration,
}

/// Every accepted message, every throttle wait and every finished message,
/// for whoever listens.
#[derive(Clone)]
pub struct DeliveryObservers {
    pub accepted: broadcast::Sender<Accepted>,
    pub throttled: broadcast::Sender<Throttled>,
    pub finished: broadcast::Sender<Finished>,
}

impl Default for DeliveryObservers {
    fn default() -> Self {
        DeliveryObservers {
            accepted: broadcast::channel(4096).0,
            throttled: broadcast::channel(4096).0,
            finished: broadcast::channel(4096).0,
        }
    }
}

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
}

fn internal(e: OutboxError) -> BroadcastError {
    BroadcastError::Internal(format!(
        "the message was not accepted, because the outbox could not store it: {e}"
    ))
}

impl Delivery {
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
                        let provider_key = format!("providers.{}", channel_config.provider);
                        let options = config
                            .providers
                            .get(&channel_config.provider)
                            .map(|p| p.options.clone())
                            .unwrap_or_default();
                        let spec =
                            match limits::throttle_override(&options, endpoint_name, &provider_key)
                            {
                                Ok(Some(spec)) => spec,
                                Ok(None) => provider.default_throttle(endpoint_name),
                                Err(issue) => {
                                    issues.push(issue);
                                    provider.default_throttle(endpoint_name)
                                }
                            };
                        let throttle = ThrottleKey {
                            endpoint: key.clone(),
                            spec,
                            margin_ms: clock.clock_ms(throttle::ARRIVAL_JITTER),
                        };
                        // Daily counters survive restarts: the store reloads
                        // the sends still inside the longest window.
                        if let Err(e) = throttles.prepare(&throttle, now, false) {
                            tracing::warn!(endpoint = %key, "cannot read the throttle's history: {e}");
                        }
                        let endpoint = Arc::new(Endpoint {
                            key: key.clone(),
                            provider: provider.clone(),
                            throttle,
                            wake: Notify::new(),
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
        })
    }

    pub fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels.get(name).cloned()
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.endpoints.values()
    }

    pub fn observers(&self) -> &DeliveryObservers {
        &self.observers
    }

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

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    fn new_id(&self, now_ms: u64) -> String {
        let random: u32 = rand::rng().random();
        format!("m{now_ms:x}-{random:08x}")
    }

    /// Persists a checked message and returns its receipt, or refuses it
    /// when it could not go out within the channel's `max_delay`.
    pub fn accept(
        &self,
        plugin: &str,
        channel: &Arc<Channel>,
        mut message: Message,
    ) -> Result<Receipt, BroadcastError> {
        if message.sender.is_none() {
            message.sender = channel.config.default_sender.clone();
        }
        let endpoint = channel.endpoint_for(&message);
        let now = self.clock.now_ms();
        let requests = channel
            .provider
            .requests(&channel.config, &message)
            .clamp(1, MAX_BACKLOG_REQUESTS);
        let backlog = self
            .outbox
            .pending_by_plugin(&endpoint.key)
            .map_err(internal)?;
        let position = admission(plugin, &backlog, requests)?;
        let eta = self
            .throttles
            .estimate(&endpoint.throttle, position, now)
            .map_err(internal)?;
        let wait = eta.saturating_sub(now);
        let max_delay = channel.config.max_delay.as_millis() as u64;
        if wait > max_delay {
            // The plugin hears how long until a message sent then would
            // fit within the channel's max_delay.
            return Err(BroadcastError::QuotaExhausted(wait - max_delay));
        }
        let record = OutboxRecord {
            id: self.new_id(now),
            plugin: plugin.to_string(),
            channel: channel.name.clone(),
            endpoint: endpoint.key.clone(),
            message,
            state: MessageState::Queued,
            created_ms: now,
            next_attempt_ms: now,
            attempts: 0,
            planned: false,
            last_error: None,
            finished_ms: None,
        };
        let receipt = match self
            .outbox
            .insert_costed(&record, requests as u32)
            .map_err(internal)?
        {
            Inserted::Duplicate(id) => {
                return Ok(Receipt { id, eta_ms: 0 });
            }
            Inserted::New => Receipt {
                id: record.id,
                eta_ms: wait,
            },
        };
        endpoint.wake.notify_one();
        // Copies for listeners only when there are any: this is on the path
        // of every broadcast.
        if self.observers.accepted.receiver_count() > 0 {
            let _ = self.observers.accepted.send(Accepted {
                plugin: plugin.to_string(),
                channel: channel.name.clone(),
                receipt: receipt.clone(),
                message: record.message,
            });
        }
        Ok(receipt)
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

    /// Starts one worker per endpoint. They stop when `stop` is cancelled,
    /// after the request in flight, leaving the rest queued on disk.
    pub fn start(self: &Arc<Self>, stop: CancellationToken) -> TaskTracker {
        match self.outbox.recover() {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                "{n} message(s) were being sent when the host stopped; sending them again"
            ),
            Err(e) => tracing::error!("cannot recover the outbox: {e}"),
        }
        let tasks = TaskTracker::new();
        for endpoint in self.endpoints.values() {
            let delivery = self.clone();
            let endpoint = endpoint.clone();
            let stop = stop.clone();
            tasks.spawn(async move { delivery.run_endpoint(endpoint, stop).await });
        }
        tasks.spawn(store::prune_loop(
            self.outbox.clone(),
            self.clock.clone(),
            self.retention,
            stop,
        ));
        tasks.close();
        tasks
    }

    async fn sleep(&self, clock_ms: u64, stop: &CancellationToken, wake: Option<&Notify>) -> bool {
        let real = self.clock.real(clock_ms).min(Duration::from_secs(60));
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(real) => true,
            _ = async { match wake { Some(w) => w.notified().await, None => std::future::pending().await } } => true,
        }
    }

    async fn run_endpoint(&self, endpoint: Arc<Endpoint>, stop: CancellationToken) {
        let mut last_plugin: Option<String> = None;
        while !stop.is_cancelled() {
            let now = self.clock.now_ms();
            match self
                .outbox
                .next_due(&endpoint.key, now, last_plugin.as_deref())
            {
                Ok(Some(record)) => {
                    last_plugin = Some(record.plugin.clone());
                    self.process(&endpoint, record, &stop).await;
                }
                Ok(None) => {
                    let next = self.outbox.next_due_time(&endpoint.key).ok().flatten();
                    let mut wait = next.map(|t| t.saturating_sub(now)).unwrap_or(60_000);
                    if self.throttles.shared() {
                        wait = wait.min(self.clock.clock_ms(SHARED_POLL));
                    }
                    if !self.sleep(wait.max(1), &stop, Some(&endpoint.wake)).await {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(endpoint = %endpoint.key, "outbox read failed: {e}");
                    if !self.sleep(1000, &stop, None).await {
                        break;
                    }
                }
            }
        }
    }

    /// Waits for the throttle's slot for message `id`. The store decides
    /// (see [`ThrottleStore::take`]). A shared store that cannot be reached
    /// sends nothing: the throttle fails closed, since a host that cannot
    /// see the others' sends cannot know the quota.
    async fn take_slot(&self, endpoint: &Endpoint, id: &str, stop: &CancellationToken) -> Slot {
        let shared = self.throttles.shared();
        // Wake often enough to renew the claim well within its lease.
        let lease = self.outbox.lease().unwrap_or(Duration::from_secs(3));
        let renew = self.clock.clock_ms(lease / 3).max(1);
        // Ask a shared store again a little before the slot: its answer,
        // not this host's timer, decides, and a late wake-up would waste
        // the quota.
        let early = self.clock.clock_ms(Duration::from_millis(2));
        let mut warned = false;
        loop {
            let wait = match self.throttles.take(&endpoint.throttle, id, &*self.clock) {
                Ok(Reservation::Granted(at)) => return Slot::Go(at),
                Ok(Reservation::LeaseLost) => return Slot::Lost,
                Ok(Reservation::Wait(ms)) if shared => ms.saturating_sub(early).min(renew),
                Ok(Reservation::Wait(ms)) => ms,
                Err(e) => {
                    if !warned {
                        tracing::error!(endpoint = %endpoint.key, message = %id, "not sending until the shared throttle answers: {e}");
                        warned = true;
                    }
                    self.clock.clock_ms(Duration::from_secs(1))
                }
            };
            if !self.sleep(wait.max(1), stop, None).await {
                return Slot::Stopped;
            }
        }
    }

    async fn process(&self, endpoint: &Endpoint, record: OutboxRecord, stop: &CancellationToken) {
        if let Err(e) = self.try_process(endpoint, &record, stop).await {
            tracing::error!(endpoint = %endpoint.key, message = %record.id, "outbox write failed: {e}");
            let _ = self.outbox.requeue(
                &record.id,
                self.clock.now_ms() + 1000,
                record.attempts,
                &e.to_string(),
            );
        }
    }

    async fn try_process(
        &self,
        endpoint: &Endpoint,
        record: &OutboxRecord,
        stop: &CancellationToken,
    ) -> Result<(), OutboxError> {
        let id = &record.id;
        let Some(channel) = self.channels.get(&record.channel).cloned() else {
            let now = self.clock.now_ms();
            self.outbox.finish(
                id,
                MessageState::Failed,
                record.attempts,
                now,
                Some(&format!(
                    "channel `{}` is no longer configured",
                    record.channel
                )),
            )?;
            self.report(
                record,
                MessageState::Failed,
                record.attempts,
                vec![],
                Some("channel removed".into()),
            );
            return Ok(());
        };
        self.outbox.mark_sending(id)?;
        let mut attempts = record.attempts;
        if !record.planned {
            match endpoint
                .provider
                .plan(&channel.name, &channel.config, &record.message)
                .await
            {
                Ok(parts) => {
                    let (parts, absorbed) = self.merge_backlog(&channel, record, parts)?;
                    self.outbox.save_plan(id, &parts, &absorbed)?
                }
                Err(outcome) => {
                    attempts += 1;
                    return self.after_failure(record, attempts, outcome, &[]);
                }
            }
        }
        let parts = self.outbox.parts(id)?;
        for part in parts.iter().filter(|p| p.state == PartState::Queued) {
            // Credentials first, so a token fetch does not sit between the
            // throttle's slot and the request it allowed.
            if let Err(outcome) = endpoint.provider.prepare(&channel.config).await {
                attempts += 1;
                let parts_now = self.outbox.parts(id)?;
                return self.after_failure(record, attempts, outcome, &parts_now);
            }
            let asked = std::time::Instant::now();
            let stamp = match self.take_slot(endpoint, id, stop).await {
                Slot::Go(stamp) => stamp,
                Slot::Stopped => {
                    self.outbox.requeue(
                        id,
                        self.clock.now_ms(),
                        attempts,
                        "host stopped before sending",
                    )?;
                    return Ok(());
                }
                Slot::Lost => {
                    tracing::warn!(endpoint = %endpoint.key, message = %id, "another host took this message over (its lease ran out here); leaving it to that host");
                    return Ok(());
                }
            };
            let _ = self.observers.throttled.send(Throttled {
                plugin: record.plugin.clone(),
                endpoint: endpoint.key.clone(),
                waited: asked.elapsed(),
            });
            attempts += 1;
            let outcome = endpoint.provider.send(&channel.config, &part.part).await;
            // The request left somewhere between its stamp and now: a
            // starved CPU can hold it well past the stamp. Count it as late
            // as the answer allows, so the next one is spaced from when this
            // one can have arrived, not from its stamp.
            if let Err(e) = self
                .throttles
                .answered(&endpoint.throttle, stamp, &*self.clock)
            {
                tracing::warn!(endpoint = %endpoint.key, "cannot move a late send in the shared throttle: {e}");
            }
            match outcome {
                DeliveryOutcome::Delivered { provider_ids } => {
                    self.outbox.part_done(
                        id,
                        part.index,
                        PartState::Delivered,
                        &provider_ids,
                        None,
                    )?;
                }
                DeliveryOutcome::Rejected { code, reason } => {
                    let error = format!("{code}: {}", sanitize::for_log(&reason, 500));
                    tracing::warn!(endpoint = %endpoint.key, message = %id, part = part.index, "rejected: {error}");
                    self.outbox
                        .part_done(id, part.index, PartState::Failed, &[], Some(&error))?;
                }
                other => {
                    let parts_now = self.outbox.parts(id)?;
                    return self.after_failure(record, attempts, other, &parts_now);
                }
            }
        }
        let parts = self.outbox.parts(id)?;
        self.conclude(record, attempts, &parts)
    }

    /// When the endpoint's queue has backed up and the provider can carry
    /// several messages in one request (Tencent, with `merge = true`), takes
    /// the channel's next queued messages along in this one's single part.
    fn merge_backlog(
        &self,
        channel: &Channel,
        record: &OutboxRecord,
        mut parts: Vec<Part>,
    ) -> Result<(Vec<Part>, Vec<String>), OutboxError> {
        const MAX_MERGED: usize = 50;
        let mut absorbed = Vec::new();
        if parts.len() != 1 {
            return Ok((parts, absorbed));
        }
        let candidates = self.outbox.mergeable(
            &record.endpoint,
            &channel.name,
            self.clock.now_ms(),
            &record.id,
            MAX_MERGED,
        )?;
        for candidate in candidates {
            match channel
                .provider
                .merge(&channel.config, &parts[0], &candidate.message)
            {
                Some(merged) => {
                    parts[0] = merged;
                    absorbed.push(candidate.id);
                }
                None => break,
            }
        }
        if !absorbed.is_empty() {
            tracing::info!(channel = %channel.name, message = %record.id, merged = absorbed.len(), "queue backed up: merged into one request");
        }
        Ok((parts, absorbed))
    }

    /// A transient failure: retry later, or give up past the limits.
    fn after_failure(
        &self,
        record: &OutboxRecord,
        attempts: u32,
        outcome: DeliveryOutcome,
        parts: &[PartRecord],
    ) -> Result<(), OutboxError> {
        let now = self.clock.now_ms();
        let (hint, reason) = match &outcome {
            DeliveryOutcome::RetryLater { after, reason } => {
                (after.map(|d| d.as_millis() as u64), reason.clone())
            }
            DeliveryOutcome::QuotaExhausted { until, reason } => (
                until.map(|d| d.as_millis() as u64),
                format!("quota exhausted: {reason}"),
            ),
            DeliveryOutcome::CredentialsExpired { reason } => {
                (None, format!("credentials refused: {reason}"))
            }
            DeliveryOutcome::Rejected { code, reason } => {
                // A plan the provider refused for good.
                let error = format!("{code}: {reason}");
                self.outbox.finish(
                    &record.id,
                    MessageState::Failed,
                    attempts,
                    now,
                    Some(&error),
                )?;
                self.report(record, MessageState::Failed, attempts, vec![], Some(error));
                return Ok(());
            }
            DeliveryOutcome::Delivered { .. } => (None, String::new()),
        };
        let reason = sanitize::for_log(&reason, 500);
        let age = now.saturating_sub(record.created_ms);
        if self.retry.gives_up(attempts, age) {
            for p in parts.iter().filter(|p| p.state == PartState::Queued) {
                self.outbox.part_done(
                    &record.id,
                    p.index,
                    PartState::Failed,
                    &[],
                    Some(&reason),
                )?;
            }
            let parts = self.outbox.parts(&record.id)?;
            tracing::warn!(message = %record.id, attempts, "giving up: {reason}");
            if parts.is_empty() {
                // Planning itself kept failing (BigBlueButton's getMeetings
                // refused, say): nothing was sent. Only a plan that found
                // nobody to send to is delivered with no parts.
                self.outbox.finish(
                    &record.id,
                    MessageState::Failed,
                    attempts,
                    now,
                    Some(&reason),
                )?;
                self.report(record, MessageState::Failed, attempts, vec![], Some(reason));
                return Ok(());
            }
            return self.conclude(record, attempts, &parts);
        }
        let delay = self.retry.delay_ms(attempts, hint);
        tracing::info!(message = %record.id, attempts, delay_ms = delay, "will retry: {reason}");
        self.outbox
            .requeue(&record.id, now + delay, attempts, &reason)
    }

    fn conclude(
        &self,
        record: &OutboxRecord,
        attempts: u32,
        parts: &[PartRecord],
    ) -> Result<(), OutboxError> {
        let delivered = parts
            .iter()
            .filter(|p| p.state == PartState::Delivered)
            .count();
        let state = if delivered == parts.len() {
            MessageState::Delivered
        } else if delivered == 0 {
            MessageState::Failed
        } else {
            MessageState::Partial
        };
        let errors: Vec<String> = parts
            .iter()
            .filter_map(|p| {
                p.last_error
                    .as_ref()
                    .filter(|_| p.state == PartState::Failed)
                    .map(|e| {
                        if p.part.target.is_empty() {
                            e.clone()
                        } else {
                            format!("{}: {e}", p.part.target)
                        }
                    })
            })
            .collect();
        let detail = (!errors.is_empty()).then(|| errors.join("; "));
        let ids: Vec<String> = parts.iter().flat_map(|p| p.provider_ids.clone()).collect();
        let members = self.outbox.members(&record.id)?;
        self.outbox.finish(
            &record.id,
            state,
            attempts,
            self.clock.now_ms(),
            detail.as_deref(),
        )?;
        for member in &members {
            self.report(member, state, attempts, ids.clone(), detail.clone());
        }
        self.report(record, state, attempts, ids, detail);
        Ok(())
    }

    fn report(
        &self,
        record: &OutboxRecord,
        state: MessageState,
        attempts: u32,
        provider_ids: Vec<String>,
        detail: Option<String>,
    ) {
        match state {
            MessageState::Delivered => {
                tracing::debug!(plugin = %record.plugin, channel = %record.channel, message = %record.id, "delivered")
            }
            _ => {
                tracing::warn!(plugin = %record.plugin, channel = %record.channel, message = %record.id, state = state.as_str(), detail = detail.as_deref().unwrap_or(""), "not delivered")
            }
        }
        let _ = self.observers.finished.send(Finished {
            plugin: record.plugin.clone(),
            receipt_id: record.id.clone(),
            channel: record.channel.clone(),
            state,
            attempts,
            provider_ids,
            detail,
        });
        self.reports.notify_one();
    }

    /// Cancels a queued message, reporting it to its plugin.
    pub fn cancel(&self, id: &str) -> Result<bool, OutboxError> {
        let cancelled = self.outbox.cancel(id, self.clock.now_ms())?;
        if cancelled {
            self.reports.notify_one();
        }
        Ok(cancelled)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn b(plugin: &str, messages: usize, requests: usize) -> PluginBacklog {
        PluginBacklog {
            plugin: plugin.into(),
            messages,
            requests,
        }
    }

    #[test]
    fn admission_counts_requests_and_only_a_neighbours_turns() {
        // Alone: behind its own requests.
        assert_eq!(admission("a", &[b("a", 3, 30)], 10), Ok(40));
        // A flood of 500 ahead: the newcomer's first message waits one turn.
        assert_eq!(admission("b", &[b("a", 500, 500)], 1), Ok(2));
        // Its third waits three of the flood's, at their average cost.
        assert_eq!(admission("b", &[b("a", 500, 1000), b("b", 2, 2)], 1), Ok(9));
        // A neighbour with fewer messages than k counts all of them.
        assert_eq!(admission("b", &[b("a", 1, 7), b("b", 5, 5)], 1), Ok(13));
    }

    #[test]
    fn a_full_backlog_leaves_each_plugin_its_share() {
        let full = [b("a", MAX_BACKLOG, MAX_BACKLOG)];
        assert_eq!(admission("a", &full, 1), Err(BroadcastError::BacklogFull));
        assert!(admission("b", &full, 1).is_ok());
        let half = [
            b("a", MAX_BACKLOG, MAX_BACKLOG),
            b("b", MAX_BACKLOG / 2, 500),
        ];
        assert_eq!(admission("b", &half, 1), Err(BroadcastError::BacklogFull));
        assert!(admission("c", &half, 1).is_ok());
        // Requests are bounded too.
        let heavy = [b("a", 10, MAX_BACKLOG_REQUESTS)];
        assert_eq!(admission("a", &heavy, 1), Err(BroadcastError::BacklogFull));
    }
}
