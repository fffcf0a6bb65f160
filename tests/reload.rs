//! Live reload: atomic swaps under load, rollback on broken files, config
//! reloads, and the compile cache.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use botbox::app::{App, BuildOptions};
use botbox::config::Config;
use botbox::runtime::CompileSource;
use botbox::runtime::compile::{DEFAULT_INCREMENTAL_CACHE_BYTES, IncrementalCache, Reuse};
use botbox::runtime::reload::{Change, Watcher};
use botbox::wit::types::{CustomEvent, Event};
use support::{Ask, WatPlugin, logs, replace_file};

fn poke() -> Event {
    Event::Custom(CustomEvent {
        name: "poke".into(),
        payload: String::new(),
    })
}

const CONFIG: &str = r#"
[providers.console]
kind = "console"
[channels.lobby]
provider = "console"
[plugins.bot]
path = "bot.wasm"
channels = ["lobby"]
limits = { log_lines_per_second = 10000 }
"#;

fn app_in(dir: &Path, config: &str) -> App {
    std::fs::write(dir.join("botbox.toml"), config).unwrap();
    App::build(Config::load(&dir.join("botbox.toml")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_a_stream_of_events_serves_each_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bot.wasm");
    let v1 = logs("v1");
    let v2 = logs("v2");
    std::fs::write(&path, &v1).unwrap();
    let app = Arc::new(app_in(dir.path(), CONFIG));
    assert!(app.load_plugins().await.is_empty());
    // Count versions as the lines arrive: the log channel is bounded.
    let mut log = app.runtime.services().log_observers.subscribe();
    let counter = tokio::spawn(async move {
        let (mut v1, mut v2) = (0usize, 0usize);
        while let Ok(record) = log.recv().await {
            match record.message.as_str() {
                "v1" => v1 += 1,
                "v2" => v2 += 1,
                "stop" => break,
                other => panic!("unexpected log line {other}"),
            }
        }
        (v1, v2)
    });

    // The real watch path: file change → debounce → load → swap.
    let (mut watcher, mut changes) = Watcher::start().unwrap();
    watcher.watch(&path, Change::Plugin("bot".into())).unwrap();
    let reloads = Arc::new(AtomicUsize::new(0));
    let reloader = {
        let app = app.clone();
        let reloads = reloads.clone();
        tokio::spawn(async move {
            while let Some(Change::Plugin(name)) = changes.recv().await {
                let config = &app.config.plugins[&name];
                app.runtime.load(&name, config).await.expect("reload");
                reloads.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    // Four streams of events run while the file is swapped six times.
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut streams = Vec::new();
    for _ in 0..4 {
        let app = app.clone();
        let done = done.clone();
        let sent = sent.clone();
        streams.push(tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                app.runtime
                    .dispatch("bot", &poke())
                    .await
                    .expect("every event is served");
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        replace_file(&path, if round % 2 == 0 { &v2 } else { &v1 });
    }
    // Wait for the last swap to land, then stop the streams.
    let deadline = Instant::now() + Duration::from_secs(20);
    while reloads.load(Ordering::SeqCst) < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    done.store(true, Ordering::SeqCst);
    for s in streams {
        s.await.unwrap();
    }
    reloader.abort();

    // The last file written was v1, so the next event runs on v1.
    let mut last = app.runtime.services().log_observers.subscribe();
    app.runtime.dispatch("bot", &poke()).await.unwrap();
    assert_eq!(last.recv().await.unwrap().message, "v1");
    let stop = app
        .runtime
        .services()
        .log_observers
        .send(botbox::capabilities::log::LogRecord {
            plugin: "test".into(),
            level: botbox::wit::botbox::bot::log::Level::Info,
            message: "stop".into(),
        });
    assert!(stop.is_ok());
    let (v1_count, v2_count) = counter.await.unwrap();
    let sent = sent.load(Ordering::SeqCst) + 1;
    assert_eq!(
        reloads.load(Ordering::SeqCst),
        6,
        "every save was reloaded once"
    );
    assert_eq!(
        v1_count + v2_count,
        sent,
        "each event handled exactly once, by one version"
    );
    assert!(v1_count > 0 && v2_count > 0, "v1 {v1_count}, v2 {v2_count}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_version_leaves_the_old_one_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bot.wasm");
    std::fs::write(&path, logs("v1")).unwrap();
    let app = app_in(dir.path(), CONFIG);
    assert!(app.load_plugins().await.is_empty());
    let mut log = app.runtime.services().log_observers.subscribe();
    let config = app.config.plugins["bot"].clone();

    let broken: [(&str, Vec<u8>, &str); 3] = [
        (
            "not a component",
            b"\0asm\x01\0\0\0garbage".to_vec(),
            "core WebAssembly module",
        ),
        (
            "the wrong world version",
            WatPlugin::new(Ask::default()).version("0.9.0").build(),
            "built against WIT botbox:bot@0.9.0",
        ),
        (
            "describe traps",
            WatPlugin::new(Ask::default()).trap_in_describe().build(),
            "describe() failed",
        ),
    ];
    for (what, bytes, expected) in broken {
        replace_file(&path, &bytes);
        let err = app
            .runtime
            .load("bot", &config)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what} loaded"));
        assert!(err.to_string().contains(expected), "{what}: {err}");
        app.runtime
            .dispatch("bot", &poke())
            .await
            .unwrap_or_else(|e| panic!("after {what}: {e}"));
        assert_eq!(log.try_recv().unwrap().message, "v1", "after {what}");
    }
    // A good file is picked up again.
    replace_file(&path, &logs("v3"));
    app.runtime.load("bot", &config).await.unwrap();
    app.runtime.dispatch("bot", &poke()).await.unwrap();
    assert_eq!(log.try_recv().unwrap().message, "v3");
}

/// Sends to lobby and logs whether it was accepted.
fn reports_send() -> Vec<u8> {
    let mut p = WatPlugin::new(Ask::default());
    let msg = p.text_message("lobby", "hello");
    let (ok, ok_len) = p.data.string("sent");
    let (no, no_len) = p.data.string("refused");
    let ret = support::SEND_RET;
    p.body(&format!(
        "(call $send (i32.const {msg}) (i32.const {ret}))
         (if (i32.eqz (i32.load8_u (i32.const {ret})))
           (then (call $log (i32.const 2) (i32.const {ok}) (i32.const {ok_len})))
           (else (call $log (i32.const 2) (i32.const {no}) (i32.const {no_len}))))"
    ))
    .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_reload_applies_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bot.wasm"), reports_send()).unwrap();
    let app = app_in(dir.path(), CONFIG);
    assert!(app.load_plugins().await.is_empty());
    let mut log = app.runtime.services().log_observers.subscribe();
    app.runtime.dispatch("bot", &poke()).await.unwrap();
    assert_eq!(log.try_recv().unwrap().message, "sent");

    // A config with a mistake is refused whole, with its errors.
    let broken = CONFIG.replace(
        "channels = [\"lobby\"]",
        "channels = [\"lobby\", \"ghost\"]",
    );
    std::fs::write(dir.path().join("botbox.toml"), &broken).unwrap();
    let err = Config::load(&dir.path().join("botbox.toml")).unwrap_err();
    assert!(err.to_string().contains("plugins.bot.channels"), "{err}");
    app.runtime.dispatch("bot", &poke()).await.unwrap();
    assert_eq!(
        log.try_recv().unwrap().message,
        "sent",
        "old config still in force"
    );

    // A valid config that revokes the grant takes effect for the next event.
    let revoked = CONFIG.replace("channels = [\"lobby\"]", "channels = []");
    std::fs::write(dir.path().join("botbox.toml"), &revoked).unwrap();
    let (next, plugins) = app
        .rebuild(Config::load(&dir.path().join("botbox.toml")).unwrap())
        .await
        .unwrap();
    // Not in force until activated.
    app.runtime.dispatch("bot", &poke()).await.unwrap();
    assert_eq!(log.try_recv().unwrap().message, "sent");
    next.activate(plugins);
    app.runtime.dispatch("bot", &poke()).await.unwrap();
    assert_eq!(log.try_recv().unwrap().message, "refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compile_cache_is_hit_on_restart_and_survives_corruption() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bot.wasm"), logs("cached")).unwrap();
    let source = |app: &App| app.runtime.plugin("bot").unwrap().compile_source;

    let first = app_in(dir.path(), CONFIG);
    assert!(first.load_plugins().await.is_empty());
    assert_eq!(source(&first), CompileSource::Compiled);
    drop(first);

    let second = app_in(dir.path(), CONFIG);
    assert!(second.load_plugins().await.is_empty());
    assert_eq!(source(&second), CompileSource::Cache);
    second.runtime.dispatch("bot", &poke()).await.unwrap();
    drop(second);

    // Corrupt every entry: the host recompiles instead of trusting them.
    let cache = dir.path().join(".botbox/cache");
    for entry in std::fs::read_dir(&cache).unwrap() {
        std::fs::write(entry.unwrap().path(), b"not a compiled component").unwrap();
    }
    let third = app_in(dir.path(), CONFIG);
    assert!(third.load_plugins().await.is_empty());
    assert_eq!(source(&third), CompileSource::Compiled);
    third.runtime.dispatch("bot", &poke()).await.unwrap();
}

#[test]
fn botbox_run_swaps_a_saved_plugin_without_restarting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bot.wasm");
    let says = |text: &str| {
        let mut p = WatPlugin::new(Ask {
            schedules: &["tick"],
            events: &[2, 4],
            ..Ask::default()
        });
        let msg = p.text_message("lobby", text);
        p.body(&support::send_and_expect(msg, 0)).build()
    };
    std::fs::write(&path, says("old reply")).unwrap();
    std::fs::write(
        dir.path().join("botbox.toml"),
        "[providers.console]\nkind = \"console\"\n[channels.lobby]\nprovider = \"console\"\n\
         [plugins.bot]\npath = \"bot.wasm\"\nchannels = [\"lobby\"]\nschedules = { tick = \"every 1s\" }\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_botbox"))
        .args(["run", "--config", "botbox.toml", "--exit-after", "30"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut saw_old = false;
    let mut saw_new = false;
    let deadline = Instant::now() + Duration::from_secs(25);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if line == "#lobby <bot> old reply" && !saw_old {
            saw_old = true;
            replace_file(&path, &says("new reply"));
        }
        if line == "#lobby <bot> new reply" {
            saw_new = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(saw_old, "the first version ran");
    assert!(saw_new, "the saved version took over without a restart");
}

// --- `botbox dev`: the incremental compile cache ------------------------------

/// A host as `botbox dev` builds one after each save: with the session's
/// incremental compile cache.
fn dev_app_in(dir: &Path, config: &str, incremental: &Arc<IncrementalCache>) -> App {
    std::fs::write(dir.join("botbox.toml"), config).unwrap();
    App::build_with(
        Config::load(&dir.join("botbox.toml")).unwrap(),
        BuildOptions {
            incremental: Some(incremental.clone()),
            ..BuildOptions::default()
        },
    )
    .unwrap()
}

fn reuse_of(app: &App) -> Reuse {
    match app.runtime.plugin("bot").unwrap().compile_source {
        CompileSource::Incremental(reuse) => reuse,
        other => panic!("a dev host compiles incrementally, got {other:?}"),
    }
}

/// The same component with a custom section appended: another build (new
/// content hash, so the on-disk compile cache misses) whose code is the
/// same, as a rebuilt bot's language runtime is.
fn rebuilt(bytes: &[u8], save: u8) -> Vec<u8> {
    let name = b"botbox-test-save";
    let mut out = bytes.to_vec();
    out.push(0);
    out.push(1 + name.len() as u8 + 1);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.push(save);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_reload_serves_the_new_version_as_one_new_generation_reusing_unchanged_code() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bot.wasm");
    std::fs::write(&path, logs("v1")).unwrap();
    let incremental = IncrementalCache::new(DEFAULT_INCREMENTAL_CACHE_BYTES);
    let app = dev_app_in(dir.path(), CONFIG, &incremental);
    assert!(app.load_plugins().await.is_empty());
    let first = app.runtime.plugin("bot").unwrap().generation;
    let mut log = app.runtime.services().log_observers.subscribe();
    app.runtime.dispatch("bot", &poke()).await.unwrap();
    assert_eq!(log.try_recv().unwrap().message, "v1");

    // The save: only the logged text (a data segment) changed, so every
    // function's machine code is reused, and the new text is served.
    replace_file(&path, &logs("v2"));
    let config = app.config.plugins["bot"].clone();
    app.runtime.load("bot", &config).await.unwrap();
    let reuse = reuse_of(&app);
    // Nothing changed in the code; Cranelift may still compile a function
    // or two again, which is its business (the same code either way).
    assert!(reuse.reused > reuse.compiled, "{reuse:?}");
    assert_eq!(
        app.runtime.plugin("bot").unwrap().generation,
        first + 1,
        "one save, one new generation: nothing is swapped in later"
    );
    app.runtime.dispatch("bot", &poke()).await.unwrap();
    assert_eq!(log.try_recv().unwrap().message, "v2");
}

/// The JS example bot (StarlingMonkey inside, about 12 MB): a save reuses
/// the runtime's compiled functions, the bot's kv state carries over, and
/// the code served is what `botbox run` compiles, which never uses the
/// incremental cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_reload_of_the_js_bot_keeps_its_state_and_serves_the_code_botbox_run_compiles() {
    let poll = std::fs::read(support::example_plugin("poll")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bot.wasm");
    let config = "[providers.console]\nkind = \"console\"\n\
        [channels.lobby]\nprovider = \"console\"\n\
        [channels.announcements]\nprovider = \"console\"\n\
        [plugins.bot]\npath = \"bot.wasm\"\nchannels = [\"announcements\", \"lobby\"]\n\
        events = [\"custom\", \"chat-message\"]\n";
    std::fs::write(&path, rebuilt(&poll, 1)).unwrap();
    let incremental = IncrementalCache::new(DEFAULT_INCREMENTAL_CACHE_BYTES);
    let app = dev_app_in(dir.path(), config, &incremental);
    assert!(app.load_plugins().await.is_empty());
    let mut accepted = app.delivery.observers().accepted.subscribe();
    let open = Event::Custom(CustomEvent {
        name: "open".into(),
        payload: r#"{"question": "Tea?", "options": ["Yes", "No"]}"#.into(),
    });
    app.runtime.dispatch("bot", &open).await.unwrap();
    let generation = app.runtime.plugin("bot").unwrap().generation;

    // The save.
    let saved = rebuilt(&poll, 2);
    replace_file(&path, &saved);
    let plugin_config = app.config.plugins["bot"].clone();
    app.runtime.load("bot", &plugin_config).await.unwrap();
    let reuse = reuse_of(&app);
    assert!(
        reuse.reused > 1000 && reuse.compiled < reuse.reused / 4,
        "the unchanged runtime is reused: {reuse:?}"
    );
    assert_eq!(
        app.runtime.plugin("bot").unwrap().generation,
        generation + 1
    );
    // The poll opened by the first version is still open in the second.
    let close = Event::Custom(CustomEvent {
        name: "close".into(),
        payload: String::new(),
    });
    while accepted.try_recv().is_ok() {}
    app.runtime.dispatch("bot", &close).await.unwrap();
    let closed = accepted.try_recv().expect("the results are announced");
    match &closed.message.content {
        botbox::wit::types::Content::Text(text) => {
            assert!(text.starts_with("Poll #1 closed: Tea?"), "{text}")
        }
        other => panic!("expected text, got {other:?}"),
    }

    // `botbox run`'s host (no incremental cache) compiles the same file
    // whole, into its own cache folder: the same compiled bytes.
    let run_cache = dir.path().join("run-cache");
    let run = App::build_with(
        Config::load(&dir.path().join("botbox.toml")).unwrap(),
        BuildOptions {
            cache_dir: Some(run_cache.clone()),
            ..BuildOptions::default()
        },
    )
    .unwrap();
    assert!(run.load_plugins().await.is_empty());
    assert_eq!(
        run.runtime.plugin("bot").unwrap().compile_source,
        CompileSource::Compiled
    );
    let entries: Vec<_> = std::fs::read_dir(&run_cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let run_entry = std::fs::read(&entries[0]).unwrap();
    let dev_entry = std::fs::read(
        dir.path()
            .join(".botbox/cache")
            .join(entries[0].file_name().unwrap()),
    )
    .expect("the dev host cached the same component under the same engine settings");
    // Each host signs its entries with its own key: compare what is signed.
    let signed = |entry: &[u8]| entry[..entry.len() - 32].to_vec();
    assert!(
        signed(&dev_entry) == signed(&run_entry),
        "the dev loop serves the code `botbox run` compiles"
    );
}
