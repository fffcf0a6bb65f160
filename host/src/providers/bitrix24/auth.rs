//! Bitrix24 credentials: an incoming webhook's code, or an OAuth pair that
//! is refreshed once when the portal says `expired_token`, and kept in the
//! storage backend, because the portal kills a pair once it is refreshed.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::token_store::{self, PairStore};
use crate::config::{ConfigIssue, Secret};
use crate::providers::common::{self, Options, Reply, form_query};
use crate::providers::{DeliveryOutcome, ProviderContext};
use crate::storage::tokens::{Lock, StoredRow};

const DEFAULT_TOKEN_URL: &str = "https://oauth.bitrix.info/oauth/token/";

pub(super) enum Auth {
    Webhook {
        user_id: u64,
        code: Secret,
    },
    /// Boxed: the pair, its lock and its store are far larger than a webhook.
    OAuth(Box<OAuth>),
}

pub(super) struct OAuth {
    pub(super) client_id: String,
    pub(super) client_secret: Secret,
    pub(super) token_url: String,
    /// Held across a refresh, which is what makes the refresh single-flight
    /// within a host; the store's lock makes it single-flight across hosts.
    pub(super) tokens: tokio::sync::Mutex<Tokens>,
    pub(super) store: PairStore,
}

pub(super) struct Tokens {
    pub(super) access: Secret,
    pub(super) refresh: Secret,
    /// The stored row's version this pair came from or was written as.
    pub(super) version: i64,
    /// Whether the stored pair has been read since the host started.
    pub(super) loaded: bool,
    /// Why the portal refused this pair's refresh token: set, the host
    /// stops asking the token server until the config or the store changes.
    pub(super) refused: Option<String>,
}

impl Tokens {
    pub(super) fn from_config(access: Secret, refresh: Secret) -> Tokens {
        Tokens {
            access,
            refresh,
            version: 0,
            loaded: false,
            refused: None,
        }
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    refresh_token: Option<String>,
}

pub(super) fn webhook(
    prefix: &str,
    table: &toml::Table,
    context: &ProviderContext,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Auth> {
    let mut o = Options::new(table, prefix, &["user_id", "code"]);
    let user_id = o.integer("user_id", true, 1, i64::MAX);
    let code = o.secret("code", true, &context.base_dir);
    if let Some(c) = &code
        && !c.expose().bytes().all(|b| b.is_ascii_alphanumeric())
    {
        // The code becomes a URL path segment; Bitrix24 issues letters and
        // digits only, so anything else is a copy-paste accident.
        o.issue(
            "code",
            "the webhook code must be letters and digits only, as Bitrix24 issues it",
        );
    }
    let ok = o.issues.is_empty();
    issues.append(&mut o.issues);
    match (user_id, code) {
        (Some(user_id), Some(code)) if ok => Some(Auth::Webhook {
            user_id: user_id as u64,
            code,
        }),
        _ => None,
    }
}

/// `provider_key` (`providers.NAME`) and `base` (the portal) name the
/// stored pair's row.
pub(super) fn oauth(
    prefix: &str,
    table: &toml::Table,
    context: &ProviderContext,
    provider_key: &str,
    base: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Auth> {
    let mut o = Options::new(
        table,
        prefix,
        &[
            "access_token",
            "refresh_token",
            "client_id",
            "client_secret",
            "token_url",
            "token_key",
        ],
    );
    let access = o.secret("access_token", true, &context.base_dir);
    let refresh = o.secret("refresh_token", true, &context.base_dir);
    let client_id = o.string("client_id", true);
    let client_secret = o.secret("client_secret", true, &context.base_dir);
    let token_key = o.secret("token_key", true, &context.base_dir);
    if let Some(k) = &token_key
        && !token_store::key_is_valid(k.expose())
    {
        o.issue(
            "token_key",
            "must be 32 random bytes as 64 hex digits, such as the output of `openssl rand -hex 32`; \
             it encrypts the refreshed OAuth pair in the storage backend",
        );
    }
    let token_url = match o.string("token_url", false) {
        None => Some(DEFAULT_TOKEN_URL.to_string()),
        Some(raw) => match common::check_base_url(&raw) {
            // The OAuth server wants its trailing slash.
            Ok(_) => Some(raw.trim().to_string()),
            Err(message) => {
                o.issue("token_url", message);
                None
            }
        },
    };
    let key_setting = o.key("token_key");
    let ok = o.issues.is_empty();
    issues.append(&mut o.issues);
    match (
        access,
        refresh,
        client_id,
        client_secret,
        token_url,
        token_key,
    ) {
        (
            Some(access),
            Some(refresh),
            Some(client_id),
            Some(client_secret),
            Some(token_url),
            Some(token_key),
        ) if ok => {
            let store = PairStore::new(
                context.tokens.clone(),
                format!("bitrix24 {provider_key} {base} {client_id}"),
                key_setting,
                token_key,
                &refresh,
            );
            Some(Auth::OAuth(Box::new(OAuth {
                client_id,
                client_secret,
                token_url,
                tokens: tokio::sync::Mutex::new(Tokens::from_config(access, refresh)),
                store,
            })))
        }
        _ => None,
    }
}

pub(super) fn with_auth(body: &Value, access: &Secret) -> Value {
    let mut b = body.clone();
    if let Value::Object(map) = &mut b {
        map.insert("auth".into(), Value::String(access.expose().to_string()));
    }
    b
}

/// How long a host holds the refresh lock: well past the HTTP client's
/// 15 s timeout, so the lease outlives any refresh that can still answer.
const LOCK_LEASE: Duration = Duration::from_secs(60);
/// How long a send waits for another host's refresh before it retries later.
const LOCK_WAIT: Duration = Duration::from_secs(20);
const LOCK_POLL: Duration = Duration::from_millis(100);

/// What asking the token server came to.
enum Refreshed {
    Pair(Secret, Secret),
    /// The portal refused the refresh token or the client: asking again
    /// with the same pair cannot help.
    Refused(DeliveryOutcome),
    /// No answer, or a transient one; the pair may or may not have been
    /// replaced.
    Failed(DeliveryOutcome),
}

fn store_failure(what: &str, e: impl std::fmt::Display) -> DeliveryOutcome {
    DeliveryOutcome::RetryLater {
        after: None,
        reason: format!("{what}: {e}; nothing was refreshed, the send is retried"),
    }
}

impl OAuth {
    /// The pair to send with: after a restart, the newest stored one.
    pub(super) async fn current(&self) -> Result<(Secret, Secret), DeliveryOutcome> {
        let mut t = self.tokens.lock().await;
        if !t.loaded {
            self.adopt_stored(&mut t).await?;
            t.loaded = true;
        }
        if let Some(reason) = t.refused.clone() {
            // Another host may have put a working pair in the store since.
            self.adopt_stored(&mut t).await?;
            if t.refused.is_some() {
                return Err(DeliveryOutcome::CredentialsExpired { reason });
            }
        }
        Ok((t.access.clone(), t.refresh.clone()))
    }

    /// Replaces `t` with the stored pair when the store holds a newer one
    /// of the config's chain.
    async fn adopt_stored(&self, t: &mut Tokens) -> Result<(), DeliveryOutcome> {
        let what = "bitrix24 stored OAuth pair";
        let row = self
            .store
            .store
            .load(&self.store.key)
            .await
            .map_err(|e| store_failure(what, e))?;
        if let Some(row) = row {
            self.adopt_row(t, &row)?;
        }
        Ok(())
    }

    /// Takes the pair in `row` when it is at least as new as this host's
    /// and descends from the config's pair. A row the key does not open is
    /// an error that names the key.
    fn adopt_row(&self, t: &mut Tokens, row: &StoredRow) -> Result<(), DeliveryOutcome> {
        if row.version < t.version {
            return Ok(());
        }
        let pair = self
            .store
            .open(row)
            .map_err(|reason| DeliveryOutcome::CredentialsExpired { reason })?;
        if let Some(p) = pair {
            if p.same_chain {
                if p.refresh.expose() != t.refresh.expose() {
                    t.refused = None;
                }
                t.access = p.access;
                t.refresh = p.refresh;
            } else if !t.loaded {
                tracing::info!(
                    "bitrix24: the config holds a new OAuth pair, not the one the stored pair \
                     descends from; using the config's"
                );
            }
        }
        t.version = row.version;
        Ok(())
    }

    /// A fresh access token, unless another send, or another host, already
    /// replaced `stale`.
    pub(super) async fn refresh(
        &self,
        stale: &Secret,
        http: &reqwest::Client,
    ) -> Result<Secret, DeliveryOutcome> {
        let what = "bitrix24 token refresh";
        let mut t = self.tokens.lock().await;
        if t.access.expose() != stale.expose() {
            return Ok(t.access.clone());
        }
        if let Some(reason) = &t.refused {
            return Err(DeliveryOutcome::CredentialsExpired {
                reason: reason.clone(),
            });
        }
        let key = &self.store.key;
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match self.store.store.try_lock(key, LOCK_LEASE).await {
                Err(e) => return Err(store_failure(what, e)),
                Ok(Lock::Busy) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(DeliveryOutcome::RetryLater {
                            after: None,
                            reason: format!(
                                "{what}: another host has held the refresh lock for over {} s; \
                                 the send is retried (a host that died holding it loses it after {} s)",
                                LOCK_WAIT.as_secs(),
                                LOCK_LEASE.as_secs()
                            ),
                        });
                    }
                    tokio::time::sleep(LOCK_POLL).await;
                    // Another host refreshing writes the new pair before it
                    // lets go of the lock.
                    if let Ok(Some(row)) = self.store.store.load(key).await {
                        self.adopt_row(&mut t, &row)?;
                        if t.access.expose() != stale.expose() {
                            return Ok(t.access.clone());
                        }
                    }
                }
                Ok(Lock::Taken(row)) => {
                    // Read under the lock: another host may have refreshed
                    // since this one's pair was read.
                    if let Err(outcome) = self.adopt_row(&mut t, &row) {
                        let _ = self.store.store.unlock(key).await;
                        return Err(outcome);
                    }
                    if t.access.expose() != stale.expose() {
                        let _ = self.store.store.unlock(key).await;
                        return Ok(t.access.clone());
                    }
                    return self.refresh_locked(&mut t, http).await;
                }
            }
        }
    }

    /// Asks the token server, holding the store's lock, and stores the
    /// new pair before releasing it.
    async fn refresh_locked(
        &self,
        t: &mut Tokens,
        http: &reqwest::Client,
    ) -> Result<Secret, DeliveryOutcome> {
        let key = &self.store.key;
        match self.ask_token_server(&t.refresh, http).await {
            Refreshed::Pair(access, refresh) => {
                let version = t.version + 1;
                let saved = match self.store.seal(version, &access, &refresh) {
                    Ok((nonce, sealed)) => self
                        .store
                        .store
                        .save_and_unlock(key, version, nonce, sealed)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                match saved {
                    Ok(()) => tracing::info!(
                        "bitrix24: access token refreshed; the new pair is stored (version {version})"
                    ),
                    // The portal has already replaced the old pair: this one
                    // is the only one that works, so it is used anyway.
                    Err(e) => tracing::error!(
                        "bitrix24: access token refreshed, but the new pair could not be stored \
                         ({e}); it is kept in memory only, and a restart or another host will \
                         need a newly issued pair in the config"
                    ),
                }
                t.access = access;
                t.refresh = refresh;
                t.version = version;
                t.refused = None;
                Ok(t.access.clone())
            }
            Refreshed::Refused(outcome) => {
                let _ = self.store.store.unlock(key).await;
                if let DeliveryOutcome::CredentialsExpired { reason } = &outcome {
                    t.refused = Some(reason.clone());
                }
                Err(outcome)
            }
            Refreshed::Failed(outcome) => {
                let _ = self.store.store.unlock(key).await;
                Err(outcome)
            }
        }
    }

    async fn ask_token_server(&self, refresh: &Secret, http: &reqwest::Client) -> Refreshed {
        let what = "bitrix24 token refresh";
        let form = form_query(&[
            ("grant_type", "refresh_token"),
            ("client_id", &self.client_id),
            ("client_secret", self.client_secret.expose()),
            ("refresh_token", refresh.expose()),
        ]);
        let response = match http
            .post(&self.token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Refreshed::Failed(common::transport_failure(what, e)),
        };
        // Only the client secret is redacted up front: a success carries the
        // tokens, and Bitrix24 may hand back the same refresh token.
        let reply = match common::read_reply(what, response, &[self.client_secret.expose()]).await {
            Ok(r) => r,
            Err(outcome) => return Refreshed::Failed(outcome),
        };
        let answer = serde_json::from_slice::<TokenAnswer>(&reply.body).ok();
        if (200..300).contains(&reply.status)
            && let Some(TokenAnswer {
                access_token: Some(access),
                refresh_token: Some(refresh),
            }) = answer
            && is_token(&access)
            && is_token(&refresh)
        {
            return Refreshed::Pair(Secret::new(access), Secret::new(refresh));
        }
        // Past here the answer is no pair: nothing of the refresh token it
        // was asked with may be quoted.
        let reply = Reply {
            body: common::redact(&reply.body, &[refresh.expose()]),
            ..reply
        };
        if (200..300).contains(&reply.status) {
            // Never quoted: the body may hold a token.
            return Refreshed::Failed(DeliveryOutcome::RetryLater {
                after: None,
                reason: format!(
                    "{what}: HTTP {} without a usable access_token and refresh_token (visible \
                     ASCII, at most {MAX_TOKEN_BYTES} bytes each); the send is retried",
                    reply.status
                ),
            });
        }
        let said = describe_error(&reply);
        if reply.is_transient() {
            return Refreshed::Failed(DeliveryOutcome::RetryLater {
                after: reply.retry_after,
                reason: format!("{what}: HTTP {}: {said}", reply.status),
            });
        }
        // OAuth 2.0's own codes (RFC 6749 §5.2), which the token server
        // answers: a wrong client is the config's, not the pair's.
        let error = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned));
        if matches!(
            error.as_deref(),
            Some("invalid_client" | "wrong_client" | "unauthorized_client")
        ) {
            return Refreshed::Refused(DeliveryOutcome::CredentialsExpired {
                reason: format!(
                    "{what}: HTTP {}: the portal refused the application's client_id or \
                     client_secret ({said}); check `{}.client_id` and `client_secret` against \
                     the application's settings, then reload or restart botbox",
                    reply.status,
                    self.store.key_setting.trim_end_matches(".token_key"),
                ),
            });
        }
        Refreshed::Refused(DeliveryOutcome::CredentialsExpired {
            reason: format!(
                "{what}: HTTP {}: the portal refused the refresh token or the client credentials \
                 ({said}). A refresh token works once: if an earlier refresh's answer was lost, \
                 the portal has already replaced the pair and it cannot be recovered. Get a new \
                 pair (re-install or re-authorize the application), put it in `{}.access_token` \
                 and `refresh_token`, and reload or restart botbox; no further refresh is tried \
                 with this pair",
                reply.status,
                self.store.key_setting.trim_end_matches(".token_key"),
            ),
        })
    }
}

/// The most bytes a token may have: Bitrix24's are a few dozen characters.
pub(super) const MAX_TOKEN_BYTES: usize = 512;

/// Whether the token server's text can be a token: visible ASCII, bounded.
/// Anything else is refused before it is stored or sent anywhere.
fn is_token(t: &str) -> bool {
    !t.is_empty() && t.len() <= MAX_TOKEN_BYTES && t.bytes().all(|b| b.is_ascii_graphic())
}

fn describe_error(reply: &Reply) -> String {
    let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    match (v["error"].as_str(), v["error_description"].as_str()) {
        (Some(code), Some(text)) => format!(
            "{}: {}",
            common::provider_code(code),
            common::provider_text(text)
        ),
        (Some(code), None) => common::provider_code(code),
        _ => reply.snippet(),
    }
}
