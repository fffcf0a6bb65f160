//! What the simulated servers know: credentials, seeded state and limits.
//! Each simulator's own config (`BbbConfig`, …) lives in its module;
//! [`SimConfig`] puts them together with the clock and the ports.
//!
//! Every duration here is in *simulated* seconds; [`SimConfig::time_scale`]
//! turns them into real time. Secrets never appear in `Debug` output, so a
//! config can be logged without leaking them.

use serde::{Deserialize, Serialize};

use crate::{BbbConfig, BitrixConfig, EasemobConfig, TencentConfig};

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
    /// Fixed ports for the listeners (one per simulator); `None` (or a 0
    /// entry) picks free ephemeral ports.
    pub ports: Option<SimPorts>,
    /// The BigBlueButton simulator.
    pub bbb: BbbConfig,
    /// The Tencent Cloud Chat simulator.
    pub tencent: TencentConfig,
    /// The Easemob simulator.
    pub easemob: EasemobConfig,
    /// The Bitrix24 simulator.
    pub bitrix: BitrixConfig,
}

/// Ports for the listeners, all bound on 127.0.0.1. A 0 entry picks a free port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimPorts {
    /// The BigBlueButton simulator's port.
    pub bbb: u16,
    /// The Tencent Cloud Chat simulator's port.
    pub tencent: u16,
    /// The Easemob simulator's port.
    pub easemob: u16,
    /// The Bitrix24 simulator's port.
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

/// What a provider config's `Debug` shows for a secret.
pub(crate) const REDACTED: &str = "<redacted>";
