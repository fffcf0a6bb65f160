//! The example bots in JavaScript (`plugins/js/poll`), Python
//! (`plugins/python/faq`) and C (`plugins/c/countdown`), built to components
//! by `cargo xtask plugins`, driven through the library and through
//! `botbox call`; and the project templates in `sdk/templates`, each
//! instantiated, built with its own `build.sh` and called.
//!
//! A missing component fails these tests: `cargo xtask test` builds them
//! first. Compiling a 12–18 MB JS or Python component takes seconds, so every
//! host here shares one compile cache (under `CARGO_TARGET_TMPDIR`), filled
//! once before the first test uses it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use botbox::app::App;
use botbox::config::Config;
use botbox::delivery::Accepted;
use botbox::runtime::HandleError;
use botbox::wit::types::{ChatMessage, Content, CustomEvent, Event};
use support::{example_plugin, repo_root, target_dir};
use tokio::sync::broadcast::Receiver;

const FAQ_TABLE: &str = r#"[{"id": "hours", "keywords": ["open", "opening hours"], "answer": "We are open 9 to 5."}, {"id": "wifi", "keywords": ["wifi", "password"], "answer": "The wifi password is on the desk."}]"#;

// --- a shared compile cache --------------------------------------------------

fn shared_cache() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("polyglot-compile-cache");
    std::fs::create_dir_all(&dir).expect("create the shared compile cache");
    dir
}

/// A storage dir for one host whose compile cache is the shared one.
fn storage_in(dir: &Path) -> PathBuf {
    let storage = dir.join("store");
    std::fs::create_dir_all(&storage).expect("storage dir");
    #[cfg(unix)]
    std::os::unix::fs::symlink(shared_cache(), storage.join("cache")).expect("link the cache");
    // Entries are signed with the key beside the cache; every host here
    // shares that too, or each would refuse the others' entries.
    let key = botbox::runtime::engine::cache_key_path(&shared_cache());
    botbox::runtime::engine::load_or_create_cache_key(&key).expect("the shared cache key");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&key, storage.join("cache.key")).expect("link the cache key");
    storage
}

/// Compiles the three components into the shared cache once; every test
/// waits for it, so no two tests compile the same component at once. The
/// file lock covers test runners that run each test in its own process
/// (nextest): the first compiles, the others then read the cache.
async fn warm_cache() {
    static WARM: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    WARM.get_or_init(|| async {
        let lock = std::fs::File::create(shared_cache().join(".warm.lock")).expect("lock file");
        lock.lock().expect("lock the shared compile cache");
        let dir = tempfile::tempdir().expect("tempdir");
        let app = host(dir.path(), "").await;
        drop(app);
        drop(lock);
    })
    .await;
}

fn warm_cache_blocking() {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(warm_cache());
}

// --- a host like the demo's, with the three bots -----------------------------

/// `extra` is appended to the config (more plugins, other limits).
async fn host(dir: &Path, extra: &str) -> App {
    let storage = storage_in(dir);
    let toml = format!(
        r#"
[storage]
dir = "{storage}"
[runtime]
reload = false
[providers.console]
kind = "console"
[channels.lobby]
provider = "console"
[channels.announcements]
provider = "console"
[plugins.poll]
path = "{poll}"
channels = ["announcements", "lobby"]
events = ["custom", "chat-message"]
settings = {{ sender = "Pollster" }}
[plugins.faq]
path = "{faq}"
channels = ["lobby"]
events = ["custom", "chat-message"]
settings = {{ faq = '{FAQ_TABLE}', sender = "Helpdesk" }}
[plugins.countdown]
path = "{countdown}"
channels = ["announcements", "lobby"]
events = ["schedule", "custom", "chat-message"]
schedules = {{ tick = "every 1d" }}
settings = {{ unit = "minutes", done = "{{label}} starts now!", sender = "Clock" }}
{extra}
"#,
        storage = storage.display(),
        poll = example_plugin("poll").display(),
        faq = example_plugin("faq").display(),
        countdown = example_plugin("countdown").display(),
    );
    let config = Config::parse(&toml, &dir.join("botbox.toml"), dir)
        .unwrap_or_else(|e| panic!("config: {e}\n{toml}"));
    let app = App::build(config).expect("app");
    let errors = app.load_plugins().await;
    assert!(errors.is_empty(), "{errors:?}");
    app
}

fn custom(name: &str, payload: &str) -> Event {
    Event::Custom(CustomEvent {
        name: name.into(),
        payload: payload.into(),
    })
}

fn chat(sender: &str, text: &str, id: &str) -> Event {
    Event::ChatMessage(ChatMessage {
        channel: "lobby".into(),
        conversation: "meeting-1".into(),
        sender_id: sender.into(),
        sender_name: None,
        text: text.into(),
        message_id: Some(id.into()),
        sent_at_ms: Some(1_700_000_000_000),
    })
}

fn text_of(accepted: &Accepted) -> &str {
    match &accepted.message.content {
        Content::Text(t) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

/// The next broadcast, which must exist.
fn next(accepted: &mut Receiver<Accepted>, what: &str) -> Accepted {
    accepted
        .try_recv()
        .unwrap_or_else(|e| panic!("expected a broadcast ({what}): {e}"))
}

fn no_more(accepted: &mut Receiver<Accepted>) {
    if let Ok(a) = accepted.try_recv() {
        panic!("unexpected broadcast: {:?}", a.message);
    }
}

fn kv_text(app: &App, plugin: &str, key: &str) -> Option<String> {
    let limits = app
        .runtime
        .plugin(plugin)
        .expect("loaded")
        .context
        .slices
        .kv
        .limits;
    app.runtime
        .services()
        .kv
        .get(plugin, key, &limits)
        .expect("kv get")
        .map(|v| String::from_utf8(v).expect("utf-8"))
}

fn failed_with(result: Result<(), HandleError>, fragment: &str) {
    match result {
        Err(HandleError::Failed { message, .. }) => {
            assert!(message.contains(fragment), "{message:?} lacks {fragment:?}")
        }
        other => panic!("expected the plugin's own error ({fragment:?}), got {other:?}"),
    }
}

// --- the bots through the library --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_counts_votes_in_kv_and_announces_the_results() {
    warm_cache().await;
    let dir = tempfile::tempdir().unwrap();
    let app = host(dir.path(), "").await;
    let mut accepted = app.delivery.observers().accepted.subscribe();
    let poll = |event: Event| {
        let runtime = app.runtime.clone();
        async move { runtime.dispatch("poll", &event).await }
    };

    poll(custom(
        "open",
        r#"{"question": "Lunch?", "options": ["Pizza", "Salad", "Soup"]}"#,
    ))
    .await
    .expect("opened");
    let opened = next(&mut accepted, "the poll is announced");
    assert_eq!(opened.channel, "announcements");
    assert_eq!(
        text_of(&opened),
        "Poll #1: Lunch? 1) Pizza 2) Salad 3) Soup. Vote with !vote <number>."
    );
    assert_eq!(opened.message.sender.as_deref(), Some("Pollster"));
    assert_eq!(
        opened.message.idempotency_key.as_deref(),
        Some("poll-1-open")
    );
    failed_with(
        poll(custom(
            "open",
            r#"{"question": "Again?", "options": ["a", "b"]}"#,
        ))
        .await,
        "still open",
    );

    // Votes by custom event (silent) and in chat (answered in the conversation).
    poll(custom("vote", r#"{"voter": "u1", "option": "pizza"}"#))
        .await
        .expect("voted");
    no_more(&mut accepted);
    poll(chat("u2", "!vote 2", "41")).await.expect("voted");
    let ack = next(&mut accepted, "the chat vote is acknowledged");
    assert_eq!(ack.channel, "lobby");
    assert_eq!(ack.message.reply_to.as_deref(), Some("meeting-1"));
    assert_eq!(ack.message.idempotency_key.as_deref(), Some("reply-41"));
    assert_eq!(
        text_of(&ack),
        "u2: your vote for Salad in poll #1 is counted."
    );
    poll(chat("u3", "!vote 7", "42")).await.expect("answered");
    assert!(text_of(&next(&mut accepted, "a wrong option is explained")).contains("choose 1 to 3"));
    // A voter who changes their mind has one vote.
    poll(chat("u2", "!vote Pizza", "43")).await.expect("voted");
    next(&mut accepted, "the changed vote is acknowledged");
    assert_eq!(kv_text(&app, "poll", "vote/1/u1").as_deref(), Some("1"));
    assert_eq!(kv_text(&app, "poll", "vote/1/u2").as_deref(), Some("1"));
    assert!(kv_text(&app, "poll", "vote/1/u3").is_none());
    // Plain chatter is ignored.
    poll(chat("u4", "pizza!", "44")).await.expect("ignored");
    no_more(&mut accepted);

    poll(custom("close", "")).await.expect("closed");
    let results = next(&mut accepted, "the results are announced");
    assert_eq!(results.channel, "announcements");
    assert_eq!(
        text_of(&results),
        "Poll #1 closed: Lunch? Pizza 2 (100%), Salad 0 (0%), Soup 0 (0%). Winner: Pizza."
    );
    assert!(kv_text(&app, "poll", "poll").is_none(), "the poll is gone");
    assert!(
        kv_text(&app, "poll", "vote/1/u1").is_none(),
        "its votes too"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&kv_text(&app, "poll", "result/1").expect("result kept")).unwrap();
    assert_eq!(saved["counts"], serde_json::json!([2, 0, 0]));
    failed_with(poll(custom("close", "")).await, "no poll is open");
    failed_with(poll(custom("dance", "")).await, "unknown event `dance`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faq_answers_questions_in_their_conversation_and_counts_hits() {
    warm_cache().await;
    let dir = tempfile::tempdir().unwrap();
    let app = host(dir.path(), "").await;
    let mut accepted = app.delivery.observers().accepted.subscribe();
    let faq = |event: Event| {
        let runtime = app.runtime.clone();
        async move { runtime.dispatch("faq", &event).await }
    };

    faq(chat("u1", "Hi! When are you OPEN?", "7"))
        .await
        .expect("answered");
    let answer = next(&mut accepted, "the question is answered");
    assert_eq!(text_of(&answer), "We are open 9 to 5.");
    assert_eq!(answer.channel, "lobby");
    assert_eq!(answer.message.reply_to.as_deref(), Some("meeting-1"));
    assert_eq!(answer.message.idempotency_key.as_deref(), Some("faq-7"));
    assert_eq!(answer.message.sender.as_deref(), Some("Helpdesk"));

    faq(chat("u2", "what's the wifi password?", "8"))
        .await
        .expect("answered");
    assert_eq!(
        text_of(&next(&mut accepted, "the wifi question")),
        "The wifi password is on the desk."
    );
    // Not a question: silence. A question nobody wrote an answer for: silence.
    faq(chat("u3", "the wifi is great", "9")).await.unwrap();
    faq(chat("u3", "where can I park?", "10")).await.unwrap();
    no_more(&mut accepted);

    assert_eq!(kv_text(&app, "faq", "hits/hours").as_deref(), Some("1"));
    assert_eq!(kv_text(&app, "faq", "hits/wifi").as_deref(), Some("1"));
    assert_eq!(kv_text(&app, "faq", "answered").as_deref(), Some("2"));
    assert_eq!(kv_text(&app, "faq", "unanswered").as_deref(), Some("1"));

    // `ask` answers on the lobby; `stats` logs the counts.
    faq(custom("ask", r#"{"text": "opening hours"}"#))
        .await
        .expect("asked");
    let asked = next(&mut accepted, "ask answers on the lobby");
    assert_eq!(text_of(&asked), "We are open 9 to 5.");
    assert_eq!(asked.message.reply_to, None);
    let mut logs = app.runtime.services().log_observers.subscribe();
    faq(custom("stats", "")).await.expect("stats");
    let line = logs.try_recv().expect("stats are logged");
    assert_eq!(
        line.message, "answered 3, unanswered 1, hours 2, wifi 1",
        "{line:?}"
    );
    failed_with(
        faq(custom("ask", r#"{"text": "zebras"}"#)).await,
        "no FAQ entry matches",
    );
    failed_with(faq(custom("ask", "zebras")).await, "needs a payload like");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countdown_counts_down_on_ticks_and_answers_in_chat() {
    warm_cache().await;
    let dir = tempfile::tempdir().unwrap();
    let app = host(dir.path(), "").await;
    let mut accepted = app.delivery.observers().accepted.subscribe();
    let countdown = |event: Event| {
        let runtime = app.runtime.clone();
        async move { runtime.dispatch("countdown", &event).await }
    };
    let tick = || Event::Schedule("tick".into());

    countdown(custom("start", r#"{"label": "Exam", "ticks": 2}"#))
        .await
        .expect("started");
    let started = next(&mut accepted, "the start is announced");
    assert_eq!(started.channel, "announcements");
    assert_eq!(text_of(&started), "Exam in 2 minutes.");
    assert_eq!(started.message.sender.as_deref(), Some("Clock"));
    assert_eq!(
        kv_text(&app, "countdown", "cd/Exam").as_deref(),
        Some("2 1")
    );

    countdown(tick()).await.expect("ticked");
    assert_eq!(
        text_of(&next(&mut accepted, "one tick later")),
        "Exam in 1 minute."
    );
    countdown(chat("u1", "!countdown", "5"))
        .await
        .expect("answered");
    let reply = next(&mut accepted, "!countdown is answered");
    assert_eq!(text_of(&reply), "Exam in 1 minute.");
    assert_eq!(reply.channel, "lobby");
    assert_eq!(reply.message.reply_to.as_deref(), Some("meeting-1"));
    assert_eq!(reply.message.idempotency_key.as_deref(), Some("reply-5"));

    countdown(tick()).await.expect("ticked");
    let done = next(&mut accepted, "the countdown ends");
    assert_eq!(text_of(&done), "Exam starts now!");
    assert_eq!(
        done.message.idempotency_key.as_deref(),
        Some("countdown-1-0")
    );
    assert!(kv_text(&app, "countdown", "cd/Exam").is_none());
    assert_eq!(kv_text(&app, "countdown", "finished").as_deref(), Some("1"));
    countdown(tick()).await.expect("nothing to do");
    no_more(&mut accepted);

    failed_with(
        countdown(custom("start", r#"{"label": "Exam"}"#)).await,
        "needs \"ticks\"",
    );
    failed_with(
        countdown(custom("cancel", r#"{"label": "Lunch"}"#)).await,
        "no countdown `Lunch`",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_guests_fit_the_memory_their_readme_promises() {
    warm_cache().await;
    // plugins/README.md: JS and Python need 16 MiB, C 1 MiB.
    let dir = tempfile::tempdir().unwrap();
    let app = host(
        dir.path(),
        "[plugins.poll.limits]\nmemory_mb = 16\n\
         [plugins.faq.limits]\nmemory_mb = 16\n\
         [plugins.countdown.limits]\nmemory_mb = 1\n",
    )
    .await;
    app.runtime
        .dispatch("poll", &custom("status", ""))
        .await
        .expect("poll runs in 16 MiB");
    app.runtime
        .dispatch("faq", &custom("ask", r#"{"text": "open?"}"#))
        .await
        .expect("faq runs in 16 MiB");
    app.runtime
        .dispatch("countdown", &custom("list", ""))
        .await
        .expect("countdown runs in 1 MiB");

    // Below what the runtime's initial heap needs, loading fails and says why.
    let dir = tempfile::tempdir().unwrap();
    let storage = storage_in(dir.path());
    let toml = format!(
        "[storage]\ndir = \"{}\"\n[providers.console]\nkind = \"console\"\n\
         [channels.lobby]\nprovider = \"console\"\n\
         [plugins.faq]\npath = \"{}\"\nchannels = [\"lobby\"]\nlimits = {{ memory_mb = 8 }}\n",
        storage.display(),
        example_plugin("faq").display()
    );
    let app =
        App::build(Config::parse(&toml, &dir.path().join("botbox.toml"), dir.path()).unwrap())
            .unwrap();
    let errors = app.load_plugins().await;
    let text = format!("{errors:?}");
    assert!(text.contains("memory"), "{text}");
}

// --- the bots through `botbox call` ------------------------------------------

fn botbox(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_botbox"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run botbox")
}

fn call(
    dir: &Path,
    storage: &Path,
    plugin: &Path,
    event: &str,
    settings: &[&str],
) -> (i32, String) {
    let mut args = vec![
        "call",
        plugin.to_str().unwrap(),
        "--storage",
        storage.to_str().unwrap(),
        "--event",
        event,
    ];
    for s in settings {
        args.extend(["-s", s]);
    }
    let out = botbox(dir, &args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        format!("{stdout}\n--- stderr:\n{stderr}"),
    )
}

#[test]
fn botbox_call_drives_each_polyglot_bot_with_settings_and_kv() {
    warm_cache_blocking();
    let dir = tempfile::tempdir().unwrap();
    let storage = storage_in(dir.path());
    let d = dir.path();

    let poll = example_plugin("poll");
    let (code, out) = call(
        d,
        &storage,
        &poll,
        r#"{"name": "open", "payload": {"question": "Tea or coffee?", "options": ["Tea", "Coffee"]}}"#,
        &["sender=Pollster", "channel=lobby"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("send  #lobby <Pollster> Poll #1: Tea or coffee? 1) Tea 2) Coffee."),
        "{out}"
    );
    // kv survives between calls on the same storage.
    let vote = r#"{"chat-message": {"channel": "lobby", "conversation": "m1", "sender-id": "u1", "sender-name": "Ada", "text": "!vote coffee", "message-id": "1"}}"#;
    let (code, out) = call(d, &storage, &poll, vote, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("send  #lobby/m1 <bot> Ada: your vote for Coffee in poll #1 is counted."),
        "{out}"
    );
    let (code, out) = call(
        d,
        &storage,
        &poll,
        r#"{"name": "close"}"#,
        &["channel=lobby"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "send  #lobby <bot> Poll #1 closed: Tea or coffee? Tea 0 (0%), Coffee 1 (100%). Winner: Coffee."
        ),
        "{out}"
    );
    let (code, out) = call(d, &storage, &poll, r#"{"name": "close"}"#, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  plugin `plugin` returned an error: no poll is open"),
        "{out}"
    );

    let faq = example_plugin("faq");
    let faq_setting = format!("faq={FAQ_TABLE}");
    let question = r#"{"chat-message": {"channel": "lobby", "conversation": "m9", "sender-id": "u1", "text": "is there wifi?", "message-id": "2"}}"#;
    let (code, out) = call(
        d,
        &storage,
        &faq,
        question,
        &[&faq_setting, "sender=Helpdesk"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("send  #lobby/m9 <Helpdesk> The wifi password is on the desk."),
        "{out}"
    );
    let (code, out) = call(
        d,
        &storage,
        &faq,
        r#"{"name": "ask", "payload": {"text": "x"}}"#,
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("setting `faq` is missing"), "{out}");

    let countdown = example_plugin("countdown");
    let (code, out) = call(
        d,
        &storage,
        &countdown,
        r#"{"name": "start", "payload": {"label": "Break", "ticks": 3}}"#,
        &["unit=hours"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("send  #announcements <bot> Break in 3 hours."),
        "{out}"
    );
    let settings = ["unit=hours", "announce-at=[1]"];
    let (code, out) = call(
        d,
        &storage,
        &countdown,
        r#"{"schedule": "tick"}"#,
        &settings,
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("send "), "2 is not in announce-at: {out}");
    let (code, out) = call(d, &storage, &countdown, r#"{"name": "tick"}"#, &settings);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("send  #announcements <bot> Break in 1 hour."),
        "{out}"
    );
    let (code, out) = call(d, &storage, &countdown, r#"{"name": "fly"}"#, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown event `fly`"), "{out}");
}

// --- the project templates ---------------------------------------------------

/// Writes template `lang` into `dir/name` the way `botbox new` does: every
/// file with `{{name}}` and `{{botbox_dir}}` filled in (in contents and file
/// names), plus `wit/bot.wit`, the contract the host provides.
fn instantiate(lang: &str, name: &str, dir: &Path) -> PathBuf {
    let template = repo_root().join("sdk/templates").join(lang);
    let project = dir.join(name);
    let root = repo_root().canonicalize().unwrap();
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{botbox_dir}}", root.to_str().unwrap())
    };
    let mut stack = vec![template.clone()];
    while let Some(from) = stack.pop() {
        for entry in std::fs::read_dir(&from).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(&template).unwrap();
            let to = project.join(fill(rel.to_str().unwrap()));
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            let filled = fill(&text);
            assert!(
                !filled.contains("{{"),
                "{} has a placeholder other than {{{{name}}}} and {{{{botbox_dir}}}}",
                path.display()
            );
            std::fs::write(&to, filled).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
    }
    std::fs::create_dir_all(project.join("wit")).unwrap();
    std::fs::copy(repo_root().join("wit/bot.wit"), project.join("wit/bot.wit")).unwrap();
    project
}

/// Runs the project's `build.sh` with a compiler environment of its own.
fn build_template(project: &Path, env: &[(&str, &std::ffi::OsStr)]) {
    let mut cmd = Command::new("sh");
    cmd.arg("build.sh").current_dir(project);
    // What cargo set for this test must not leak into the guest's build.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_BOOTSTRAP",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    let started = std::time::Instant::now();
    let out = cmd.output().expect("run build.sh");
    assert!(
        out.status.success(),
        "{}/build.sh failed:\n{}\n{}",
        project.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{}: built in {:.1}s",
        project.display(),
        started.elapsed().as_secs_f64()
    );
}

/// Builds template `lang` as `my-LANG-bot` and checks its greeting, kv
/// counter, settings and error through `botbox call`.
/// Returns the project (in a temporary folder that lives as long as the
/// returned guard).
fn check_template(
    lang: &str,
    env: &[(&str, &std::ffi::OsStr)],
    prepare: impl FnOnce(&Path),
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("my-{lang}-bot");
    let project = instantiate(lang, &name, dir.path());
    prepare(&project);
    build_and_call(dir.path(), &project, &name, env);
    (dir, project)
}

/// Builds `project` (named `name`, in `dir`) with its `build.sh` and checks
/// the template bot's greeting, kv counter, settings and error through
/// `botbox call`.
fn build_and_call(dir: &Path, project: &Path, name: &str, env: &[(&str, &std::ffi::OsStr)]) {
    build_template(project, env);
    let wasm = project.join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "build.sh did not write {}", wasm.display());

    let storage = storage_in(dir);
    let d = dir;
    let (code, out) = call(
        d,
        &storage,
        &wasm,
        r#"{"name": "hello", "payload": "Ada"}"#,
        &["sender=Tester"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("send  #lobby <Tester> Hello, Ada! (greeting #1)"),
        "{out}"
    );
    let hello = r#"{"chat-message": {"channel": "lobby", "conversation": "m1", "sender-id": "u1", "sender-name": "Grace", "text": " !hello "}}"#;
    let (code, out) = call(d, &storage, &wasm, hello, &["greeting=Hi {name}, welcome"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("send  #lobby/m1 <bot> Hi Grace, welcome (greeting #2)"),
        "{out}"
    );
    let (code, out) = call(d, &storage, &wasm, r#"{"name": "nope"}"#, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("this bot knows `hello`"), "{out}");

    // The behaviour cases the template ships with, as its author runs them.
    let out = botbox(project, &["test", "--storage", storage.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "botbox test:\n{text}");
    assert!(text.contains("4 case(s), 4 passed, 0 failed"), "{text}");
}

/// The version a template's pin file names must be the one the xtask
/// installs, or the template test would test another toolchain.
fn assert_same_pin(template_file: &str, xtask_file: &str, package: &str) {
    let read = |p: &str| std::fs::read_to_string(repo_root().join(p)).unwrap();
    let pin = |text: &str| {
        let at = text
            .find(package)
            .unwrap_or_else(|| panic!("{package} is not pinned"));
        text[at + package.len()..]
            .trim_start_matches(['"', ':', '=', ' '])
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        pin(&read(template_file)),
        pin(&read(xtask_file)),
        "{template_file} and {xtask_file} pin different {package}"
    );
}

#[test]
fn c_template_builds_and_answers() {
    check_template("c", &[], |_| {});
}

#[test]
fn python_template_builds_and_answers() {
    assert_same_pin(
        "sdk/templates/python/requirements.txt",
        "plugins/python/requirements.txt",
        "componentize-py",
    );
    // The componentize-py `cargo xtask plugins` installed, first on PATH.
    let venv_bin = target_dir().join("guests/python-venv/bin");
    assert!(
        venv_bin.join("componentize-py").is_file(),
        "{} is missing: run `cargo xtask plugins` first (`cargo xtask test` does)",
        venv_bin.display()
    );
    let path = std::env::join_paths(
        std::iter::once(venv_bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let (_dir, project) = check_template("python", &[("PATH", &path)], |_| {});
    // build.sh regenerated the bindings from wit/bot.wit.
    assert_generated_match_template("python", &project, PYTHON_BINDINGS);
}

/// The npm packages the JS and TS templates pin: the same versions as
/// `plugins/js/package.json`, whose `node_modules` their tests reuse.
const NPM_PINS: &[&str] = &[
    "@bytecodealliance/componentize-js",
    "@bytecodealliance/jco",
    "typescript",
    "@bytecodealliance/preview2-shim",
];

/// Links the `node_modules` `cargo xtask plugins` installed into `project`,
/// instead of another 380 MB download.
fn link_node_modules(project: &Path) {
    let modules = repo_root().join("plugins/js/node_modules");
    for tool in ["componentize-js", "jco", "tsc"] {
        assert!(
            modules.join(".bin").join(tool).exists(),
            "{} lacks {tool}: run `cargo xtask plugins` first (`cargo xtask test` does)",
            modules.display()
        );
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink(&modules, project.join("node_modules")).unwrap();
}

/// What componentize-py 0.25.1's `bindings` writes beside the app.
const PYTHON_BINDINGS: &[&str] = &[
    "wit_world",
    "componentize_py_types.py",
    "componentize_py_runtime.pyi",
    "componentize_py_async_support",
    "poll_loop.py",
];

/// Every file under `root/path`, relative to `root`, without caches.
fn files_under(root: &Path, path: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.join(path)];
    while let Some(at) = stack.pop() {
        if at.is_dir() {
            for entry in std::fs::read_dir(&at).unwrap() {
                let entry = entry.unwrap().path();
                if !entry.ends_with("__pycache__") {
                    stack.push(entry);
                }
            }
        } else if at.is_file() {
            found.push(at.strip_prefix(root).unwrap().display().to_string());
        }
    }
    found.sort();
    found
}

/// The declarations or bindings a build regenerated from this repository's
/// `wit/bot.wit` must be the ones the template ships (and `botbox new`
/// writes); otherwise the template's copies are stale.
fn assert_generated_match_template(lang: &str, project: &Path, paths: &[&str]) {
    let template = repo_root().join("sdk/templates").join(lang);
    let stale =
        format!("sdk/templates/{lang} has stale generated files: run `cargo xtask template-types`");
    for path in paths {
        let generated = files_under(project, path);
        assert!(!generated.is_empty(), "the build wrote no {path}");
        assert_eq!(generated, files_under(&template, path), "{stale}");
        for file in &generated {
            assert!(
                std::fs::read(project.join(file)).unwrap()
                    == std::fs::read(template.join(file)).unwrap(),
                "{file} differs. {stale}"
            );
        }
    }
}

/// Runs `program` in `dir`; returns whether it succeeded, and what it said.
fn run_in(dir: &Path, program: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Replaces `from` with `to` in `file`, which must contain it.
fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", file.display());
    std::fs::write(file, text.replace(from, to)).unwrap();
}

#[test]
fn js_template_builds_and_answers() {
    for package in NPM_PINS {
        assert_same_pin(
            "sdk/templates/js/package.json",
            "plugins/js/package.json",
            package,
        );
    }
    let (_dir, project) = check_template("js", &[], link_node_modules);
    // build.sh regenerated the declarations from wit/bot.wit.
    assert_generated_match_template("js", &project, &["types"]);
}

#[test]
fn rust_template_builds_and_answers() {
    // The plugins' target dir already holds the SDK's dependencies (and, on
    // the Debian route, the standard library built for wasm32).
    let target = repo_root().join("plugins/target");
    check_template("rust", &[("CARGO_TARGET_DIR", target.as_os_str())], |_| {});
}

#[test]
fn ts_template_made_by_botbox_new_builds_and_answers() {
    for package in NPM_PINS {
        assert_same_pin(
            "sdk/templates/ts/package.json",
            "plugins/js/package.json",
            package,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    // A fresh project, made the way an author makes one.
    let out = botbox(dir.path(), &["new", "my-ts-bot", "--lang", "ts"]);
    assert!(
        out.status.success(),
        "botbox new: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = dir.path().join("my-ts-bot");
    link_node_modules(&project);
    build_and_call(dir.path(), &project, "my-ts-bot", &[]);
    assert!(
        project.join("build/bot.js").is_file(),
        "tsc compiled bot.ts to build/bot.js"
    );
    assert_generated_match_template("ts", &project, &["types"]);
}

/// The line of the JS and TS templates that the type tests break: kv
/// stores bytes, not a number.
const KV_SET: &str = "kv.set('greeted', new TextEncoder().encode(String(count)));";
const KV_SET_WRONG: &str = "kv.set('greeted', count);";

#[test]
fn ts_template_type_checks_and_a_wrongly_typed_call_stops_its_build() {
    let dir = tempfile::tempdir().unwrap();
    let project = instantiate("ts", "typed-ts-bot", dir.path());
    link_node_modules(&project);
    let tsc = project.join("node_modules/.bin/tsc");
    let (ok, out) = run_in(&project, &tsc, &["--noEmit"]);
    assert!(ok, "tsc --noEmit on the template:\n{out}");

    edit(&project.join("bot.ts"), KV_SET, KV_SET_WRONG);
    let (ok, out) = run_in(&project, &tsc, &["--noEmit"]);
    assert!(
        !ok,
        "tsc accepted a number where kv.set takes bytes:\n{out}"
    );
    assert!(
        out.contains("bot.ts") && out.contains("TS2345") && out.contains("Uint8Array"),
        "{out}"
    );
    // The build stops at tsc: no component from code that does not check.
    let (ok, out) = run_in(&project, &project.join("build.sh"), &[]);
    assert!(!ok, "build.sh built a wrongly typed bot:\n{out}");
    assert!(out.contains("TS2345"), "{out}");
    assert!(!project.join("typed-ts-bot.wasm").exists());
}

#[test]
fn js_template_type_checks_with_check_js_against_its_declarations() {
    let dir = tempfile::tempdir().unwrap();
    let project = instantiate("js", "typed-js-bot", dir.path());
    link_node_modules(&project);
    let tsc = project.join("node_modules/.bin/tsc");
    let check = ["-p", "jsconfig.json", "--checkJs"];
    let (ok, out) = run_in(&project, &tsc, &check);
    assert!(ok, "tsc --checkJs on the template:\n{out}");

    edit(&project.join("bot.js"), KV_SET, KV_SET_WRONG);
    let (ok, out) = run_in(&project, &tsc, &check);
    assert!(
        !ok,
        "tsc accepted a number where kv.set takes bytes:\n{out}"
    );
    assert!(
        out.contains("bot.js") && out.contains("TS2345") && out.contains("Uint8Array"),
        "{out}"
    );
}

#[test]
fn python_template_bindings_type_check_with_mypy() {
    assert_same_pin(
        "sdk/templates/python/requirements.txt",
        "plugins/python/requirements.txt",
        "mypy",
    );
    // The mypy `cargo xtask plugins` installed beside componentize-py.
    let mypy = target_dir().join("guests/python-venv/bin/mypy");
    assert!(
        mypy.is_file(),
        "{} is missing: run `cargo xtask plugins` first (`cargo xtask test` does)",
        mypy.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let project = instantiate("python", "typed-python-bot", dir.path());
    assert!(
        project.join("wit_world/imports/kv.py").is_file(),
        "the bindings package is next to the app"
    );
    // mypy.ini: strict, on app.py (and so on the bindings it imports).
    let (ok, out) = run_in(&project, &mypy, &[]);
    assert!(ok, "mypy on the template:\n{out}");

    edit(
        &project.join("app.py"),
        "kv.set(\"greeted\", str(count).encode())",
        "kv.set(\"greeted\", count)",
    );
    let (ok, out) = run_in(&project, &mypy, &[]);
    assert!(!ok, "mypy accepted an int where kv.set takes bytes:\n{out}");
    assert!(
        out.contains("app.py") && out.contains("incompatible type \"int\"; expected \"bytes\""),
        "{out}"
    );
}

/// Reads `lines` until one contains `wanted`; returns everything read.
fn read_until(lines: &mut impl Iterator<Item = std::io::Result<String>>, wanted: &str) -> String {
    let mut seen = String::new();
    for line in lines {
        let line = line.expect("read botbox dev's output");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(wanted) {
            return seen;
        }
    }
    panic!("botbox dev ended before printing {wanted:?}:\n{seen}");
}

#[test]
fn ts_template_rebuilds_on_save_in_botbox_dev() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().unwrap();
    let project = instantiate("ts", "dev-ts-bot", dir.path());
    link_node_modules(&project);
    let storage = storage_in(dir.path());
    // The declarations' times, set in the past: a build that rewrote them,
    // even unchanged, would make `botbox dev` rebuild forever.
    let long_ago =
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let declarations = files_under(&project, "types");
    for file in &declarations {
        std::fs::File::options()
            .write(true)
            .open(project.join(file))
            .and_then(|f| f.set_modified(long_ago))
            .unwrap();
    }
    let mut dev = Command::new(env!("CARGO_BIN_EXE_botbox"))
        .arg("dev")
        .arg(&project)
        .arg("--storage")
        .arg(&storage)
        .args(["--event", r#"{"name": "hello", "payload": "Ada"}"#])
        // Only a bound for a broken run; the test stops it itself.
        .args(["--exit-after", "900"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start botbox dev");
    let stdout = dev.stdout.take().unwrap();
    // Stopped when the test ends, also when an assertion fails.
    let _dev = KillOnDrop(dev);
    let mut lines = std::io::BufReader::new(stdout).lines();

    let first = read_until(&mut lines, "Hello, Ada!");
    for file in &declarations {
        let modified = std::fs::metadata(project.join(file))
            .and_then(|m| m.modified())
            .unwrap();
        assert_eq!(modified, long_ago, "the build rewrote {file}:\n{first}");
    }
    // Saving bot.ts rebuilds (tsc, then componentize-js) and reloads.
    edit(
        &project.join("bot.ts"),
        "'Hello, {name}!'",
        "'Howdy, {name}!'",
    );
    let second = read_until(&mut lines, "Howdy, Ada!");
    // The save recompiled only what changed: the JS runtime's compiled
    // functions were reused from the first build (the incremental cache).
    let reused = second
        .lines()
        .find(|l| l.starts_with("dev   loaded"))
        .and_then(|l| {
            l.rsplit_once("reused ")?
                .1
                .split_once(" (")?
                .1
                .split_once('%')
        })
        .and_then(|(percent, _)| percent.parse::<u32>().ok());
    assert!(reused.is_some_and(|p| p >= 50), "{second}");
    // One build each (tsc writes to build/, which is not a source).
    let builds = |text: &str| text.matches("build ./build.sh").count();
    assert_eq!((builds(&first), builds(&second)), (1, 1), "{first}{second}");
    // A type error fails the build and the running version stays.
    edit(&project.join("bot.ts"), KV_SET, KV_SET_WRONG);
    let failed = read_until(&mut lines, "build FAILED");
    assert!(failed.contains("TS2345"), "{failed}");
}

/// A child process that is stopped and reaped when this is dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
