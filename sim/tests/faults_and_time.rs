//! Fault injection (through the handle and the admin routes) and the scaled
//! simulated clock.

mod common;

use std::time::Duration;

use botbox_sim::sign::bbb_url;
use botbox_sim::{ChecksumAlg, Fault, Outcome, SimConfig, SimPorts, SimProvider, endpoints};
use common::{
    Reply, bitrix_webhook_url, client, easemob_token, easemob_url, get, send, start, tencent_url,
    text_body, xml_tag,
};
use serde_json::json;

fn chat_url(sim: &botbox_sim::Sim, text: &str) -> String {
    bbb_url(
        &sim.bbb_url(),
        "sendChatMessage",
        &[("meetingID", "room-1"), ("message", text)],
        &sim.config().bbb.secret,
        ChecksumAlg::Sha256,
    )
}

#[tokio::test]
async fn server_errors_for_the_next_n_requests_then_normal() {
    let sim = start(SimConfig::demo()).await;
    sim.inject(SimProvider::Bbb, Fault::server_error(502), 2);
    assert_eq!(sim.pending_faults(SimProvider::Bbb), 2);
    assert_eq!(get(&chat_url(&sim, "a")).await.status, 502);
    assert_eq!(get(&chat_url(&sim, "b")).await.status, 502);
    let r = get(&chat_url(&sim, "c")).await;
    assert_eq!(xml_tag(&r.text, "returncode"), "SUCCESS");
    let d = sim
        .wait_for_deliveries(Some(SimProvider::Bbb), 1, Duration::from_secs(1))
        .await;
    assert_eq!(d.len(), 1);
    let faulted = sim
        .requests()
        .iter()
        .filter(|r| r.outcome == Outcome::Faulted)
        .count();
    assert_eq!(faulted, 2);
}

#[tokio::test]
async fn endpoint_faults_leave_other_endpoints_alone() {
    let sim = start(SimConfig::demo()).await;
    sim.inject_endpoint(
        SimProvider::Easemob,
        endpoints::EASEMOB_TOKEN,
        Fault::Drop,
        1,
    );
    let c = sim.config().easemob.clone();
    let dropped = client()
        .post(easemob_url(&sim, "token"))
        .json(&json!({"grant_type": "client_credentials", "client_id": c.client_id, "client_secret": c.client_secret}))
        .send()
        .await;
    assert!(dropped.is_err(), "connection closed without an answer");
    assert_eq!(sim.token_fetches(SimProvider::Easemob), 0, "not processed");
    let token = easemob_token(&sim).await;
    sim.inject_endpoint(
        SimProvider::Easemob,
        endpoints::EASEMOB_CHATROOMS,
        Fault::server_error(503),
        5,
    );
    let r = send(
        client()
            .post(easemob_url(&sim, endpoints::EASEMOB_ONLINE_USERS))
            .bearer_auth(&token)
            .json(&json!({"msg": {"type": "txt", "msg": "fine"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(sim.pending_faults(SimProvider::Easemob), 5);
    sim.clear_faults();
    assert_eq!(sim.pending_faults(SimProvider::Easemob), 0);
}

#[tokio::test]
async fn hang_times_out_without_processing() {
    let sim = start(SimConfig::demo()).await;
    sim.inject(
        SimProvider::Bitrix,
        Fault::hang(Duration::from_millis(400)),
        1,
    );
    let started = std::time::Instant::now();
    let r = client()
        .post(bitrix_webhook_url(&sim))
        .timeout(Duration::from_millis(100))
        .json(&json!({"DIALOG_ID": "chat1", "MESSAGE": "lost"}))
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_timeout()));
    assert!(started.elapsed() < Duration::from_millis(400));
    // Without a client timeout the connection closes after the hang.
    sim.inject(
        SimProvider::Bitrix,
        Fault::hang(Duration::from_millis(50)),
        1,
    );
    let r = client()
        .post(bitrix_webhook_url(&sim))
        .json(&json!({"DIALOG_ID": "chat1", "MESSAGE": "lost"}))
        .send()
        .await;
    assert!(r.is_err());
    assert!(sim.deliveries().is_empty());
}

#[tokio::test]
async fn slow_and_lost_responses_still_deliver_and_tencent_dedups_the_retry() {
    let sim = start(SimConfig::demo()).await;
    sim.inject(
        SimProvider::Tencent,
        Fault::slow(Duration::from_millis(300)),
        1,
    );
    let r = client()
        .post(tencent_url(&sim, 1))
        .timeout(Duration::from_millis(50))
        .json(&text_body(4242, "slow"))
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_timeout()));
    assert_eq!(sim.deliveries().len(), 1, "processed before the delay");

    sim.advance(Duration::from_secs(1));
    sim.inject(SimProvider::Tencent, Fault::LostResponse, 1);
    let r = client()
        .post(tencent_url(&sim, 2))
        .json(&text_body(777, "lost"))
        .send()
        .await;
    assert!(r.is_err());
    assert_eq!(
        sim.deliveries().len(),
        2,
        "delivered although the answer was lost"
    );

    // The retry with the same Random is answered OK and not delivered twice.
    sim.advance(Duration::from_secs(1));
    let retry = send(
        client()
            .post(tencent_url(&sim, 3))
            .json(&text_body(777, "lost")),
    )
    .await;
    assert_eq!(retry.json()["ErrorCode"], 0);
    assert_eq!(sim.deliveries().len(), 2);
    assert_eq!(sim.deduplicated(), 1);
}

#[tokio::test]
async fn forced_rate_limits_use_each_providers_reply_and_are_not_violations() {
    let sim = start(SimConfig::demo()).await;
    for p in SimProvider::ALL {
        sim.inject(p, Fault::RateLimited, 1);
    }
    let r = get(&chat_url(&sim, "x")).await;
    assert_eq!(r.status, 429);
    let r = send(client().post(tencent_url(&sim, 1)).json(&text_body(1, "x"))).await;
    assert_eq!(
        (r.status, r.json()["ErrorCode"].as_i64()),
        (200, Some(10023))
    );
    let r = send(client().post(easemob_url(&sim, "token")).json(&json!({}))).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (429, Some("reach_limit"))
    );
    let r = send(client().post(bitrix_webhook_url(&sim)).json(&json!({}))).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (503, Some("QUERY_LIMIT_EXCEEDED"))
    );
    assert!(sim.violations().is_empty());
    assert!(sim.deliveries().is_empty());
}

#[tokio::test]
async fn admin_routes_inject_and_report() {
    let sim = start(SimConfig::demo()).await;
    let admin = format!("{}/__sim", sim.tencent_url());
    let r = send(client().post(format!("{admin}/fault")).json(&json!({
        "fault": {"kind": "server_error", "status": 504},
        "endpoint": endpoints::TENCENT_SEND_BROADCAST,
        "count": 1,
    })))
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send(client().post(tencent_url(&sim, 1)).json(&text_body(1, "x"))).await;
    assert_eq!(r.status, 504);
    let r = send(client().post(tencent_url(&sim, 1)).json(&text_body(1, "x"))).await;
    assert_eq!(r.status, 200);
    let state = get(&format!("{admin}/state")).await.json();
    assert_eq!(state["stats"]["deliveries"], 1);
    assert_eq!(state["stats"]["faults"], 1);
    let deliveries = get(&format!("{admin}/deliveries")).await.json();
    assert_eq!(deliveries.as_array().map(Vec::len), Some(1));

    let bbb_admin = sim.bbb_url().replace("/bigbluebutton/api", "/__sim");
    let r = send(
        client()
            .post(format!("{bbb_admin}/meetings"))
            .json(&json!({"id": "admin-room", "name": "Admin Room", "running": true})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        sim.bbb_meetings()
            .iter()
            .any(|m| m.id == "admin-room" && m.running)
    );

    let r = send(
        client()
            .post(format!("{admin}/advance"))
            .json(&json!({"ms": 3_600_000})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(sim.sim_now() >= Duration::from_secs(3600));

    let unknown: Reply = get(&format!("{}/v3/nothing", sim.tencent_url())).await;
    assert_eq!(unknown.status, 404);
    assert!(sim.requests().iter().any(|r| r.path == "/v3/nothing"));
}

#[tokio::test]
async fn unknown_routes_are_recorded_per_simulator() {
    let sim = start(SimConfig::demo()).await;
    // A Bitrix24 path that matched no route may carry a webhook code.
    let r = get(&format!(
        "{}/rest/1/secretcode/no.such.thing/x",
        sim.bitrix_url()
    ))
    .await;
    assert_eq!(r.status, 404);
    // Only the BigBlueButton listener has meetings.
    let r = get(&format!("{}/__sim/meetings", sim.tencent_url())).await;
    assert_eq!(r.status, 404);
    let paths: Vec<(SimProvider, String)> = sim
        .requests()
        .into_iter()
        .map(|r| (r.provider, r.path))
        .collect();
    assert_eq!(
        paths,
        [
            (SimProvider::Bitrix, "/rest/…".to_owned()),
            (SimProvider::Tencent, "/__sim/meetings".to_owned()),
        ]
    );
    sim.shutdown().await;
}

/// The real clock, scaled: a simulated day of Easemob quota, Tencent's
/// 5-minute dedup and a Bitrix24 token hour all pass in well under a second.
#[tokio::test]
async fn time_scaling_shrinks_every_window() {
    let scale = 100_000.0;
    let mut cfg = SimConfig::fast(scale);
    // The default 2 h app token would live only 72 ms here.
    cfg.easemob.token_ttl_secs = 30 * 86_400;
    // A rolling day, not the UTC calendar day: scaled 100,000 times, the
    // calendar's midnight falls inside this test whenever it starts in the
    // last 100 minutes before a real UTC midnight (60 ms of sends here are
    // 100 simulated minutes), and resets the count between the third
    // broadcast and the fourth.
    cfg.easemob.daily_utc_offset_minutes = None;
    let sim = start(cfg).await;
    // 30 simulated minutes = 18 ms real; a day = 864 ms real.
    assert_eq!(
        sim.real_duration(Duration::from_secs(1800)),
        Duration::from_millis(18)
    );
    let token = easemob_token(&sim).await;
    let all = |text: &str| json!({"target_type": "users", "msg": {"type": "txt", "msg": text}});
    let post = |body: serde_json::Value| {
        send(
            client()
                .post(easemob_url(&sim, endpoints::EASEMOB_ALL_USERS))
                .bearer_auth(&token)
                .json(&body),
        )
    };
    for i in 0..3 {
        let r = post(all(&format!("{i}"))).await;
        assert_eq!(r.status, 200, "broadcast {i}: {}", r.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = post(all("fourth")).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(sim.violations().len(), 1);

    // Tencent's dedup window is 5 simulated minutes = 3 ms.
    let t = tencent_url(&sim, 1);
    let a = send(client().post(&t).json(&text_body(5, "again")))
        .await
        .json();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let b = send(client().post(&t).json(&text_body(5, "again")))
        .await
        .json();
    assert_eq!(
        (a["ErrorCode"].as_i64(), b["ErrorCode"].as_i64()),
        (Some(0), Some(0))
    );
    assert_ne!(
        a["MsgSeq"], b["MsgSeq"],
        "outside the window it is a new message"
    );
    assert_eq!(sim.deduplicated(), 0);

    // A Bitrix24 access token lives an hour = 36 ms.
    tokio::time::sleep(Duration::from_millis(40)).await;
    let r = send(
        client()
            .post(format!("{}/rest/im.message.add", sim.bitrix_url()))
            .json(&json!({"auth": sim.config().bitrix.access_token, "DIALOG_ID": "chat1", "MESSAGE": "x"})),
    )
    .await;
    assert_eq!(r.json()["error"], "expired_token");
}

#[tokio::test]
async fn fixed_ports_are_honoured() {
    // Ask the OS for four free ports first, then insist on them.
    let mut ports = Vec::new();
    for _ in 0..4 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        ports.push(l.local_addr().expect("addr").port());
    }
    let mut cfg = SimConfig::demo();
    // Any simulator not named here gets a free port.
    let mut fixed = SimPorts::default();
    (fixed.bbb, fixed.tencent, fixed.easemob, fixed.bitrix) =
        (ports[0], ports[1], ports[2], ports[3]);
    cfg.ports = Some(fixed);
    let sim = start(cfg.clone()).await;
    assert_eq!(
        sim.bbb_url(),
        format!("http://127.0.0.1:{}/bigbluebutton/api", ports[0])
    );
    assert_eq!(sim.bitrix_url(), format!("http://127.0.0.1:{}", ports[3]));
    // A second simulator on the same ports says which one is taken.
    let err = botbox_sim::Sim::start(cfg)
        .await
        .err()
        .expect("ports are taken");
    assert!(err.to_string().contains("bbb"), "{err}");
    sim.shutdown().await;
}
