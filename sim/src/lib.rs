//! Local simulators of the chat providers botbox delivers to, written
//! from the providers' documents (`shared/seeds`), not from botbox's clients:
//! they are the independent check that the host signs, throttles and shapes
//! every request the way the real servers demand.
//!
//! Each provider gets its own loopback HTTP listener (so its own base URL);
//! the simulators are listed once, in `kind::KINDS`:
//!
//! | provider | base URL | endpoints |
//! |---|---|---|
//! | BigBlueButton | `http://127.0.0.1:P/bigbluebutton/api` | `create`, `join`, `end`, `getMeetings`, `isMeetingRunning`, `getMeetingInfo`, `sendChatMessage`, `hooks/create`, `hooks/destroy`, `hooks/list` |
//! | Tencent Cloud Chat | `http://127.0.0.1:P` | `POST /v4/group_open_http_svc/send_broadcast_msg`, `…/send_group_msg`, `/v4/openim/sendmsg` |
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
mod kind;
mod record;
mod server;
pub mod sign;
mod tencent;

pub use bbb::{BbbConfig, BbbHook, ChecksumAlg, SimMeeting};
pub use bitrix::BitrixConfig;
pub use config::{SimConfig, SimPorts};
pub use easemob::EasemobConfig;
pub use fault::Fault;
pub use kind::{
    SecretRef, credentials, provider_section, provider_sections, section_name, write_secrets,
};
pub use record::{
    Outcome, SimDelivery, SimProvider, SimRequest, SimStats, Target, Violation, escape_for_log,
};
pub use tencent::TencentConfig;

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
    pub const TENCENT_SEND_C2C: &str = "openim/sendmsg";
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
    /// Each simulator's own state, in [`kind::KINDS`] order.
    states: Vec<kind::State>,
}

impl Shared {
    /// The state of the simulator whose state type is `T`.
    pub(crate) fn state<T: 'static>(&self) -> &T {
        self.states
            .iter()
            .find_map(|s| s.downcast_ref())
            .expect("every simulator's state is in Shared")
    }

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

/// A running simulator. Dropping it stops the listeners; [`Sim::shutdown`]
/// also waits for in-flight connections to finish.
pub struct Sim {
    shared: Arc<Shared>,
    /// Base URLs, in [`kind::KINDS`] order.
    urls: Vec<String>,
    cfg: SimConfig,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Sim {
    /// Binds one listener per simulator on 127.0.0.1 and starts serving.
    pub async fn start(cfg: SimConfig) -> Result<Sim, SimError> {
        validate(&cfg)?;
        let mut ports = cfg.ports.unwrap_or_default();
        let mut listeners = Vec::with_capacity(kind::KINDS.len());
        for k in kind::KINDS {
            let (provider, port) = (k.provider, *(k.port)(&mut ports));
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
            listeners.push((
                k,
                listener,
                format!("http://127.0.0.1:{bound}{}", k.base_path),
            ));
        }
        let urls: Vec<String> = listeners.iter().map(|(_, _, url)| url.clone()).collect();

        let clock = clock::SimClock::new(cfg.time_scale, Duration::from_millis(cfg.tolerance_ms));
        let states = listeners
            .iter()
            .map(|(k, _, url)| (k.state)(&cfg, url, &clock))
            .collect();
        let shared = Arc::new(Shared {
            clock,
            records: record::Records::default(),
            faults: fault::Faults::default(),
            states,
        });

        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        for (k, listener, _) in listeners {
            let provider = k.provider;
            let router = (k.router)()
                .merge(admin::router(provider))
                .fallback(move |st, req| admin::not_found(provider, st, req))
                .with_state(shared.clone());
            server::spawn(listener, router, cancel.clone(), &tracker);
        }
        let listening: Vec<String> = kind::KINDS
            .iter()
            .zip(&urls)
            .map(|(k, url)| format!("{}={url}", k.provider))
            .collect();
        tracing::info!(
            target: "botbox_sim",
            "simulators listening (time x{}): {}",
            cfg.time_scale,
            listening.join(" ")
        );
        Ok(Sim {
            shared,
            urls,
            cfg,
            cancel,
            tracker,
        })
    }

    /// The base URL clients of `provider` are configured with.
    pub fn url(&self, provider: SimProvider) -> String {
        kind::KINDS
            .iter()
            .zip(&self.urls)
            .find(|(k, _)| k.provider == provider)
            .map(|(_, url)| url.clone())
            .expect("every simulator has a URL")
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

    /// The wall time (ms since the epoch) the simulated clock started at:
    /// simulated time `t` is the calendar time `origin + t`, so a host with
    /// `runtime.time_origin_ms` set to it sees the same midnights.
    pub fn calendar_origin_ms(&self) -> u64 {
        self.shared.clock.wall_origin_ms()
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
    for k in kind::KINDS {
        (k.validate)(cfg).or_else(bad)?;
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
