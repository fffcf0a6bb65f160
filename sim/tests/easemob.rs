//! Easemob: app tokens, the three broadcast endpoints' windows and daily
//! quotas, and body validation with the documented error bodies.

mod common;

use std::time::Duration;

use botbox_sim::{SimConfig, SimProvider, Target, endpoints};
use common::{Reply, client, easemob_token, easemob_url, send, start, steady};
use serde_json::{Value, json};

const MIN: Duration = Duration::from_secs(60);

async fn broadcast(sim: &botbox_sim::Sim, token: &str, endpoint: &str, body: &Value) -> Reply {
    send(
        client()
            .post(easemob_url(sim, endpoint))
            .bearer_auth(token)
            .json(body),
    )
    .await
}

/// Tests that jump the clock by days need tokens that outlive the jump.
fn long_tokens() -> SimConfig {
    let mut cfg = steady();
    cfg.easemob.token_ttl_secs = 30 * 86_400;
    cfg
}

fn all_users(text: &str) -> Value {
    json!({"target_type": "users", "from": "admin", "msg": {"type": "txt", "msg": text}, "ext": {"k": "v"}})
}

fn online(text: &str) -> Value {
    json!({"msg": {"type": "txt", "msg": text}})
}

fn assert_error(r: &Reply, status: u16, error: &str, description: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    let v = r.json();
    assert_eq!(v["error"], error, "{v}");
    assert_eq!(v["error_description"], description, "{v}");
}

#[tokio::test]
async fn token_endpoint_checks_credentials_and_counts_fetches() {
    let sim = start(SimConfig::demo()).await;
    let c = sim.config().easemob.clone();
    let url = easemob_url(&sim, "token");
    let bad = send(client().post(&url).json(&json!({
        "grant_type": "client_credentials", "client_id": c.client_id, "client_secret": "guess"
    })))
    .await;
    assert_error(
        &bad,
        400,
        "invalid_grant",
        "invalid client_id or client_secret",
    );
    let r = send(client().post(&url).json(&json!({
        "grant_type": "client_credentials", "client_id": c.client_id, "client_secret": c.client_secret
    })))
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert!(v["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(v["expires_in"], c.token_ttl_secs);
    assert_eq!(v["application"], c.application);
    assert_eq!(sim.token_fetches(SimProvider::Easemob), 2);

    let wrong_app = send(
        client()
            .post(format!("{}/{}/other-app/token", sim.easemob_url(), c.org))
            .json(&json!({})),
    )
    .await;
    assert_eq!(wrong_app.status, 400);
    assert_eq!(
        wrong_app.json()["error"],
        "organization_application_not_found"
    );
}

#[tokio::test]
async fn bearer_token_is_required_and_expires() {
    let sim = start(SimConfig::demo()).await;
    let body = online("hi");
    let none = send(
        client()
            .post(easemob_url(&sim, endpoints::EASEMOB_ONLINE_USERS))
            .json(&body),
    )
    .await;
    assert_error(&none, 401, "unauthorized", "Unable to authenticate (OAuth)");
    let forged = broadcast(&sim, "YWMtforged", endpoints::EASEMOB_ONLINE_USERS, &body).await;
    assert_error(
        &forged,
        401,
        "unauthorized",
        "Unable to authenticate (OAuth)",
    );

    let token = easemob_token(&sim).await;
    let ok = broadcast(&sim, &token, endpoints::EASEMOB_ONLINE_USERS, &body).await;
    assert_eq!(ok.status, 200, "{}", ok.text);

    sim.advance(Duration::from_secs(sim.config().easemob.token_ttl_secs));
    let expired = broadcast(&sim, &token, endpoints::EASEMOB_ONLINE_USERS, &body).await;
    assert_error(
        &expired,
        401,
        "unauthorized",
        "Unable to authenticate due to expired access token",
    );
    assert!(sim.violations().is_empty(), "401s are not rate violations");
}

#[tokio::test]
async fn all_users_one_per_30_minutes_and_three_per_day() {
    // A rolling day here (the calendar day is the next test), so the test
    // does not depend on the time of day it runs at.
    let mut cfg = long_tokens();
    cfg.easemob.daily_utc_offset_minutes = None;
    let sim = start(cfg).await;
    let token = easemob_token(&sim).await;
    let ep = endpoints::EASEMOB_ALL_USERS;

    let r = broadcast(&sim, &token, ep, &all_users("1")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert!(v["data"]["id"].as_u64().is_some(), "{v}");
    assert_eq!(v["path"], "/messages/broadcast");
    assert_eq!(v["action"], "post");

    let too_soon = broadcast(&sim, &token, ep, &all_users("too soon")).await;
    assert_error(
        &too_soon,
        429,
        "reach_limit",
        "This request has reached api limit",
    );

    sim.advance(30 * MIN);
    assert_eq!(
        broadcast(&sim, &token, ep, &all_users("2")).await.status,
        200
    );
    sim.advance(30 * MIN);
    assert_eq!(
        broadcast(&sim, &token, ep, &all_users("3")).await.status,
        200
    );
    sim.advance(30 * MIN);
    let fourth = broadcast(&sim, &token, ep, &all_users("4")).await;
    assert_error(
        &fourth,
        403,
        "forbidden_op",
        "broadcast message limit exceeded",
    );

    // A day after the first, one slot is free again.
    sim.advance(Duration::from_secs(86_400) - 90 * MIN);
    assert_eq!(
        broadcast(&sim, &token, ep, &all_users("5")).await.status,
        200
    );

    let counts = sim.violation_counts();
    assert_eq!(counts.get(&(SimProvider::Easemob, ep.to_owned())), Some(&2));
    let limits: Vec<String> = sim.violations().into_iter().map(|v| v.limit).collect();
    assert_eq!(limits, ["1 per 30 min", "3 per day"]);
    let d = sim.deliveries();
    assert_eq!(d.len(), 4);
    assert_eq!(d[0].target, Target::AllUsers);
    assert_eq!(d[0].content["ext"], json!({"k": "v"}));
}

#[tokio::test]
async fn all_users_three_per_calendar_day_are_whole_again_at_midnight() {
    // The zone in which it is now about 22:00, so the simulator's day ends
    // two simulated hours after it starts (Easemob's own day is UTC's; the
    // zone only moves it to where the test needs it).
    let wall_min = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60
        % 1440) as i32;
    let offset = (22 * 60 - wall_min + 720).rem_euclid(1440) - 720;
    let mut cfg = long_tokens();
    cfg.easemob.daily_utc_offset_minutes = Some(offset);
    let sim = start(cfg).await;
    let token = easemob_token(&sim).await;
    let ep = endpoints::EASEMOB_ALL_USERS;
    for n in 1..=3 {
        let r = broadcast(&sim, &token, ep, &all_users(&n.to_string())).await;
        assert_eq!(r.status, 200, "{}", r.text);
        sim.advance(30 * MIN);
    }
    // 23:30: the day's three are spent.
    let fourth = broadcast(&sim, &token, ep, &all_users("4")).await;
    assert_error(
        &fourth,
        403,
        "forbidden_op",
        "broadcast message limit exceeded",
    );
    // Just after midnight, 2.5 hours after the first: a new day's three,
    // where a rolling day would wait 21.5 hours more.
    sim.advance(32 * MIN);
    let next_day = broadcast(&sim, &token, ep, &all_users("5")).await;
    assert_eq!(next_day.status, 200, "{}", next_day.text);
    let limits: Vec<String> = sim.violations().into_iter().map(|v| v.limit).collect();
    assert_eq!(limits, [format!("3/calendar day (UTC{offset:+} min)")]);
}

#[tokio::test]
async fn online_users_one_per_minute_fifty_per_day() {
    let mut cfg = steady();
    cfg.easemob.daily_online_users = 2;
    let sim = start(cfg).await;
    let token = easemob_token(&sim).await;
    let ep = endpoints::EASEMOB_ONLINE_USERS;
    assert_eq!(broadcast(&sim, &token, ep, &online("1")).await.status, 200);
    sim.advance(Duration::from_secs(59));
    let r = broadcast(&sim, &token, ep, &online("x")).await;
    assert_eq!(r.status, 429);
    sim.advance(Duration::from_secs(1));
    assert_eq!(broadcast(&sim, &token, ep, &online("2")).await.status, 200);
    sim.advance(MIN);
    let r = broadcast(&sim, &token, ep, &online("3")).await;
    assert_error(
        &r,
        403,
        "forbidden_op",
        "online user broadcast limit exceeded",
    );
    assert_eq!(sim.violations().len(), 2);
}

#[tokio::test]
async fn chatrooms_one_per_second_and_ten_per_minute() {
    let sim = start(long_tokens()).await;
    let token = easemob_token(&sim).await;
    let ep = endpoints::EASEMOB_CHATROOMS;
    let body = json!({"msg": {"type": "txt", "msg": "room"}, "chatroom_msg_level": "high"});
    for _ in 0..10 {
        let r = broadcast(&sim, &token, ep, &body).await;
        assert_eq!(r.status, 200, "{}", r.text);
        sim.advance(Duration::from_secs(1));
    }
    // 1 s since the last, but 10 in the last minute already.
    let r = broadcast(&sim, &token, ep, &body).await;
    assert_error(&r, 429, "reach_limit", "This request has reached api limit");
    assert_eq!(sim.violations()[0].limit, "10 per minute");
    sim.advance(MIN);
    assert_eq!(broadcast(&sim, &token, ep, &body).await.status, 200);
    let r = broadcast(&sim, &token, ep, &body).await;
    assert_eq!(r.status, 429, "two in the same second");
    assert_eq!(sim.violations()[1].limit, "1 per second");
    assert_eq!(
        sim.deliveries()[0].target,
        Target::ActiveChatRooms {
            level: "high".into()
        }
    );
}

#[tokio::test]
async fn bodies_are_validated_with_documented_errors() {
    let sim = start(long_tokens()).await;
    let token = easemob_token(&sim).await;
    let txt = json!({"type": "txt", "msg": "x"});
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            endpoints::EASEMOB_ALL_USERS,
            json!({"msg": txt}),
            "illegal_argument",
            "target_type must be provided",
        ),
        (
            endpoints::EASEMOB_ALL_USERS,
            json!({"target_type": "groups", "msg": txt}),
            "illegal_argument",
            "target_type can only be 'users'",
        ),
        (
            endpoints::EASEMOB_ONLINE_USERS,
            json!({"from": "", "msg": txt}),
            "illegal_argument",
            "from can't be empty",
        ),
        (
            endpoints::EASEMOB_ONLINE_USERS,
            json!({"ext": "str", "msg": txt}),
            "illegal_argument",
            "ext must be JSONObject",
        ),
        (
            endpoints::EASEMOB_CHATROOMS,
            json!({"ext": null, "msg": txt}),
            "illegal_argument",
            "ext must be JSONObject",
        ),
        (
            endpoints::EASEMOB_CHATROOMS,
            json!({"ext": [1], "msg": txt}),
            "illegal_argument",
            "ext must be JSONObject",
        ),
        (
            endpoints::EASEMOB_ONLINE_USERS,
            json!({"msg": {"type": "sticker"}}),
            "invalid_request_body",
            "Request body is invalid. Please check body is correct.",
        ),
        (
            endpoints::EASEMOB_ONLINE_USERS,
            json!({"msg": {"type": "img"}}),
            "invalid_request_body",
            "Request body is invalid. Please check body is correct.",
        ),
        (
            endpoints::EASEMOB_ONLINE_USERS,
            json!({"from": 7, "msg": txt}),
            "invalid_request_body",
            "Request body is invalid. Please check body is correct.",
        ),
        (
            endpoints::EASEMOB_ONLINE_USERS,
            json!({}),
            "invalid_request_body",
            "Request body is invalid. Please check body is correct.",
        ),
        (
            endpoints::EASEMOB_CHATROOMS,
            json!({"msg": txt, "chatroom_msg_level": "urgent"}),
            "invalid_request_body",
            "Request body is invalid. Please check body is correct.",
        ),
    ];
    for (ep, body, error, description) in &cases {
        // Every request counts against the window, so step past the longest one.
        sim.advance(30 * MIN);
        let r = broadcast(&sim, &token, ep, body).await;
        assert_error(&r, 400, error, description);
    }
    sim.advance(30 * MIN);
    let r = send(
        client()
            .post(easemob_url(&sim, endpoints::EASEMOB_ONLINE_USERS))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("{broken"),
    )
    .await;
    assert_eq!(r.json()["error"], "invalid_request_body");

    // Every message type with its documented fields passes.
    for msg in [
        json!({"type": "img", "filename": "a.jpg", "secret": "s", "url": "https://x/a", "size": {"width": 480, "height": 720}}),
        json!({"type": "audio", "url": "https://x/a", "filename": "a.amr", "length": 10, "secret": "s"}),
        json!({"type": "video", "thumb": "https://x/t", "length": 0, "secret": "s", "file_length": 58103, "thumb_secret": "t", "url": "https://x/v"}),
        json!({"type": "file", "filename": "t.txt", "secret": "s", "url": "https://x/f"}),
        json!({"type": "loc", "lat": "39.966", "lng": "116.322", "addr": "中国北京市海淀区中关村"}),
        json!({"type": "cmd", "action": "action1"}),
        json!({"type": "custom", "customEvent": "custom_event"}),
    ] {
        sim.advance(MIN);
        let r = broadcast(
            &sim,
            &token,
            endpoints::EASEMOB_ONLINE_USERS,
            &json!({"msg": msg}),
        )
        .await;
        assert_eq!(r.status, 200, "{msg}: {}", r.text);
    }
    assert_eq!(sim.deliveries()[0].sender.as_deref(), Some("admin"));
    assert!(sim.violations().is_empty());
}

#[tokio::test]
async fn unopened_service_is_forbidden() {
    let sim = start(SimConfig::demo()).await;
    sim.easemob_set_broadcast_enabled(false);
    let token = easemob_token(&sim).await;
    let r = broadcast(&sim, &token, endpoints::EASEMOB_ALL_USERS, &all_users("x")).await;
    assert_error(
        &r,
        403,
        "forbidden_op",
        "message broadcast service is unopened",
    );
}

#[tokio::test]
async fn message_apis_reach_one_room_group_or_user() {
    let sim = start(long_tokens()).await;
    let token = easemob_token(&sim).await;
    let room = json!({
        "from": "bot", "to": ["185145305923585"], "type": "txt",
        "body": {"msg": "pong"}, "chatroom_msg_level": "high", "ext": {"k": "v"}
    });
    let r = broadcast(&sim, &token, endpoints::EASEMOB_ROOM_MESSAGES, &room).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.json()["data"]["185145305923585"]
        .as_str()
        .unwrap()
        .to_string();
    let d = &sim.deliveries()[0];
    assert_eq!(
        d.target,
        Target::ChatRoom {
            id: "185145305923585".into()
        }
    );
    assert_eq!(d.provider_id, id);
    assert_eq!(d.content["msg"], json!({"type": "txt", "msg": "pong"}));
    assert_eq!(d.content["chatroom_msg_level"], "high");
    let group = json!({"to": ["g1"], "type": "txt", "body": {"msg": "hi"}});
    let r = broadcast(&sim, &token, endpoints::EASEMOB_GROUP_MESSAGES, &group).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        sim.deliveries()[1].target,
        Target::Group { id: "g1".into() }
    );
    assert_eq!(sim.deliveries()[1].sender.as_deref(), Some("admin"));
    let user = json!({"to": ["ada"], "type": "txt", "body": {"msg": "hi"}});
    let r = broadcast(&sim, &token, endpoints::EASEMOB_USER_MESSAGES, &user).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        sim.deliveries()[2].target,
        Target::Account { id: "ada".into() }
    );

    // Bodies: to, type and body are required; a level is for rooms only.
    for bad in [
        json!({"type": "txt", "body": {"msg": "x"}}),
        json!({"to": [], "type": "txt", "body": {"msg": "x"}}),
        json!({"to": ["g1", "g2", "g3", "g4"], "type": "txt", "body": {"msg": "x"}}),
        json!({"to": ["g1"], "body": {"msg": "x"}}),
        json!({"to": ["g1"], "type": "txt", "body": {}}),
        json!({"to": ["g1"], "type": "txt", "body": {"msg": "x"}, "chatroom_msg_level": "high"}),
    ] {
        let r = broadcast(&sim, &token, endpoints::EASEMOB_GROUP_MESSAGES, &bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }
    assert_eq!(sim.deliveries().len(), 3);
    let r = broadcast(&sim, "forged", endpoints::EASEMOB_ROOM_MESSAGES, &room).await;
    assert_eq!(r.status, 401);

    // Past 20 a second one room drops messages: the call succeeds, and
    // the simulator records the loss as a violation.
    sim.advance(Duration::from_secs(1));
    let busy = json!({"to": ["busy"], "type": "txt", "body": {"msg": "x"}});
    for _ in 0..20 {
        let r = broadcast(&sim, &token, endpoints::EASEMOB_ROOM_MESSAGES, &busy).await;
        assert_eq!(r.status, 200);
    }
    assert!(sim.violations().is_empty());
    let r = broadcast(&sim, &token, endpoints::EASEMOB_ROOM_MESSAGES, &busy).await;
    assert_eq!(r.status, 200);
    assert_eq!(sim.violations().len(), 1);
    assert!(sim.violations()[0].limit.contains("room busy"));
}
