//! Registers botbox's callback URL with BigBlueButton's webhooks module:
//! a `hooks/create` call signed with the API checksum, as every other BBB
//! call. The other providers take their callback URL in their consoles.

use super::ApiSettings;
use super::api::{parse_envelope, signed_url};
use crate::providers::http_client;
use crate::sanitize;

/// What `hooks/create` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new hook, with its id.
    Created(String),
    /// The server already had a hook for this URL (and meeting).
    AlreadyThere(String),
}

/// Registers `callback_url` with the BBB server of `api` (the provider's
/// own parsed options), for one meeting or for all. Errors name what went
/// wrong and never carry the secret or a checksum.
pub async fn register(
    api: &ApiSettings,
    callback_url: &str,
    meeting: Option<&str>,
) -> Result<Registered, String> {
    let secret = &api.secret;
    let mut params = vec![("callbackURL", callback_url)];
    if let Some(m) = meeting {
        params.push(("meetingID", m));
    }
    let url = signed_url(
        &api.base,
        "hooks/create",
        &params,
        api.algorithm,
        secret.expose(),
    );
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
