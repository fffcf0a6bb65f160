//! Local simulators of the four chat providers botbox delivers to, written
//! from the providers' documents (`shared/seeds`), not from botbox's clients:
//! they are the independent check that the host signs, throttles and shapes
//! every request the way the real servers demand.
//!
//! Each provider gets its own loopback HTTP listener (so its own base URL):
//!
//! | provider | base URL | endpoints |
//! |---|---|---|
//! | BigBlueButton | `http://127.0.0.1:P/bigbluebutton/api` | `create`, `join`, `end`, `getMeetings`, `isMeetingRunning`, `getMeetingInfo`, `sendChatMessage`, `hooks/create`, `hooks/destroy`, `hooks/list` |
//! | Tencent Cloud Chat | `http://127.0.0.1:P` | `POST /v4/group_open_http_svc/send_broadcast_msg` |
//! | Easemob | `http://127.0.0.1:P` | `POST /{org}/{app}/token`, `/messages/broadcast`, `/messages/users/broadcast`, `/messages/chatrooms/broadcast` |
//! | Bitrix24 | `http://127.0.0.1:P` | `/rest/{user}/{code}/im.message.add[.json]`, `/rest/im.message.add` (OAuth), `/oauth/token/` |
//!
//! Every listener also serves a small admin API under `/__sim/` (state,
//! deliveries, requests, violations, fault injection, clock advance).
//!
//! ```no_run
//! # async fn demo() -> Result<(), botbox_sim::SimError> {
//! use botbox_sim::{Fault, Sim, SimConfig, SimProvider};
//! let sim = Sim::start(SimConfig::fast(1000.0)).await?;
//! println!("point the tencent provider at {}", sim.tencent_url());
//! sim.inject(SimProvider::Tencent, Fault::server_error(502), 1);
//! // … run the host against it …
//! assert!(sim.violations().is_empty());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod admin;
mod bbb;
mod bitrix;
pub mod callbacks;
mod clock;
pub mod codec;
mod config;
mod easemob;
mod fault;
mod record;
mod server;
pub mod sign;
mod tencent;

pub use bbb::BbbHook;
pub use config::{
    BbbConfig, BitrixConfig, ChecksumAlg, EasemobConfig, SimConfig, SimMeeting, SimPorts,
    TencentConfig,
};
pub use fault::Fault;
pub use record::{
    Outcome, SimDelivery, SimProvider, SimRequest, SimStats, Target, Violation, escape_for_log,
};

/// Endpoint names, as used in records and for endpoint-specific faults.
pub mod endpoints {
    pub const BBB_CREATE: &str = "create";
    pub const BBB_JOIN: &str = "join";
    pub const BBB_END: &str = "end";
    pub const BBB_GET_MEETINGS: &str = "getMeetings";
    pub const BBB_IS_MEETING_RUNNING: &str = "isMeetingRunning";
    pub const BBB_GET_MEETING_INFO: &str = "getMeetingInfo";
    pub const BBB_SEND_CHAT_MESSAGE: &str = "sendChatMessage";
    pub const BBB_HOOKS_CREATE: &str = "hooks/create";
    pub const BBB_HOOKS_DESTROY: &str = "hooks/destroy";
    pub const BBB_HOOKS_LIST: &str = "hooks/list";
    pub const TENCENT_SEND_BROADCAST: &str = "group_open_http_svc/send_broadcast_msg";
    pub const TENCENT_SEND_GROUP: &str = "group_open_http_svc/send_group_msg";
    pub const EASEMOB_TOKEN: &str = "token";
    pub const EASEMOB_ALL_USERS: &str = "messages/broadcast";
    pub const EASEMOB_ONLINE_USERS: &str = "messages/users/broadcast";
    pub const EASEMOB_CHATROOMS: &str = "messages/chatrooms/broadcast";
    pub const EASEMOB_ROOM_MESSAGES: &str = "messages/chatrooms";
    pub const EASEMOB_GROUP_MESSAGES: &str = "messages/chatgroups";
    pub const EASEMOB_USER_MESSAGES: &str = "messages/users";
    pub const BITRIX_MESSAGE_ADD: &str = "im.message.add";
    pub const BITRIX_OAUTH_TOKEN: &str = "oauth/token";
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator config: {0}")]
    InvalidConfig(String),
    #[error("cannot listen for the {provider} simulator on 127.0.0.1:{port}: {source}")]
    Bind {
        provider: SimProvider,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for Ctrl-C failed: {0}")]
    Signal(#[source] std::io::Error),
}

impl From<SimError> for std::io::Error {
    fn from(e: SimError) -> Self {
        match e {
            SimError::Bind { source, .. } | SimError::Signal(source) => source,
            other @ SimError::InvalidConfig(_) => {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, other)
            }
        }
    }
}

/// Poisoning only means another handler panicked mid-update; the records are
/// still the best information there is, so keep serving them.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by every listener and the [`Sim`] handle.
pub(crate) struct Shared {
    pub(crate) clock: clock::SimClock,
    pub(crate) records: record::Records,
    pub(crate) faults: fault::Faults,
    pub(crate) bbb: bbb::BbbState,
    pub(crate) tencent: tencent::TencentState,
    pub(crate) easemob: easemob::EasemobState,
    pub(crate) bitrix: bitrix::BitrixState,
}

impl Shared {
    /// Records a call past a documented limit, as the provider would have
    /// refused (or silently dropped) it.
    pub(crate) fn violation(
        &self,
        provider: SimProvider,
        endpoint: &str,
        limit: String,
        code: &str,
    ) {
        self.records.violation(Violation {
            provider,
            endpoint: endpoint.to_owned(),
            limit,
            code: code.to_owned(),
            at: self.clock.now(),
            unix_ms: clock::unix_ms(),
        });
    }
}

/// The base URLs clients should be configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimUrls {
    /// Ends in `/bigbluebutton/api`.
    pub bbb: String,
    pub tencent: String,
    pub easemob: String,
    pub bitrix: String,
}

/// A running simulator. Dropping it stops the listeners; [`Sim::shutdown`]
/// also waits for in-flight connections to finish.
pub struct Sim {
    shared: Arc<Shared>,
    urls: SimUrls,
    cfg: SimConfig,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Sim {
    /// Binds the four listeners on 127.0.0.1 and starts serving.
    pub async fn start(cfg: SimConfig) -> Result<Sim, SimError> {
        validate(&cfg)?;
        let ports = cfg.ports.unwrap_or_default();
        let mut listeners = Vec::with_capacity(4);
        for (provider, port) in [
            (SimProvider::Bbb, ports.bbb),
            (SimProvider::Tencent, ports.tencent),
            (SimProvider::Easemob, ports.easemob),
            (SimProvider::Bitrix, ports.bitrix),
        ] {
            let listener = server::bind(port).await.map_err(|source| SimError::Bind {
                provider,
                port,
                source,
            })?;
            let bound = listener
                .local_addr()
                .map_err(|source| SimError::Bind {
                    provider,
                    port,
                    source,
                })?
                .port();
            listeners.push((provider, listener, bound));
        }
        let url = |i: usize| format!("http://127.0.0.1:{}", listeners[i].2);
        let urls = SimUrls {
            bbb: format!("{}/bigbluebutton/api", url(0)),
            tencent: url(1),
            easemob: url(2),
            bitrix: url(3),
        };

        let clock = clock::SimClock::new(cfg.time_scale, Duration::from_millis(cfg.tolerance_ms));
        let shared = Arc::new(Shared {
            bbb: bbb::BbbState::new(cfg.bbb.clone()),
            tencent: tencent::TencentState::new(cfg.tencent.clone()),
            easemob: easemob::EasemobState::new(cfg.easemob.clone(), urls.easemob.clone()),
            bitrix: bitrix::BitrixState::new(cfg.bitrix.clone(), urls.bitrix.clone(), &clock),
            clock,
            records: record::Records::default(),
            faults: fault::Faults::default(),
        });

        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        for (provider, listener, _) in listeners {
            let routes = match provider {
                SimProvider::Bbb => bbb::router(),
                SimProvider::Tencent => tencent::router(),
                SimProvider::Easemob => easemob::router(),
                SimProvider::Bitrix => bitrix::router(),
            };
            let router = routes
                .merge(admin::router(provider))
                .fallback(move |st, req| admin::not_found(provider, st, req))
                .with_state(shared.clone());
            server::spawn(listener, router, cancel.clone(), &tracker);
        }
        tracing::info!(
            target: "botbox_sim",
            "simulators listening (time x{}): bbb={} tencent={} easemob={} bitrix={}",
            cfg.time_scale,
            urls.bbb,
            urls.tencent,
            urls.easemob,
            urls.bitrix
        );
        Ok(Sim {
            shared,
            urls,
            cfg,
            cancel,
            tracker,
        })
    }

    pub fn urls(&self) -> &SimUrls {
        &self.urls
    }
    /// `http://127.0.0.1:P/bigbluebutton/api`
    pub fn bbb_url(&self) -> String {
        self.urls.bbb.clone()
    }
    pub fn tencent_url(&self) -> String {
        self.urls.tencent.clone()
    }
    pub fn easemob_url(&self) -> String {
        self.urls.easemob.clone()
    }
    pub fn bitrix_url(&self) -> String {
        self.urls.bitrix.clone()
    }
    /// The config the simulator runs with (credentials included; don't log
    /// anything but its `Debug`, which redacts them).
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Accepted deliveries of every provider, in acceptance order.
    pub fn deliveries(&self) -> Vec<SimDelivery> {
        self.shared.records.deliveries()
    }
    pub fn deliveries_to(&self, provider: SimProvider) -> Vec<SimDelivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.provider == provider)
            .collect()
    }
    /// Waits until at least `n` deliveries (to `provider`, or to any provider)
    /// have been accepted, or `timeout` passes; returns them either way, so
    /// the caller's assertion shows what did arrive.
    pub async fn wait_for_deliveries(
        &self,
        provider: Option<SimProvider>,
        n: usize,
        timeout: Duration,
    ) -> Vec<SimDelivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got: Vec<SimDelivery> = self
                .deliveries()
                .into_iter()
                .filter(|d| provider.is_none_or(|p| d.provider == p))
                .collect();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    /// Every request handled (admin routes excluded), oldest first.
    pub fn requests(&self) -> Vec<SimRequest> {
        self.shared.records.requests()
    }
    pub fn requests_to(&self, provider: SimProvider) -> Vec<SimRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.provider == provider)
            .collect()
    }
    /// Requests that arrived when the provider's documented limits did not
    /// allow them. A correct client produces none.
    pub fn violations(&self) -> Vec<Violation> {
        self.shared.records.violations()
    }
    /// Violations counted per provider and endpoint.
    pub fn violation_counts(&self) -> BTreeMap<(SimProvider, String), u64> {
        let mut counts = BTreeMap::new();
        for v in self.violations() {
            *counts.entry((v.provider, v.endpoint)).or_insert(0) += 1;
        }
        counts
    }
    pub fn stats(&self, provider: SimProvider) -> SimStats {
        self.shared.records.stats(provider)
    }
    /// Requests to the token endpoint (Easemob `/token`, Bitrix24
    /// `/oauth/token/`), successful or not; injected faults excluded.
    pub fn token_fetches(&self, provider: SimProvider) -> u64 {
        self.stats(provider).token_fetches
    }
    /// Tencent requests answered OK but discarded as repeats of a `Random`.
    pub fn deduplicated(&self) -> u64 {
        self.stats(SimProvider::Tencent).deduplicated
    }
    /// Forgets recorded requests, deliveries, violations and counters (limits
    /// and tokens are kept).
    pub fn clear_records(&self) {
        self.shared.records.clear();
    }

    /// The next `count` requests to `provider` get `fault`.
    pub fn inject(&self, provider: SimProvider, fault: Fault, count: u32) {
        self.shared.faults.inject(provider, None, fault, count);
    }
    /// The next `count` requests to one endpoint (see [`endpoints`]) get `fault`.
    pub fn inject_endpoint(&self, provider: SimProvider, endpoint: &str, fault: Fault, count: u32) {
        self.shared
            .faults
            .inject(provider, Some(endpoint.to_owned()), fault, count);
    }
    pub fn clear_faults(&self) {
        self.shared.faults.clear(None);
    }
    /// Faults still waiting for requests to `provider`.
    pub fn pending_faults(&self, provider: SimProvider) -> u32 {
        self.shared.faults.pending(provider)
    }

    /// Simulated time since the start.
    pub fn sim_now(&self) -> Duration {
        self.shared.clock.now()
    }
    /// Jumps the simulated clock forward (rate windows, quotas, token
    /// lifetimes and dedup all see the jump). UserSig expiry uses the real
    /// wall clock, as the client signs with it.
    pub fn advance(&self, by: Duration) {
        self.shared.clock.advance(by);
    }
    /// How long a simulated span takes in real time at this scale.
    pub fn real_duration(&self, sim: Duration) -> Duration {
        self.shared.clock.to_real(sim)
    }

    /// BigBlueButton meetings as they stand now.
    pub fn bbb_meetings(&self) -> Vec<SimMeeting> {
        self.shared.bbb.meetings()
    }
    /// Adds a meeting, or updates the name and running state of an existing one.
    pub fn bbb_upsert_meeting(&self, meeting: SimMeeting) {
        self.shared.bbb.upsert(meeting);
    }
    /// Starts or stops a meeting; false if there is no such meeting.
    pub fn bbb_set_running(&self, id: &str, running: bool) -> bool {
        self.shared.bbb.set_running(id, running)
    }
    pub fn bbb_remove_meeting(&self, id: &str) -> bool {
        self.shared.bbb.remove(id)
    }
    /// Callbacks registered through `hooks/create`.
    pub fn bbb_hooks(&self) -> Vec<BbbHook> {
        self.shared.bbb.hooks()
    }
    /// Sends a bbb-webhooks event (a JSON array of `{"data": …}`) to every
    /// hook registered with `hooks/create` (only those for this meeting or
    /// for all meetings), signed with the shared secret as bbb-webhooks
    /// does. Returns each hook's URL and reply.
    pub async fn bbb_send_event(
        &self,
        meeting_id: &str,
        event: &serde_json::Value,
    ) -> Vec<(String, std::io::Result<callbacks::CallbackReply>)> {
        callbacks::bbb_deliver(self.bbb_hooks(), &self.cfg.bbb.secret, meeting_id, event).await
    }

    /// Demo chatter: every `period` (real time), someone writes the next of
    /// `lines` (round robin) in `meeting_id`'s public chat, sent to every
    /// registered hook. Stops with the simulator; refused or failed
    /// callbacks are logged at debug level only.
    pub fn bbb_start_chatter(&self, meeting_id: &str, lines: Vec<String>, period: Duration) {
        if lines.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let secret = self.cfg.bbb.secret.clone();
        let meeting = meeting_id.to_owned();
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            for i in 0.. {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                let text = &lines[i % lines.len()];
                let event = callbacks::bbb_chat_event(&meeting, "sim-user", "Ada (sim)", text);
                tracing::info!(target: "botbox_sim", "bbb      meeting={meeting} <Ada (sim)> {}   (chat event to the registered hooks)", escape_for_log(text, 200));
                for (url, reply) in
                    callbacks::bbb_deliver(shared.bbb.hooks(), &secret, &meeting, &event).await
                {
                    if !matches!(&reply, Ok(r) if r.status == 200) {
                        tracing::debug!(target: "botbox_sim", url, ?reply, "chatter callback not accepted");
                    }
                }
            }
        });
    }

    /// Someone writes `text` in a meeting's public chat: the
    /// `chat-group-message-sent` event goes to every registered hook.
    pub async fn bbb_send_chat(
        &self,
        meeting_id: &str,
        user_id: &str,
        user_name: &str,
        text: &str,
    ) -> Vec<(String, std::io::Result<callbacks::CallbackReply>)> {
        let event = callbacks::bbb_chat_event(meeting_id, user_id, user_name, text);
        self.bbb_send_event(meeting_id, &event).await
    }

    /// The console switch for AVChatRoom broadcasts (off: ErrorCode 10007).
    pub fn tencent_set_broadcast_enabled(&self, on: bool) {
        self.shared.tencent.set_broadcast_enabled(on);
    }
    /// Whether broadcasts are opened for the app (off: 403 "message broadcast service is unopened").
    pub fn easemob_set_broadcast_enabled(&self, on: bool) {
        self.shared.easemob.set_broadcast_enabled(on);
    }
    /// Expires every Bitrix24 access token now (refresh tokens stay valid).
    pub fn bitrix_expire_access_tokens(&self) {
        self.shared.bitrix.expire_access_tokens(&self.shared.clock);
    }
    /// Issues a new Bitrix24 OAuth pair `(access, refresh)`, as an operator
    /// gets one by installing the application again.
    pub fn bitrix_issue_tokens(&self) -> (String, String) {
        self.shared.bitrix.issue_pair(&self.shared.clock)
    }
    /// Expires every Easemob app token now.
    pub fn easemob_expire_tokens(&self) {
        self.shared.easemob.expire_tokens(&self.shared.clock);
    }

    /// Stops the listeners and waits for open connections to close.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn validate(cfg: &SimConfig) -> Result<(), SimError> {
    let bad = |m: &str| Err(SimError::InvalidConfig(m.to_owned()));
    if !(cfg.time_scale.is_finite() && cfg.time_scale > 0.0) {
        return bad("time_scale must be a finite number above 0");
    }
    if cfg.bbb.supported.is_empty() {
        return bad("bbb.supported must name at least one checksum algorithm");
    }
    if cfg.tencent.rate_per_second == 0 {
        return bad("tencent.rate_per_second must be at least 1");
    }
    if cfg.easemob.token_ttl_secs == 0 || cfg.bitrix.token_ttl_secs == 0 {
        return bad("token lifetimes must be at least 1 second");
    }
    if cfg.bitrix.burst == 0
        || !(cfg.bitrix.drain_per_second.is_finite() && cfg.bitrix.drain_per_second > 0.0)
    {
        return bad("bitrix.burst and bitrix.drain_per_second must be above 0");
    }
    Ok(())
}

/// Runs the simulators until Ctrl-C, logging their URLs: what `botbox sim`
/// needs. Credentials are not logged; they are those of the config passed in
/// (see [`SimConfig::demo`]).
pub async fn serve_forever(cfg: SimConfig) -> Result<(), SimError> {
    let sim = Sim::start(cfg).await?;
    let signal = tokio::signal::ctrl_c().await;
    sim.shutdown().await;
    signal.map_err(SimError::Signal)
}
