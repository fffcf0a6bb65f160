//! Helpers for the providers' unit tests.

use std::path::Path;

use super::ProviderContext;
use crate::config::{ChannelConfig, Config};
use crate::wit::types::{Content, Message};

/// A channel as the config layer hands it to a provider. Built through the
/// real parser so it has exactly the fields the config layer fills.
pub fn channel(provider: &str, target: Option<toml::Value>, options: toml::Table) -> ChannelConfig {
    let mut provider_table = toml::Table::new();
    provider_table.insert("kind".into(), toml::Value::String("console".into()));
    let mut channel_table = options;
    channel_table.insert("provider".into(), toml::Value::String(provider.into()));
    if let Some(target) = target {
        channel_table.insert("target".into(), target);
    }
    let mut providers = toml::Table::new();
    providers.insert(provider.into(), provider_table.into());
    let mut channels = toml::Table::new();
    channels.insert("c".into(), channel_table.into());
    let mut root = toml::Table::new();
    root.insert("providers".into(), providers.into());
    root.insert("channels".into(), channels.into());
    let text = toml::to_string(&root).expect("test config serialises");
    let config = Config::parse(&text, Path::new("test.toml"), Path::new("."))
        .unwrap_or_else(|e| panic!("test config: {e}"));
    config.channels["c"].clone()
}

pub fn context() -> ProviderContext {
    ProviderContext {
        http: reqwest::Client::new(),
        base_dir: ".".into(),
    }
}

pub fn text(t: &str) -> Content {
    Content::Text(t.to_string())
}

pub fn message(content: Content) -> Message {
    Message {
        channel: "c".into(),
        content,
        sender: None,
        extra: None,
        idempotency_key: None,
        reply_to: None,
        options: None,
    }
}

/// A secret in a file, as `{ file = "…" }` refers to it. Keep the folder
/// alive as long as the secret is read.
pub fn secret_file(value: &str) -> (tempfile::TempDir, toml::Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("secret");
    std::fs::write(&path, value).expect("write secret");
    let mut t = toml::Table::new();
    t.insert(
        "file".into(),
        toml::Value::String(path.display().to_string()),
    );
    (dir, t.into())
}
