//! The example bots in plugins/, built to components by `cargo xtask
//! plugins`, driven through the library and through `botbox call`.

mod support;

use std::process::Command;

use botbox::app::App;
use botbox::config::Config;
use botbox::wit::types::{
    ChatMessage, Content, CustomEvent, Event, MeetingEvent, MeetingEventKind,
};
use support::example_plugin;

fn custom(name: &str, payload: &str) -> Event {
    Event::Custom(CustomEvent {
        name: name.into(),
        payload: payload.into(),
    })
}

async fn demo_like_host(dir: &std::path::Path) -> App {
    let toml = format!(
        r#"
[providers.console]
kind = "console"
[channels.lobby]
provider = "console"
[channels.announcements]
provider = "console"
[plugins.greeter]
path = "{greeter}"
channels = ["lobby"]
events = ["meeting", "custom"]
settings = {{ greeting = "Hello {{name}}, this is {{meeting}}", sender = "Greeter" }}
[plugins.announcer]
path = "{announcer}"
channels = ["announcements"]
events = ["schedule", "custom"]
schedules = {{ tick = "every 1d" }}
[plugins.commands]
path = "{commands}"
channels = ["lobby"]
events = ["chat-message", "custom"]
"#,
        greeter = example_plugin("greeter").display(),
        announcer = example_plugin("announcer").display(),
        commands = example_plugin("commands").display(),
    );
    let config = Config::parse(&toml, &dir.join("botbox.toml"), dir).expect("config");
    let app = App::build(config).expect("app");
    let errors = app.load_plugins().await;
    assert!(errors.is_empty(), "{errors:?}");
    app
}

fn text_of(content: &Content) -> &str {
    match content {
        Content::Text(t) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeter_welcomes_with_its_settings_and_replies_into_the_meeting() {
    let dir = tempfile::tempdir().unwrap();
    let app = demo_like_host(dir.path()).await;
    let mut accepted = app.delivery.observers().accepted.subscribe();
    let joined = Event::Meeting(MeetingEvent {
        channel: "lobby".into(),
        kind: MeetingEventKind::UserJoined,
        meeting_id: "room-7".into(),
        meeting_name: Some("Physics 101".into()),
        user_id: Some("u1".into()),
        user_name: Some("Ada".into()),
    });
    app.runtime
        .dispatch("greeter", &joined)
        .await
        .expect("handled");
    let a = accepted.try_recv().expect("a welcome was sent");
    assert_eq!(a.plugin, "greeter");
    assert_eq!(
        text_of(&a.message.content),
        "Hello Ada, this is Physics 101"
    );
    assert_eq!(a.message.reply_to.as_deref(), Some("room-7"));
    assert_eq!(a.message.sender.as_deref(), Some("Greeter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_answer_in_the_conversation_and_count_in_kv() {
    let dir = tempfile::tempdir().unwrap();
    let app = demo_like_host(dir.path()).await;
    let mut accepted = app.delivery.observers().accepted.subscribe();
    let chat = |text: &str, id: &str| {
        Event::ChatMessage(ChatMessage {
            channel: "lobby".into(),
            conversation: "meeting-1".into(),
            sender_id: "u9".into(),
            sender_name: Some("Grace".into()),
            text: text.into(),
            message_id: Some(id.into()),
            sent_at_ms: Some(1_700_000_000_000),
        })
    };
    app.runtime
        .dispatch("commands", &chat("!help", "1"))
        .await
        .unwrap();
    let help = accepted.try_recv().expect("help answered");
    assert!(text_of(&help.message.content).contains("!time"));
    assert_eq!(help.message.reply_to.as_deref(), Some("meeting-1"));

    app.runtime
        .dispatch("commands", &chat("!time", "2"))
        .await
        .unwrap();
    let time = accepted.try_recv().expect("time answered");
    assert!(
        text_of(&time.message.content).contains("2023-11-14"),
        "{:?}",
        time.message.content
    );

    // Plain chatter gets no answer.
    app.runtime
        .dispatch("commands", &chat("hello all", "3"))
        .await
        .unwrap();
    assert!(accepted.try_recv().is_err());

    let kv = app.runtime.services().kv;
    let limits = app
        .runtime
        .plugin("commands")
        .unwrap()
        .context
        .slices
        .kv
        .limits;
    let total = kv
        .get("commands", "count/total", &limits)
        .unwrap()
        .expect("counted");
    assert_eq!(String::from_utf8(total).unwrap(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcer_keeps_notices_in_kv_and_posts_them_on_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let app = demo_like_host(dir.path()).await;
    let mut accepted = app.delivery.observers().accepted.subscribe();
    app.runtime
        .dispatch(
            "announcer",
            &custom(
                "add",
                r#"{"text": "Recording starts in 5 minutes", "times": 1}"#,
            ),
        )
        .await
        .unwrap();
    assert!(
        accepted.try_recv().is_err(),
        "nothing is posted before a tick"
    );
    let tick = Event::Schedule("tick".into());
    app.runtime.dispatch("announcer", &tick).await.unwrap();
    let posted = accepted.try_recv().expect("posted on the tick");
    assert_eq!(posted.channel, "announcements");
    assert_eq!(
        text_of(&posted.message.content),
        "Recording starts in 5 minutes"
    );
    // `times: 1`: the next tick posts nothing.
    app.runtime.dispatch("announcer", &tick).await.unwrap();
    assert!(accepted.try_recv().is_err());
}

#[test]
fn botbox_call_drives_a_bot_with_settings_and_reports_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_botbox"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run botbox")
    };
    let greeter = example_plugin("greeter");
    let greeter = greeter.to_str().unwrap();
    let out = run(&[
        "call",
        greeter,
        "--event",
        r#"{"name": "greet", "payload": {"name": "Ada"}}"#,
        "--setting",
        "greeting=Hi {name}!",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("send  #lobby <bot> Hi Ada!"), "{stdout}");
    assert!(stdout.contains(": delivered"), "{stdout}");

    // A custom event the bot does not know: it answers with an error, and
    // the exit code says so.
    let out = run(&["call", greeter, "--event", r#"{"name": "dance"}"#]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  plugin `plugin` returned an error"),
        "{stdout}"
    );
}

/// Answer every connection with `204 No Content`; count the connections.
fn serve_no_content(
    listener: tokio::net::TcpListener,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = connections.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (connections, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_a_granted_url_and_the_refusal_of_an_ungranted_one() {
    // Both held at once, so they are two ports.
    let granted = support::http_server::status_port().await;
    let granted_port = granted.local_addr().unwrap().port();
    let ungranted = support::http_server::status_port().await;
    let ungranted_port = ungranted.local_addr().unwrap().port();
    let (granted_hits, granted_task) = serve_no_content(granted);
    let (ungranted_hits, ungranted_task) = serve_no_content(ungranted);

    let dir = tempfile::tempdir().unwrap();
    // The bot asks for all ten loopback ports; the operator grants one.
    let toml = format!(
        r#"
[providers.console]
kind = "console"
[channels.lobby]
provider = "console"
[plugins.status]
path = "{status}"
channels = ["lobby"]
events = ["chat-message"]
http = ["127.0.0.1:{granted_port}"]
http_plain_loopback = true
"#,
        status = example_plugin("status").display(),
    );
    let config = Config::parse(&toml, &dir.path().join("botbox.toml"), dir.path()).expect("config");
    let app = App::build(config).expect("app");
    let errors = app.load_plugins().await;
    assert!(errors.is_empty(), "{errors:?}");
    let mut accepted = app.delivery.observers().accepted.subscribe();
    let chat = |text: String| {
        Event::ChatMessage(ChatMessage {
            channel: "lobby".into(),
            conversation: "ops".into(),
            sender_id: "u1".into(),
            sender_name: None,
            text,
            message_id: None,
            sent_at_ms: None,
        })
    };

    let url = format!("http://127.0.0.1:{granted_port}/health");
    app.runtime
        .dispatch("status", &chat(format!("!status {url}")))
        .await
        .unwrap();
    let reply = accepted.try_recv().expect("status answered");
    let text = text_of(&reply.message.content);
    assert!(
        text.starts_with(&format!("{url}: 204 No Content in ")) && text.ends_with(" ms"),
        "{text}"
    );
    assert_eq!(reply.message.reply_to.as_deref(), Some("ops"));
    assert_eq!(granted_hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    let url = format!("http://127.0.0.1:{ungranted_port}/health");
    app.runtime
        .dispatch("status", &chat(format!("!status {url}")))
        .await
        .unwrap();
    let reply = accepted.try_recv().expect("refusal answered");
    let text = text_of(&reply.message.content);
    assert!(
        text.starts_with(&format!("{url}: refused by botbox: host not granted")),
        "{text}"
    );
    assert_eq!(
        ungranted_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the ungranted port was never connected to"
    );
    granted_task.abort();
    ungranted_task.abort();
}
