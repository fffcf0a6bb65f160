//! One host serves every WIT version it lists: a component built against
//! `botbox:bot@0.1.0` and one built against `botbox:bot@0.2.0` load side by
//! side, and each runs through the same capabilities.

mod support;

use botbox::wit::WitVersion;
use botbox::wit::types::{CustomEvent, Event};
use support::{Ask, TestHost, WatPlugin, send_and_expect};

fn poke() -> Event {
    Event::Custom(CustomEvent {
        name: "poke".into(),
        payload: String::new(),
    })
}

/// Logs a line and sends `text` to lobby; traps if the send fails.
fn sender(version: &str, text: &str) -> Vec<u8> {
    let mut p = WatPlugin::new(Ask::default()).version(version);
    let (line, len) = p.data.string(text);
    let msg = p.text_message("lobby", text);
    let body = format!(
        "(call $log (i32.const 2) (i32.const {line}) (i32.const {len}))\n{}",
        send_and_expect(msg, 0)
    );
    p.body(&body).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_component_and_a_0_2_component_run_in_one_host() {
    let host = TestHost::new(&[
        ("old", sender("0.1.0", "from 0.1.0"), ""),
        ("new", sender("0.2.0", "from 0.2.0"), ""),
    ]);
    host.load_all().await;
    let runtime = &host.app.runtime;
    assert_eq!(
        runtime.plugin("old").unwrap().pre.version(),
        WitVersion::V0_1
    );
    assert_eq!(
        runtime.plugin("new").unwrap().pre.version(),
        WitVersion::V0_2
    );
    let mut accepted = host.app.delivery.observers().accepted.subscribe();
    for name in ["old", "new"] {
        runtime
            .dispatch(name, &poke())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let a = accepted.try_recv().expect("its broadcast was accepted");
        assert_eq!(a.plugin, name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_component_gets_no_http_grant_whatever_the_operator_lists() {
    // 0.1.0 has no way to ask, so the intersection is empty.
    let host = TestHost::new(&[("old", sender("0.1.0", "hi"), "http = [\"api.example.org\"]")]);
    host.load_all().await;
    let plugin = host.app.runtime.plugin("old").unwrap();
    assert!(plugin.context.grants.http.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_2_component_gets_the_intersection_of_its_ask_and_the_grant() {
    let plugin = WatPlugin::new(Ask::default())
        .http(&[
            "api.example.org",
            "status.example.org:8443",
            "metadata.internal",
            "not a host",
        ])
        .build();
    let host = TestHost::new(&[("new", plugin, "http = [\"*.example.org\"]")]);
    host.load_all().await;
    let plugin = host.app.runtime.plugin("new").unwrap();
    let granted: Vec<String> = plugin
        .context
        .grants
        .http
        .iter()
        .map(|h| h.to_string())
        .collect();
    // `*.example.org` means port 443: the 8443 ask is not covered.
    assert_eq!(granted, ["api.example.org"]);
}

/// A component whose handler is `botbox:bot@0.1.0` but which imports an
/// interface of `botbox:bot@0.2.0` is refused at load with both versions
/// named: the host links one version's capabilities to a component, and a
/// half-and-half build is a mistake its author should hear about, not a
/// trap at the first call. Its neighbour loads and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_mixing_two_wit_versions_is_refused_at_load() {
    // A stand-in 0.2.0 package beside the real 0.1.0 one: the check reads
    // the import's package and version, whatever the interface holds.
    let newer = "package botbox:bot@0.2.0;
interface log {
  log: func(level: u8, message: string);
}
";
    let mixed = WatPlugin::new(Ask::default())
        .version("0.1.0")
        .foreign(&[newer], &["botbox:bot/log@0.2.0"])
        .imports(r#"(import "botbox:bot/log@0.2.0" "log" (func $log2 (param i32 i32 i32)))"#)
        .body("(call $log2 (i32.const 2) (i32.const 0) (i32.const 0))")
        .build();
    let host = TestHost::new(&[
        ("mixed", mixed, ""),
        ("neighbour", sender("0.2.0", "still here"), ""),
    ]);
    let errors = host.app.load_plugins().await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    assert!(text.starts_with("plugin `mixed`"), "{text}");
    assert!(text.contains("botbox:bot@0.1.0"), "{text}");
    assert!(
        text.contains("`botbox:bot/log@0.2.0` of version 0.2.0"),
        "{text}"
    );
    assert!(text.contains("build it against one version"), "{text}");
    assert!(host.app.runtime.plugin("mixed").is_none());
    host.app
        .runtime
        .dispatch("neighbour", &poke())
        .await
        .expect("the neighbour loaded and runs");
}
