//! What the simulated servers know: credentials, seeded state and limits.
//!
//! Every duration here is in *simulated* seconds; [`SimConfig::time_scale`]
//! turns them into real time. Secrets never appear in `Debug` output, so a
//! config can be logged without leaking them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Everything the simulated providers need. `Debug` shows no secret: each
/// provider's config redacts its own.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// How much faster than real time the simulated clock runs: 1.0 is real
    /// time, 1000.0 makes every rate window, daily quota, token lifetime and
    /// dedup window 1000 times shorter. Must be finite and positive.
    pub time_scale: f64,
    /// Real-time slack granted to every rate check, for scheduling jitter
    /// between a client's clock and the simulator's (a request arriving up to
    /// this much early still counts as on time). 0 checks the limits exactly.
    pub tolerance_ms: u64,
    /// Fixed ports for the listeners (one per simulator); `None` (or a 0 entry) picks free
    /// ephemeral ports.
    pub ports: Option<SimPorts>,
    pub bbb: BbbConfig,
    pub tencent: TencentConfig,
    pub easemob: EasemobConfig,
    pub bitrix: BitrixConfig,
}

/// Ports for the listeners, all bound on 127.0.0.1. A 0 entry picks a free port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimPorts {
    pub bbb: u16,
    pub tencent: u16,
    pub easemob: u16,
    pub bitrix: u16,
}

impl SimPorts {
    /// Consecutive ports starting at `first`, one per simulator (bbb,
    /// tencent, easemob, bitrix: the order of `kind::KINDS`).
    pub fn consecutive(first: u16) -> Self {
        let mut ports = SimPorts::default();
        for (offset, k) in (0u16..).zip(crate::kind::KINDS) {
            *(k.port)(&mut ports) = first.saturating_add(offset);
        }
        ports
    }
}

/// BigBlueButton checksum hash functions; the server picks one by the
/// checksum's length (40/64/96/128 hex digits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl ChecksumAlg {
    pub const ALL: [ChecksumAlg; 4] = [
        ChecksumAlg::Sha1,
        ChecksumAlg::Sha256,
        ChecksumAlg::Sha384,
        ChecksumAlg::Sha512,
    ];

    /// Length of the lowercase hex digest, which is how the server tells them apart.
    pub fn hex_len(self) -> usize {
        match self {
            ChecksumAlg::Sha1 => 40,
            ChecksumAlg::Sha256 => 64,
            ChecksumAlg::Sha384 => 96,
            ChecksumAlg::Sha512 => 128,
        }
    }

    pub fn from_hex_len(len: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.hex_len() == len)
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BbbConfig {
    /// The shared secret (`securitySalt` in bbb-web.properties).
    pub secret: String,
    /// `supportedChecksumAlgorithms`: a checksum of another length is a `checksumError`.
    pub supported: Vec<ChecksumAlg>,
    /// Meetings that exist when the simulator starts.
    pub meetings: Vec<SimMeeting>,
}

/// A meeting seeded into the BigBlueButton simulator (or added through the handle).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimMeeting {
    pub id: String,
    pub name: String,
    /// Only running meetings accept `sendChatMessage`.
    pub running: bool,
}

impl SimMeeting {
    pub fn new(id: impl Into<String>, name: impl Into<String>, running: bool) -> Self {
        SimMeeting {
            id: id.into(),
            name: name.into(),
            running,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TencentConfig {
    pub sdkappid: u64,
    /// The app admin account allowed to call the REST API.
    pub identifier: String,
    /// The app's secret key; UserSigs are HMAC-SHA256 keyed with its text bytes.
    pub secret_key: String,
    /// `send_broadcast_msg` calls allowed per second (1 by default, 5 on higher plans).
    pub rate_per_second: u32,
    /// The console switch "Broadcast messaging of audio-video group"; off gives 10007.
    pub broadcast_enabled: bool,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EasemobConfig {
    pub org: String,
    pub app: String,
    pub client_id: String,
    pub client_secret: String,
    /// App token lifetime in simulated seconds (reported as `expires_in`).
    pub token_ttl_secs: u64,
    /// The app's UUID, returned as `application`.
    pub application: String,
    /// Broadcasts must be opened by Easemob sales; off gives 403 "message broadcast service is unopened".
    pub broadcast_enabled: bool,
    /// Daily quotas (the per-window limits are fixed by the docs and cannot be raised).
    pub daily_all_users: u32,
    pub daily_online_users: u32,
    pub daily_chatrooms: u32,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BitrixConfig {
    /// The user id in the incoming-webhook URL `/rest/{user_id}/{code}/…`.
    pub webhook_user_id: u64,
    /// The webhook code, which is the webhook's whole secret.
    pub webhook_code: String,
    pub client_id: String,
    pub client_secret: String,
    /// The OAuth access token valid when the simulator starts.
    pub access_token: String,
    /// The OAuth refresh token valid when the simulator starts (single use).
    pub refresh_token: String,
    /// The user the OAuth tokens act for.
    pub oauth_user_id: u64,
    /// Access token lifetime in simulated seconds (1 h on real portals).
    pub token_ttl_secs: u64,
    /// Refresh token lifetime in simulated seconds (28 days on real portals).
    pub refresh_ttl_secs: u64,
    /// Chats the senders belong to, as `chatN` (or `N`); other chats give ACCESS_ERROR.
    pub known_chats: Vec<String>,
    /// Leaky bucket: how many requests drain per (simulated) second…
    pub drain_per_second: f64,
    /// …and how many fit in it (2/s and 50 on ordinary plans, 5/s and 250 on Enterprise).
    pub burst: u32,
}

impl SimConfig {
    /// Fixed, distinctive demo credentials: an operator can point a botbox.toml at
    /// `botbox sim` with these, and a leaked log line is recognisable as fake.
    pub fn demo() -> Self {
        SimConfig {
            time_scale: 1.0,
            tolerance_ms: 0,
            ports: None,
            bbb: BbbConfig::default(),
            tencent: TencentConfig::default(),
            easemob: EasemobConfig::default(),
            bitrix: BitrixConfig::default(),
        }
    }

    /// The demo config with the clock running `scale` times faster.
    pub fn fast(scale: f64) -> Self {
        SimConfig {
            time_scale: scale,
            ..Self::demo()
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::demo()
    }
}

impl Default for BbbConfig {
    fn default() -> Self {
        BbbConfig {
            secret: "sim-bbb-secret-8f3c1e0b7a5d".to_owned(),
            supported: ChecksumAlg::ALL.to_vec(),
            meetings: vec![
                SimMeeting::new("room-1", "Sim Lobby", true),
                SimMeeting::new("room-2", "Sim Lecture Hall", true),
                SimMeeting::new("room-idle", "Sim Idle Room", false),
            ],
        }
    }
}

impl Default for TencentConfig {
    fn default() -> Self {
        TencentConfig {
            sdkappid: 1_400_900_001,
            identifier: "administrator".to_owned(),
            secret_key: "sim-tencent-key-5e2b9d4c1a7f60e3b8d2c4a1f9e07b6d".to_owned(),
            rate_per_second: 1,
            broadcast_enabled: true,
        }
    }
}

impl Default for EasemobConfig {
    fn default() -> Self {
        EasemobConfig {
            org: "sim-org".to_owned(),
            app: "sim-app".to_owned(),
            client_id: "YXA6simClientId0botbox".to_owned(),
            client_secret: "YXA6simClientSecret0botbox0f4e".to_owned(),
            token_ttl_secs: 7200,
            application: "5b1d7e00-51a0-4b0c-9e5f-000000b07b0c".to_owned(),
            broadcast_enabled: true,
            daily_all_users: 3,
            daily_online_users: 50,
            daily_chatrooms: 100,
        }
    }
}

impl Default for BitrixConfig {
    fn default() -> Self {
        BitrixConfig {
            webhook_user_id: 1,
            webhook_code: "simwebhook0c0de7x2".to_owned(),
            client_id: "local.5f1e0b07b0c000.sim".to_owned(),
            client_secret: "simBitrixClientSecret0botbox7a9e".to_owned(),
            access_token: "sim-bitrix-access-0000".to_owned(),
            refresh_token: "sim-bitrix-refresh-0000".to_owned(),
            oauth_user_id: 1,
            token_ttl_secs: 3600,
            refresh_ttl_secs: 28 * 24 * 3600,
            known_chats: vec!["chat1".to_owned(), "chat13".to_owned()],
            drain_per_second: 2.0,
            burst: 50,
        }
    }
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for BbbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BbbConfig")
            .field("secret", &REDACTED)
            .field("supported", &self.supported)
            .field("meetings", &self.meetings)
            .finish()
    }
}

impl fmt::Debug for TencentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TencentConfig")
            .field("sdkappid", &self.sdkappid)
            .field("identifier", &self.identifier)
            .field("secret_key", &REDACTED)
            .field("rate_per_second", &self.rate_per_second)
            .field("broadcast_enabled", &self.broadcast_enabled)
            .finish()
    }
}

impl fmt::Debug for EasemobConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EasemobConfig")
            .field("org", &self.org)
            .field("app", &self.app)
            .field("client_id", &self.client_id)
            .field("client_secret", &REDACTED)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("application", &self.application)
            .field("broadcast_enabled", &self.broadcast_enabled)
            .field("daily_all_users", &self.daily_all_users)
            .field("daily_online_users", &self.daily_online_users)
            .field("daily_chatrooms", &self.daily_chatrooms)
            .finish()
    }
}

impl fmt::Debug for BitrixConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BitrixConfig")
            .field("webhook_user_id", &self.webhook_user_id)
            .field("webhook_code", &REDACTED)
            .field("client_id", &self.client_id)
            .field("client_secret", &REDACTED)
            .field("access_token", &REDACTED)
            .field("refresh_token", &REDACTED)
            .field("oauth_user_id", &self.oauth_user_id)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("refresh_ttl_secs", &self.refresh_ttl_secs)
            .field("known_chats", &self.known_chats)
            .field("drain_per_second", &self.drain_per_second)
            .field("burst", &self.burst)
            .finish()
    }
}
