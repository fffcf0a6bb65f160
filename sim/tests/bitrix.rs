//! Bitrix24: webhook and OAuth authentication, token refresh, im.message.add
//! validation and the per-portal leaky bucket.

mod common;

use std::time::Duration;

use botbox_sim::{SimConfig, SimProvider, Target};
use common::{Reply, bitrix_webhook_url, client, send, start, steady};
use serde_json::{Value, json};

async fn webhook(sim: &botbox_sim::Sim, body: &Value) -> Reply {
    send(client().post(bitrix_webhook_url(sim)).json(body)).await
}

fn assert_error(r: &Reply, status: u16, error: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    let v = r.json();
    assert_eq!(v["error"], error, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{v}"
    );
}

#[tokio::test]
async fn webhook_json_and_form_bodies_are_delivered() {
    let sim = start(SimConfig::demo()).await;
    let r = webhook(
        &sim,
        &json!({"DIALOG_ID": "chat13", "MESSAGE": "Hello [b]team[/b]", "SYSTEM": "Y"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.json()["result"].as_u64().expect("message id");

    let form = "DIALOG_ID=256&MESSAGE=Hi+there&URL_PREVIEW=N&ATTACH%5B0%5D%5BMESSAGE%5D=see+this&KEYBOARD%5B0%5D%5BTEXT%5D=OK&KEYBOARD%5B0%5D%5BCOMMAND%5D=ok";
    let r = send(
        client()
            .post(bitrix_webhook_url(&sim).replace(".json", ""))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let d = sim.deliveries_to(SimProvider::Bitrix);
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].target, Target::Chat { id: 13 });
    assert_eq!(d[0].provider_id, id.to_string());
    assert_eq!(d[0].content["SYSTEM"], "Y");
    assert_eq!(d[0].sender.as_deref(), Some("1"));
    assert_eq!(d[1].target, Target::User { id: 256 });
    assert_eq!(d[1].text().as_deref(), Some("Hi there"));
    assert_eq!(d[1].content["URL_PREVIEW"], "N");
    assert_eq!(d[1].content["ATTACH"], json!([{"MESSAGE": "see this"}]));
    assert_eq!(
        d[1].content["KEYBOARD"],
        json!([{"TEXT": "OK", "COMMAND": "ok"}])
    );
}

#[tokio::test]
async fn wrong_webhook_credentials_are_401_and_the_code_is_never_recorded() {
    let sim = start(SimConfig::demo()).await;
    let c = sim.config().bitrix.clone();
    let body = json!({"DIALOG_ID": "chat1", "MESSAGE": "x"});
    for url in [
        format!(
            "{}/rest/{}/guessed-code/im.message.add.json",
            sim.bitrix_url(),
            c.webhook_user_id
        ),
        format!(
            "{}/rest/99/{}/im.message.add.json",
            sim.bitrix_url(),
            c.webhook_code
        ),
    ] {
        let r = send(client().post(&url).json(&body)).await;
        assert_error(&r, 401, "INVALID_CREDENTIALS");
    }
    assert!(sim.deliveries().is_empty());
    webhook(&sim, &body).await;
    for r in sim.requests() {
        assert!(!r.path.contains(&c.webhook_code), "secret in {}", r.path);
    }
}

#[tokio::test]
async fn oauth_token_in_query_form_or_json() {
    let sim = start(SimConfig::demo()).await;
    let token = sim.config().bitrix.access_token.clone();
    let url = format!("{}/rest/im.message.add", sim.bitrix_url());
    let r = send(
        client()
            .post(format!("{url}.json?auth={token}"))
            .json(&json!({"DIALOG_ID": "chat1", "MESSAGE": "q"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send(
        client()
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("auth={token}&DIALOG_ID=chat1&MESSAGE=f")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send(
        client()
            .post(&url)
            .json(&json!({"auth": token, "dialog_id": "chat1", "message": "j"})),
    )
    .await;
    assert_eq!(r.status, 200, "lower-case names work too: {}", r.text);

    let r = send(
        client()
            .post(&url)
            .json(&json!({"DIALOG_ID": "chat1", "MESSAGE": "x"})),
    )
    .await;
    assert_error(&r, 401, "NO_AUTH_FOUND");
    let r = send(
        client()
            .post(&url)
            .json(&json!({"auth": "stolen", "DIALOG_ID": "chat1", "MESSAGE": "x"})),
    )
    .await;
    assert_error(&r, 401, "invalid_token");
    assert_eq!(
        r.json()["error_description"],
        "The access token provided is invalid."
    );
    assert_eq!(sim.deliveries().len(), 3);
    assert_eq!(sim.deliveries()[0].text().as_deref(), Some("q"));
}

#[tokio::test]
async fn access_tokens_expire_and_refresh_rotates() {
    let sim = start(SimConfig::demo()).await;
    let c = sim.config().bitrix.clone();
    let url = format!("{}/rest/im.message.add", sim.bitrix_url());
    let msg = |auth: &str| json!({"auth": auth, "DIALOG_ID": "chat1", "MESSAGE": "m"});

    sim.advance(Duration::from_secs(c.token_ttl_secs));
    let r = send(client().post(&url).json(&msg(&c.access_token))).await;
    assert_error(&r, 401, "expired_token");
    assert_eq!(
        r.json()["error_description"],
        "The access token provided has expired."
    );

    let token_url = |refresh: &str, secret: &str| {
        format!(
            "{}/oauth/token/?grant_type=refresh_token&client_id={}&client_secret={secret}&refresh_token={refresh}",
            sim.bitrix_url(),
            c.client_id
        )
    };
    let r = send(client().get(token_url(&c.refresh_token, "guess"))).await;
    assert_error(&r, 401, "invalid_client");

    let r = send(client().get(token_url(&c.refresh_token, &c.client_secret))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let access = v["access_token"].as_str().expect("access_token").to_owned();
    let refresh = v["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    assert_eq!(v["expires_in"], c.token_ttl_secs);
    assert!(
        v["client_endpoint"]
            .as_str()
            .is_some_and(|e| e.ends_with("/rest/"))
    );

    assert_eq!(
        send(client().post(&url).json(&msg(&access))).await.status,
        200
    );

    // Refresh tokens are single-use.
    let again = send(client().get(token_url(&c.refresh_token, &c.client_secret))).await;
    assert_error(&again, 400, "invalid_grant");
    // POST form works as well as GET.
    let r = send(
        client()
            .post(format!("{}/oauth/token/", sim.bitrix_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={refresh}",
                c.client_id, c.client_secret
            )),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(sim.token_fetches(SimProvider::Bitrix), 4);
}

/// As the portal documents it: once a refresh answers, the refresh token
/// used and the access token issued with it are both dead, expired or not.
#[tokio::test]
async fn a_used_refresh_token_kills_its_access_token() {
    let sim = start(SimConfig::demo()).await;
    let c = sim.config().bitrix.clone();
    let url = format!("{}/rest/im.message.add", sim.bitrix_url());
    let msg = |auth: &str| json!({"auth": auth, "DIALOG_ID": "chat1", "MESSAGE": "m"});
    let refresh = |token: &str| {
        client()
            .post(format!("{}/oauth/token/", sim.bitrix_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={token}",
                c.client_id, c.client_secret
            ))
    };
    // Not expired: it works until its refresh token is used.
    assert_eq!(
        send(client().post(&url).json(&msg(&c.access_token)))
            .await
            .status,
        200
    );
    let r = send(refresh(&c.refresh_token)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let next_access = r.json()["access_token"].as_str().unwrap().to_owned();
    let next_refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let old = send(client().post(&url).json(&msg(&c.access_token))).await;
    assert_error(&old, 401, "invalid_token");
    assert_eq!(
        send(client().post(&url).json(&msg(&next_access)))
            .await
            .status,
        200
    );
    // The next refresh kills the pair it came with in turn.
    assert_eq!(send(refresh(&next_refresh)).await.status, 200);
    let old = send(client().post(&url).json(&msg(&next_access))).await;
    assert_error(&old, 401, "invalid_token");
    // Installing the application again issues a pair that works.
    let (access, refresh_token) = sim.bitrix_issue_tokens();
    assert_eq!(
        send(client().post(&url).json(&msg(&access))).await.status,
        200
    );
    assert_eq!(send(refresh(&refresh_token)).await.status, 200);
}

#[tokio::test]
async fn im_message_add_errors_are_the_documented_codes() {
    let sim = start(SimConfig::demo()).await;
    let big = "x".repeat(30_001);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"DIALOG_ID": "0", "MESSAGE": "x"}), "USER_ID_EMPTY"),
        (json!({"DIALOG_ID": "", "MESSAGE": "x"}), "USER_ID_EMPTY"),
        (json!({"DIALOG_ID": "bob", "MESSAGE": "x"}), "USER_ID_EMPTY"),
        (
            json!({"DIALOG_ID": "chat0", "MESSAGE": "x"}),
            "CHAT_ID_EMPTY",
        ),
        (
            json!({"DIALOG_ID": "chat999", "MESSAGE": "x"}),
            "ACCESS_ERROR",
        ),
        (
            json!({"DIALOG_ID": "chat1", "MESSAGE": "  "}),
            "MESSAGE_EMPTY",
        ),
        (json!({"DIALOG_ID": "chat1"}), "MESSAGE_EMPTY"),
        (
            json!({"DIALOG_ID": "chat1", "MESSAGE": "x", "ATTACH": [{"NOPE": 1}]}),
            "ATTACH_ERROR",
        ),
        (
            json!({"DIALOG_ID": "chat1", "MESSAGE": "x", "ATTACH": "text"}),
            "ATTACH_ERROR",
        ),
        (
            json!({"DIALOG_ID": "chat1", "MESSAGE": "x", "ATTACH": [{"MESSAGE": big}]}),
            "ATTACH_OVERSIZE",
        ),
        (
            json!({"DIALOG_ID": "chat1", "MESSAGE": "x", "KEYBOARD": [{"TEXT": "no action"}]}),
            "KEYBOARD_ERROR",
        ),
        (
            json!({"DIALOG_ID": "chat1", "MESSAGE": "x", "KEYBOARD": [{"TEXT": big, "COMMAND": "c"}]}),
            "KEYBOARD_OVERSIZE",
        ),
        (
            json!({"DIALOG_ID": "chat1", "MESSAGE": "x", "MENU": 5}),
            "MENU_ERROR",
        ),
        (
            json!({"DIALOG_ID": "chat1", "MESSAGE": "x", "MENU": [{"TEXT": big, "LINK": "https://x"}]}),
            "MENU_OVERSIZE",
        ),
        (json!({"MESSAGE": "no dialog"}), "PARAMS_ERROR"),
    ];
    for (body, error) in &cases {
        let r = webhook(&sim, body).await;
        assert_error(&r, 400, error);
    }
    let r = send(
        client()
            .post(bitrix_webhook_url(&sim))
            .header("content-type", "application/json")
            .body("{broken"),
    )
    .await;
    assert_error(&r, 400, "PARAMS_ERROR");
    let r = send(
        client()
            .post(bitrix_webhook_url(&sim).replace("im.message.add", "im.chat.add"))
            .json(&json!({})),
    )
    .await;
    assert_error(&r, 404, "ERROR_METHOD_NOT_FOUND");

    // Attach-only messages and the object form of ATTACH are fine.
    let r = webhook(&sim, &json!({"DIALOG_ID": "chat1", "ATTACH": {"ID": 1, "COLOR": "#29619b", "BLOCKS": [{"LINK": {"NAME": "doc", "LINK": "https://x"}}]}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(sim.deliveries().len(), 1);
}

#[tokio::test]
async fn leaky_bucket_allows_a_burst_then_the_drain_rate() {
    let sim = start(steady()).await;
    let body = json!({"DIALOG_ID": "chat1", "MESSAGE": "burst"});
    for i in 0..50 {
        let r = webhook(&sim, &body).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text);
    }
    let r = webhook(&sim, &body).await;
    assert_error(&r, 503, "QUERY_LIMIT_EXCEEDED");
    let v = sim.violations();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].code, "QUERY_LIMIT_EXCEEDED");
    // 2 per second drain: half a second frees one slot.
    sim.advance(Duration::from_millis(500));
    assert_eq!(webhook(&sim, &body).await.status, 200);
    assert_eq!(webhook(&sim, &body).await.status, 503);
    assert_eq!(sim.violations().len(), 2);
    assert_eq!(sim.deliveries().len(), 51);
}

#[tokio::test]
async fn each_answer_reports_its_execution_time_and_the_budget_blocks_the_method() {
    let mut cfg = steady();
    cfg.bitrix.operating_secs_per_call = 100.0;
    let sim = start(cfg).await;
    let body = json!({"DIALOG_ID": "chat1", "MESSAGE": "slow"});
    // 480 s per 10 minutes: the fifth call still fits (400 s spent before it).
    for i in 0..5 {
        let r = webhook(&sim, &body).await;
        assert_eq!(r.status, 200, "call {i}: {}", r.text);
        let time = &r.json()["time"];
        assert_eq!(time["operating"], 100.0, "{time}");
        assert!(time["operating_reset_at"].as_u64().is_some(), "{time}");
    }
    // 500 s spent: blocked, with Bitrix24's code, and counted as a violation.
    let r = webhook(&sim, &body).await;
    assert_error(&r, 429, "OPERATION_TIME_LIMIT");
    let v = sim.violations();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].code, "OPERATION_TIME_LIMIT");
    assert_eq!(sim.deliveries().len(), 5);
    // Ten minutes on, the first calls have left the window.
    sim.advance(Duration::from_secs(600));
    assert_eq!(webhook(&sim, &body).await.status, 200);
}
