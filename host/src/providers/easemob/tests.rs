use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::*;
use crate::providers::testing::test_server::{Answer as Canned, Server};
use crate::providers::testing::{channel, context, message, secret_file, text};
use crate::wit::types::{Content, MessageOptions, Priority};

const CLIENT_SECRET: &str = "YXA6-very-secret-client-secret";

fn high_priority() -> MessageOptions {
    MessageOptions {
        system: false,
        url_preview: None,
        attach: None,
        keyboard: None,
        menu: None,
        priority: Some(Priority::High),
    }
}

fn provider(url: &str) -> Easemob {
    Easemob {
        base: format!("{url}/1122161011178276/testapp"),
        client_id: Secret::new("YXA6client-id".into()),
        client_secret: Secret::new(CLIENT_SECRET.into()),
        http: reqwest::Client::new(),
        token: tokio::sync::Mutex::new(None),
    }
}

fn target(name: &str) -> ChannelConfig {
    channel(
        "em",
        Some(toml::Value::String(name.into())),
        toml::Table::new(),
    )
}

fn reply(status: u16, body: serde_json::Value) -> Reply {
    Reply {
        status,
        body: body.to_string().into_bytes(),
        retry_after: None,
    }
}

fn error(status: u16, error: &str, description: &str) -> Reply {
    reply(
        status,
        json!({"error": error, "exception": "x", "timestamp": 1, "duration": 0, "error_description": description}),
    )
}

#[test]
fn config_with_every_key_builds() {
    let (_d1, id) = secret_file("YXA6client-id");
    let (_d2, secret) = secret_file(CLIENT_SECRET);
    let mut options = toml::toml! {
        url = "https://a1.easemob.com"
        org = "1122161011178276"
        app = "testapp"
        throttle = { all-users-broadcast = ["1/30m", "3/1d"] }
    };
    options.insert("client_id".into(), id);
    options.insert("client_secret".into(), secret);
    let p = Easemob::from_options("providers.em", &options, &context()).unwrap();
    assert_eq!(p.base, "https://a1.easemob.com/1122161011178276/testapp");
}

#[test]
fn config_problems_are_all_reported_without_secrets() {
    let options = toml::toml! {
        url = "https://a1.easemob.com"
        org = "org/../x"
        client_id = "inline-id"
        client_secret = "inline-hunter2"
        appkey = "x#y"
    };
    let Err(issues) = Easemob::from_options("providers.em", &options, &context()) else {
        panic!("must fail")
    };
    let keys: HashSet<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    for k in [
        "providers.em.org",
        "providers.em.app",
        "providers.em.client_id",
        "providers.em.client_secret",
        "providers.em.appkey",
    ] {
        assert!(keys.contains(k), "missing {k} in {keys:?}");
    }
    assert!(!format!("{issues:?}").contains("hunter2"));
}

#[test]
fn channel_targets_priorities_and_endpoints() {
    let p = provider("https://x");
    for (name, endpoint) in [
        ("all-users", "all-users-broadcast"),
        ("online-users", "online-users-broadcast"),
        ("chatrooms", "chatrooms-broadcast"),
    ] {
        assert!(p.check_channel("everyone", &target(name)).is_empty());
        assert_eq!(p.endpoint(&target(name)), endpoint);
    }
    let min = 60_000;
    // The daily quotas count Easemob's UTC calendar day.
    assert_eq!(
        p.default_throttle("all-users-broadcast"),
        ThrottleSpec::parse(&["1/30m".into(), "3/day utc".into()]).unwrap()
    );
    assert_eq!(
        p.default_throttle("online-users-broadcast"),
        ThrottleSpec::parse(&["1/1m".into(), "50/day utc".into()]).unwrap()
    );
    assert_eq!(
        p.default_throttle("chatrooms-broadcast"),
        ThrottleSpec::windows_and_utc_day(&[(1, 1000), (10, min)], 100)
    );
    let issues = p.check_channel("everyone", &target("everybody"));
    assert_eq!(issues[0].key, "channels.everyone.target");
    assert_eq!(
        p.check_channel("everyone", &channel("em", None, toml::Table::new()))[0].key,
        "channels.everyone.target"
    );
    let with_priority = |t: &str, level: &str| {
        let mut options = toml::Table::new();
        options.insert("priority".into(), toml::Value::String(level.into()));
        channel("em", Some(toml::Value::String(t.into())), options)
    };
    assert!(
        p.check_channel("rooms", &with_priority("chatrooms", "high"))
            .is_empty()
    );
    assert_eq!(
        p.check_channel("rooms", &with_priority("chatrooms", "urgent"))[0].key,
        "channels.rooms.priority"
    );
    assert_eq!(
        p.check_channel("rooms", &with_priority("all-users", "high"))[0].key,
        "channels.rooms.priority"
    );
    let mut options = toml::Table::new();
    options.insert("colour".into(), toml::Value::String("red".into()));
    let c = channel("em", Some(toml::Value::String("all-users".into())), options);
    assert_eq!(p.check_channel("x", &c)[0].key, "channels.x.colour");
}

#[test]
fn rules_accept_every_content_kind() {
    let r = provider("https://x").rules(&target("all-users"));
    assert_eq!(r.accepts.len(), 8);
    assert_eq!(r.max_sender_chars, 64);
}

#[test]
fn validate_checks_size_ext_custom_and_reply_to() {
    let p = provider("https://x");
    let c = target("chatrooms");
    assert!(p.validate(&c, &message(text("hello"))).is_ok());
    let Err(BroadcastError::Invalid(why)) = p.validate(&c, &message(text(&"a".repeat(5100))))
    else {
        panic!()
    };
    assert!(why.contains("5120"), "{why}");
    let mut m = message(text("hi"));
    m.extra = Some(format!(r#"{{"k":"{}"}}"#, "v".repeat(5100)));
    assert!(matches!(
        p.validate(&c, &m),
        Err(BroadcastError::Invalid(_))
    ));
    m.extra = Some("[]".into());
    assert!(matches!(
        p.validate(&c, &m),
        Err(BroadcastError::Invalid(_))
    ));
    let custom = Content::Custom(crate::wit::types::CustomPayload {
        event: "e".into(),
        data: r#"{"n":1}"#.into(),
    });
    assert!(matches!(
        p.validate(&c, &message(custom)),
        Err(BroadcastError::Invalid(_))
    ));
    let mut m = message(text("hi"));
    m.reply_to = Some("room-1".into());
    assert!(matches!(
        p.validate(&c, &m),
        Err(BroadcastError::Invalid(_))
    ));
    // Any channel answers into any kind of conversation it was told about.
    for (conversation, endpoint) in [
        ("room:1", "chatroom-messages"),
        ("group:g1", "chatgroup-messages"),
        ("user:ada", "user-messages"),
    ] {
        m.reply_to = Some(conversation.into());
        let online = target("online-users");
        assert!(p.validate(&online, &m).is_ok(), "{conversation}");
        assert_eq!(Provider::route(&p, &online, &m), endpoint);
        assert!(p.reply_endpoints(&online).contains(&endpoint));
    }
    m.reply_to = None;
    assert_eq!(Provider::route(&p, &c, &m), "chatrooms-broadcast");
}

#[tokio::test]
async fn a_reply_goes_to_its_room_with_the_message_api() {
    let server = Server::start(|seen| {
        if seen.path().ends_with("/token") {
            Canned::json(
                200,
                json!({"access_token": "t1", "expires_in": 5_184_000, "application": "app-uuid"}),
            )
        } else {
            Canned::json(
                200,
                json!({"data": {"185145305923585": "1029545553039460728"}}),
            )
        }
    })
    .await;
    let p = provider(&server.base);
    let c = target("all-users");
    let mut m = message(text("pong"));
    m.reply_to = Some("room:185145305923585".into());
    m.options = Some(high_priority());
    let parts = p.plan("e", &c, &m).await.unwrap();
    assert_eq!(
        p.send(&c, &parts[0]).await,
        DeliveryOutcome::Delivered {
            provider_ids: vec!["1029545553039460728".into()]
        }
    );
    let sent = server
        .requests()
        .into_iter()
        .find(|r| r.path() == "/1122161011178276/testapp/messages/chatrooms")
        .expect("the reply went to the chat-room message API");
    assert_eq!(
        sent.json(),
        json!({
            "from": "admin",
            "to": ["185145305923585"],
            "type": "txt",
            "body": {"msg": "pong"},
            "chatroom_msg_level": "high"
        })
    );
    // 100 a second for the app, and each room its own 20.
    assert_eq!(
        p.default_throttle("chatroom-messages"),
        ThrottleSpec::windows(&[(100, 1000)])
    );
    assert_eq!(
        p.key_throttle("chatroom-messages"),
        Some(ThrottleSpec::windows(&[(20, 1000)]))
    );
    assert_eq!(
        p.throttle_key("chatroom-messages", &parts[0]).as_deref(),
        m.reply_to.as_deref()
    );
    assert_eq!(p.key_throttle("user-messages"), None);
}

#[test]
fn priority_comes_from_the_message_then_the_channel() {
    let mut m = message(text("hi"));
    assert_eq!(level_for(&m, Some("low")), Some("low"));
    assert_eq!(level_for(&m, None), None);
    m.options = Some(high_priority());
    assert_eq!(level_for(&m, Some("low")), Some("high"));
}

#[test]
fn success_carries_the_broadcast_id() {
    let ok = reply(
        200,
        serde_json::from_str(
            r#"{"path":"/messages/broadcast","uri":"https://XXXX/XXXX/XXXX/messages/broadcast","timestamp":1745565192019,"organization":"XXXX","application":"5371aaa4","action":"post","data":{"id":1365344904091349007},"duration":0,"applicationName":"XXXX"}"#,
        )
        .unwrap(),
    );
    assert_eq!(
        interpret(Target::AllUsers.route(), &ok, 0),
        DeliveryOutcome::Delivered {
            provider_ids: vec!["1365344904091349007".into()]
        }
    );
    // A 200 whose body cannot be read still went out: never resend it.
    let garbled = Reply {
        status: 200,
        body: b"<html>".to_vec(),
        retry_after: None,
    };
    assert_eq!(
        interpret(Target::AllUsers.route(), &garbled, 0),
        DeliveryOutcome::Delivered {
            provider_ids: vec![]
        }
    );
}

#[test]
fn rate_limits_wait_for_the_endpoint_window() {
    let limited = error(429, "reach_limit", "This request has reached api limit");
    for (t, secs) in [
        (Target::AllUsers, 1800),
        (Target::OnlineUsers, 60),
        (Target::Chatrooms, 1),
    ] {
        let DeliveryOutcome::Throttled {
            after,
            limit: crate::providers::RateLimited::Endpoint,
            reason,
        } = interpret(t.route(), &limited, 0)
        else {
            panic!()
        };
        assert_eq!(after, Some(Duration::from_secs(secs)));
        assert!(reason.contains("api limit"), "{reason}");
    }
    let mut with_header = error(429, "", "");
    with_header.retry_after = Some(Duration::from_secs(42));
    assert!(matches!(
        interpret(Target::AllUsers.route(), &with_header, 0),
        DeliveryOutcome::Throttled { after: Some(d), .. } if d == Duration::from_secs(42)
    ));
}

#[test]
fn daily_limits_are_quota_exhausted_until_midnight_utc() {
    // 2024-01-01T22:00:00Z: two hours to midnight.
    let now = 1_704_146_400;
    for description in [
        "broadcast message limit exceeded",
        "online user broadcast limit exceeded",
        "chatroom broadcast limit exceeded",
    ] {
        let outcome = interpret(
            Target::AllUsers.route(),
            &error(403, "forbidden_op", description),
            now,
        );
        let DeliveryOutcome::QuotaExhausted { until, reason } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(until, Some(Duration::from_secs(7200)));
        assert!(reason.contains(description), "{reason}");
    }
    assert_eq!(until_next_utc_midnight(0), Duration::from_secs(86_400));
    assert_eq!(until_next_utc_midnight(86_399), Duration::from_secs(1));
}

#[test]
fn documented_errors_are_rejected_with_their_type_and_text() {
    let unopened = interpret(
        Target::AllUsers.route(),
        &error(403, "forbidden_op", "message broadcast service is unopened"),
        0,
    );
    let DeliveryOutcome::Rejected { code, reason } = unopened else {
        panic!()
    };
    assert_eq!(code, "forbidden_op");
    assert!(reason.contains("not enabled"), "{reason}");
    for (status, kind, description) in [
        (400, "illegal_argument", "ext must be JSONObject"),
        (400, "illegal_argument", "from can't be empty"),
        (400, "illegal_argument", "target_type can only be 'users'"),
        (400, "illegal_argument", "target_type must be provided"),
        (
            400,
            "invalid_request_body",
            "Request body is invalid. Please check body is correct.",
        ),
        (403, "forbidden_op", "something else"),
        (
            404,
            "organization_application_not_found",
            "Could not find application",
        ),
        (413, "request_entity_too_large", "too large"),
    ] {
        let outcome = interpret(
            Target::OnlineUsers.route(),
            &error(status, kind, description),
            0,
        );
        let DeliveryOutcome::Rejected { code, reason } = outcome else {
            panic!("{status} {kind}: {outcome:?}")
        };
        assert_eq!(code, kind);
        assert!(reason.contains(description), "{reason}");
    }
}

#[test]
fn server_errors_retry_and_second_401_is_credentials() {
    for status in [500, 502, 503, 504] {
        assert!(matches!(
            interpret(Target::Chatrooms.route(), &error(status, "", "busy"), 0),
            DeliveryOutcome::RetryLater { .. }
        ));
    }
    assert!(matches!(
        interpret(
            Target::Chatrooms.route(),
            &error(401, "unauthorized", "Unable to authenticate (OAuth)"),
            0
        ),
        DeliveryOutcome::CredentialsExpired { .. }
    ));
}

/// A fake Easemob: `/token` hands out `t1`, `t2`, … and counts; the
/// broadcast accepts only the tokens `accept` allows.
async fn fake(
    accept: impl Fn(&str) -> bool + Send + Sync + 'static,
    token_delay_ms: u64,
) -> Server {
    let issued = Arc::new(AtomicUsize::new(0));
    Server::start(move |seen| {
        if seen.path().ends_with("/token") {
            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
            Canned::json(
                200,
                json!({"access_token": format!("t{n}"), "expires_in": 5_184_000, "application": "app-uuid"}),
            )
            .delayed(token_delay_ms)
        } else {
            let token = seen
                .header("authorization")
                .and_then(|h| h.strip_prefix("Bearer "))
                .unwrap_or("");
            if accept(token) {
                Canned::json(200, json!({"data": {"id": 1173998498812376874u64}}))
            } else {
                Canned::json(401, json!({"error": "unauthorized", "error_description": "Unable to authenticate (OAuth)"}))
            }
        }
    })
    .await
}

const TOKEN_PATH: &str = "/1122161011178276/testapp/token";
const BROADCAST_PATH: &str = "/1122161011178276/testapp/messages/broadcast";

#[tokio::test]
async fn concurrent_sends_fetch_the_token_once() {
    let server = fake(|t| t == "t1", 200).await;
    let p = Arc::new(provider(&server.base));
    let c = target("all-users");
    let mut tasks = Vec::new();
    for i in 0..10 {
        let p = p.clone();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let parts = p
                .plan("e", &c, &message(text(&format!("m{i}"))))
                .await
                .unwrap();
            p.send(&c, &parts[0]).await
        }));
    }
    for t in tasks {
        assert!(matches!(
            t.await.unwrap(),
            DeliveryOutcome::Delivered { .. }
        ));
    }
    assert_eq!(server.count(TOKEN_PATH), 1, "{:?}", server.counts());
    assert_eq!(server.count(BROADCAST_PATH), 10);
    let token_request = server
        .requests()
        .into_iter()
        .find(|r| r.path() == TOKEN_PATH)
        .unwrap();
    assert_eq!(token_request.method, "POST");
    assert_eq!(
        token_request.json(),
        json!({"grant_type": "client_credentials", "client_id": "YXA6client-id", "client_secret": CLIENT_SECRET})
    );
    let broadcast = server
        .requests()
        .into_iter()
        .find(|r| r.path() == BROADCAST_PATH)
        .unwrap();
    assert_eq!(broadcast.json()["target_type"], "users");
    assert_eq!(broadcast.json()["from"], "admin");
}

#[tokio::test]
async fn a_refused_token_is_refetched_once_and_the_send_retried() {
    let server = fake(|t| t == "t2", 0).await;
    let p = provider(&server.base);
    let c = target("all-users");
    let outcome = p
        .send(&c, &p.plan("e", &c, &message(text("hi"))).await.unwrap()[0])
        .await;
    assert_eq!(
        outcome,
        DeliveryOutcome::Delivered {
            provider_ids: vec!["1173998498812376874".into()]
        }
    );
    assert_eq!(server.count(TOKEN_PATH), 2);
    assert_eq!(server.count(BROADCAST_PATH), 2);
    // The new token is cached: the next send fetches nothing.
    let outcome = p
        .send(
            &c,
            &p.plan("e", &c, &message(text("again"))).await.unwrap()[0],
        )
        .await;
    assert!(matches!(outcome, DeliveryOutcome::Delivered { .. }));
    assert_eq!(server.count(TOKEN_PATH), 2);
}

#[tokio::test]
async fn concurrent_401s_refetch_the_token_once() {
    let server = fake(|t| t != "stale", 100).await;
    let p = Arc::new(provider(&server.base));
    *p.token.lock().await = Some(AppToken {
        value: Secret::new("stale".into()),
        refresh_at: Instant::now() + Duration::from_secs(3600),
    });
    let c = target("chatrooms");
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let p = p.clone();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let parts = p.plan("e", &c, &message(text("x"))).await.unwrap();
            p.send(&c, &parts[0]).await
        }));
    }
    for t in tasks {
        assert!(matches!(
            t.await.unwrap(),
            DeliveryOutcome::Delivered { .. }
        ));
    }
    assert_eq!(server.count(TOKEN_PATH), 1, "{:?}", server.counts());
    // Each send tried at most twice; a send that started while the new
    // token was being fetched used it at once.
    let broadcasts = server.count("/1122161011178276/testapp/messages/chatrooms/broadcast");
    assert!((6..=10).contains(&broadcasts), "{broadcasts}");
}

#[tokio::test]
async fn a_token_refused_twice_is_credentials_expired_after_two_tries() {
    let server = fake(|_| false, 0).await;
    let p = provider(&server.base);
    let c = target("online-users");
    let outcome = p
        .send(&c, &p.plan("e", &c, &message(text("hi"))).await.unwrap()[0])
        .await;
    assert!(
        matches!(outcome, DeliveryOutcome::CredentialsExpired { .. }),
        "{outcome:?}"
    );
    assert_eq!(server.count(TOKEN_PATH), 2);
    assert_eq!(
        server.count("/1122161011178276/testapp/messages/users/broadcast"),
        2
    );
}

#[tokio::test]
async fn refused_client_credentials_never_leak_into_the_reason() {
    let server = Server::start(|_| {
        Canned::json(
            401,
            // A server that echoes what it was sent.
            json!({"error": "invalid_grant", "error_description": format!("client_secret {CLIENT_SECRET} is wrong")}),
        )
    })
    .await;
    let p = provider(&server.base);
    let c = target("all-users");
    let outcome = p
        .send(&c, &p.plan("e", &c, &message(text("hi"))).await.unwrap()[0])
        .await;
    let DeliveryOutcome::CredentialsExpired { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("invalid_grant"), "{reason}");
    assert!(
        reason.contains("client_secret [redacted] is wrong"),
        "{reason}"
    );
    assert!(!reason.contains(CLIENT_SECRET), "{reason}");
    // Nothing was broadcast without a token.
    assert_eq!(server.count(BROADCAST_PATH), 0);
}

/// The REST API's documented answers beyond the broadcast pages' own
/// (doc.easemob.com "常见错误码"): each ends as what it means, with
/// Easemob's `error` as the code and its words in the reason; a code never
/// seen before is a rejection with Easemob's words, escaped and bounded.
#[test]
fn the_common_error_codes_say_what_went_wrong() {
    #[derive(Debug, PartialEq)]
    enum Is {
        Rejected,
        Retry,
        Credentials,
    }
    let route = Target::Chatrooms.route();
    for (status, code, words, is) in [
        (400, "illegal_argument", "malformed", Is::Rejected),
        (400, "json_parse", "malformed", Is::Rejected),
        (400, "invalid_request_body", "malformed", Is::Rejected),
        (
            400,
            "organization_application_not_found",
            "org and app",
            Is::Credentials,
        ),
        (403, "forbidden_op", "forbids", Is::Rejected),
        (
            404,
            "service_resource_not_found",
            "does not exist",
            Is::Rejected,
        ),
        (405, "method_not_allowed", "method", Is::Rejected),
        (415, "unsupported_media_type", "content type", Is::Rejected),
        (500, "web_application", "check url", Is::Rejected),
        (
            500,
            "unsupported_service_operation",
            "check url",
            Is::Rejected,
        ),
        (500, "internal_server_error", "HTTP 500", Is::Retry),
        (503, "service_unavailable", "HTTP 503", Is::Retry),
        (418, "brand_new_error", "refused (HTTP 418)", Is::Rejected),
    ] {
        let outcome = interpret(route, &error(status, code, "Easemob says"), 0);
        let (got, reason) = match &outcome {
            DeliveryOutcome::Rejected { code: c, reason } => {
                assert_eq!(c, code);
                (Is::Rejected, reason)
            }
            DeliveryOutcome::RetryLater { reason, .. } => (Is::Retry, reason),
            DeliveryOutcome::CredentialsExpired { reason } => (Is::Credentials, reason),
            other => panic!("{code}: {other:?}"),
        };
        assert_eq!(got, is, "{code}: {reason}");
        assert!(reason.contains(words), "{code}: {reason}");
        assert!(reason.contains("Easemob says"), "{code}: {reason}");
    }
    let hostile = format!("\u{1b}[2J\u{7}{}", "q".repeat(5000));
    let DeliveryOutcome::Rejected { reason, .. } =
        interpret(route, &error(418, "odd", &hostile), 0)
    else {
        panic!()
    };
    assert!(!reason.chars().any(char::is_control), "{reason}");
    assert!(reason.len() < 1200, "{}", reason.len());
}
