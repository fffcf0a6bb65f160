//! Pinned plugins from an OCI registry, against a real registry on loopback
//! (Debian's `docker-registry`, started per test): push and run by digest,
//! the wkg layout both ways, a tag that moves, a digest that does not match,
//! a registry that is down, and a component over the size cap.

mod support;

use std::path::Path;

use botbox::app::App;
use botbox::config::{Config, RegistryAccess, Sha256Digest, cached_component};
use botbox::distribution::{self, FetchError, Origin, Registry, SourceError};
use botbox::runtime::LoadError;
use botbox::wit::types::{CustomEvent, Event};
use serde_json::json;
use support::host::botbox;
use support::logs;
use support::registry::RegistryServer;

const REPO: &str = "bots/greeter";

fn poke() -> Event {
    Event::Custom(CustomEvent {
        name: "poke".into(),
        payload: String::new(),
    })
}

/// A host whose plugin `bot` comes from `path`, pinned to `sha256`, with
/// its state (and so the pull cache) in `state`.
fn app(dir: &Path, state: &str, path: &str, sha256: &Sha256Digest, extra: &str) -> App {
    let text = format!(
        "[storage]\ndir = \"{state}\"\n\
         [providers.console]\nkind = \"console\"\n\
         [channels.lobby]\nprovider = \"console\"\n\
         [plugins.bot]\npath = \"{path}\"\nsha256 = \"{}\"\nchannels = [\"lobby\"]\n{extra}\n",
        sha256.hex()
    );
    let config = Config::parse(&text, &dir.join("botbox.toml"), dir)
        .unwrap_or_else(|e| panic!("config: {e}\n{text}"));
    App::build(config).expect("build app")
}

/// What the plugin logs when poked: which version is in service.
async fn ran(app: &App) -> String {
    let mut log = app.runtime.services().log_observers.subscribe();
    app.runtime.dispatch("bot", &poke()).await.expect("poke");
    log.recv().await.expect("a log line").message
}

async fn load(app: &App) -> Result<(), LoadError> {
    app.runtime
        .load("bot", &app.config.plugins["bot"])
        .await
        .map(|_| ())
}

async fn push(registry: &RegistryServer, tag: &str, component: &[u8]) -> distribution::Pushed {
    let reference = botbox::config::OciReference::parse(&registry.tag(REPO, tag)).unwrap();
    Registry::new(&reference, &RegistryAccess::default())
        .push(component.to_vec())
        .await
        .expect("push")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_pushed_with_the_cli_runs_from_its_digest_reference() {
    let registry = RegistryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let v1 = logs("v1");
    std::fs::write(dir.path().join("bot.wasm"), &v1).unwrap();

    let (code, out) = botbox(
        dir.path(),
        &["plugin", "push", "bot.wasm", &registry.tag(REPO, "1.0")],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let digest = Sha256Digest::of(&v1);
    assert!(
        out.contains(&format!("sha256 = \"{}\"", digest.hex())),
        "{out}"
    );
    // The printed path pins the manifest too.
    let path_line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("path = \""))
        .expect("a path line")
        .trim_end_matches('"')
        .to_string();
    assert!(
        path_line.starts_with(&format!("oci://{}/{REPO}@sha256:", registry.host())),
        "{out}"
    );

    let host = app(dir.path(), "state", &path_line, &digest, "");
    assert!(host.load_plugins().await.is_empty());
    assert_eq!(ran(&host).await, "v1");
    // The pull cache holds it under its digest.
    let cached = cached_component(&dir.path().join("state"), &digest);
    assert_eq!(std::fs::read(&cached).unwrap(), v1);

    // And `botbox plugin pull` gets the same bytes back.
    let (code, out) = botbox(
        dir.path(),
        &[
            "plugin",
            "pull",
            &path_line,
            "--out",
            "pulled.wasm",
            "--sha256",
            &digest.hex(),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(std::fs::read(dir.path().join("pulled.wasm")).unwrap(), v1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_in_the_wkg_layout_and_a_wkg_layout_artifact_pulls() {
    let registry = RegistryServer::start();
    let v1 = logs("v1");
    let pushed = push(&registry, "1.0", &v1).await;

    // What botbox pushed, as the registry stores it: the media types and
    // config fields of the Wasm OCI Artifact layout (oci-wasm's constants).
    let manifest = registry.manifest(REPO, "1.0").await;
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/wasm");
    assert_eq!(layers[0]["digest"], pushed.digest.to_string());
    assert_eq!(layers[0]["size"], v1.len());
    let config: serde_json::Value = serde_json::from_slice(
        &registry
            .blob(REPO, manifest["config"]["digest"].as_str().unwrap())
            .await,
    )
    .unwrap();
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["os"], "wasip2");
    assert_eq!(config["layerDigests"], json!([pushed.digest.to_string()]));
    let exports = config["component"]["exports"].as_array().unwrap();
    assert!(
        exports.iter().any(|e| e
            .as_str()
            .is_some_and(|e| e.starts_with("botbox:bot/handler@"))),
        "{config}"
    );
    assert!(config["created"].is_string(), "{config}");

    // The reverse: an artifact laid out as `wkg oci push` lays it out
    // (oci-wasm's WasmConfig, written field by field here, with the
    // `author: null` and RFC 3339 `created` it serializes), pulled by botbox.
    let v2 = logs("v2");
    let layer = registry.put_blob(REPO, v2.clone()).await;
    let wkg_config = serde_json::to_vec(&json!({
        "created": "2026-01-01T00:00:00Z",
        "author": null,
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer],
        "component": { "exports": ["botbox:bot/handler@0.1.0"], "imports": [], "target": null },
    }))
    .unwrap();
    let config_len = wkg_config.len();
    let config_digest = registry.put_blob(REPO, wkg_config).await;
    registry
        .put_manifest(
            REPO,
            "wkg",
            &json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.wasm.config.v0+json",
                    "digest": config_digest,
                    "size": config_len,
                },
                "layers": [{ "mediaType": "application/wasm", "digest": layer, "size": v2.len() }],
            }),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let host = app(
        dir.path(),
        "state",
        &registry.tag(REPO, "wkg"),
        &Sha256Digest::of(&v2),
        "",
    );
    assert!(host.load_plugins().await.is_empty());
    assert_eq!(ran(&host).await, "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_that_moves_changes_nothing_under_a_pin_and_a_new_digest_is_refused() {
    let registry = RegistryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (logs("v1"), logs("v2"));
    let (d1, d2) = (Sha256Digest::of(&v1), Sha256Digest::of(&v2));
    let stable = registry.tag(REPO, "stable");
    push(&registry, "stable", &v1).await;
    let host = app(dir.path(), "state", &stable, &d1, "");
    assert!(host.load_plugins().await.is_empty());
    assert_eq!(ran(&host).await, "v1");

    // The tag moves to v2.
    push(&registry, "stable", &v2).await;

    // A restart on the same state keeps the pinned v1 (from the cache).
    let restarted = app(dir.path(), "state", &stable, &d1, "");
    let component = distribution::fetch("bot", &restarted.config.plugins["bot"])
        .await
        .unwrap();
    assert_eq!(component.origin, Origin::Cache);
    assert!(restarted.load_plugins().await.is_empty());
    assert_eq!(ran(&restarted).await, "v1");

    // A host with no cached copy asks the registry, which now has v2: the
    // pin refuses it, naming both digests, the plugin and the reference.
    let fresh = app(dir.path(), "fresh-state", &stable, &d1, "");
    let err = load(&fresh).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, LoadError::Source(SourceError::DigestMismatch { .. })),
        "{text}"
    );
    for needle in [
        "plugin `bot`".to_string(),
        stable.clone(),
        d1.to_string(),
        d2.to_string(),
        format!("plugins.bot.sha256 = \"{}\"", d2.hex()),
    ] {
        assert!(text.contains(&needle), "missing {needle} in: {text}");
    }
    assert!(fresh.runtime.plugin("bot").is_none());
    // Refused before downloading: nothing entered the cache.
    assert!(!cached_component(&dir.path().join("fresh-state"), &d2).exists());

    // Pinning the new digest takes the new version.
    let updated = app(dir.path(), "state", &stable, &d2, "");
    assert!(updated.load_plugins().await.is_empty());
    assert_eq!(ran(&updated).await, "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_that_does_not_match_is_refused_with_both_digests() {
    let registry = RegistryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let v1 = logs("v1");
    let d1 = Sha256Digest::of(&v1);
    let wrong = Sha256Digest::of(b"some other build");
    let pushed = push(&registry, "1.0", &v1).await;

    // By manifest digest, pinned to another component.
    let by_digest = registry.by_digest(REPO, &pushed.manifest_digest);
    let host = app(dir.path(), "state", &by_digest, &wrong, "");
    let text = load(&host).await.unwrap_err().to_string();
    for needle in [by_digest.as_str(), &wrong.to_string(), &d1.to_string()] {
        assert!(text.contains(needle), "missing {needle} in: {text}");
    }

    // A manifest digest the registry does not have.
    let missing = registry.by_digest(REPO, &wrong.to_string());
    let host = app(dir.path(), "state", &missing, &d1, "");
    let err = load(&host).await.unwrap_err();
    assert!(
        matches!(err, LoadError::Source(SourceError::Registry { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&missing), "{err}");

    // A file pinned to another digest: refused the same way.
    std::fs::write(dir.path().join("bot.wasm"), &v1).unwrap();
    let host = app(dir.path(), "state", "bot.wasm", &wrong, "");
    let text = load(&host).await.unwrap_err().to_string();
    for needle in [
        "bot.wasm",
        &wrong.to_string(),
        &d1.to_string(),
        "plugins.bot.sha256",
    ] {
        assert!(text.contains(needle), "missing {needle} in: {text}");
    }
    // The right pin loads the same file.
    let host = app(dir.path(), "state", "bot.wasm", &d1, "");
    assert!(host.load_plugins().await.is_empty());
    assert_eq!(ran(&host).await, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_down_leaves_the_last_pulled_copy_running() {
    let mut registry = RegistryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let v1 = logs("v1");
    let d1 = Sha256Digest::of(&v1);
    push(&registry, "1.0", &v1).await;
    let reference = registry.tag(REPO, "1.0");
    let host = app(dir.path(), "state", &reference, &d1, "");
    assert!(host.load_plugins().await.is_empty());

    registry.stop();
    // Still serving; a reload of the same pin comes from the cache.
    assert_eq!(ran(&host).await, "v1");
    load(&host).await.expect("reload from the cache");
    assert_eq!(ran(&host).await, "v1");
    // So does a restart.
    let restarted = app(dir.path(), "state", &reference, &d1, "");
    assert!(restarted.load_plugins().await.is_empty());
    assert_eq!(ran(&restarted).await, "v1");

    // A new pin needs the registry: refused, naming it, and the running
    // version stays in service.
    let v2 = Sha256Digest::of(&logs("v2"));
    let mut config = host.config.plugins["bot"].clone();
    config.sha256 = Some(v2);
    config.path = cached_component(&dir.path().join("state"), &v2);
    let err = host
        .runtime
        .load("bot", &config)
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(err, LoadError::Source(SourceError::Registry { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&reference), "{err}");
    assert_eq!(ran(&host).await, "v1");

    // The registry comes back: the same load now works.
    registry.start_again();
    push(&registry, "1.0", &logs("v2")).await;
    host.runtime.load("bot", &config).await.expect("pulled");
    assert_eq!(ran(&host).await, "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_over_the_cap_is_refused_without_downloading_it() {
    let registry = RegistryServer::start();
    let dir = tempfile::tempdir().unwrap();
    // A manifest whose layer claims 1 GiB (the blob it names is small: the
    // registry stores the claim as published, and botbox must refuse on the
    // claim alone, before asking for a byte).
    let small = logs("v1");
    let claimed: u64 = 1 << 30;
    let layer = registry.put_blob(REPO, small.clone()).await;
    let config = registry.put_blob(REPO, b"{}".to_vec()).await;
    registry
        .put_manifest(
            REPO,
            "huge",
            &json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": { "mediaType": "application/vnd.wasm.config.v0+json", "digest": config, "size": 2 },
                "layers": [{ "mediaType": "application/wasm", "digest": layer, "size": claimed }],
            }),
        )
        .await;
    let huge = registry.tag(REPO, "huge");
    let d = Sha256Digest::of(&small);
    let host = app(dir.path(), "state", &huge, &d, "");
    let err = load(&host).await.unwrap_err();
    let LoadError::Source(SourceError::Registry {
        error: FetchError::TooLarge { size, cap, .. },
        ..
    }) = &err
    else {
        panic!("{err}");
    };
    assert_eq!(
        (*size, *cap),
        (claimed, 64 << 20),
        "the default cap is 64 MiB"
    );
    assert!(err.to_string().contains("max_blob_mb"), "{err}");

    // A registry that announces less than it sends is cut off at the
    // announced size, even under the cap; nothing is left on disk.
    let big = vec![7u8; 2 << 20];
    let layer = registry.put_blob(REPO, big.clone()).await;
    registry
        .put_manifest(
            REPO,
            "liar",
            &json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": { "mediaType": "application/vnd.wasm.config.v0+json", "digest": config, "size": 2 },
                "layers": [{ "mediaType": "application/wasm", "digest": layer, "size": 1024 }],
            }),
        )
        .await;
    let d = Sha256Digest::of(&big);
    let host = app(
        dir.path(),
        "state",
        &registry.tag(REPO, "liar"),
        &d,
        "[plugins.bot.registry]\nmax_blob_mb = 1\n",
    );
    let err = load(&host).await.unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::Source(SourceError::Registry {
                error: FetchError::Oversent {
                    announced: 1024,
                    ..
                },
                ..
            })
        ),
        "{err}"
    );
    let cache_dir = dir.path().join("state/components/sha256");
    let left: Vec<_> = std::fs::read_dir(&cache_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "partial files left: {left:?}");
}
