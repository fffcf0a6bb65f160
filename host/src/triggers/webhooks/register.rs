//! `botbox webhooks register`'s library half: finds the callback URL the
//! listener serves a BigBlueButton account at, and has the provider
//! register it (`providers::bigbluebutton::register`, a signed
//! `hooks/create`). The other providers take their callback URL in their
//! consoles.

use crate::config::Config;
use crate::providers::bigbluebutton::{self, ApiSettings};

use super::WebhookSettings;

pub use crate::providers::bigbluebutton::register::Registered;

/// Registers `provider`'s callback URL (its `inbound.url`) with the BBB
/// server, for one meeting or for all. Errors name what went wrong and
/// never carry the secret or a checksum.
pub async fn register_bbb(
    config: &Config,
    provider: &str,
    meeting: Option<&str>,
) -> Result<Registered, String> {
    let joined = |issues: Vec<crate::config::ConfigIssue>| {
        issues
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let settings = WebhookSettings::from_config(config)
        .map_err(joined)?
        .ok_or("the config has no [webhooks] section: there is nothing to register")?;
    let hook = settings.providers.get(provider).ok_or_else(|| {
        format!("provider `{provider}` has no [providers.{provider}.inbound] section")
    })?;
    if hook.kind != bigbluebutton::KIND.name {
        return Err(format!(
            "provider `{provider}` is not bigbluebutton; set its callback URL in the provider's console"
        ));
    }
    // The provider's own reading of its options: the same url, secret and
    // checksum its outbound calls use.
    let api = ApiSettings::from_options(
        &format!("providers.{provider}"),
        &config.providers[provider].options,
        &config.base_dir,
    )
    .map_err(joined)?;
    bigbluebutton::register::register(&api, &hook.url, meeting).await
}
