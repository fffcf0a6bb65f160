//! Fault injection: the next N requests to a provider (or one endpoint of it)
//! misbehave the way real networks and servers do.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SimProvider;
use crate::lock;

/// One way a request can go wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer this HTTP status (500–599; anything else becomes 500) with a
    /// plain-text body, as a proxy in front of the provider would. The request
    /// is not processed.
    ServerError { status: u16 },
    /// Accept the connection, read the request, say nothing for `duration`,
    /// then close the connection without an answer. The request is not processed.
    Hang {
        #[serde(rename = "ms", with = "duration_ms")]
        duration: Duration,
    },
    /// Process the request normally, then wait `delay` before answering. A
    /// client that times out first has still had its message delivered.
    Slow {
        #[serde(rename = "ms", with = "duration_ms")]
        delay: Duration,
    },
    /// Close the connection without an answer. The request is not processed.
    Drop,
    /// Process the request (a message is delivered), then close the
    /// connection without an answer: the case retries must be idempotent for.
    LostResponse,
    /// Answer with the provider's own rate-limit reply (Tencent 10023,
    /// Easemob 429, Bitrix24 503 QUERY_LIMIT_EXCEEDED; BigBlueButton documents
    /// none, so HTTP 429 as from a proxy). Not counted as a violation.
    RateLimited,
    /// Answer with the provider's own error `code`, written as its server
    /// writes errors: Tencent `ErrorCode` (HTTP 200), BigBlueButton
    /// `messageKey` (a FAILED response), Easemob and Bitrix24 `error` (with
    /// `status`, 400 unless given). `description` is the provider's words
    /// (`ErrorInfo`, `message`, `error_description`). The request is not
    /// processed: this is how a test makes a simulator answer a documented
    /// code its own logic never reaches (a blocklisted sender, a plan that
    /// expired).
    ErrorAnswer {
        code: String,
        #[serde(default)]
        status: Option<u16>,
        #[serde(default)]
        description: Option<String>,
    },
}

impl Fault {
    pub fn server_error(status: u16) -> Self {
        Fault::ServerError { status }
    }
    pub fn hang(duration: Duration) -> Self {
        Fault::Hang { duration }
    }
    pub fn slow(delay: Duration) -> Self {
        Fault::Slow { delay }
    }
    /// The provider's own error `code`, with its default status and words.
    pub fn error_answer(code: impl Into<String>) -> Self {
        Fault::ErrorAnswer {
            code: code.into(),
            status: None,
            description: None,
        }
    }
    /// The provider's own error `code` with an HTTP `status` and words.
    pub fn error_answer_with(code: impl Into<String>, status: u16, description: &str) -> Self {
        Fault::ErrorAnswer {
            code: code.into(),
            status: Some(status),
            description: Some(description.to_owned()),
        }
    }

    /// Whether the provider logic runs at all under this fault.
    pub(crate) fn processes(&self) -> bool {
        matches!(self, Fault::Slow { .. } | Fault::LostResponse)
    }
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[derive(Clone, Debug)]
struct Rule {
    provider: SimProvider,
    endpoint: Option<String>,
    fault: Fault,
    remaining: u32,
}

/// Pending faults, consumed in the order they were injected.
#[derive(Default)]
pub(crate) struct Faults {
    rules: Mutex<Vec<Rule>>,
}

impl Faults {
    pub(crate) fn inject(
        &self,
        provider: SimProvider,
        endpoint: Option<String>,
        fault: Fault,
        count: u32,
    ) {
        if count == 0 {
            return;
        }
        lock(&self.rules).push(Rule {
            provider,
            endpoint,
            fault,
            remaining: count,
        });
    }

    /// Takes one use of the first rule matching this request, if any.
    pub(crate) fn take(&self, provider: SimProvider, endpoint: &str) -> Option<Fault> {
        let mut rules = lock(&self.rules);
        let i = rules.iter().position(|r| {
            r.provider == provider && r.endpoint.as_deref().is_none_or(|e| e == endpoint)
        })?;
        let fault = rules[i].fault.clone();
        rules[i].remaining -= 1;
        if rules[i].remaining == 0 {
            rules.remove(i);
        }
        Some(fault)
    }

    pub(crate) fn clear(&self, provider: Option<SimProvider>) {
        lock(&self.rules).retain(|r| provider.is_some_and(|p| p != r.provider));
    }

    pub(crate) fn pending(&self, provider: SimProvider) -> u32 {
        lock(&self.rules)
            .iter()
            .filter(|r| r.provider == provider)
            .map(|r| r.remaining)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_rules_only_match_their_endpoint_and_run_out() {
        let f = Faults::default();
        f.inject(SimProvider::Easemob, Some("token".into()), Fault::Drop, 2);
        assert_eq!(f.take(SimProvider::Easemob, "messages/broadcast"), None);
        assert_eq!(f.take(SimProvider::Tencent, "token"), None);
        assert_eq!(f.take(SimProvider::Easemob, "token"), Some(Fault::Drop));
        assert_eq!(f.take(SimProvider::Easemob, "token"), Some(Fault::Drop));
        assert_eq!(f.take(SimProvider::Easemob, "token"), None);
    }

    #[test]
    fn faults_round_trip_as_json() {
        let f = Fault::hang(Duration::from_millis(1500));
        let j = serde_json::to_value(&f).unwrap_or_default();
        assert_eq!(j, serde_json::json!({"kind": "hang", "ms": 1500}));
        let back: Fault = serde_json::from_value(j).unwrap_or(Fault::Drop);
        assert_eq!(back, f);
        let j = serde_json::json!({"kind": "error_answer", "code": "20007"});
        let back: Fault = serde_json::from_value(j).unwrap_or(Fault::Drop);
        assert_eq!(back, Fault::error_answer("20007"));
    }
}
