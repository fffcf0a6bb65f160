//! Registers botbox's callback URL with BigBlueButton's webhooks module:
//! a `hooks/create` call signed with the API checksum, as every other BBB
//! call. The other providers take their callback URL in their consoles.

use crate::config::{Config, take_secret};
use crate::providers::bigbluebutton::api::{Checksum, parse_envelope, signed_url};
use crate::providers::http_client;
use crate::sanitize;

use super::{HookKind, WebhookSettings};

/// What `hooks/create` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new hook, with its id.
    Created(String),
    /// The server already had a hook for this URL (and meeting).
    AlreadyThere(String),
}

/// Registers `provider`'s callback URL (its `inbound.url`) with the BBB
/// server, for one meeting or for all. Errors name what went wrong and
/// never carry the secret or a checksum.
pub async fn register_bbb(
    config: &Config,
    provider: &str,
    meeting: Option<&str>,
) -> Result<Registered, String> {
    let settings = WebhookSettings::from_config(config)
        .map_err(|issues| {
            issues
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })?
        .ok_or("the config has no [webhooks] section: there is nothing to register")?;
    let hook = settings.providers.get(provider).ok_or_else(|| {
        format!("provider `{provider}` has no [providers.{provider}.inbound] section")
    })?;
    if hook.kind != HookKind::BigBlueButton {
        return Err(format!(
            "provider `{provider}` is not bigbluebutton; set its callback URL in the provider's console"
        ));
    }
    let options = &config.providers[provider].options;
    let key = format!("providers.{provider}");
    let base = options
        .get("url")
        .and_then(toml::Value::as_str)
        .map(|u| u.trim_end_matches('/').to_string())
        .ok_or_else(|| format!("{key}.url is missing"))?;
    let secret = take_secret(options, "secret", &key, &config.base_dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{key}.secret is missing"))?;
    let algorithm = match options.get("checksum").and_then(toml::Value::as_str) {
        None => Checksum::Sha256,
        Some(name) => Checksum::parse(name).ok_or_else(|| format!("{key}.checksum is unknown"))?,
    };
    let mut params = vec![("callbackURL", hook.url.as_str())];
    if let Some(m) = meeting {
        params.push(("meetingID", m));
    }
    let url = signed_url(&base, "hooks/create", &params, algorithm, secret.expose());
    let response = http_client()
        .map_err(|e| {
            format!(
                "hooks/create: cannot start the HTTP client: {}",
                e.without_url()
            )
        })?
        .get(url)
        .send()
        .await
        .map_err(|e| format!("hooks/create: {}", e.without_url()))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("hooks/create: {}", e.without_url()))?;
    let envelope = parse_envelope(&body).map_err(|e| {
        format!("hooks/create answered HTTP {status} without a BigBlueButton response: {e}")
    })?;
    let hook_id = hook_id(&body).unwrap_or_default();
    match (
        envelope.returncode.as_deref(),
        envelope.message_key.as_deref(),
    ) {
        (Some("SUCCESS"), _) => Ok(Registered::Created(hook_id)),
        (_, Some("duplicateWarning")) => Ok(Registered::AlreadyThere(hook_id)),
        (_, key) => Err(format!(
            "hooks/create failed: {} {}",
            sanitize::for_log(key.unwrap_or("(no messageKey)"), 64),
            sanitize::for_log(
                &crate::providers::redact_text(
                    envelope.message.as_deref().unwrap_or(""),
                    &[secret.expose()]
                ),
                200
            )
        )),
    }
}

/// The `<hookID>` of a `hooks/create` answer.
fn hook_id(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<hookID>")? + "<hookID>".len();
    let end = text[start..].find("</hookID>")? + start;
    Some(sanitize::for_log(&text[start..end], 64))
}
