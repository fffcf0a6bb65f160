//! Tencent Cloud Chat: UserSig verification, the 1 call/s limit, `Random`
//! dedup and MsgBody validation, all answered with HTTP 200.

mod common;

use std::time::Duration;

use botbox_sim::sign::{tencent_pack, tencent_query, tencent_usersig};
use botbox_sim::{SimProvider, Target};
use common::{client, now_unix, send, start, steady, tencent_url, text_body};
use serde_json::{Value, json};

/// Each request one simulated second after the last, so the rate limit
/// stays out of tests about something else.
async fn post(sim: &botbox_sim::Sim, url: &str, body: &Value) -> Value {
    sim.advance(Duration::from_secs(1));
    let r = send(client().post(url).json(body)).await;
    assert_eq!(
        r.status, 200,
        "Tencent answers 200 even for errors: {}",
        r.text
    );
    r.json()
}

fn code(v: &Value) -> i64 {
    v["ErrorCode"].as_i64().unwrap_or(-1)
}

#[tokio::test]
async fn valid_broadcast_is_delivered() {
    let sim = start(steady()).await;
    let body = json!({
        "From_Account": "bot",
        "Random": 8912345,
        "MsgBody": [
            {"MsgType": "TIMTextElem", "MsgContent": {"Text": "hello"}},
            {"MsgType": "TIMCustomElem", "MsgContent": {"Data": "{\"type\":1}"}}
        ],
        "CloudCustomData": "cc",
    });
    let v = post(&sim, &tencent_url(&sim, 42), &body).await;
    assert_eq!(v["ActionStatus"], "OK", "{v}");
    assert_eq!(code(&v), 0);
    assert_eq!(v["ErrorInfo"], "");
    assert!(v["MsgSeq"].as_u64().is_some());
    let d = &sim.deliveries()[0];
    assert_eq!(d.target, Target::AllAvChatRooms);
    assert_eq!(d.sender.as_deref(), Some("bot"));
    assert_eq!(d.text().as_deref(), Some("hello"));
    assert_eq!(d.content["CloudCustomData"], "cc");
    assert_eq!(d.provider_id, v["MsgSeq"].to_string());
}

#[tokio::test]
async fn usersig_forgeries_get_their_documented_codes() {
    let sim = start(steady()).await;
    let c = sim.config().tencent.clone();
    let base = format!(
        "{}/v4/group_open_http_svc/send_broadcast_msg",
        sim.tencent_url()
    );
    let now = now_unix();
    let url = |appid: u64, identifier: &str, sig: &str| {
        format!("{base}?{}", tencent_query(appid, identifier, sig, 7))
    };
    let admin = c.identifier.as_str();
    let cases: Vec<(String, i64)> = vec![
        // expired: signed 2 days ago for 1 day
        (
            url(
                c.sdkappid,
                admin,
                &tencent_usersig(c.sdkappid, admin, &c.secret_key, now - 172_800, 86_400),
            ),
            70001,
        ),
        // not base64 / not zlib / not the JSON it should be
        (url(c.sdkappid, admin, "not*a*sig"), 70003),
        (
            url(c.sdkappid, admin, &tencent_pack("{\"TLS.ver\":\"2.0\"}")),
            70003,
        ),
        // signed with another key
        (
            url(
                c.sdkappid,
                admin,
                &tencent_usersig(c.sdkappid, admin, "wrong-key", now, 86_400),
            ),
            70009,
        ),
        // a sig for another user presented as the admin
        (
            url(
                c.sdkappid,
                admin,
                &tencent_usersig(c.sdkappid, "mallory", &c.secret_key, now, 86_400),
            ),
            70013,
        ),
        // a sig for another app
        (
            url(
                c.sdkappid,
                admin,
                &tencent_usersig(c.sdkappid + 1, admin, &c.secret_key, now, 86_400),
            ),
            70014,
        ),
        // an app this server does not host
        (
            url(
                c.sdkappid + 1,
                admin,
                &tencent_usersig(c.sdkappid + 1, admin, &c.secret_key, now, 86_400),
            ),
            70020,
        ),
        // a valid sig, but not the app admin
        (
            url(
                c.sdkappid,
                "mallory",
                &tencent_usersig(c.sdkappid, "mallory", &c.secret_key, now, 86_400),
            ),
            60010,
        ),
        // no usersig at all
        (
            format!(
                "{base}?sdkappid={}&identifier={admin}&random=1&contenttype=json",
                c.sdkappid
            ),
            60004,
        ),
        // no sdkappid
        (
            format!("{base}?identifier={admin}&usersig=x&random=1&contenttype=json"),
            60012,
        ),
    ];
    for (url, expected) in &cases {
        let v = post(&sim, url, &text_body(1, "forged")).await;
        assert_eq!(v["ActionStatus"], "FAIL", "{url}");
        assert_eq!(code(&v), *expected, "{url}: {v}");
    }
    assert!(sim.deliveries().is_empty());
    // An absurdly old-fashioned tamper: flip one character of a good sig.
    let good = tencent_usersig(c.sdkappid, admin, &c.secret_key, now, 86_400);
    let mut bytes = good.into_bytes();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap_or_default();
    let v = post(&sim, &url(c.sdkappid, admin, &tampered), &text_body(1, "x")).await;
    assert!([70003, 70009].contains(&code(&v)), "{v}");
}

#[tokio::test]
async fn one_call_per_second_and_violations_are_counted() {
    let sim = start(steady()).await;
    let url = tencent_url(&sim, 1);
    let first = send(client().post(&url).json(&text_body(1, "a")))
        .await
        .json();
    assert_eq!(code(&first), 0);
    let second = send(client().post(&url).json(&text_body(2, "b")))
        .await
        .json();
    assert_eq!(code(&second), 10023, "{second}");
    assert_eq!(second["ActionStatus"], "FAIL");
    let v = sim.violations();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].provider, SimProvider::Tencent);
    assert_eq!(v[0].endpoint, "group_open_http_svc/send_broadcast_msg");
    assert_eq!(v[0].code, "10023");
    sim.advance(Duration::from_secs(1));
    let third = send(client().post(&url).json(&text_body(3, "c")))
        .await
        .json();
    assert_eq!(code(&third), 0, "{third}");
    assert_eq!(sim.deliveries().len(), 2);
}

#[tokio::test]
async fn higher_plans_allow_more_calls_per_second() {
    let mut cfg = steady();
    cfg.tencent.rate_per_second = 5;
    let sim = start(cfg).await;
    let url = tencent_url(&sim, 1);
    for i in 0..5 {
        let v = send(client().post(&url).json(&text_body(i, "x")))
            .await
            .json();
        assert_eq!(code(&v), 0, "{v}");
    }
    let v = send(client().post(&url).json(&text_body(9, "x")))
        .await
        .json();
    assert_eq!(code(&v), 10023);
}

#[tokio::test]
async fn same_random_and_content_within_five_minutes_is_discarded() {
    let sim = start(steady()).await;
    let url = tencent_url(&sim, 5);
    let a = post(&sim, &url, &text_body(777, "once")).await;
    let b = post(&sim, &url, &text_body(777, "once")).await;
    assert_eq!(code(&b), 0, "a repeat is answered OK: {b}");
    assert_eq!(a["MsgSeq"], b["MsgSeq"]);
    assert_eq!(sim.deliveries().len(), 1);
    assert_eq!(sim.deduplicated(), 1);

    // Same Random, other content: a different message.
    post(&sim, &url, &text_body(777, "twice")).await;
    assert_eq!(sim.deliveries().len(), 2);

    // Five minutes after the first, the same pair is new again.
    sim.advance(Duration::from_secs(300));
    post(&sim, &url, &text_body(777, "once")).await;
    assert_eq!(sim.deliveries().len(), 3);
    assert_eq!(sim.deduplicated(), 1);
}

#[tokio::test]
async fn msg_body_validation_is_10004() {
    let sim = start(steady()).await;
    let url = tencent_url(&sim, 9);
    let text = |t: &str| json!({"MsgType": "TIMTextElem", "MsgContent": {"Text": t}});
    let bad = [
        json!({"MsgBody": [text("no random")]}),
        json!({"Random": 1}),
        json!({"Random": 1, "MsgBody": []}),
        json!({"Random": 1, "MsgBody": "text"}),
        json!({"Random": -1, "MsgBody": [text("x")]}),
        json!({"Random": 1, "MsgBody": [{"MsgType": "TIMMarkdownElem", "MsgContent": {"Text": "x"}}]}),
        json!({"Random": 1, "MsgBody": [{"MsgType": "TIMCustomElem", "MsgContent": {"Desc": "no data"}}]}),
        json!({"Random": 1, "MsgBody": [text(&"x".repeat(6000)), text(&"y".repeat(6000))]}),
        json!({"Random": 1, "MsgBody": [text("x")], "From_Account": 5}),
    ];
    for body in &bad {
        let v = post(&sim, &url, body).await;
        assert_eq!(code(&v), 10004, "{body}: {v}");
    }
    // Just under the cap is fine: 12,000 bytes of compact JSON in all.
    let overhead = serde_json::to_vec(&json!([text("")]))
        .map(|v| v.len())
        .unwrap_or(0);
    let fits = json!({"Random": 2, "MsgBody": [text(&"z".repeat(12_000 - overhead))]});
    assert_eq!(code(&post(&sim, &url, &fits).await), 0);
    let v = post(&sim, &url, &json!("not an object")).await;
    assert_eq!(code(&v), 60003);
    sim.advance(Duration::from_secs(1));
    let raw = send(client().post(&url).body("{not json")).await.json();
    assert_eq!(code(&raw), 60003);
    assert_eq!(sim.deliveries().len(), 1);
}

#[tokio::test]
async fn switch_off_gives_10007_and_other_commands_10003() {
    let sim = start(steady()).await;
    sim.tencent_set_broadcast_enabled(false);
    let v = post(&sim, &tencent_url(&sim, 1), &text_body(1, "x")).await;
    assert_eq!(code(&v), 10007);
    sim.tencent_set_broadcast_enabled(true);
    let other = tencent_url(&sim, 1).replace("send_broadcast_msg", "modify_group_base_info");
    assert_eq!(code(&post(&sim, &other, &text_body(1, "x")).await), 10003);
    let get = send(client().get(tencent_url(&sim, 1))).await.json();
    assert_eq!(code(&get), 60002);
}

#[tokio::test]
async fn group_messages_go_to_one_group_within_forty_a_second() {
    let sim = start(steady()).await;
    // The broadcast switch does not concern ordinary group messages.
    sim.tencent_set_broadcast_enabled(false);
    let url = tencent_url(&sim, 7).replace("send_broadcast_msg", "send_group_msg");
    let mut body = text_body(5, "pong");
    body["GroupId"] = json!("@TGS#lobby");
    let v = post(&sim, &url, &body).await;
    assert_eq!(v["ActionStatus"], "OK", "{v}");
    let d = &sim.deliveries()[0];
    assert_eq!(
        d.target,
        Target::Group {
            id: "@TGS#lobby".into()
        }
    );
    assert_eq!(d.endpoint, "group_open_http_svc/send_group_msg");
    assert_eq!(d.text().as_deref(), Some("pong"));
    // The same Random and body into another group is another message.
    body["GroupId"] = json!("@TGS#other");
    assert_eq!(post(&sim, &url, &body).await["ActionStatus"], "OK");
    assert_eq!(sim.deliveries().len(), 2);
    for bad in [json!(null), json!(""), json!("two words"), json!(7)] {
        body["GroupId"] = bad;
        assert_eq!(code(&post(&sim, &url, &body).await), 10015);
    }
    // 40 in one second to one group, then the 41st is over the limit.
    sim.advance(Duration::from_secs(1));
    for i in 0..40 {
        let mut b = text_body(1000 + i, "burst");
        b["GroupId"] = json!("@TGS#busy");
        let r = send(client().post(&url).json(&b)).await.json();
        assert_eq!(r["ActionStatus"], "OK", "{i}: {r}");
    }
    let mut b = text_body(2000, "burst");
    b["GroupId"] = json!("@TGS#busy");
    let r = send(client().post(&url).json(&b)).await.json();
    assert_eq!(code(&r), 10023);
    assert_eq!(sim.violations().len(), 1);
    assert!(sim.violations()[0].limit.contains("@TGS#busy"));
}

fn c2c_url(sim: &botbox_sim::Sim, random: u32) -> String {
    tencent_url(sim, random).replace("group_open_http_svc/send_broadcast_msg", "openim/sendmsg")
}

fn c2c_body(to: &str, random: u32, text: &str) -> Value {
    json!({
        "SyncOtherMachine": 2,
        "To_Account": to,
        "MsgRandom": random,
        "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}],
    })
}

/// "Sending One-to-One Messages to One User" (1047/34919): the message is
/// stored for `To_Account` and answered with `MsgTime` and `MsgKey`.
#[tokio::test]
async fn one_to_one_messages_go_to_one_user() {
    let sim = start(steady()).await;
    let url = c2c_url(&sim, 9);
    let mut body = c2c_body("ada", 1_287_657, "hi, ada");
    body["From_Account"] = json!("helpdesk");
    let v = post(&sim, &url, &body).await;
    assert_eq!(v["ActionStatus"], "OK", "{v}");
    let key = v["MsgKey"].as_str().unwrap_or_default().to_owned();
    assert!(key.starts_with("1287657_"), "{v}");
    assert!(v["MsgTime"].as_u64().is_some(), "{v}");
    let d = &sim.deliveries()[0];
    assert_eq!(d.target, Target::Account { id: "ada".into() });
    assert_eq!(d.endpoint, "openim/sendmsg");
    assert_eq!(d.sender.as_deref(), Some("helpdesk"));
    assert_eq!(d.text().as_deref(), Some("hi, ada"));
    assert_eq!(d.provider_id, key);
    // Without From_Account, the admin sends.
    let v = post(&sim, &url, &c2c_body("bob", 2, "hi, bob")).await;
    assert_eq!(v["ActionStatus"], "OK", "{v}");
    assert_eq!(sim.deliveries()[1].sender.as_deref(), Some("administrator"));
}

#[tokio::test]
async fn one_to_one_bodies_get_their_documented_codes() {
    let sim = start(steady()).await;
    let url = c2c_url(&sim, 9);
    let ok = c2c_body("ada", 1, "x");
    let with = |key: &str, value: Value| {
        let mut b = ok.clone();
        b[key] = value;
        b
    };
    let without = |key: &str| {
        let mut b = ok.clone();
        b.as_object_mut().map(|o| o.remove(key));
        b
    };
    for (body, expected) in [
        (without("To_Account"), 90003),
        (with("To_Account", json!(5)), 90003),
        (without("MsgRandom"), 90005),
        (with("MsgRandom", json!(4_294_967_296u64)), 90005),
        (with("MsgBody", json!("text")), 90007),
        (with("MsgBody", json!([])), 90002),
        (
            with(
                "MsgBody",
                json!([{"MsgType": "TIMBogusElem", "MsgContent": {}}]),
            ),
            90002,
        ),
        (
            with(
                "MsgBody",
                json!([{"MsgType": "TIMTextElem", "MsgContent": {"Text": "x".repeat(12_000)}}]),
            ),
            93000,
        ),
        (with("SyncOtherMachine", json!(3)), 20001),
        (with("To_Account", json!("")), 20003),
        (with("To_Account", json!("u".repeat(33))), 20003),
        (with("From_Account", json!("名字")), 20003),
    ] {
        let v = post(&sim, &url, &body).await;
        assert_eq!(code(&v), expected, "{body}: {v}");
        assert_eq!(v["ActionStatus"], "FAIL");
    }
    let raw = send(client().post(&url).body("{not json")).await.json();
    assert_eq!(code(&raw), 90001);
    assert!(sim.deliveries().is_empty());
}

/// "Maximum call frequency: 200 queries/sec", for the app: the 201st call
/// in one second is a violation, answered with the public 60007.
#[tokio::test]
async fn one_to_one_takes_two_hundred_calls_a_second() {
    let sim = start(steady()).await;
    let url = c2c_url(&sim, 9);
    sim.advance(Duration::from_secs(1));
    for i in 0..200 {
        let r = send(client().post(&url).json(&c2c_body("ada", i, "burst")))
            .await
            .json();
        assert_eq!(r["ActionStatus"], "OK", "{i}: {r}");
    }
    let r = send(client().post(&url).json(&c2c_body("ada", 999, "burst")))
        .await
        .json();
    assert_eq!(code(&r), 60007, "{r}");
    assert_eq!(sim.violations().len(), 1);
    assert_eq!(sim.violations()[0].endpoint, "openim/sendmsg");
}

/// A documented code the simulator's own logic never reaches (the
/// recipient blocklisted the sender) is answered by injection, in
/// Tencent's shape: HTTP 200, `ActionStatus` FAIL, the numeric code.
#[tokio::test]
async fn an_injected_error_answer_is_tencents_own() {
    let sim = start(steady()).await;
    sim.inject_endpoint(
        SimProvider::Tencent,
        "openim/sendmsg",
        botbox_sim::Fault::error_answer("20007"),
        1,
    );
    let v = post(&sim, &c2c_url(&sim, 9), &c2c_body("ada", 1, "x")).await;
    assert_eq!(code(&v), 20007, "{v}");
    assert_eq!(v["ActionStatus"], "FAIL");
    assert!(sim.deliveries().is_empty());
    // Used up: the next call is processed.
    let v = post(&sim, &c2c_url(&sim, 9), &c2c_body("ada", 1, "x")).await;
    assert_eq!(v["ActionStatus"], "OK", "{v}");
}
