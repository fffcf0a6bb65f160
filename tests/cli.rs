//! The `botbox` binary, driven as a user would: exit codes and output.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{Ask, WatPlugin, send_and_expect};

fn botbox(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_botbox"))
        .args(args)
        .current_dir(dir)
        .env_remove("BOTBOX_LOG")
        .output()
        .expect("run botbox")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Logs "hi", sends "hello" to lobby. It does not ask for delivery
/// reports: answering each report with a new message would loop until its
/// broadcast budget runs out.
fn chatty() -> Vec<u8> {
    let mut p = WatPlugin::new(Ask {
        schedules: &["tick"],
        events: &[2, 4],
        ..Ask::default()
    });
    let (line, len) = p.data.string("hi \x1b[31mthere");
    let msg = p.text_message("lobby", "hello");
    let body = format!(
        "(call $log (i32.const 2) (i32.const {line}) (i32.const {len}))\n{}",
        send_and_expect(msg, 0)
    );
    p.body(&body).build()
}

#[test]
fn call_on_a_wasm_file_prints_logs_and_broadcasts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chatty.wasm"), chatty()).unwrap();
    let out = botbox(
        dir.path(),
        &["call", "chatty.wasm", "--event", r#"{"name": "poke"}"#],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("log   info  plugin: hi \\u{1b}[31mthere"), "{t}");
    assert!(t.contains("send  #lobby <bot> hello"), "{t}");
    assert!(t.contains(": delivered"), "{t}");
    assert!(t.contains("ok    handled in"), "{t}");
}

#[test]
fn call_exit_code_reflects_a_trap() {
    let dir = tempfile::tempdir().unwrap();
    let bad = WatPlugin::new(Ask::default()).body("unreachable").build();
    std::fs::write(dir.path().join("bad.wasm"), bad).unwrap();
    let out = botbox(
        dir.path(),
        &["call", "bad.wasm", "--event", r#"{"name": "x"}"#],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FAIL  plugin `plugin` crashed: wasm trap"),
        "{t}"
    );
}

#[test]
fn call_refuses_a_bad_event_with_usage_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chatty.wasm"), chatty()).unwrap();
    let out = botbox(
        dir.path(),
        &["call", "chatty.wasm", "--event", "{\"telepathy\": 1}"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("unknown event kind `telepathy`"));
}

#[test]
fn check_reports_every_config_problem_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("botbox.toml"),
        "[channels.lobby]\nprovider = \"nope\"\n[plugins.p]\npath = \"p.wasm\"\nchannels = [\"ghost\"]\nlimits = { memory_mb = 0 }\n",
    )
    .unwrap();
    let out = botbox(dir.path(), &["check", "--config", "botbox.toml"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("botbox.toml has 3 problem(s)"), "{t}");
    assert!(t.contains("channels.lobby.provider"), "{t}");
    assert!(t.contains("plugins.p.channels"), "{t}");
    assert!(t.contains("plugins.p.limits.memory_mb"), "{t}");
}

#[test]
fn check_names_the_wit_version_a_plugin_was_built_against() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.wasm"), chatty()).unwrap();
    std::fs::write(
        dir.path().join("old.wasm"),
        WatPlugin::new(Ask::default()).version("0.2.0").build(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("botbox.toml"),
        "[providers.console]\nkind = \"console\"\n[channels.lobby]\nprovider = \"console\"\n\
         [plugins.good]\npath = \"good.wasm\"\nchannels = [\"lobby\"]\n\
         [plugins.old]\npath = \"old.wasm\"\nchannels = [\"lobby\"]\n",
    )
    .unwrap();
    let out = botbox(dir.path(), &["check", "--config", "botbox.toml"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("ok   plugin good"), "{t}");
    assert!(
        t.contains("FAIL plugin `old`: `") && t.contains("was built against WIT botbox:bot@0.2.0"),
        "{t}"
    );
}

/// `BOTBOX_LOG=debug` shows botbox's own debug lines, not wasmtime's and
/// Cranelift's: before, `botbox check` with one plugin wrote megabytes of
/// compiler lines.
#[test]
fn botbox_log_debug_is_botboxs_own_debug() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.wasm"), chatty()).unwrap();
    std::fs::write(
        dir.path().join("botbox.toml"),
        "[storage]\ndir = \"state\"\n[providers.console]\nkind = \"console\"\n\
         [channels.lobby]\nprovider = \"console\"\n\
         [plugins.good]\npath = \"good.wasm\"\nchannels = [\"lobby\"]\n",
    )
    .unwrap();
    let check = |log: &str| {
        // No compile cache: each run compiles, so Cranelift has lines to log.
        let _ = std::fs::remove_dir_all(dir.path().join("state"));
        Command::new(env!("CARGO_BIN_EXE_botbox"))
            .args(["check", "--config", "botbox.toml"])
            .current_dir(dir.path())
            .env("BOTBOX_LOG", log)
            .env("NO_COLOR", "1")
            .output()
            .expect("run botbox")
    };
    let out = check("debug");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        err.contains("DEBUG botbox::runtime::plugin: granted"),
        "no botbox debug line: {err}"
    );
    assert!(
        !err.contains("DEBUG cranelift") && !err.contains("DEBUG wasmtime"),
        "compiler debug lines in `BOTBOX_LOG=debug`: {} bytes",
        err.len()
    );
    // A full filter still reaches the crates beneath, as written.
    let out = check("info,cranelift_codegen=debug");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DEBUG cranelift_codegen"),
        "{}",
        text(&out)
    );
    // A value that is no filter is said to be one, and the default applies.
    let out = check("botbox=loud");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("BOTBOX_LOG is not a log filter"),
        "{}",
        text(&out)
    );
}

#[test]
fn run_fires_schedules_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chatty.wasm"), chatty()).unwrap();
    std::fs::write(
        dir.path().join("botbox.toml"),
        "[providers.console]\nkind = \"console\"\n[channels.lobby]\nprovider = \"console\"\nsender = \"Ticker\"\n\
         [plugins.chatty]\npath = \"chatty.wasm\"\nchannels = [\"lobby\"]\nschedules = { tick = \"every 1s\" }\n",
    )
    .unwrap();
    let out = botbox(
        dir.path(),
        &["run", "--config", "botbox.toml", "--exit-after", "3"],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let sent = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| *l == "#lobby <Ticker> hello")
        .count();
    assert!((1..=4).contains(&sent), "{t}");
    assert!(t.contains("stopped"), "{t}");
}

/// A test file for `chatty` with one case that holds and one that is
/// deliberately wrong: it expects "goodbye" where chatty says "hello", and
/// a log line chatty never writes.
const CHATTY_TESTS: &str = r#"
component = "chatty.wasm"

[[case]]
name = "poke says hello"
events = [{ custom = { name = "poke" } }]
broadcasts = [{ channel = "lobby", text = "hello" }]
logs = [{ level = "info", matches = "^hi " }]

[[case]]
name = "poke says goodbye (deliberately wrong)"
events = [{ custom = { name = "poke" } }]
broadcasts = [{ channel = "lobby", text = "goodbye" }]
logs = [{ level = "warn", matches = "bye" }]
"#;

#[test]
fn test_fails_a_wrong_case_with_a_diff_an_exit_code_and_a_junit_failure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chatty.wasm"), chatty()).unwrap();
    std::fs::write(dir.path().join("bot.test.toml"), CHATTY_TESTS).unwrap();
    let out = botbox(dir.path(), &["test", "--junit", "results.xml"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("ok    poke says hello"), "{t}");
    assert!(
        t.contains("FAIL  poke says goodbye (deliberately wrong)"),
        "{t}"
    );
    // The diff: what the case expected (-) against what happened (+).
    assert!(t.contains("- broadcast 1: #lobby \"goodbye\""), "{t}");
    assert!(t.contains("+ broadcast 1: #lobby \"hello\""), "{t}");
    assert!(
        t.contains("- log: warn /bye/ (no such line after the ones above)"),
        "{t}"
    );
    assert!(t.contains("+ log: info \"hi \\\\u{1b}[31mthere\""), "{t}");
    assert!(t.contains("2 case(s), 1 passed, 1 failed"), "{t}");
    // Not a terminal: no colour codes.
    assert!(!t.contains('\x1b'), "{t}");

    let xml = std::fs::read_to_string(dir.path().join("results.xml")).unwrap();
    assert!(
        xml.contains(r#"tests="2" failures="1" errors="0""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase name="poke says hello" classname="bot.test.toml""#),
        "{xml}"
    );
    assert!(
        xml.contains(
            r#"<failure message="- broadcast 1: #lobby &quot;goodbye&quot;" type="mismatch">"#
        ),
        "{xml}"
    );
    assert!(xml.contains("+ broadcast 1: #lobby \"hello\""), "{xml}");
}

#[test]
fn test_passes_a_right_case_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chatty.wasm"), chatty()).unwrap();
    let passing = CHATTY_TESTS
        .split("[[case]]")
        .take(2)
        .collect::<Vec<_>>()
        .join("[[case]]");
    std::fs::write(dir.path().join("ok.test.toml"), passing).unwrap();
    let out = botbox(dir.path(), &["test", "ok.test.toml"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("1 case(s), 1 passed, 0 failed"), "{t}");

    std::fs::write(dir.path().join("bad.test.toml"), "[[case]]\nnam = 1\n").unwrap();
    let out = botbox(dir.path(), &["test", "bad.test.toml"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("test file bad.test.toml is invalid"), "{t}");
}
