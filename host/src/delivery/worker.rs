//! The workers: one per (provider account, endpoint). Each takes its
//! endpoint's messages in turn across plugins, plans them into parts, waits
//! for the throttle store's slot before each request, sends, and records
//! every outcome; transient failures go back to the queue ([`super::retry`]).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::store::{
    self, Delivered, MessageState, OutboxError, OutboxRecord, PartRecord, PartState, Plan,
    Reservation,
};
use super::throttle::{Limit, ThrottleKey};
use super::{Channel, Delivery, Endpoint, Finished, Slowed, Throttled};
use crate::providers::{DeliveryOutcome, Part, RateLimited};
use crate::sanitize;

/// How often an idle worker looks for messages other hosts accepted, when
/// the outbox is shared: only this host's own `send-broadcast` wakes it.
pub const SHARED_POLL: Duration = Duration::from_millis(200);

/// The most requests one endpoint's worker has in flight at once, however
/// generous the endpoint's limits (see [`in_flight_limit`]).
pub const MAX_IN_FLIGHT: usize = 16;

/// How many requests an endpoint may have in flight at once: as many as
/// the tightest of its limits lets through at any one instant (a window's
/// count, a bucket's burst, a day's count), at most [`MAX_IN_FLIGHT`]. So
/// a 1-per-second endpoint sends one at a time, as before, and a request's
/// late answer still holds the next one back (see
/// [`ThrottleStore::answered`](super::store::ThrottleStore::answered));
/// concurrent requests only go where several at once are within every
/// limit anyway. Each still takes its throttle slot first. An endpoint
/// with an execution-time budget sends one at a time: its provider
/// reports each request's cost in that request's answer, and costs are
/// charged to the request just answered.
pub fn in_flight_limit(key: &ThrottleKey) -> usize {
    let specs = std::iter::once(&key.spec)
        .chain(key.per_key.as_ref())
        .chain(key.ceiling.as_ref().map(|(_, spec)| spec));
    let mut limit = MAX_IN_FLIGHT;
    for limit_of in specs.flat_map(|spec| spec.limits.iter()) {
        let at_once = match limit_of {
            Limit::Window { count, .. } | Limit::PerDay { count, .. } => *count as usize,
            Limit::LeakyBucket { burst, .. } => *burst as usize,
            Limit::Budget { .. } => 1,
        };
        limit = limit.min(at_once);
    }
    limit.max(1)
}

/// A message whose last part was delivered, waiting for the write that
/// ends it with the others that end meanwhile.
struct Ending {
    /// The message.
    record: OutboxRecord,
    /// The messages carried inside its request, ended with it.
    members: Vec<OutboxRecord>,
    /// What is written.
    delivered: Delivered,
    /// Every part's provider ids, in part order, for the report.
    provider_ids: Vec<String>,
}

/// Calls of the messages an endpoint's worker runs together, made as one
/// store call: one transaction (and one fsync or one set of round trips)
/// for all instead of one each.
///
/// - The plans of the messages started together
///   (`OutboxStore::save_plans`): each plan is still on disk before its
///   message's first request (Tencent's dedup `Random` is drawn in the
///   plan, so a request sent again after a power cut must carry the same
///   one).
/// - On a shared store, the throttle slots those messages ask for next
///   (`ThrottleStore::take_many`): one transaction locks the endpoint's
///   throttle rows once for all of them, and each slot is still decided
///   in it, with every host's sends in view.
/// - On a shared store, the moves of the sends whose requests were
///   answered meanwhile (`ThrottleStore::answered_many`): one statement.
///
/// There is no timer. The worker polls its messages in one task; the first
/// to queue a call yields once, so that every other message started with
/// it reaches its own call, then makes the store call for whatever is
/// queued and answers each. A message alone waits for nothing but its own
/// call.
struct Batch<T, A> {
    queue: std::sync::Mutex<BatchQueue<T, A>>,
}

struct BatchQueue<T, A> {
    waiting: Vec<(T, oneshot::Sender<(T, A)>)>,
    /// Whether a message has taken it on to make the store call.
    leader: bool,
}

impl<T, A> Default for Batch<T, A> {
    fn default() -> Self {
        Batch {
            queue: std::sync::Mutex::new(BatchQueue {
                waiting: Vec::new(),
                leader: false,
            }),
        }
    }
}

impl<T, A> Batch<T, A> {
    /// Makes `item`'s call with the others queued meanwhile; `store` is
    /// called once for all of them by whichever message makes the call,
    /// and answers each, in order. Hands `item` back with its answer;
    /// `None` when nothing can be trusted of the call: the store answered
    /// the wrong count, or the message making it is gone (a panic).
    async fn run(&self, item: T, store: impl FnOnce(&[T]) -> Vec<A>) -> Option<(T, A)> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.waiting.push((item, tx));
            !std::mem::replace(&mut queue.leader, true)
        };
        if lead {
            tokio::task::yield_now().await;
            let waiting = {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                queue.leader = false;
                std::mem::take(&mut queue.waiting)
            };
            let (items, answer_to): (Vec<T>, Vec<_>) = waiting.into_iter().unzip();
            let answers = store(&items);
            // A wrong count answers nobody: each hears `None`.
            if answers.len() == items.len() {
                for ((item, answer), to) in items.into_iter().zip(answers).zip(answer_to) {
                    let _ = to.send((item, answer));
                }
            }
        }
        rx.await.ok()
    }
}

/// The plans of the messages an endpoint's worker starts together.
type PlanBatch = Batch<Plan, Result<(), OutboxError>>;

/// The throttle slots an endpoint's in-flight messages ask a shared store
/// for together: each asks with its request's key (`scope`) and its id.
type SlotBatch = Batch<(Option<String>, String), Result<Reservation, OutboxError>>;

/// The answered requests whose sends an endpoint's worker moves in a
/// shared store together: each with its request's key and its stamp.
type AnswerBatch = Batch<(Option<String>, u64), Result<(), OutboxError>>;

/// An endpoint worker's batches.
#[derive(Default)]
struct Batches {
    plans: PlanBatch,
    slots: SlotBatch,
    answers: AnswerBatch,
}

/// Answers `asked` (each item with its request's key), in order, with one
/// `call` for each key among them, made in the order the keys first
/// appear. A call that answers too few leaves the rest unanswered: an
/// error each, and they ask again.
fn per_scope<X, A>(
    asked: &[(Option<String>, X)],
    mut call: impl FnMut(Option<&str>, &[&X]) -> Vec<Result<A, OutboxError>>,
) -> Vec<Result<A, OutboxError>> {
    let mut answers: Vec<Option<Result<A, OutboxError>>> = asked.iter().map(|_| None).collect();
    let mut scopes: Vec<Option<&str>> = Vec::new();
    for (scope, _) in asked {
        if !scopes.contains(&scope.as_deref()) {
            scopes.push(scope.as_deref());
        }
    }
    for scope in scopes {
        let (at, items): (Vec<usize>, Vec<&X>) = asked
            .iter()
            .enumerate()
            .filter(|(_, (s, _))| s.as_deref() == scope)
            .map(|(i, (_, x))| (i, x))
            .unzip();
        for (i, answer) in at.into_iter().zip(call(scope, &items)) {
            answers[i] = Some(answer);
        }
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or(Err(OutboxError::Poisoned)))
        .collect()
}

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

impl Delivery {
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

    /// The endpoint's loop: claims due messages a batch at a time, sends up
    /// to [`in_flight_limit`] of them at once (one at a time per channel,
    /// so a conversation's messages arrive in order), and ends the ones
    /// delivered meanwhile in one write. Sleeps when nothing is due until
    /// an accept on this host wakes it ([`Endpoint::wake`]), the next retry
    /// falls due, or, on a shared store, the poll for other hosts' accepts.
    async fn run_endpoint(&self, endpoint: Arc<Endpoint>, stop: CancellationToken) {
        let endpoint = &*endpoint;
        let stop = &stop;
        let limit = in_flight_limit(&endpoint.throttle).min(self.max_in_flight());
        let mut claimed: VecDeque<OutboxRecord> = VecDeque::new();
        // Before `running`, whose messages borrow it.
        let batches = Batches::default();
        let batches = &batches;
        let mut running = FuturesUnordered::new();
        let mut busy: HashSet<String> = HashSet::new();
        let mut ended: Vec<Ending> = Vec::new();
        let mut last_plugin: Option<String> = None;
        // Whether the outbox may hold due messages not claimed yet: after
        // a wake, a full batch, or a wait that ran out.
        let mut look = true;
        while !stop.is_cancelled() {
            let room = limit.saturating_sub(running.len() + claimed.len());
            if look && room > 0 {
                let now = self.clock.now_ms();
                match self
                    .outbox
                    .claim_due(&endpoint.key, now, room, last_plugin.as_deref())
                {
                    Ok(batch) => {
                        look = batch.len() == room;
                        if let Some(last) = batch.last() {
                            last_plugin = Some(last.plugin.clone());
                        }
                        claimed.extend(batch);
                    }
                    Err(e) => {
                        tracing::error!(endpoint = %endpoint.key, "outbox read failed: {e}");
                        if running.is_empty() && claimed.is_empty() {
                            if !self.sleep(1000, stop, None).await {
                                break;
                            }
                            continue;
                        }
                    }
                }
            }
            // Start what may go now: each channel's next in claim order.
            let mut i = 0;
            while running.len() < limit && i < claimed.len() {
                if busy.contains(&claimed[i].channel) {
                    i += 1;
                    continue;
                }
                let Some(record) = claimed.remove(i) else {
                    break;
                };
                busy.insert(record.channel.clone());
                running.push(async move {
                    let channel = record.channel.clone();
                    (channel, self.process(endpoint, record, batches, stop).await)
                });
            }
            if running.is_empty() {
                let now = self.clock.now_ms();
                let next = self.outbox.next_due_time(&endpoint.key).ok().flatten();
                let mut wait = next.map(|t| t.saturating_sub(now)).unwrap_or(60_000);
                if self.throttles.shared() {
                    wait = wait.min(self.clock.clock_ms(self.shared_poll()));
                }
                if !self.sleep(wait.max(1), stop, Some(&endpoint.wake)).await {
                    break;
                }
                look = true;
                continue;
            }
            tokio::select! {
                Some((channel, ending)) = running.next() => {
                    busy.remove(&channel);
                    ended.extend(ending);
                    // Whatever else finished meanwhile ends in the same write.
                    while let Some(Some((channel, ending))) = running.next().now_or_never() {
                        busy.remove(&channel);
                        ended.extend(ending);
                    }
                    self.end_delivered(endpoint, &mut ended);
                }
                _ = endpoint.wake.notified() => look = true,
                _ = stop.cancelled() => {}
            }
        }
        // Stopping: what is in flight ends (a request waiting for its slot
        // goes back to the queue), what was claimed but not started goes
        // back untouched.
        while let Some((_, ending)) = running.next().await {
            ended.extend(ending);
        }
        self.end_delivered(endpoint, &mut ended);
        for record in claimed {
            if let Err(e) = self.outbox.requeue(
                &record.id,
                self.clock.now_ms(),
                record.attempts,
                "host stopped before sending",
            ) {
                tracing::error!(endpoint = %endpoint.key, message = %record.id, "cannot put a message back in the queue (it is sent again after a restart): {e}");
            }
        }
    }

    /// Writes the end of every message in `ended` at once, then reports
    /// them. If the write fails, each goes back to the queue, as any
    /// message whose outcome could not be written does (see `process`).
    fn end_delivered(&self, endpoint: &Endpoint, ended: &mut Vec<Ending>) {
        if ended.is_empty() {
            return;
        }
        let batch: Vec<Delivered> = ended.iter().map(|e| e.delivered.clone()).collect();
        match self.outbox.delivered(&batch) {
            Ok(()) => {
                for e in ended.drain(..) {
                    let Ending {
                        record,
                        members,
                        delivered,
                        provider_ids,
                    } = e;
                    for member in &members {
                        self.report(
                            member,
                            MessageState::Delivered,
                            delivered.attempts,
                            provider_ids.clone(),
                            None,
                        );
                    }
                    self.report(
                        &record,
                        MessageState::Delivered,
                        delivered.attempts,
                        provider_ids,
                        None,
                    );
                }
            }
            Err(e) => {
                tracing::error!(endpoint = %endpoint.key, messages = batch.len(), "outbox write failed: {e}");
                for e in ended.drain(..) {
                    let _ = self.outbox.requeue(
                        &e.record.id,
                        self.clock.now_ms() + 1000,
                        e.delivered.attempts,
                        "the outcome could not be written",
                    );
                }
            }
        }
    }

    /// Waits for the throttle's slot for message `id`. The store decides
    /// (see [`ThrottleStore::take`]). A shared store that cannot be reached
    /// sends nothing: the throttle fails closed, since a host that cannot
    /// see the others' sends cannot know the quota.
    async fn take_slot(
        &self,
        endpoint: &Endpoint,
        scope: Option<&str>,
        id: &str,
        slots: &SlotBatch,
        stop: &CancellationToken,
    ) -> Slot {
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
            let answer = if shared {
                // With the other in-flight messages that ask meanwhile.
                let asked = (scope.map(str::to_string), id.to_string());
                slots
                    .run(asked, |all| self.take_many(endpoint, all))
                    .await
                    .map_or(Err(OutboxError::Poisoned), |(_, answer)| answer)
            } else {
                self.throttles
                    .take(&endpoint.throttle, scope, id, &*self.clock)
            };
            let wait = match answer {
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

    /// The slots of `asked` (each a request's key and its message), in
    /// order: one store call for each key among them.
    fn take_many(
        &self,
        endpoint: &Endpoint,
        asked: &[(Option<String>, String)],
    ) -> Vec<Result<Reservation, OutboxError>> {
        per_scope(asked, |scope, ids: &[&String]| {
            let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
            self.throttles
                .take_many(&endpoint.throttle, scope, &ids, &*self.clock)
        })
    }

    /// Tells the store that the requests granted at the stamps of
    /// `answered` (each with its request's key) were answered now: one
    /// store call for each key among them.
    fn answered_many(
        &self,
        endpoint: &Endpoint,
        answered: &[(Option<String>, u64)],
    ) -> Vec<Result<(), OutboxError>> {
        per_scope(answered, |scope, stamps: &[&u64]| {
            let stamps: Vec<u64> = stamps.iter().map(|s| **s).collect();
            let all =
                self.throttles
                    .answered_many(&endpoint.throttle, scope, &stamps, &*self.clock);
            stamps
                .iter()
                .map(|_| match &all {
                    Ok(()) => Ok(()),
                    Err(e) => Err(OutboxError::Unavailable(e.to_string())),
                })
                .collect()
        })
    }

    /// One pass over a claimed message. Returns its ending when its last
    /// part was delivered, for the loop to write with others'.
    async fn process(
        &self,
        endpoint: &Endpoint,
        record: OutboxRecord,
        batches: &Batches,
        stop: &CancellationToken,
    ) -> Option<Ending> {
        // Each pass over a message is one span of the trace it was
        // accepted in, whichever worker or host takes it.
        let span = tracing::debug_span!(
            "deliver",
            endpoint = %endpoint.key,
            receipt = %record.id,
            attempts_before = record.attempts,
        );
        crate::telemetry::continue_from(&span, record.traceparent.as_deref());
        let processed = self.try_process(endpoint, record.clone(), batches, stop);
        match tracing::Instrument::instrument(processed, span).await {
            Ok(ending) => ending,
            Err(e) => {
                tracing::error!(endpoint = %endpoint.key, message = %record.id, "outbox write failed: {e}");
                let _ = self.outbox.requeue(
                    &record.id,
                    self.clock.now_ms() + 1000,
                    record.attempts,
                    &e.to_string(),
                );
                None
            }
        }
    }

    async fn try_process(
        &self,
        endpoint: &Endpoint,
        record: OutboxRecord,
        batches: &Batches,
        stop: &CancellationToken,
    ) -> Result<Option<Ending>, OutboxError> {
        let record = &record;
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
            return Ok(None);
        };
        // The claim marked it as being sent (`claim_due`).
        let mut attempts = record.attempts;
        // Whether messages may be carried inside this one's request (and
        // so must be reported with it).
        let mut carries = record.planned;
        let parts = if record.planned {
            self.outbox.parts(id)?
        } else {
            match endpoint
                .provider
                .plan(&channel.name, &channel.config, &record.message)
                .await
            {
                Ok(parts) => {
                    let (parts, absorbed) = self.merge_backlog(&channel, record, parts)?;
                    let plan = Plan {
                        id: id.clone(),
                        parts,
                        absorbed,
                    };
                    let Some((
                        Plan {
                            parts, absorbed, ..
                        },
                        saved,
                    )) = batches
                        .plans
                        .run(plan, |all| self.outbox.save_plans(all))
                        .await
                    else {
                        return Err(OutboxError::Poisoned);
                    };
                    saved?;
                    carries = !absorbed.is_empty();
                    // Just stored as planned: no need to read them back.
                    parts
                        .into_iter()
                        .enumerate()
                        .map(|(index, part)| PartRecord {
                            index: u32::try_from(index).unwrap_or(u32::MAX),
                            part,
                            state: PartState::Queued,
                            provider_ids: Vec::new(),
                            last_error: None,
                        })
                        .collect()
                }
                Err(outcome) => {
                    attempts += 1;
                    return self
                        .after_failure(record, attempts, outcome, &[])
                        .map(|()| None);
                }
            }
        };
        // The parts delivered in this pass, with the provider's ids.
        let mut delivered_now: Vec<(u32, Vec<String>)> = Vec::new();
        for part in parts.iter().filter(|p| p.state == PartState::Queued) {
            // Credentials first, so a token fetch does not sit between the
            // throttle's slot and the request it allowed.
            if let Err(outcome) = endpoint.provider.prepare(&channel.config).await {
                attempts += 1;
                let parts_now = self.outbox.parts(id)?;
                return self
                    .after_failure(record, attempts, outcome, &parts_now)
                    .map(|()| None);
            }
            let asked = std::time::Instant::now();
            // The key the provider counts this request under (a group).
            let scope = endpoint.provider.throttle_key(endpoint.name, &part.part);
            let waiting = tracing::debug_span!("throttle wait", endpoint = %endpoint.key);
            let slot = self.take_slot(endpoint, scope.as_deref(), id, &batches.slots, stop);
            let stamp = match tracing::Instrument::instrument(slot, waiting).await {
                Slot::Go(stamp) => stamp,
                Slot::Stopped => {
                    self.outbox.requeue(
                        id,
                        self.clock.now_ms(),
                        attempts,
                        "host stopped before sending",
                    )?;
                    return Ok(None);
                }
                Slot::Lost => {
                    tracing::warn!(endpoint = %endpoint.key, message = %id, "another host took this message over (its lease ran out here); leaving it to that host");
                    return Ok(None);
                }
            };
            let _ = self.observers.throttled.send(Throttled {
                plugin: record.plugin.clone(),
                endpoint: endpoint.key.clone(),
                waited: asked.elapsed(),
            });
            attempts += 1;
            // What a request span says: which endpoint, which attempt, how
            // it ended and how long it took; never its URL, query or body.
            let request = tracing::debug_span!(
                "provider request",
                otel.kind = "client",
                endpoint = %endpoint.key,
                attempt = attempts,
                part = part.index,
                status = tracing::field::Empty,
                duration_ms = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            let sent_at = std::time::Instant::now();
            let sending = endpoint.provider.send(&channel.config, &part.part);
            let outcome = tracing::Instrument::instrument(sending, request.clone()).await;
            request.record("duration_ms", sent_at.elapsed().as_secs_f64() * 1000.0);
            request.record("status", outcome_status(&outcome));
            if !matches!(outcome, DeliveryOutcome::Delivered { .. }) {
                request.record("otel.status_code", "ERROR");
            }
            endpoint.note_answer(&outcome, self.clock.now_ms());
            // The request left somewhere between its stamp and now: a
            // starved CPU can hold it well past the stamp. Count it as late
            // as the answer allows, so the next one is spaced from when this
            // one can have arrived, not from its stamp.
            let answered = if self.throttles.shared() {
                // With the other requests answered meanwhile.
                batches
                    .answers
                    .run((scope.clone(), stamp), |all| {
                        self.answered_many(endpoint, all)
                    })
                    .await
                    .map_or(Err(OutboxError::Poisoned), |(_, answer)| answer)
            } else {
                self.throttles
                    .answered(&endpoint.throttle, scope.as_deref(), stamp, &*self.clock)
            };
            if let Err(e) = answered {
                tracing::warn!(endpoint = %endpoint.key, "cannot move a late send in the shared throttle: {e}");
            }
            // The last part of a message all delivered ends it: its request
            // is counted, and the message written, with the others' that
            // end meanwhile (`end_delivered`).
            let ends_it = matches!(outcome, DeliveryOutcome::Delivered { .. })
                && parts.iter().all(|p| {
                    p.index == part.index
                        || p.state == PartState::Delivered
                        || delivered_now.iter().any(|(i, _)| *i == p.index)
                });
            // Counted after the answer, so no write sits between the slot
            // and the request. Only the listing reads the count: losing it
            // is no reason to send the part again.
            if !ends_it && let Err(e) = self.outbox.part_requested(id, part.index) {
                tracing::warn!(endpoint = %endpoint.key, message = %id, part = part.index, "cannot count a request for the outbox listing: {e}");
            }
            // The provider's own account of what the request cost
            // (Bitrix24's execution time), for the endpoint's budget. Its
            // seconds are the throttle clock's: a simulator under
            // `time_scale` reports simulated seconds.
            if let Some(cost) = endpoint.provider.take_reported_cost(endpoint.name)
                && let Err(e) = self.throttles.charge(
                    &endpoint.throttle,
                    stamp,
                    u64::try_from(cost.as_millis()).unwrap_or(u64::MAX),
                )
            {
                tracing::warn!(endpoint = %endpoint.key, "cannot count the request's execution time: {e}");
            }
            match outcome {
                DeliveryOutcome::Delivered { provider_ids } if ends_it => {
                    delivered_now.push((part.index, provider_ids));
                    let provider_ids = parts
                        .iter()
                        .flat_map(
                            |p| match delivered_now.iter().find(|(i, _)| *i == p.index) {
                                Some((_, ids)) => ids.clone(),
                                None => p.provider_ids.clone(),
                            },
                        )
                        .collect();
                    let members = if carries {
                        self.outbox.members(id)?
                    } else {
                        Vec::new()
                    };
                    return Ok(Some(Ending {
                        delivered: Delivered {
                            id: id.clone(),
                            index: part.index,
                            provider_ids: delivered_now
                                .pop()
                                .map(|(_, ids)| ids)
                                .unwrap_or_default(),
                            attempts,
                            finished_ms: self.clock.now_ms(),
                        },
                        record: record.clone(),
                        members,
                        provider_ids,
                    }));
                }
                DeliveryOutcome::Delivered { provider_ids } => {
                    delivered_now.push((part.index, provider_ids.clone()));
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
                    if let DeliveryOutcome::Throttled { limit, .. } = &other {
                        self.slow_down(endpoint, scope.as_deref(), *limit);
                    }
                    let parts_now = self.outbox.parts(id)?;
                    return self
                        .after_failure(record, attempts, other, &parts_now)
                        .map(|()| None);
                }
            }
        }
        let parts = self.outbox.parts(id)?;
        self.conclude(record, attempts, &parts).map(|()| None)
    }

    /// The provider said "too fast" although the throttle allowed the
    /// request: halves the refused history's rate for every worker that
    /// uses it (see [`Slowdown`](super::throttle::Slowdown)), and says so.
    fn slow_down(&self, endpoint: &Endpoint, scope: Option<&str>, limit: RateLimited) {
        let layers = endpoint.throttle.layers(scope);
        let wanted = match limit {
            RateLimited::Endpoint => Some(endpoint.throttle.endpoint.clone()),
            RateLimited::Key => scope.map(|k| endpoint.throttle.keyed_name(k)),
            RateLimited::Account => endpoint.throttle.ceiling.as_ref().map(|(n, _)| n.clone()),
        };
        // A history the endpoint does not have (a key on an unkeyed
        // endpoint, a ceiling never documented) falls back to the
        // endpoint's own, which every request counts against.
        let layer = wanted
            .and_then(|name| layers.iter().find(|l| l.name == name))
            .unwrap_or(&layers[0]);
        let label = match limit {
            RateLimited::Endpoint => "endpoint",
            RateLimited::Key => "key",
            RateLimited::Account => "account",
        };
        match self
            .throttles
            .slow_down(&endpoint.throttle, layer, &*self.clock)
        {
            Ok(factor) => {
                tracing::warn!(
                    provider = endpoint.provider.kind(),
                    endpoint = %endpoint.key,
                    limit = label,
                    history = %sanitize::for_log(&layer.name, 200),
                    rate = %format!("{:.0}% of {}", factor * 100.0, layer.spec),
                    "the provider said too fast although the throttle allowed the request; slowing down, to recover gradually"
                );
                let _ = self.observers.slowed.send(Slowed {
                    provider_kind: endpoint.provider.kind(),
                    endpoint: endpoint.key.clone(),
                    limit: label,
                    factor,
                });
            }
            Err(e) => {
                tracing::warn!(endpoint = %endpoint.key, "cannot slow the throttle down: {e}");
            }
        }
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
        if parts.len() != 1 || !channel.provider.merges(&channel.config) {
            return Ok((parts, absorbed));
        }
        let now = self.clock.now_ms();
        let mergeable = |limit| {
            self.outbox
                .mergeable(&record.endpoint, &channel.name, now, &record.id, limit)
        };
        // The first queued message decides: merging stops at the first
        // that does not fold in, and a channel that does not merge (most)
        // folds in none. So one is read first, and the rest only after it
        // folded in, not 50 messages read and decoded for every message
        // sent.
        let Some(first) = mergeable(1)?.pop() else {
            return Ok((parts, absorbed));
        };
        let Some(merged) = channel
            .provider
            .merge(&channel.config, &parts[0], &first.message)
        else {
            return Ok((parts, absorbed));
        };
        parts[0] = merged;
        // Oldest first again, so the first comes back: skip it.
        let rest = mergeable(MAX_MERGED)?;
        let rest: Vec<OutboxRecord> = rest.into_iter().filter(|c| c.id != first.id).collect();
        absorbed.push(first.id);
        for candidate in rest {
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
            // The endpoint has slowed down already; this message waits
            // at least as long as the provider asked.
            DeliveryOutcome::Throttled { after, reason, .. } => (
                after.map(|d| d.as_millis() as u64),
                format!("rate limited: {reason}"),
            ),
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
        let failed = failed_tries(attempts, parts);
        if self.retry.gives_up(failed, age) {
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
        let delay = self.retry.delay_ms(failed, hint);
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
}

/// A provider answer's kind, for a request span (no provider text: it may
/// quote the message).
fn outcome_status(outcome: &DeliveryOutcome) -> &'static str {
    match outcome {
        DeliveryOutcome::Delivered { .. } => "delivered",
        DeliveryOutcome::Rejected { .. } => "rejected",
        DeliveryOutcome::RetryLater { .. } => "retry_later",
        DeliveryOutcome::QuotaExhausted { .. } => "quota_exhausted",
        DeliveryOutcome::Throttled { .. } => "throttled",
        DeliveryOutcome::CredentialsExpired { .. } => "credentials_expired",
    }
}

/// How many of a message's requests failed. `attempts` counts requests, and
/// a message to many meetings makes one per part: a part that was answered
/// for good (delivered, or rejected) took exactly one request that did not
/// fail, so the rest are the failures the retry policy weighs. Counting
/// requests instead gave up a message to ten meetings at its first 502.
fn failed_tries(attempts: u32, parts: &[PartRecord]) -> u32 {
    let answered = parts
        .iter()
        .filter(|p| p.state != PartState::Queued)
        .count();
    attempts
        .saturating_sub(u32::try_from(answered).unwrap_or(u32::MAX))
        .max(1)
}

#[cfg(test)]
mod failed_tries_tests {
    use super::*;
    use crate::wit::types::{Content, Message};

    fn part(index: u32, state: PartState) -> PartRecord {
        PartRecord {
            index,
            part: Part {
                target: format!("room-{index}"),
                message: Message {
                    channel: "lobby".into(),
                    content: Content::Text("hi".into()),
                    sender: None,
                    extra: None,
                    idempotency_key: None,
                    reply_to: None,
                    options: None,
                },
                dedup_key: None,
                merged: Vec::new(),
            },
            state,
            provider_ids: Vec::new(),
            last_error: None,
        }
    }

    #[test]
    fn a_message_to_many_meetings_counts_failures_not_requests() {
        // Twelve meetings: eleven delivered, the twelfth's request failed.
        // Twelve requests, one failure: far from the policy's ten.
        let mut parts: Vec<PartRecord> = (0..11).map(|i| part(i, PartState::Delivered)).collect();
        parts.push(part(11, PartState::Queued));
        assert_eq!(failed_tries(12, &parts), 1);
        assert!(
            !crate::delivery::retry::RetryPolicy::default().gives_up(failed_tries(12, &parts), 0)
        );
        // A rejected part was answered too; two earlier failures count.
        parts[3].state = PartState::Failed;
        assert_eq!(failed_tries(14, &parts), 3);
        // Planning failed: every attempt was a failure.
        assert_eq!(failed_tries(4, &[]), 4);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn plan(id: &str) -> Plan {
        Plan {
            id: id.into(),
            parts: Vec::new(),
            absorbed: Vec::new(),
        }
    }

    #[tokio::test]
    async fn messages_started_together_store_their_plans_in_one_call_and_hear_their_own_answers() {
        let batch = PlanBatch::default();
        // What the store was asked, call by call.
        let calls: RefCell<Vec<Vec<String>>> = RefCell::new(Vec::new());
        let store = |plans: &[Plan]| {
            calls
                .borrow_mut()
                .push(plans.iter().map(|p| p.id.clone()).collect());
            plans
                .iter()
                .map(|p| match p.id.as_str() {
                    "m3" => Err(OutboxError::Conflict("m3's member was taken".into())),
                    _ => Ok(()),
                })
                .collect()
        };
        // As the worker runs them: one task polling every message.
        let mut running: FuturesUnordered<_> = (0..16)
            .map(|i| {
                let batch = &batch;
                async move {
                    let (saved, answer) = batch.run(plan(&format!("m{i}")), store).await.unwrap();
                    (i, saved.id, answer)
                }
            })
            .collect();
        let mut answers = Vec::new();
        while let Some(answer) = running.next().await {
            answers.push(answer);
        }
        assert_eq!(
            calls.borrow().len(),
            1,
            "one store call: {:?}",
            calls.borrow()
        );
        assert_eq!(calls.borrow()[0].len(), 16);
        answers.sort_by_key(|(i, _, _)| *i);
        for (i, id, answer) in answers {
            assert_eq!(id, format!("m{i}"), "each message gets its own plan back");
            assert_eq!(answer.is_err(), i == 3, "m{i}: {answer:?}");
        }
        // A message alone stores its plan alone, at once.
        let (saved, answer) = batch.run(plan("alone"), store).await.unwrap();
        assert!(answer.is_ok());
        assert_eq!(saved.id, "alone");
        assert_eq!(calls.borrow().len(), 2);
        assert_eq!(calls.borrow()[1], vec!["alone".to_string()]);
    }
}
