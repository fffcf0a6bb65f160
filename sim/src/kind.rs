//! The one list of simulators. Everything [`crate::Sim`], `botbox sim` and
//! the demo need to know about one simulated provider is its [`SimKind`],
//! declared in its own module; [`KINDS`] lists them, in port order. A new
//! simulator is its module (with its `KIND`), a [`SimProvider`] variant, its
//! `SimConfig`/`SimPorts` fields, and one line in [`KINDS`].

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use serde_json::Value;

use crate::clock::SimClock;
use crate::config::{SimConfig, SimPorts};
use crate::record::SimProvider;
use crate::{Shared, Sim};

/// A simulator's own state, kept in [`Shared`] and found by its type.
pub(crate) type State = Box<dyn Any + Send + Sync>;

/// How a section writer refers to a credential: called with a file stem
/// (`bbb-secret`, …) and the value, it returns the TOML value to write
/// (`{ file = "…" }`), having stored the value wherever the caller keeps
/// secrets.
pub type SecretRef<'a> = &'a mut dyn FnMut(&str, &str) -> String;

/// One simulated provider, as the provider-neutral code sees it.
pub(crate) struct SimKind {
    pub(crate) provider: SimProvider,
    /// The `[providers.NAME]` section name `botbox sim` and the demo use.
    pub(crate) section_name: &'static str,
    /// Appended to `http://127.0.0.1:P` to form the base URL clients use.
    pub(crate) base_path: &'static str,
    /// Its entry in [`SimPorts`].
    pub(crate) port: fn(&mut SimPorts) -> &mut u16,
    /// Refuses a config this simulator cannot run with (the message names the key).
    pub(crate) validate: fn(&SimConfig) -> Result<(), &'static str>,
    /// Its state, from the config, its base URL and the shared clock; a type
    /// of its own, as [`Shared::state`] finds it by type.
    pub(crate) state: fn(&SimConfig, &str, &SimClock) -> State,
    /// Its provider routes (the `/__sim/` admin routes are added for it).
    pub(crate) router: fn() -> Router<Arc<Shared>>,
    /// The path recorded for a request that matched no route (secrets removed).
    pub(crate) unrouted_path: fn(String) -> String,
    /// The text of an accepted delivery's content, when it is a text message.
    pub(crate) text: fn(&Value) -> Option<String>,
    /// Its `[providers.NAME]` section for botbox, pointing at `url`.
    pub(crate) section: fn(&SimConfig, &str, &str, SecretRef<'_>) -> String,
    /// Every credential it knows (for leak checks), whether or not a section uses it.
    pub(crate) credentials: fn(&SimConfig) -> Vec<String>,
    /// Its own error answer for an error code, an HTTP status (its usual
    /// one when `None`) and words: what `Fault::ErrorAnswer` answers.
    pub(crate) error_answer: fn(&str, Option<u16>, &str) -> axum::response::Response,
}

/// Every simulator, in port order (`SimPorts::consecutive`).
pub(crate) static KINDS: &[SimKind] = &[
    crate::bbb::KIND,
    crate::tencent::KIND,
    crate::easemob::KIND,
    crate::bitrix::KIND,
];

/// The simulator of `provider`.
pub(crate) fn kind(provider: SimProvider) -> &'static SimKind {
    KINDS
        .iter()
        .find(|k| k.provider == provider)
        .expect("every SimProvider has a SimKind in KINDS")
}

/// The path recorded for a request that matched no route.
pub(crate) fn keep_path(path: String) -> String {
    path
}

/// `s` as a TOML string literal.
pub(crate) fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// `provider`'s `[providers.NAME]` section for botbox: its kind, `url` and
/// the credentials of `cfg`, each passed through `secret` (which stores it
/// and returns how the config refers to it).
pub fn provider_section(
    provider: SimProvider,
    cfg: &SimConfig,
    name: &str,
    url: &str,
    secret: SecretRef<'_>,
) -> String {
    (kind(provider).section)(cfg, name, url, secret)
}

/// The default `[providers.*]` section name of `provider`'s simulator
/// (`bbb`, `tencent`, `easemob`, `bitrix24`).
pub fn section_name(provider: SimProvider) -> &'static str {
    kind(provider).section_name
}

/// Every credential of `cfg`, all simulators: what must never show up in a
/// log or an answer.
pub fn credentials(cfg: &SimConfig) -> Vec<String> {
    KINDS.iter().flat_map(|k| (k.credentials)(cfg)).collect()
}

/// Writes the simulators' credentials as secret files, so configs refer to
/// them as `{ file = … }` exactly as they would to real ones.
pub fn write_secrets(dir: &Path, cfg: &SimConfig) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // The files are those the sections refer to: ask each section.
    let mut files = Vec::new();
    for k in KINDS {
        (k.section)(cfg, k.section_name, "", &mut |stem, value| {
            files.push((stem.to_owned(), value.to_owned()));
            String::new()
        });
    }
    for (stem, value) in files {
        std::fs::write(dir.join(stem), value)?;
    }
    Ok(())
}

/// The `[providers.*]` sections for a running simulator (one per simulator,
/// under its default name), with secrets from the files [`write_secrets`]
/// wrote in `secrets`: what `botbox sim` prints and the demo runs with.
pub fn provider_sections(sim: &Sim, secrets: &Path) -> String {
    let mut file = |stem: &str, _: &str| {
        format!(
            "{{ file = {} }}",
            toml_str(&secrets.join(stem).display().to_string())
        )
    };
    KINDS
        .iter()
        .map(|k| {
            (k.section)(
                sim.config(),
                k.section_name,
                &sim.url(k.provider),
                &mut file,
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
