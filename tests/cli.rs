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
        WatPlugin::new(Ask::default()).version("0.9.0").build(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("new.wasm"),
        WatPlugin::new(Ask::default())
            .http(&["api.example.org", "evil.example.net"])
            .build(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("botbox.toml"),
        "[providers.console]\nkind = \"console\"\n[channels.lobby]\nprovider = \"console\"\n\
         [plugins.good]\npath = \"good.wasm\"\nchannels = [\"lobby\"]\n\
         [plugins.old]\npath = \"old.wasm\"\nchannels = [\"lobby\"]\n\
         [plugins.new]\npath = \"new.wasm\"\nchannels = [\"lobby\"]\nhttp = [\"*.example.org\"]\n",
    )
    .unwrap();
    let out = botbox(dir.path(), &["check", "--config", "botbox.toml"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("ok   plugin good"), "{t}");
    // Each plugin's line says which served version it targets.
    let lines: Vec<&str> = t.lines().collect();
    let after = |start: &str| {
        let at = lines
            .iter()
            .position(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line `{start}` in\n{t}"));
        lines[at + 1..]
            .iter()
            .take_while(|l| l.starts_with("       "))
            .map(|l| l.trim())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        after("ok   plugin good")[0],
        "targets botbox:bot@0.1.0",
        "{t}"
    );
    let new = after("ok   plugin new");
    assert_eq!(new[0], "targets botbox:bot@0.2.0", "{t}");
    // It asked for two hosts; the operator's `*.example.org` covers one.
    assert!(new.contains(&"http: api.example.org"), "{t}");
    assert!(
        t.contains("FAIL plugin `old`: `") && t.contains("was built against WIT botbox:bot@0.9.0"),
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

/// What a hostile plugin logs: quotes, backslashes, control characters,
/// markup, a byte-order mark, non-characters, a bidi override, a line
/// separator, text that looks like a lone surrogate's escape.
const HOSTILE_LINE: &str = "q\"uote\\ nul\0 bel\x07 esc\x1b[2J nl\n cr\r tab\t \
    </script><script>alert(1)</script> bom\u{feff} nonchar\u{ffff}\u{fffe} rlo\u{202e} \
    ls\u{2028} \\ud800 \\\" crab\u{1f980}";

/// Every stderr line of `out` as a JSON object, or a failure naming the
/// line that is not one.
fn json_lines(out: &Output) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let err = String::from_utf8(out.stderr.clone()).expect("the log is UTF-8");
    err.lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(serde_json::Value::Object(o)) => {
                assert_eq!(top_level_keys(line).len(), o.len(), "a key twice: {line}");
                o
            }
            other => panic!("a log line is not a JSON object ({other:?}): {line:?}"),
        })
        .collect()
}

/// `BOTBOX_LOG_FORMAT=json`: every line on stderr is one JSON object with
/// the time, level, target and message; a plugin's line carries the plugin
/// as a field and stays valid JSON whatever the plugin wrote.
#[test]
fn json_log_lines_are_json_whatever_a_plugin_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = WatPlugin::new(Ask {
        schedules: &["tick"],
        events: &[2],
        ..Ask::default()
    });
    let (line, len) = p.data.string(HOSTILE_LINE);
    let hostile = p
        .body(&format!(
            "(call $log (i32.const 3) (i32.const {line}) (i32.const {len}))"
        ))
        .build();
    std::fs::write(dir.path().join("hostile.wasm"), hostile).unwrap();
    std::fs::write(
        dir.path().join("botbox.toml"),
        "[providers.console]\nkind = \"console\"\n[channels.lobby]\nprovider = \"console\"\n\
         [plugins.hostile]\npath = \"hostile.wasm\"\nchannels = [\"lobby\"]\nschedules = { tick = \"every 1s\" }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_botbox"))
        .args(["run", "--config", "botbox.toml", "--exit-after", "3"])
        .current_dir(dir.path())
        .env("BOTBOX_LOG_FORMAT", "json")
        .env("BOTBOX_LOG", "debug")
        .output()
        .expect("run botbox");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines = json_lines(&out);
    for line in &lines {
        let time = line["time"].as_str().expect("a time");
        chrono::DateTime::parse_from_rfc3339(time).expect("an RFC 3339 time");
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&line["level"].as_str().unwrap()),
            "{line:?}"
        );
        assert!(line["target"].is_string(), "{line:?}");
        assert!(line["message"].is_string(), "{line:?}");
    }
    // botbox's own lines, at debug as asked.
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "DEBUG" && l["target"] == "botbox::runtime::plugin"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "stopped" && l["target"] == "botbox::app::supervisor"),
        "{lines:?}"
    );
    // The plugin's lines: the plugin as a field, the text escaped as on
    // a terminal (no control, format or separator character survives) and
    // the rest (quotes, backslashes, markup, non-characters) as written.
    let plugin_lines: Vec<_> = lines.iter().filter(|l| l["target"] == "plugin").collect();
    assert!(!plugin_lines.is_empty(), "{lines:?}");
    for l in plugin_lines {
        assert_eq!(l["plugin"], "hostile", "{l:?}");
        assert_eq!(l["level"], "WARN", "{l:?}");
        let message = l["message"].as_str().unwrap();
        assert_eq!(
            message,
            botbox::sanitize::for_log(HOSTILE_LINE, botbox::sanitize::MAX_LOG_LINE_CHARS)
        );
        assert!(message.contains("</script><script>alert(1)</script>"));
        // A backslash is doubled, so an escape the plugin wrote (`\ud800`)
        // cannot pass for one the host made.
        assert!(message.contains("q\"uote\\\\ nul\\u{0}"), "{message:?}");
        assert!(message.contains(" \\\\ud800 "), "{message:?}");
        assert!(message.contains("\u{ffff}\u{fffe}"));
        assert!(
            !message
                .chars()
                .any(|c| c.is_control() || matches!(c, '\u{feff}' | '\u{202e}' | '\u{2028}')),
            "{message:?}"
        );
    }
}

/// In JSON, even the warning about a `BOTBOX_LOG` that is no filter is a
/// JSON line; an unknown `BOTBOX_LOG_FORMAT` is refused before anything
/// runs, naming the variable and the formats there are.
#[test]
fn json_log_format_warns_in_json_and_an_unknown_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.wasm"), chatty()).unwrap();
    std::fs::write(
        dir.path().join("botbox.toml"),
        "[providers.console]\nkind = \"console\"\n[channels.lobby]\nprovider = \"console\"\n\
         [plugins.good]\npath = \"good.wasm\"\nchannels = [\"lobby\"]\n",
    )
    .unwrap();
    let check = |format: &str, log: &str| {
        Command::new(env!("CARGO_BIN_EXE_botbox"))
            .args(["check", "--config", "botbox.toml"])
            .current_dir(dir.path())
            .env("BOTBOX_LOG_FORMAT", format)
            .env("BOTBOX_LOG", log)
            .output()
            .expect("run botbox")
    };
    let out = check("json", "botbox=loud");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines = json_lines(&out);
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["message"]
                .as_str()
                .unwrap()
                .starts_with("BOTBOX_LOG is not a log filter")),
        "{lines:?}"
    );

    // Even under `call`, whose log shows errors only.
    let out = Command::new(env!("CARGO_BIN_EXE_botbox"))
        .args(["call", "good.wasm", "--event", r#"{"name": "poke"}"#])
        .current_dir(dir.path())
        .env("BOTBOX_LOG_FORMAT", "json")
        .env("BOTBOX_LOG", "botbox=loud")
        .output()
        .expect("run botbox");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines = json_lines(&out);
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["message"]
                .as_str()
                .unwrap()
                .starts_with("BOTBOX_LOG is not a log filter")),
        "{lines:?}"
    );

    let out = check("yaml", "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        err.contains("BOTBOX_LOG_FORMAT is `yaml`")
            && err.contains("`text`")
            && err.contains("`json`"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing ran: {}", text(&out));
}

/// The JSON formatter writes every key once: tracing-subscriber's own
/// wrote `message` twice for `warn!(message = %id, "text")`, as the
/// delivery worker logs. Span fields (where a trace id goes) come along.
#[test]
fn json_lines_write_each_key_once_and_carry_span_fields() {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
        .event_format(botbox::cli::logging::JsonLines)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("dispatch", trace_id = "4bf92f3577b34da6", plugin = "outer");
        let _entered = span.enter();
        tracing::warn!(message = %"01JF-id", level = 3, plugin = "p\"x", "giving up: {}", "</script>");
    });
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let mut keys = top_level_keys(lines[0]);
    let written = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), written, "a key written twice: {text}");
    let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(line["message"], "giving up: </script>", "{line}");
    assert_eq!(line["message_2"], "01JF-id", "{line}");
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["level_2"], 3, "{line}");
    assert_eq!(line["plugin"], "p\"x", "{line}");
    assert_eq!(line["target"], "cli", "{line}");
    assert_eq!(line["span"]["name"], "dispatch", "{line}");
    assert_eq!(line["span"]["trace_id"], "4bf92f3577b34da6", "{line}");
    assert_eq!(line["spans"][0]["plugin"], "outer", "{line}");
}

/// The keys of a JSON object as written, repeats included (parsing into a
/// map would keep only one of them).
fn top_level_keys(line: &str) -> Vec<String> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                keys.push(key);
            }
            Ok(keys)
        }
    }
    let mut reader = serde_json::Deserializer::from_str(line);
    serde::Deserializer::deserialize_map(&mut reader, Keys).expect("a JSON object")
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

/// Sends "hello" to lobby on a custom event only, and asks for delivery
/// reports: a report is handed to it without it sending again.
fn reporter() -> Vec<u8> {
    let mut p = WatPlugin::new(Ask {
        events: &[3, 4],
        ..Ask::default()
    });
    let msg = p.text_message("lobby", "hello");
    // The event is passed by pointer; its first byte is the variant's case
    // (4: custom, in `variant event`'s order).
    let body = format!(
        "(if (i32.eq (i32.load8_u (local.get 0)) (i32.const 4)) (then {}))",
        send_and_expect(msg, 0)
    );
    p.body(&body).build()
}

/// A case's delivery outcome `timeout`: the simulator holds every request
/// past the case's short provider timeout, each of the worker's attempts
/// times out, and the report the plugin gets says so. `credentials-expired`:
/// the simulator refuses the UserSig as expired, a fresh one too, at every
/// attempt, and the report says the credentials were refused.
#[test]
fn test_cases_choose_a_provider_timeout_or_expired_credentials() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reporter.wasm"), reporter()).unwrap();
    let cases = r#"
component = "reporter.wasm"

[[case]]
name = "a provider that never answers"
delivery = "timeout"
events = [{ custom = { name = "poke" } }]
broadcasts = [{ channel = "lobby", text = "hello" }]
reports = [{ channel = "lobby", outcome = "failed", attempts = 10, matches = "timed out" }]

[[case]]
name = "credentials the provider refuses"
delivery = "credentials-expired"
events = [{ custom = { name = "poke" } }]
broadcasts = [{ channel = "lobby", text = "hello" }]
reports = [{ channel = "lobby", outcome = "failed", attempts = 10, matches = "^credentials refused: .*70001.*UserSig expired" }]
"#;
    std::fs::write(dir.path().join("bot.test.toml"), cases).unwrap();
    let out = botbox(dir.path(), &["test"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("2 case(s), 2 passed, 0 failed"), "{t}");
}
