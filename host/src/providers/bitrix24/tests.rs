use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::auth::Tokens;
use super::token_store::PairStore;
use super::*;
use crate::providers::testing::test_server::{Answer as Canned, Server};
use crate::providers::testing::{channel, context, message, secret_file, text};
use crate::storage::tokens::TokenStore;
use crate::wit::types::MessageOptions;

const CODE: &str = "s3cr3tw3bh00kc0de";
const CLIENT_SECRET: &str = "client-secret-hunter2";
const TOKEN_KEY: &str = "5eb63bbbe01eeed093cb22bb8f5acdc35eb63bbbe01eeed093cb22bb8f5acdc3";

fn webhook_provider(base: &str) -> Bitrix24 {
    Bitrix24 {
        base: base.into(),
        auth: Auth::Webhook {
            user_id: 1,
            code: Secret::new(CODE.into()),
        },
        http: reqwest::Client::new(),
        operating_ms: Default::default(),
    }
}

/// A provider on OAuth whose token store lives in the returned folder
/// (removed when it is dropped).
fn oauth_provider(base: &str, token_url: String, access: &str) -> (Bitrix24, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = Bitrix24 {
        base: base.into(),
        auth: Auth::OAuth(Box::new(OAuth {
            client_id: "app.5f1d2e".into(),
            client_secret: Secret::new(CLIENT_SECRET.into()),
            token_url,
            tokens: tokio::sync::Mutex::new(Tokens::from_config(
                Secret::new(access.into()),
                Secret::new("r1".into()),
            )),
            store: PairStore::new(
                TokenStore::sqlite(dir.path().join("tokens.sqlite")),
                "bitrix24 providers.b24 unit".into(),
                "providers.b24.oauth.token_key".into(),
                Secret::new(TOKEN_KEY.into()),
                &Secret::new("r1".into()),
            ),
        })),
        http: reqwest::Client::new(),
        operating_ms: Default::default(),
    };
    (provider, dir)
}

fn dialogs(ids: &[&str]) -> ChannelConfig {
    let list: Vec<toml::Value> = ids
        .iter()
        .map(|s| toml::Value::String(s.to_string()))
        .collect();
    let mut t = toml::Table::new();
    t.insert("dialogs".into(), toml::Value::Array(list));
    channel("b24", Some(t.into()), toml::Table::new())
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.as_bytes().to_vec(),
        retry_after: None,
    }
}

fn error(status: u16, code: &str, description: &str) -> Answer {
    interpret(&reply(
        status,
        &json!({"error": code, "error_description": description}).to_string(),
    ))
}

fn options() -> MessageOptions {
    MessageOptions {
        system: false,
        url_preview: None,
        attach: None,
        keyboard: None,
        menu: None,
        priority: None,
    }
}

fn issues_of(options: &toml::Table) -> Vec<ConfigIssue> {
    match Bitrix24::from_options("providers.b24", options, &context()) {
        Err(issues) => issues,
        Ok(_) => panic!("must fail"),
    }
}

#[test]
fn webhook_and_oauth_configs_build() {
    let (_d, code) = secret_file(CODE);
    let mut webhook = toml::toml! { user_id = 1 };
    webhook.insert("code".into(), code.clone());
    let mut options = toml::toml! {
        url = "https://portal.bitrix24.com/"
        throttle = ["bucket 2/s burst 50"]
    };
    options.insert("webhook".into(), webhook.into());
    let p = Bitrix24::from_options("providers.b24", &options, &context()).unwrap();
    assert_eq!(p.base, "https://portal.bitrix24.com");
    assert!(matches!(p.auth, Auth::Webhook { user_id: 1, .. }));

    let mut oauth = toml::toml! { client_id = "app.xxx" };
    for field in ["access_token", "refresh_token", "client_secret"] {
        oauth.insert(field.into(), code.clone());
    }
    let (_k, token_key) = secret_file(TOKEN_KEY);
    oauth.insert("token_key".into(), token_key);
    let mut options = toml::toml! { url = "https://portal.bitrix24.com" };
    options.insert("oauth".into(), oauth.clone().into());
    let p = Bitrix24::from_options("providers.b24", &options, &context()).unwrap();
    let Auth::OAuth(o) = &p.auth else { panic!() };
    assert_eq!(o.token_url, "https://oauth.bitrix.info/oauth/token/");
    oauth.insert(
        "token_url".into(),
        toml::Value::String("http://127.0.0.1:9000/oauth/token/".into()),
    );
    options.insert("oauth".into(), oauth.into());
    let p = Bitrix24::from_options("providers.b24", &options, &context()).unwrap();
    let Auth::OAuth(o) = &p.auth else { panic!() };
    assert_eq!(o.token_url, "http://127.0.0.1:9000/oauth/token/");
}

#[test]
fn a_token_key_that_is_not_64_hex_digits_is_refused_without_showing_it() {
    let (_d, secret) = secret_file("r-or-a-token");
    let (_k, short) = secret_file("abcdef0123-hunter2");
    let mut oauth = toml::toml! { client_id = "app.xxx" };
    for field in ["access_token", "refresh_token", "client_secret"] {
        oauth.insert(field.into(), secret.clone());
    }
    oauth.insert("token_key".into(), short);
    let mut options = toml::toml! { url = "https://portal.bitrix24.com" };
    options.insert("oauth".into(), oauth.into());
    let issues = issues_of(&options);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "providers.b24.oauth.token_key");
    assert!(issues[0].message.contains("openssl rand -hex 32"));
    assert!(!format!("{issues:?}").contains("hunter2"));
}

#[test]
fn config_problems_are_all_reported_without_secrets() {
    let (_d, bad_code) = secret_file("abc/../hunter2");
    let mut webhook = toml::toml! { user_id = 0
    extra = 1 };
    webhook.insert("code".into(), bad_code);
    let mut options = toml::toml! { url = "portal.bitrix24.com" };
    options.insert("webhook".into(), webhook.into());
    let issues = issues_of(&options);
    let keys: HashSet<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    for k in [
        "providers.b24.url",
        "providers.b24.webhook.user_id",
        "providers.b24.webhook.code",
        "providers.b24.webhook.extra",
    ] {
        assert!(keys.contains(k), "missing {k} in {keys:?}");
    }
    assert!(!format!("{issues:?}").contains("hunter2"));

    let issues = issues_of(&toml::toml! { url = "https://p" });
    assert_eq!(issues[0].key, "providers.b24.webhook");

    let options = toml::toml! {
        url = "https://p"
        webhook = { user_id = 1, code = "inline-hunter2" }
        oauth = { client_id = "x" }
    };
    let issues = issues_of(&options);
    assert_eq!(issues[0].key, "providers.b24.oauth");

    let options = toml::toml! {
        url = "https://p"
        oauth = { access_token = "inline-hunter2", client_id = "" }
    };
    let issues = issues_of(&options);
    let keys: HashSet<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    for k in [
        "providers.b24.oauth.access_token",
        "providers.b24.oauth.refresh_token",
        "providers.b24.oauth.client_id",
        "providers.b24.oauth.client_secret",
        "providers.b24.oauth.token_key",
    ] {
        assert!(keys.contains(k), "missing {k} in {keys:?}");
    }
    assert!(!format!("{issues:?}").contains("hunter2"));
}

#[test]
fn dialog_targets_are_checked() {
    let p = webhook_provider("https://x");
    assert!(
        p.check_channel("team", &dialogs(&["chat13", "256"]))
            .is_empty()
    );
    let mut t = toml::Table::new();
    t.insert(
        "dialogs".into(),
        toml::Value::Array(vec![toml::Value::Integer(256)]),
    );
    assert!(
        p.check_channel("team", &channel("b24", Some(t.into()), toml::Table::new()))
            .is_empty()
    );
    for bad in [
        vec!["chat0"],
        vec!["0"],
        vec!["chat"],
        vec!["-5"],
        vec!["general"],
        vec!["sg7"],
        vec!["chat1", "chat1"],
        vec![],
    ] {
        let issues = p.check_channel("team", &dialogs(&bad));
        assert_eq!(issues.len(), 1, "{bad:?}");
        assert_eq!(issues[0].key, "channels.team.target");
    }
    assert_eq!(
        p.check_channel("team", &channel("b24", None, toml::Table::new()))[0].key,
        "channels.team.target"
    );
    assert_eq!(p.endpoint(&dialogs(&["1"])), "rest");
    assert_eq!(
        p.default_throttle("rest").limits,
        vec![
            Limit::LeakyBucket {
                per_second: 2.0,
                burst: 50
            },
            Limit::Budget {
                seconds: 480,
                period_ms: 600_000
            }
        ]
    );
}

#[test]
fn body_carries_the_options_as_json() {
    let mut m = message(text("Message text"));
    assert_eq!(
        request_body("chat13", &m).unwrap(),
        json!({"DIALOG_ID": "chat13", "MESSAGE": "Message text"})
    );
    let mut o = options();
    o.system = true;
    o.url_preview = Some(false);
    o.attach = Some(r#"[{"MESSAGE":"attached"}]"#.into());
    o.keyboard = Some(r#"[{"TEXT":"Yes","COMMAND":"yes"}]"#.into());
    o.menu = Some(r#"[{"TEXT":"Help","LINK":"https://x"}]"#.into());
    m.options = Some(o);
    assert_eq!(
        request_body("256", &m).unwrap(),
        json!({
            "DIALOG_ID": "256",
            "MESSAGE": "Message text",
            "SYSTEM": "Y",
            "URL_PREVIEW": "N",
            "ATTACH": [{"MESSAGE": "attached"}],
            "KEYBOARD": [{"TEXT": "Yes", "COMMAND": "yes"}],
            "MENU": [{"TEXT": "Help", "LINK": "https://x"}],
        })
    );
}

#[test]
fn validate_names_the_field_that_breaks_the_rules() {
    let p = webhook_provider("https://x");
    let c = dialogs(&["chat1"]);
    for field in ["ATTACH", "KEYBOARD", "MENU"] {
        let mut o = options();
        // 30,001 bytes of compact JSON: one over.
        let oversize = Some(format!(r#"{{"k":"{}"}}"#, "x".repeat(MAX_OPTION_BYTES - 7)));
        match field {
            "ATTACH" => o.attach = oversize,
            "KEYBOARD" => o.keyboard = oversize,
            _ => o.menu = oversize,
        }
        let mut m = message(text("hi"));
        m.options = Some(o);
        let Err(BroadcastError::Invalid(why)) = p.validate(&c, &m) else {
            panic!("{field}")
        };
        assert!(why.starts_with(field) && why.contains("30 KB"), "{why}");
    }
    // Exactly 30,000 bytes, pretty-printed with spaces that are not sent: fine.
    let mut o = options();
    o.attach = Some(format!(
        r#"{{ "k" : "{}" }}"#,
        "x".repeat(MAX_OPTION_BYTES - 8)
    ));
    let mut m = message(text("hi"));
    m.options = Some(o);
    assert!(p.validate(&c, &m).is_ok());
    let mut o = options();
    o.keyboard = Some("{not json".into());
    let mut m = message(text("hi"));
    m.options = Some(o);
    let Err(BroadcastError::Invalid(why)) = p.validate(&c, &m) else {
        panic!()
    };
    assert!(why.starts_with("KEYBOARD"), "{why}");
    let mut m = message(text("hi"));
    m.reply_to = Some("chatX".into());
    assert!(matches!(
        p.validate(&c, &m),
        Err(BroadcastError::Invalid(_))
    ));
    m.reply_to = Some("chat42".into());
    assert!(p.validate(&c, &m).is_ok());
    assert!(
        p.validate(&c, &message(Content::Command("x".into())))
            .is_err()
    );
}

#[tokio::test]
async fn plan_is_one_part_per_dialog_or_the_reply_dialog() {
    let p = webhook_provider("https://x");
    let c = dialogs(&["chat13", "256"]);
    let parts = p.plan("team", &c, &message(text("hi"))).await.unwrap();
    let targets: Vec<&str> = parts.iter().map(|p| p.target.as_str()).collect();
    assert_eq!(targets, vec!["chat13", "256"]);
    let mut m = message(text("hi"));
    m.reply_to = Some("chat99".into());
    let parts = p.plan("team", &c, &m).await.unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].target, "chat99");
}

#[test]
fn success_is_delivered_with_the_message_id() {
    assert_eq!(
        interpret(&reply(200, r#"{"result": 11}"#)),
        Answer::Done(DeliveryOutcome::Delivered {
            provider_ids: vec!["11".into()]
        })
    );
    assert_eq!(
        interpret(&reply(200, r#"{"result": "12", "time": {}}"#)),
        Answer::Done(DeliveryOutcome::Delivered {
            provider_ids: vec!["12".into()]
        })
    );
    assert!(matches!(
        interpret(&reply(200, r#"{"result": false}"#)),
        Answer::Done(DeliveryOutcome::Rejected { .. })
    ));
}

#[test]
fn every_documented_error_is_rejected_with_code_and_description() {
    for code in DOCUMENTED_ERRORS {
        let outcome = error(400, code, &format!("description of {code}"));
        let Answer::Done(DeliveryOutcome::Rejected { code: c, reason }) = outcome else {
            panic!("{code}: {outcome:?}")
        };
        assert_eq!(c, code);
        assert!(
            reason.contains(&format!("description of {code}")),
            "{reason}"
        );
    }
    // The seed's example answer, with a 200 status.
    let outcome = error(
        200,
        "USER_ID_EMPTY",
        "Recipient ID not specified for person-to-person chat message",
    );
    assert!(
        matches!(outcome, Answer::Done(DeliveryOutcome::Rejected { code, .. }) if code == "USER_ID_EMPTY")
    );
}

#[test]
fn limits_auth_errors_and_server_errors() {
    assert_eq!(
        error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"),
        Answer::Done(DeliveryOutcome::Throttled {
            after: Some(Duration::from_secs(1)),
            limit: crate::providers::RateLimited::Account,
            reason: "bitrix24 im.message.add: the portal's request limit was exceeded (QUERY_LIMIT_EXCEEDED: Too many requests)".into(),
        })
    );
    // The method's execution-time budget (480 s per 10 minutes) is spent.
    assert!(matches!(
        error(
            429,
            "OPERATION_TIME_LIMIT",
            "Method is blocked due to operation time limit."
        ),
        Answer::Done(DeliveryOutcome::Throttled {
            limit: crate::providers::RateLimited::Endpoint,
            ..
        })
    ));
    assert!(matches!(
        error(
            401,
            "expired_token",
            "The access token provided has expired."
        ),
        Answer::TokenExpired(_)
    ));
    // For OAuth, another host's refresh replaced the pair: read it again.
    assert!(matches!(
        error(401, "invalid_token", "x"),
        Answer::TokenInvalid(_)
    ));
    for code in ["NO_AUTH_FOUND", "INVALID_CREDENTIALS", "insufficient_scope"] {
        assert!(
            matches!(
                error(401, code, "x"),
                Answer::Done(DeliveryOutcome::CredentialsExpired { .. })
            ),
            "{code}"
        );
    }
    assert!(matches!(
        error(401, "SOMETHING_NEW", "x"),
        Answer::Done(DeliveryOutcome::CredentialsExpired { .. })
    ));
    assert!(matches!(
        error(500, "INTERNAL_SERVER_ERROR", "x"),
        Answer::Done(DeliveryOutcome::RetryLater { .. })
    ));
    assert!(matches!(
        error(400, "ERROR_METHOD_NOT_FOUND", "x"),
        Answer::Done(DeliveryOutcome::Rejected { code, .. }) if code == "ERROR_METHOD_NOT_FOUND"
    ));
    for status in [500, 502, 504] {
        assert!(matches!(
            interpret(&reply(status, "<html>")),
            Answer::Done(DeliveryOutcome::RetryLater { .. })
        ));
    }
    // A bare 503 is the portal's request limit ("status 503 with the error
    // code QUERY_LIMIT_EXCEEDED"), a 429 a method's blocked budget or a
    // gateway's limit: both "too fast".
    assert!(matches!(
        interpret(&reply(503, "<html>")),
        Answer::Done(DeliveryOutcome::Throttled {
            limit: crate::providers::RateLimited::Account,
            ..
        })
    ));
    assert!(matches!(
        interpret(&reply(429, "<html>")),
        Answer::Done(DeliveryOutcome::Throttled {
            limit: crate::providers::RateLimited::Endpoint,
            ..
        })
    ));
    assert!(matches!(
        interpret(&reply(401, "<html>")),
        Answer::Done(DeliveryOutcome::CredentialsExpired { .. })
    ));
    assert!(matches!(
        interpret(&reply(404, "<html>")),
        Answer::Done(DeliveryOutcome::Rejected { code, .. }) if code == "http-404"
    ));
    let Answer::Done(DeliveryOutcome::RetryLater { reason, .. }) =
        interpret(&reply(200, "\x1b]0;pwned\x07<html>"))
    else {
        panic!()
    };
    assert!(!reason.chars().any(char::is_control), "{reason}");
}

#[tokio::test]
async fn webhook_sends_post_json_to_the_webhook_path_and_never_leak_the_code() {
    let server = Server::start(|seen| {
        if seen.json()["DIALOG_ID"] == "chat13" {
            Canned::json(200, json!({"result": 11}))
        } else {
            Canned::json(
                401,
                // A server that echoes the path it was called on.
                json!({"error": "expired_token", "error_description": format!("expired at /rest/1/{CODE}/")}),
            )
        }
    })
    .await;
    let p = webhook_provider(&server.base);
    let c = dialogs(&["chat13", "256"]);
    let parts = p.plan("team", &c, &message(text("hello"))).await.unwrap();
    assert_eq!(
        p.send(&c, &parts[0]).await,
        DeliveryOutcome::Delivered {
            provider_ids: vec!["11".into()]
        }
    );
    let r = &server.requests()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path(), format!("/rest/1/{CODE}/im.message.add.json"));
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(r.json(), json!({"DIALOG_ID": "chat13", "MESSAGE": "hello"}));
    // A webhook cannot refresh: expired_token is final, and the code stays out.
    let outcome = p.send(&c, &parts[1]).await;
    let DeliveryOutcome::CredentialsExpired { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(!reason.contains(CODE), "{reason}");
    assert!(reason.contains("/rest/1/[redacted]/"), "{reason}");
    assert_eq!(server.requests().len(), 2);
}

/// A fake portal that accepts only `accepted` access tokens, and a fake
/// OAuth server that hands out `a2`/`r2`, counting refreshes.
async fn fake_portal(accepted: &'static str, refresh_delay_ms: u64) -> (Server, Arc<AtomicUsize>) {
    let refreshes = Arc::new(AtomicUsize::new(0));
    let counter = refreshes.clone();
    let server = Server::start(move |seen| {
        if seen.path() == "/oauth/token/" {
            counter.fetch_add(1, Ordering::SeqCst);
            Canned::json(200, json!({"access_token": "a2", "refresh_token": "r2", "expires_in": 3600}))
                .delayed(refresh_delay_ms)
        } else if seen.json()["auth"] == accepted {
            Canned::json(200, json!({"result": 77}))
        } else {
            Canned::json(401, json!({"error": "expired_token", "error_description": "The access token provided has expired."}))
        }
    })
    .await;
    (server, refreshes)
}

#[tokio::test]
async fn oauth_refreshes_once_on_expired_token_and_keeps_the_new_pair() {
    let (server, refreshes) = fake_portal("a2", 0).await;
    let (p, _store) = oauth_provider(&server.base, format!("{}/oauth/token/", server.base), "a1");
    let c = dialogs(&["chat13"]);
    let parts = p.plan("team", &c, &message(text("hi"))).await.unwrap();
    assert_eq!(
        p.send(&c, &parts[0]).await,
        DeliveryOutcome::Delivered {
            provider_ids: vec!["77".into()]
        }
    );
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    let requests = server.requests();
    assert_eq!(requests[0].path(), "/rest/im.message.add");
    assert_eq!(requests[0].json()["auth"], "a1");
    assert_eq!(requests[0].json()["DIALOG_ID"], "chat13");
    let refresh = &requests[1];
    assert_eq!(refresh.method, "POST");
    assert_eq!(
        String::from_utf8_lossy(&refresh.body),
        format!(
            "grant_type=refresh_token&client_id=app.5f1d2e&client_secret={CLIENT_SECRET}&refresh_token=r1"
        )
    );
    assert_eq!(requests[2].json()["auth"], "a2");
    let Auth::OAuth(o) = &p.auth else { panic!() };
    assert_eq!(o.tokens.lock().await.refresh.expose(), "r2");
    // The next send uses the new token straight away.
    p.send(&c, &parts[0]).await;
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn concurrent_expired_tokens_refresh_once() {
    let (server, refreshes) = fake_portal("a2", 150).await;
    let (p, _store) = oauth_provider(&server.base, format!("{}/oauth/token/", server.base), "a1");
    let p = Arc::new(p);
    let c = dialogs(&["chat1", "chat2", "chat3", "chat4", "chat5"]);
    let parts = p.plan("team", &c, &message(text("hi"))).await.unwrap();
    let mut tasks = Vec::new();
    for part in parts {
        let p = p.clone();
        let c = c.clone();
        tasks.push(tokio::spawn(async move { p.send(&c, &part).await }));
    }
    for t in tasks {
        assert!(matches!(
            t.await.unwrap(),
            DeliveryOutcome::Delivered { .. }
        ));
    }
    assert_eq!(refreshes.load(Ordering::SeqCst), 1, "{:?}", server.counts());
}

#[tokio::test]
async fn a_token_expired_again_after_refresh_is_credentials_expired() {
    let (server, refreshes) = fake_portal("never", 0).await;
    let (p, _store) = oauth_provider(&server.base, format!("{}/oauth/token/", server.base), "a1");
    let c = dialogs(&["chat13"]);
    let parts = p.plan("team", &c, &message(text("hi"))).await.unwrap();
    let outcome = p.send(&c, &parts[0]).await;
    assert!(
        matches!(outcome, DeliveryOutcome::CredentialsExpired { .. }),
        "{outcome:?}"
    );
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(server.count("/rest/im.message.add"), 2);
}

#[tokio::test]
async fn a_refused_refresh_is_credentials_expired_without_secrets() {
    let server = Server::start(|seen| {
        if seen.path() == "/oauth/token/" {
            Canned::json(
                400,
                json!({"error": "invalid_grant", "error_description": "refresh token expired"}),
            )
        } else {
            Canned::json(
                401,
                json!({"error": "expired_token", "error_description": "expired"}),
            )
        }
    })
    .await;
    let (p, _store) = oauth_provider(&server.base, format!("{}/oauth/token/", server.base), "a1");
    let c = dialogs(&["chat13"]);
    let parts = p.plan("team", &c, &message(text("hi"))).await.unwrap();
    let outcome = p.send(&c, &parts[0]).await;
    let DeliveryOutcome::CredentialsExpired { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("invalid_grant"), "{reason}");
    for secret in [CLIENT_SECRET, "r1", "a1"] {
        assert!(!reason.contains(secret), "{secret} in {reason}");
    }
}

#[tokio::test]
async fn a_token_answer_that_is_no_token_is_neither_used_nor_stored() {
    for bad in [
        "x".repeat(super::auth::MAX_TOKEN_BYTES + 1),
        "a2\r\nX-Injected: 1".into(),
        String::new(),
    ] {
        let answer = bad.clone();
        let server = Server::start(move |seen| {
            if seen.path() == "/oauth/token/" {
                Canned::json(200, json!({"access_token": answer, "refresh_token": "r2"}))
            } else {
                Canned::json(
                    401,
                    json!({"error": "expired_token", "error_description": "expired"}),
                )
            }
        })
        .await;
        let (p, _store) =
            oauth_provider(&server.base, format!("{}/oauth/token/", server.base), "a1");
        let c = dialogs(&["chat13"]);
        let parts = p.plan("team", &c, &message(text("hi"))).await.unwrap();
        let outcome = p.send(&c, &parts[0]).await;
        let DeliveryOutcome::RetryLater { reason, .. } = &outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            !reason.contains("xxxx") && !reason.contains("Injected"),
            "{reason}"
        );
        // Only the first send went to the portal; nothing was stored.
        assert_eq!(server.count("/rest/im.message.add"), 1);
        let Auth::OAuth(o) = &p.auth else { panic!() };
        let row = o.store.store.load(&o.store.key).await.unwrap();
        assert!(row.is_none_or(|r| r.sealed.is_none()), "stored: {bad:?}");
        assert_eq!(o.tokens.lock().await.access.expose(), "a1");
    }
}

/// The system errors any REST method may answer
/// (apidocs.bitrix24.com/error-codes.html), beyond `im.message.add`'s own:
/// each ends as what it means, with the portal's words; a code never seen
/// before is a rejection with them, escaped and bounded.
#[test]
fn the_system_errors_say_what_went_wrong() {
    // Overload blocks the portal's REST calls: the account slows down.
    let Answer::Done(DeliveryOutcome::Throttled {
        after,
        limit,
        reason,
    }) = error(503, "OVERLOAD_LIMIT", "portal says")
    else {
        panic!("OVERLOAD_LIMIT")
    };
    assert_eq!(after, Some(Duration::from_secs(60)));
    assert_eq!(limit, crate::providers::RateLimited::Account);
    assert!(
        reason.contains("overload") && reason.contains("portal says"),
        "{reason}"
    );
    for (status, code, words) in [
        (500, "INTERNAL_SERVER_ERROR", "internally"),
        (500, "ERROR_UNEXPECTED_ANSWER", "internally"),
    ] {
        let Answer::Done(DeliveryOutcome::RetryLater { reason, .. }) =
            error(status, code, "portal says")
        else {
            panic!("{code}")
        };
        assert!(
            reason.contains(words) && reason.contains("portal says"),
            "{reason}"
        );
    }
    for (status, code, words) in [
        (403, "ACCESS_DENIED", "commercial plans"),
        (403, "WRONG_AUTH_TYPE", "authorization"),
        (401, "user_access_error", "may not use it"),
        (403, "ALLOWED_ONLY_INTRANET_USER", "may not use it"),
        (500, "PORTAL_DELETED", "deleted"),
    ] {
        let Answer::Done(DeliveryOutcome::CredentialsExpired { reason }) =
            error(status, code, "portal says")
        else {
            panic!("{code}")
        };
        assert!(
            reason.contains(words) && reason.contains("portal says"),
            "{reason}"
        );
    }
    for (status, code, words) in [
        (400, "INVALID_REQUEST", "HTTPS"),
        (404, "ERROR_METHOD_NOT_FOUND", "no such method"),
        (400, "SOMETHING_NEW", "refused the message"),
    ] {
        let Answer::Done(DeliveryOutcome::Rejected { code: c, reason }) =
            error(status, code, "portal says")
        else {
            panic!("{code}")
        };
        assert_eq!(c, code);
        assert!(
            reason.contains(words) && reason.contains("portal says"),
            "{reason}"
        );
    }
    let hostile = format!("\u{1b}[2J\u{7}{}", "q".repeat(5000));
    let Answer::Done(DeliveryOutcome::Rejected { reason, .. }) = error(400, "ODD", &hostile) else {
        panic!()
    };
    assert!(!reason.chars().any(char::is_control), "{reason}");
    assert!(reason.len() < 1200, "{}", reason.len());
}

/// A token server that refuses the application itself (`invalid_client`)
/// names the client settings to fix, not the refresh token.
#[tokio::test]
async fn a_refused_client_names_the_client_settings() {
    let server = Server::start(|seen| {
        if seen.path() == "/oauth/token/" {
            Canned::json(
                401,
                json!({"error": "invalid_client", "error_description": "client not found"}),
            )
        } else {
            Canned::json(
                401,
                json!({"error": "expired_token", "error_description": "expired"}),
            )
        }
    })
    .await;
    let (p, _store) = oauth_provider(&server.base, format!("{}/oauth/token/", server.base), "a1");
    let c = dialogs(&["chat13"]);
    let parts = p.plan("team", &c, &message(text("hi"))).await.unwrap();
    let outcome = p.send(&c, &parts[0]).await;
    let DeliveryOutcome::CredentialsExpired { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.contains("invalid_client") && reason.contains("client_id"),
        "{reason}"
    );
    assert!(!reason.contains("works once"), "{reason}");
    for secret in [CLIENT_SECRET, "r1", "a1"] {
        assert!(!reason.contains(secret), "{secret} in {reason}");
    }
}

#[test]
fn each_answer_reports_its_execution_time() {
    let ok = br#"{"result": 11, "time": {"start": 1, "finish": 2, "operating": 1.25, "operating_reset_at": 1700000600}}"#;
    assert_eq!(super::reported_operating_ms(ok), Some(1250));
    // Hostile or missing figures are ignored or capped, never a panic.
    assert_eq!(super::reported_operating_ms(br#"{"result": 1}"#), None);
    assert_eq!(
        super::reported_operating_ms(br#"{"time": {"operating": -3}}"#),
        None
    );
    assert_eq!(
        super::reported_operating_ms(br#"{"time": {"operating": 1e300}}"#),
        Some(600_000)
    );
    assert_eq!(super::reported_operating_ms(b"<html>"), None);
}
