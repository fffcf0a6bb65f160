//! Bitrix24 credentials: an incoming webhook's code, or an OAuth pair that
//! is refreshed once when the portal says `expired_token`.

use serde::Deserialize;
use serde_json::Value;

use crate::config::{ConfigIssue, Secret};
use crate::providers::common::{self, Options, Reply, form_query};
use crate::providers::{DeliveryOutcome, ProviderContext};

const DEFAULT_TOKEN_URL: &str = "https://oauth.bitrix.info/oauth/token/";

pub(super) enum Auth {
    Webhook { user_id: u64, code: Secret },
    OAuth(OAuth),
}

pub(super) struct OAuth {
    pub(super) client_id: String,
    pub(super) client_secret: Secret,
    pub(super) token_url: String,
    /// Held across a refresh, which is what makes the refresh single-flight.
    pub(super) tokens: tokio::sync::Mutex<Tokens>,
}

pub(super) struct Tokens {
    pub(super) access: Secret,
    pub(super) refresh: Secret,
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

pub(super) fn oauth(
    prefix: &str,
    table: &toml::Table,
    context: &ProviderContext,
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
        ],
    );
    let access = o.secret("access_token", true, &context.base_dir);
    let refresh = o.secret("refresh_token", true, &context.base_dir);
    let client_id = o.string("client_id", true);
    let client_secret = o.secret("client_secret", true, &context.base_dir);
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
    let ok = o.issues.is_empty();
    issues.append(&mut o.issues);
    match (access, refresh, client_id, client_secret, token_url) {
        (Some(access), Some(refresh), Some(client_id), Some(client_secret), Some(token_url))
            if ok =>
        {
            Some(Auth::OAuth(OAuth {
                client_id,
                client_secret,
                token_url,
                tokens: tokio::sync::Mutex::new(Tokens { access, refresh }),
            }))
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

impl OAuth {
    /// A fresh access token, unless another send already replaced `stale`.
    pub(super) async fn refresh(
        &self,
        stale: &Secret,
        http: &reqwest::Client,
    ) -> Result<Secret, DeliveryOutcome> {
        let what = "bitrix24 token refresh";
        let mut tokens = self.tokens.lock().await;
        if tokens.access.expose() != stale.expose() {
            return Ok(tokens.access.clone());
        }
        let form = form_query(&[
            ("grant_type", "refresh_token"),
            ("client_id", &self.client_id),
            ("client_secret", self.client_secret.expose()),
            ("refresh_token", tokens.refresh.expose()),
        ]);
        let response = http
            .post(&self.token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form)
            .send()
            .await
            .map_err(|e| common::transport_failure(what, e))?;
        // Only the client secret is redacted up front: a success carries the
        // tokens, and Bitrix24 may hand back the same refresh token.
        let reply = common::read_reply(what, response, &[self.client_secret.expose()]).await?;
        let answer = serde_json::from_slice::<TokenAnswer>(&reply.body).ok();
        if (200..300).contains(&reply.status)
            && let Some(TokenAnswer {
                access_token: Some(access),
                refresh_token,
            }) = answer
            && !access.is_empty()
        {
            tokens.access = Secret::new(access);
            if let Some(refresh) = refresh_token.filter(|r| !r.is_empty()) {
                tokens.refresh = Secret::new(refresh);
            }
            tracing::info!("bitrix24: access token refreshed (kept in memory only)");
            return Ok(tokens.access.clone());
        }
        let reply = Reply {
            body: common::redact(&reply.body, &[tokens.refresh.expose(), stale.expose()]),
            ..reply
        };
        let said = describe_error(&reply);
        Err(if reply.is_transient() {
            DeliveryOutcome::RetryLater {
                after: reply.retry_after,
                reason: format!("{what}: HTTP {}: {said}", reply.status),
            }
        } else {
            DeliveryOutcome::CredentialsExpired {
                reason: format!(
                    "{what}: HTTP {}: the refresh token or client credentials were refused: {said}",
                    reply.status
                ),
            }
        })
    }
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
