//! End to end, for each provider: a plugin's `send-broadcast`, then botbox's
//! real HTTP client, then the provider simulator (botbox-sim). Every
//! documented error path must end in the right typed outcome (final state,
//! `last_error`, the finished report), and no secret may appear in any log
//! line, error, outbox record or CLI output.
//!
//! Secrets include the ones the host makes or is given at run time (Tencent
//! UserSigs, Easemob app tokens, refreshed Bitrix24 tokens): every request
//! goes through a small TCP tap in front of the simulator, and whatever
//! credential crosses the wire is added to the list that logs and errors are
//! checked against.
//!
//! Clocks: each test runs the host's throttle and retry clock and the
//! simulator's clock at the same `time_scale`: small where the simulator
//! enforces one-second windows, large where only retries and backoff have to
//! pass. Where windows matter the simulator also allows `JITTER_MS` of
//! real arrival jitter, on top of the host's own margin: on a loaded
//! two-core machine two requests the throttle spaced correctly were seen
//! arriving 30+ ms closer together than they left.
//!
//! The harness (simulators behind taps, config writing, the sending plugin,
//! the running host and its audit) is in `tests/support/`: `sims.rs`,
//! `secrets.rs`, `sender.rs` and `host.rs`.

mod support;

use std::time::Duration;

use botbox::app::App;
use botbox::config::Config;
use botbox::delivery::store::{MessageState, PartState};
use botbox::wit::types::{Event, MeetingEvent, MeetingEventKind};
use botbox_sim::{Fault, Outcome, Sim, SimConfig, SimDelivery, SimProvider, Target, endpoints};
use serde_json::json;
use support::host::{Host, assert_error_has, botbox, chat, deliveries_with_text};
use support::secrets::{add_secret, assert_no_secret, harvest, values_after};
use support::sender::{INVALID, UNSUPPORTED, text_to};
use support::sims::{Setup, toml_str, windows_sim};

#[test]
fn the_secret_check_catches_a_leak() {
    add_secret("test-only-secret-9f8e7d");
    let leak = std::panic::catch_unwind(|| {
        assert_no_secret("a line", "… auth=test-only-secret-9f8e7d&x=1");
    });
    assert!(leak.is_err());
    assert_no_secret("a line", "… auth=[redacted]&x=1");
    let found = values_after(
        "GET /v4/x?sdkappid=1&usersig=eJw*ab-c_&random=7 HTTP/1.1\r\nauthorization: Bearer YWMtabc\r\n",
        "usersig=",
        |c| c == '&',
    );
    assert_eq!(found, vec!["eJw*ab-c_".to_string()]);
}

// ---------------------------------------------------------------------------
// The fault scenarios more than one provider goes through: one function per
// scenario, one table row per provider (and fault). Each provider's test runs
// its rows on its own host, at their place in its sequence; a new provider
// adds its rows here.

/// A transient fault the host must retry past: `faults` injected (at
/// `endpoint`, else at any of the provider's endpoints), then `text` sent on
/// `channel`; it ends delivered `copies` times after exactly `attempts`
/// attempts, with `error` (when given) left in `last_error`.
struct Transient {
    provider: SimProvider,
    endpoint: Option<&'static str>,
    faults: Vec<Fault>,
    channel: &'static str,
    text: &'static str,
    attempts: u32,
    error: Option<&'static str>,
    copies: usize,
}

/// The provider's rate-limit answer, then a proxy's 5xx and a dropped
/// connection.
fn transient_faults(provider: SimProvider) -> Vec<Transient> {
    let rows = vec![
        // 10023 (too frequent): retried, then delivered.
        Transient {
            provider: SimProvider::Tencent,
            endpoint: None,
            faults: vec![Fault::RateLimited],
            channel: "tc",
            text: "Tencent after 10023",
            attempts: 2,
            error: Some("10023"),
            copies: 1,
        },
        Transient {
            provider: SimProvider::Tencent,
            endpoint: None,
            faults: vec![Fault::server_error(502), Fault::Drop],
            channel: "tc",
            text: "Tencent after 502 and a drop",
            attempts: 3,
            error: None,
            copies: 1,
        },
        // 429: retried after the window, then delivered.
        Transient {
            provider: SimProvider::Easemob,
            endpoint: Some(endpoints::EASEMOB_CHATROOMS),
            faults: vec![Fault::RateLimited],
            channel: "em-rooms",
            text: "room message 3",
            attempts: 2,
            error: Some("429"),
            copies: 1,
        },
        Transient {
            provider: SimProvider::Easemob,
            endpoint: Some(endpoints::EASEMOB_CHATROOMS),
            faults: vec![Fault::server_error(503), Fault::Drop],
            channel: "em-rooms",
            text: "room message 4",
            attempts: 3,
            error: None,
            copies: 1,
        },
        // QUERY_LIMIT_EXCEEDED on the first of two dialogs: retried, and
        // only the part still queued is sent again.
        Transient {
            provider: SimProvider::Bitrix,
            endpoint: None,
            faults: vec![Fault::RateLimited],
            channel: "bx",
            text: "after QUERY_LIMIT_EXCEEDED",
            attempts: 3,
            error: Some("QUERY_LIMIT_EXCEEDED"),
            copies: 2,
        },
        Transient {
            provider: SimProvider::Bitrix,
            endpoint: None,
            faults: vec![Fault::server_error(502), Fault::Drop],
            channel: "bxo",
            text: "after 502 and a drop",
            attempts: 3,
            error: None,
            copies: 1,
        },
    ];
    rows.into_iter()
        .filter(|r| r.provider == provider)
        .collect()
}

impl Transient {
    /// What the row's step plugin sends.
    fn messages(&self) -> Vec<serde_json::Value> {
        vec![text_to(self.channel, self.text)]
    }

    /// Injects the faults, runs plugin `step{n}` (built from
    /// [`Transient::messages`]) and checks the outcome.
    async fn run(&self, host: &Host, n: usize) {
        let sim = host.sim();
        for fault in &self.faults {
            match self.endpoint {
                Some(endpoint) => sim.inject_endpoint(self.provider, endpoint, fault.clone(), 1),
                None => sim.inject(self.provider, fault.clone(), 1),
            }
        }
        let sent = host.step(n).await;
        let (rec, _) = host.done(&sent[0].id()).await;
        assert_eq!(rec.state, MessageState::Delivered, "{}: {rec:?}", self.text);
        assert_eq!(rec.attempts, self.attempts, "{}: {rec:?}", self.text);
        if let Some(code) = self.error {
            assert_error_has(&rec, code);
        }
        assert_eq!(
            deliveries_with_text(sim, self.provider, self.text).len(),
            self.copies,
            "{}",
            self.text
        );
    }
}

/// The provider's token expired at the server (`expire`): it answers 401
/// with `code`, the host fetches one new token (`fetches` in all by then)
/// and sends `text` on `channel` again within the same attempt.
struct ExpiredToken {
    provider: SimProvider,
    expire: fn(&Sim),
    channel: &'static str,
    text: &'static str,
    fetches: u64,
    code: &'static str,
}

/// The provider's row of the token-expiry scenario.
fn expired_token(provider: SimProvider) -> ExpiredToken {
    let rows = [
        ExpiredToken {
            provider: SimProvider::Easemob,
            expire: Sim::easemob_expire_tokens,
            channel: "em-rooms",
            text: "room message 2",
            fetches: 2,
            code: "unauthorized",
        },
        ExpiredToken {
            provider: SimProvider::Bitrix,
            expire: Sim::bitrix_expire_access_tokens,
            channel: "bxo",
            text: "OAuth after expiry",
            fetches: 1,
            code: "expired_token",
        },
    ];
    rows.into_iter()
        .find(|r| r.provider == provider)
        .expect("a row for the provider")
}

impl ExpiredToken {
    /// What the row's step plugin sends.
    fn messages(&self) -> Vec<serde_json::Value> {
        vec![text_to(self.channel, self.text)]
    }

    /// Expires the tokens, runs plugin `step{n}` (built from
    /// [`ExpiredToken::messages`]) and checks the outcome.
    async fn run(&self, host: &Host, n: usize) {
        let sim = host.sim();
        (self.expire)(sim);
        let sent = host.step(n).await;
        let (rec, _) = host.done(&sent[0].id()).await;
        assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
        assert_eq!(rec.attempts, 1);
        assert_eq!(sim.token_fetches(self.provider), self.fetches);
        assert_eq!(deliveries_with_text(sim, self.provider, self.text).len(), 1);
        let refused = Outcome::Rejected {
            status: 401,
            code: self.code.into(),
        };
        assert!(
            sim.requests_to(self.provider)
                .iter()
                .any(|r| r.outcome == refused),
            "no 401 {}",
            self.code
        );
    }
}

// ---------------------------------------------------------------------------
// BigBlueButton

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigbluebutton_running_meetings_listed_meetings_and_long_text() {
    let setup = Setup::start(SimConfig::demo(), 50.0).await;
    let providers = setup.bbb("bbb", &setup.cfg().bbb.secret.clone());
    let channels = r#"
[channels.bbb-all]
provider = "bbb"
target = { meetings = "all-running" }
sender = "Campus Bot"
[channels.bbb-list]
provider = "bbb"
target = { meetings = ["room-2"] }
[channels.bbb-mixed]
provider = "bbb"
target = { meetings = ["room-1", "room-idle"] }
"#;
    let long: String = (1..=260)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(long.chars().count() > 1500);
    let steps = vec![
        vec![
            text_to("bbb-all", "Hello, every running room"),
            json!({ "channel": "bbb-list", "content": { "text": long }, "sender": "Lecturer" }),
            text_to("bbb-mixed", "Only live rooms get this"),
        ],
        vec![text_to("bbb-all", "Anyone there?")],
    ];
    // The example greeter bot answers a meeting event into that meeting.
    let greeter = format!(
        "[channels.lobby]\nprovider = \"bbb\"\ntarget = {{ meetings = \"all-running\" }}\n\
         [plugins.greeter]\npath = {}\nchannels = [\"lobby\"]\nevents = [\"meeting\", \"custom\"]\n\
         settings = {{ greeting = \"Hello {{name}}, welcome to {{meeting}}\", sender = \"Greeter\" }}\n",
        toml_str(&support::example_plugin("greeter").display().to_string())
    );
    let host = Host::start_with(setup, &providers, channels, &steps, &greeter).await;
    let sim = host.sim();
    let sent = host.step(0).await;

    // all-running: getMeetings, then every running meeting but room-idle.
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    let got = deliveries_with_text(sim, SimProvider::Bbb, "Hello, every running room");
    let mut rooms: Vec<Target> = got.iter().map(|d| d.target.clone()).collect();
    rooms.sort_by_key(|t| format!("{t:?}"));
    assert_eq!(
        rooms,
        vec![
            Target::Meeting {
                id: "room-1".into()
            },
            Target::Meeting {
                id: "room-2".into()
            }
        ]
    );
    assert!(
        got.iter()
            .all(|d| d.sender.as_deref() == Some("Campus Bot"))
    );
    // sendChatMessage answers no message id.
    assert!(
        fin.provider_ids.is_empty() && fin.detail.is_none(),
        "{fin:?}"
    );
    assert_eq!(host.parts(&rec.id).len(), 2);
    assert!(
        sim.requests_to(SimProvider::Bbb)
            .iter()
            .any(|r| r.endpoint == endpoints::BBB_GET_MEETINGS && r.outcome == Outcome::Ok)
    );

    // A long text: ordered parts of at most 500 characters, nothing lost.
    let (rec, _) = host.done(&sent[1].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    let parts: Vec<SimDelivery> = sim
        .deliveries_to(SimProvider::Bbb)
        .into_iter()
        .filter(|d| {
            d.text()
                .is_some_and(|t| t.starts_with("word") || t.contains(" word"))
        })
        .collect();
    assert!(parts.len() >= 4, "{} parts", parts.len());
    assert_eq!(host.parts(&rec.id).len(), parts.len());
    for d in &parts {
        assert_eq!(
            d.target,
            Target::Meeting {
                id: "room-2".into()
            }
        );
        assert_eq!(d.sender.as_deref(), Some("Lecturer"));
        assert!(d.text().unwrap().encode_utf16().count() <= 500);
    }
    assert!(parts.windows(2).all(|w| w[0].seq < w[1].seq));
    let joined: Vec<String> = parts
        .iter()
        .flat_map(|d| {
            d.text()
                .unwrap()
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let original: Vec<&str> = long.split_whitespace().collect();
    assert_eq!(joined, original);

    // A listed meeting that is not running: that part fails with
    // meetingNotFound, the other is delivered.
    let (rec, fin) = host.done(&sent[2].id()).await;
    assert_eq!(rec.state, MessageState::Partial, "{rec:?}");
    let parts = host.parts(&rec.id);
    assert_eq!(parts[0].state, PartState::Delivered);
    assert_eq!(parts[1].state, PartState::Failed);
    assert_eq!(parts[1].part.target, "room-idle");
    assert!(
        parts[1]
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("meetingNotFound:")),
        "{:?}",
        parts[1]
    );
    assert_error_has(&rec, "room-idle: meetingNotFound");
    assert!(
        fin.detail
            .as_deref()
            .is_some_and(|d| d.contains("room-idle: meetingNotFound")),
        "{fin:?}"
    );
    assert_eq!(fin.state, MessageState::Partial);
    let got = deliveries_with_text(sim, SimProvider::Bbb, "Only live rooms get this");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].target,
        Target::Meeting {
            id: "room-1".into()
        }
    );

    // The greeter bot hears a meeting event and replies into that meeting
    // (reply-to) rather than to every running one.
    let joined = Event::Meeting(MeetingEvent {
        channel: "lobby".into(),
        kind: MeetingEventKind::UserJoined,
        meeting_id: "room-2".into(),
        meeting_name: Some("Sim Lecture Hall".into()),
        user_id: Some("u1".into()),
        user_name: Some("Ada".into()),
    });
    let receipts = host.dispatch("greeter", &joined).await;
    assert_eq!(receipts.len(), 1);
    let (rec, _) = host.done(&receipts[0]).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    let got = deliveries_with_text(
        sim,
        SimProvider::Bbb,
        "Hello Ada, welcome to Sim Lecture Hall",
    );
    assert_eq!(got.len(), 1, "{:?}", sim.deliveries());
    assert_eq!(
        got[0].target,
        Target::Meeting {
            id: "room-2".into()
        }
    );
    assert_eq!(got[0].sender.as_deref(), Some("Greeter"));

    // No sender anywhere: no userName, and the server shows its default.
    let got = deliveries_with_text(sim, SimProvider::Bbb, "Only live rooms get this");
    assert_eq!(got[0].sender.as_deref(), Some("System"));

    // No meetings at all: delivered to nobody, which is not an error.
    for m in sim.bbb_meetings() {
        assert!(sim.bbb_remove_meeting(&m.id));
    }
    let before = sim.deliveries_to(SimProvider::Bbb).len();
    let sent = host.step(1).await;
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.last_error, None);
    assert!(host.parts(&rec.id).is_empty());
    assert!(fin.provider_ids.is_empty() && fin.detail.is_none());
    assert_eq!(sim.deliveries_to(SimProvider::Bbb).len(), before);
    host.audit().await;
}

// ---------------------------------------------------------------------------
// Tencent Cloud Chat

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tencent_text_custom_dedup_retries_and_refusals() {
    // One call a second at the simulator: a second is 200 ms real here.
    let setup = Setup::start(windows_sim(), 5.0).await;
    let providers = setup.tencent("tc", &setup.cfg().tencent.secret_key.clone());
    let channels = "[channels.tc]\nprovider = \"tc\"\nsender = \"news-bot\"\n";
    let faults = transient_faults(SimProvider::Tencent);
    let steps = vec![
        vec![
            json!({ "channel": "tc", "content": { "text": "Tencent hello" }, "extra": "{\"k\":\"v\"}" }),
            json!({ "channel": "tc", "content": { "custom": { "event": "notification", "data": "{\"type\":1}" } }, "sender": "ops-bot" }),
        ],
        vec![text_to("tc", "Tencent lost response")],
        faults[0].messages(),
        faults[1].messages(),
        vec![text_to("tc", "Tencent switch off")],
        vec![
            json!({ "channel": "tc", "content": { "text": "into one group" }, "reply-to": "@TGS#a" }),
            json!({ "channel": "tc", "content": { "command": "refresh" } }),
            json!({ "channel": "tc", "content": { "text": "x" }, "sender": "not ascii é" }),
        ],
    ];
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();

    // Text and custom content, with the sender as From_Account.
    let sent = host.step(0).await;
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    let got = deliveries_with_text(sim, SimProvider::Tencent, "Tencent hello");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target, Target::AllAvChatRooms);
    assert_eq!(got[0].sender.as_deref(), Some("news-bot"));
    assert_eq!(got[0].content["CloudCustomData"], "{\"k\":\"v\"}");
    assert_eq!(fin.provider_ids, vec![got[0].provider_id.clone()]);
    let (rec, _) = host.done(&sent[1].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    let custom: Vec<SimDelivery> = sim
        .deliveries_to(SimProvider::Tencent)
        .into_iter()
        .filter(|d| d.content["MsgBody"][0]["MsgType"] == "TIMCustomElem")
        .collect();
    assert_eq!(custom.len(), 1);
    assert_eq!(custom[0].sender.as_deref(), Some("ops-bot"));
    assert_eq!(
        custom[0].content["MsgBody"][0]["MsgContent"],
        json!({ "Data": "{\"type\":1}", "Desc": "notification" })
    );
    // The UserSig was accepted: every request so far delivered.
    let requests = sim.requests_to(SimProvider::Tencent);
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.outcome == Outcome::Delivered));

    // The answer is lost after the message went out: the retry reuses the
    // part's Random, so the simulator discards it and answers with the
    // original MsgSeq. Exactly one delivery.
    sim.inject(SimProvider::Tencent, Fault::LostResponse, 1);
    let sent = host.step(1).await;
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.attempts, 2);
    let got = deliveries_with_text(sim, SimProvider::Tencent, "Tencent lost response");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        sim.deduplicated(),
        1,
        "{:#?}\n{rec:?}",
        sim.requests_to(SimProvider::Tencent)
    );
    assert_eq!(fin.provider_ids, vec![got[0].provider_id.clone()]);
    let part = &host.parts(&rec.id)[0];
    assert_eq!(
        part.part.dedup_key.as_deref(),
        Some(got[0].content["Random"].to_string().as_str())
    );

    // 10023 (too frequent), then a 502 from a proxy and a dropped
    // connection: retried, then delivered.
    for (n, row) in (2..).zip(&faults) {
        row.run(&host, n).await;
    }
    let faulted: Vec<Option<Fault>> = sim
        .requests_to(SimProvider::Tencent)
        .into_iter()
        .filter(|r| r.outcome == Outcome::Faulted)
        .map(|r| r.fault)
        .collect();
    assert_eq!(
        faulted,
        vec![
            Some(Fault::RateLimited),
            Some(Fault::server_error(502)),
            Some(Fault::Drop)
        ]
    );

    // 10007 (the console switch is off): refused for good, with its code.
    sim.tencent_set_broadcast_enabled(false);
    let sent = host.step(4).await;
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Failed, "{rec:?}");
    assert_eq!(rec.attempts, 1);
    assert!(
        rec.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("10007: ")),
        "{rec:?}"
    );
    assert!(fin.detail.as_deref().is_some_and(|d| d.contains("10007")));
    assert_eq!(fin.state, MessageState::Failed);
    sim.tencent_set_broadcast_enabled(true);

    // A reply into a group the plugin heard from goes to that one group
    // with send_group_msg. Refused at send-broadcast time, before anything
    // is stored: a command, a sender that is no UserID.
    let sent = host.step_on(5, &chat("tc", "@TGS#a")).await;
    let (rec, _) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.endpoint, "tc/send_group_msg");
    let got = deliveries_with_text(sim, SimProvider::Tencent, "into one group");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].target,
        Target::Group {
            id: "@TGS#a".into()
        }
    );
    let cases: Vec<u8> = sent[1..]
        .iter()
        .map(|s| s.error.clone().unwrap().0)
        .collect();
    assert_eq!(cases, vec![UNSUPPORTED, INVALID], "{sent:?}");
    host.audit().await;
}

// ---------------------------------------------------------------------------
// Easemob

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn easemob_three_targets_share_one_token() {
    // 1 per second on chat rooms: a second is 200 ms real here.
    let setup = Setup::start(windows_sim(), 5.0).await;
    let providers = setup.easemob("em", &setup.cfg().easemob.client_secret.clone());
    let channels = r#"
[channels.em-all]
provider = "em"
target = "all-users"
sender = "sysadmin"
[channels.em-online]
provider = "em"
target = "online-users"
[channels.em-rooms]
provider = "em"
target = "chatrooms"
priority = "high"
"#;
    let steps = vec![vec![
        json!({ "channel": "em-all", "content": { "text": "to all users" }, "extra": "{\"extKey\":\"extValue\"}" }),
        text_to("em-online", "to online users"),
        text_to("em-rooms", "to rooms, high"),
        json!({ "channel": "em-rooms", "content": { "text": "to rooms, low" }, "options": { "priority": "low" } }),
        json!({ "channel": "em-rooms", "content": { "custom": { "event": "poll/open", "data": "{\"q\":\"lunch?\"}" } }, "sender": "poll-bot" }),
    ]];
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();
    let sent = host.step(0).await;
    for s in &sent {
        let (rec, _) = host.done(&s.id()).await;
        assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
        assert_eq!(rec.attempts, 1);
    }
    let one = |text: &str| {
        let got = deliveries_with_text(sim, SimProvider::Easemob, text);
        assert_eq!(got.len(), 1, "{text}: {got:?}");
        got[0].clone()
    };
    let d = one("to all users");
    assert_eq!(d.target, Target::AllUsers);
    assert_eq!(d.sender.as_deref(), Some("sysadmin"));
    assert_eq!(d.content["ext"], json!({ "extKey": "extValue" }));
    let d = one("to online users");
    assert_eq!(d.target, Target::OnlineUsers);
    assert_eq!(d.sender.as_deref(), Some("admin"));
    assert_eq!(
        one("to rooms, high").target,
        Target::ActiveChatRooms {
            level: "high".into()
        }
    );
    assert_eq!(
        one("to rooms, low").target,
        Target::ActiveChatRooms {
            level: "low".into()
        }
    );
    let custom: Vec<SimDelivery> = sim
        .deliveries_to(SimProvider::Easemob)
        .into_iter()
        .filter(|d| d.content["msg"]["type"] == "custom")
        .collect();
    assert_eq!(custom.len(), 1);
    assert_eq!(custom[0].sender.as_deref(), Some("poll-bot"));
    assert_eq!(custom[0].content["msg"]["customEvent"], "poll/open");
    assert_eq!(
        custom[0].content["msg"]["customExts"],
        json!({ "q": "lunch?" })
    );
    // Three endpoint workers sent at once; one token fetch served them all.
    assert_eq!(sim.token_fetches(SimProvider::Easemob), 1);
    host.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn easemob_401_429_5xx_daily_quota_and_invalid_bodies() {
    let mut cfg = windows_sim();
    cfg.easemob.daily_chatrooms = 4;
    let setup = Setup::start(cfg, 5.0).await;
    let providers = setup.easemob("em", &setup.cfg().easemob.client_secret.clone());
    let channels = "[channels.em-rooms]\nprovider = \"em\"\ntarget = \"chatrooms\"\n";
    let big = "y".repeat(4000);
    let expired = expired_token(SimProvider::Easemob);
    let faults = transient_faults(SimProvider::Easemob);
    let steps = vec![
        vec![text_to("em-rooms", "room message 1")],
        expired.messages(),
        faults[0].messages(),
        faults[1].messages(),
        vec![text_to("em-rooms", "room message 5")],
        vec![
            json!({ "channel": "em-rooms", "content": { "text": "ext is a list" }, "extra": "[1, 2]" }),
            json!({ "channel": "em-rooms", "content": { "custom": { "event": "poll", "data": "{\"n\": 1}" } } }),
            json!({ "channel": "em-rooms", "content": { "custom": { "event": "bad event!", "data": "" } } }),
            json!({ "channel": "em-rooms", "content": { "text": big }, "extra": format!("{{\"pad\":\"{}\"}}", "z".repeat(1500)) }),
        ],
    ];
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();

    let sent = host.step(0).await;
    let (rec, _) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered);
    assert_eq!(sim.token_fetches(SimProvider::Easemob), 1);

    // The app token expired at the server: a 401, one new token, the same
    // send retried within the same attempt.
    expired.run(&host, 1).await;

    // 429, then a 503 and a dropped connection: retried, then delivered.
    for (n, row) in (2..).zip(&faults) {
        row.run(&host, n).await;
    }
    for n in 1..=4 {
        assert_eq!(
            deliveries_with_text(sim, SimProvider::Easemob, &format!("room message {n}")).len(),
            1
        );
    }
    assert_eq!(sim.token_fetches(SimProvider::Easemob), 2);

    // The daily quota (4 here) is used up: 403, quota exhausted until the
    // day resets. The message waits in the queue; retrying sooner is useless.
    let sent = host.step(4).await;
    let id = sent[0].id();
    host.until(&id, "a quota-exhausted retry", |r| {
        r.attempts >= 1 && r.state == MessageState::Queued
    })
    .await;
    let rec = host.record(&id);
    assert_error_has(&rec, "quota exhausted:");
    assert_error_has(&rec, "limit exceeded");
    // It waits until midnight UTC (the reset Easemob does not document),
    // not for a backoff. Checked unless midnight is too close to tell.
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let until_midnight_ms = (86_400 - unix % 86_400) * 1000;
    if (120_000..86_280_000).contains(&until_midnight_ms) {
        let now = host.app.delivery.clock().now_ms();
        assert!(
            rec.next_attempt_ms + 60_000 >= now + until_midnight_ms,
            "retries before the day resets: {rec:?}"
        );
    }
    assert!(
        sim.requests_to(SimProvider::Easemob)
            .iter()
            .any(|r| r.outcome
                == Outcome::Rejected {
                    status: 403,
                    code: "forbidden_op".into()
                })
    );
    assert!(deliveries_with_text(sim, SimProvider::Easemob, "room message 5").is_empty());
    assert!(host.app.delivery.cancel(&id).unwrap());
    assert_eq!(host.record(&id).state, MessageState::Cancelled);

    // Bodies the server would answer 400 are refused at send-broadcast
    // time: the plugin hears `invalid` and nothing is stored or sent.
    let requests = sim.requests_to(SimProvider::Easemob).len();
    let sent = host.step(5).await;
    for s in &sent {
        let (case, text) = s.error.clone().expect("refused");
        assert_eq!(case, INVALID, "{text}");
    }
    assert!(sent[0].error.as_ref().unwrap().1.contains("extra"));
    assert!(sent[1].error.as_ref().unwrap().1.contains("customExts"));
    assert!(sent[3].error.as_ref().unwrap().1.contains("bytes"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sim.requests_to(SimProvider::Easemob).len(), requests);
    // The simulator's quota was lowered below the documented one the host
    // throttles to, so the 403 it answered counts as the one violation.
    host.audit_expecting(&[("4/calendar day (UTC+0 min)", "403")])
        .await;
}

// ---------------------------------------------------------------------------
// Bitrix24

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_webhook_oauth_refresh_and_errors() {
    let setup = Setup::start(SimConfig::demo(), 20.0).await;
    let providers = format!(
        "{}{}",
        setup.bitrix_webhook("b24", &setup.cfg().bitrix.webhook_code.clone()),
        setup.bitrix_oauth(
            "b24o",
            &setup.cfg().bitrix.access_token.clone(),
            &setup.cfg().bitrix.refresh_token.clone()
        )
    );
    let channels = r#"
[channels.bx]
provider = "b24"
target = { dialogs = ["chat13", "1"] }
[channels.bxo]
provider = "b24o"
target = { dialogs = ["chat1"] }
[channels.bx-bad]
provider = "b24"
target = { dialogs = ["chat1", "chat99"] }
"#;
    let expired = expired_token(SimProvider::Bitrix);
    let faults = transient_faults(SimProvider::Bitrix);
    let steps = vec![
        vec![
            json!({ "channel": "bx", "content": { "text": "Bitrix hello" },
                    "options": { "system": true, "url-preview": false,
                                 "keyboard": "[{\"TEXT\":\"OK\",\"COMMAND\":\"ok\"}]" } }),
            text_to("bxo", "OAuth hello"),
        ],
        expired.messages(),
        faults[0].messages(),
        faults[1].messages(),
        vec![text_to("bx-bad", "one good chat, one unknown")],
        vec![json!({ "channel": "bx", "content": { "text": "x" }, "reply-to": "chatX" })],
    ];
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();

    // Webhook: a chat and a private dialog, with the options as sent.
    let sent = host.step(0).await;
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(fin.provider_ids.len(), 2);
    let got = deliveries_with_text(sim, SimProvider::Bitrix, "Bitrix hello");
    let targets: Vec<Target> = got.iter().map(|d| d.target.clone()).collect();
    assert_eq!(
        targets,
        vec![Target::Chat { id: 13 }, Target::User { id: 1 }]
    );
    for d in &got {
        assert_eq!(d.sender.as_deref(), Some("1"));
        assert_eq!(d.content["SYSTEM"], "Y");
        assert_eq!(d.content["URL_PREVIEW"], "N");
        assert!(d.content.get("KEYBOARD").is_some(), "{d:?}");
    }
    // OAuth: the configured access token.
    let (rec, _) = host.done(&sent[1].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    let got = deliveries_with_text(sim, SimProvider::Bitrix, "OAuth hello");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target, Target::Chat { id: 1 });
    assert_eq!(sim.token_fetches(SimProvider::Bitrix), 0);

    // expired_token: one refresh, the send retried within the attempt.
    expired.run(&host, 1).await;

    // QUERY_LIMIT_EXCEEDED on the first of two dialogs, then a 502 and a
    // dropped connection: retried, then delivered.
    for (n, row) in (2..).zip(&faults) {
        row.run(&host, n).await;
    }

    // ACCESS_ERROR for a chat the bot is not in: that part fails with the code.
    let sent = host.step(4).await;
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Partial, "{rec:?}");
    assert_error_has(&rec, "chat99: ACCESS_ERROR");
    assert!(fin.detail.as_deref().unwrap().contains("ACCESS_ERROR"));
    let parts = host.parts(&rec.id);
    assert_eq!(parts[1].state, PartState::Failed);
    assert!(
        parts[1]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("ACCESS_ERROR:")
    );

    // A reply-to that is no DIALOG_ID: invalid at send-broadcast time.
    let sent = host.step_on(5, &chat("bx", "chatX")).await;
    assert_eq!(sent[0].error.as_ref().unwrap().0, INVALID);
    host.audit().await;
}

// ---------------------------------------------------------------------------
// Credentials the providers refuse

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_fail_with_the_provider_code_and_never_leak() {
    // Only backoff has to pass here: ten attempts over ~10 simulated minutes.
    let setup = Setup::start(SimConfig::demo(), 1000.0).await;
    let providers = [
        setup.bbb("bbb", "wrong-bbb-secret-1d2e3f4a5b6c"),
        setup.tencent("tc", "wrong-tencent-key-0a9b8c7d6e5f4a3b2c1d"),
        setup.easemob("em", "YXA6wrongClientSecret0botbox77"),
        setup.bitrix_webhook("b24", "wrongwebhookc0de99"),
        // A refused access token leads to one refresh (another host may
        // have replaced the pair), which the portal refuses in turn.
        setup.bitrix_oauth(
            "b24o",
            "bogus-bitrix-access-7777",
            "bogus-bitrix-refresh-8888",
        ),
    ]
    .concat();
    let channels = r#"
[channels.bbb-all]
provider = "bbb"
target = { meetings = "all-running" }
[channels.bbb-list]
provider = "bbb"
target = { meetings = ["room-1"] }
[channels.tc]
provider = "tc"
[channels.em-rooms]
provider = "em"
target = "chatrooms"
[channels.bx]
provider = "b24"
target = { dialogs = ["chat1"] }
[channels.bxo]
provider = "b24o"
target = { dialogs = ["chat1"] }
"#;
    let channels_and_codes = [
        ("bbb-all", "checksumError"),
        ("bbb-list", "checksumError"),
        ("tc", "70009"),
        ("em-rooms", "invalid_grant"),
        ("bx", "INVALID_CREDENTIALS"),
        ("bxo", "invalid_grant"),
    ];
    let steps = vec![
        channels_and_codes
            .iter()
            .map(|(c, _)| text_to(c, &format!("never delivered via {c}")))
            .collect(),
    ];
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();
    let sent = host.step(0).await;
    for (s, (channel, code)) in sent.iter().zip(channels_and_codes) {
        let (rec, fin) = host.done(&s.id()).await;
        assert_eq!(rec.state, MessageState::Failed, "{channel}: {rec:?}");
        assert_eq!(fin.state, MessageState::Failed, "{channel}: {fin:?}");
        assert_eq!(rec.attempts, 10, "{channel}: {rec:?}");
        assert_error_has(&rec, "credentials refused: ");
        assert_error_has(&rec, code);
        assert!(
            fin.detail.as_deref().is_some_and(|d| d.contains(code)),
            "{channel}: {fin:?}"
        );
    }
    assert!(sim.deliveries().is_empty(), "{:?}", sim.deliveries());
    host.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_check_call_and_outbox_list_show_no_secret() {
    let setup = Setup::start(windows_sim(), 5.0).await;
    let c = setup.cfg().clone();
    let providers = [
        setup.bbb("bbb", &c.bbb.secret),
        setup.tencent("tc", &c.tencent.secret_key),
        setup.easemob("em", &c.easemob.client_secret),
        setup.bitrix_webhook("b24", &c.bitrix.webhook_code),
    ]
    .concat();
    let channels = r#"
[channels.bbb-all]
provider = "bbb"
target = { meetings = "all-running" }
[channels.tc]
provider = "tc"
[channels.em-rooms]
provider = "em"
target = "chatrooms"
[channels.bx]
provider = "b24"
target = { dialogs = ["chat99"] }
"#;
    let steps = vec![vec![
        text_to("bbb-all", "cli to bbb"),
        text_to("tc", "cli to tencent"),
        text_to("em-rooms", "cli to easemob"),
        text_to("bx", "cli to an unknown bitrix chat"),
    ]];
    let config = setup.write_config(&providers, channels, &steps, "");
    let config = config.to_str().unwrap();
    let dir = setup.dir.path();
    let sim = &setup.sim;

    let (code, out) = botbox(dir, &["check", "--config", config]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("is valid"), "{out}");
    // What each channel carries, and the APIs its replies leave by: a
    // Tencent channel answers groups and one-to-one conversations.
    assert!(
        out.lines()
            .any(|l| l.contains("channel tc via tc (tencent): text")
                && l.ends_with("; replies via send_group_msg, sendmsg")),
        "{out}"
    );
    assert_no_secret("botbox check", &out);

    sim.inject(SimProvider::Tencent, Fault::server_error(502), 1);
    let (code, out) = botbox(
        dir,
        &[
            "call",
            "step0",
            "--config",
            config,
            "--event",
            r#"{"name": "go"}"#,
            "--wait",
            "30s",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let reports: Vec<&str> = out.lines().filter(|l| l.starts_with("deliv ")).collect();
    assert_eq!(reports.len(), 4, "{out}");
    assert_eq!(
        reports.iter().filter(|l| l.contains(": delivered")).count(),
        3,
        "{out}"
    );
    assert!(
        reports
            .iter()
            .any(|l| l.contains("#bx: failed") && l.contains("chat99: ACCESS_ERROR")),
        "{out}"
    );
    assert!(out.contains("will retry"), "{out}");
    let seen = harvest(&setup.tap_refs());
    assert!(
        seen.iter().any(|(k, _)| *k == "tencent usersig"),
        "{seen:?}"
    );
    assert!(seen.iter().any(|(k, _)| *k == "bearer"), "{seen:?}");
    assert_no_secret("botbox call", &out);
    assert_eq!(sim.deliveries().len(), 4, "{:?}", sim.deliveries());

    let (code, out) = botbox(dir, &["outbox", "--config", config, "list"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ACCESS_ERROR"), "{out}");
    assert_no_secret("botbox outbox list", &out);
    assert_eq!(sim.violations(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_never_echo_a_secret() {
    let setup = Setup::start(SimConfig::demo(), 1.0).await;
    // A webhook code pasted with a slash, and a URL carrying a password.
    let providers = format!(
        "{}[providers.bbb]\nkind = \"bigbluebutton\"\nurl = \"http://admin:hunter2hunter2@127.0.0.1/bigbluebutton/api\"\nsecret = {}\n",
        setup.bitrix_webhook("b24", "simwebhook0c0de7x2/extra"),
        setup.secret("bbb-secret", "sim-bbb-secret-8f3c1e0b7a5d"),
    );
    add_secret("hunter2hunter2");
    let channels = "[channels.bx]\nprovider = \"b24\"\ntarget = { dialogs = [\"chat1\"] }\n";
    let config = setup.write_config(&providers, channels, &[vec![text_to("bx", "x")]], "");
    let text = std::fs::read_to_string(&config).unwrap();
    let err = match Config::parse(&text, &config, setup.dir.path()).map(App::build) {
        Ok(Ok(_)) => panic!("a broken config was accepted"),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("webhook.code") && err.contains("url"), "{err}");
    assert_no_secret("a config error", &err);
    let (code, out) = botbox(
        setup.dir.path(),
        &["check", "--config", config.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("webhook.code"), "{out}");
    assert_no_secret("botbox check on a broken config", &out);
}
