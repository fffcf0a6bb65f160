//! Inbound provider callbacks and the admin API, over real HTTP: the
//! simulators sign callbacks the way each provider documents, the host
//! authenticates them, refuses forged, stale and replayed ones, hands the
//! events to the plugins granted them, and the `commands` bot's answer is
//! delivered into the conversation it was asked in.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use botbox::app::App;
use botbox::config::Config;
use botbox::triggers::{self, admin, webhooks};
use botbox_sim::callbacks::{self, CallbackReply, post, unix_ms};
use botbox_sim::{ChecksumAlg, Fault, Sim, SimConfig, SimProvider, Target};
use serde_json::{Value, json};
use support::example_plugin;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
const TENCENT_TOKEN: &str = "tencent-callback-token";
const EASEMOB_SECRET: &str = "easemob-callback-secret";
const BITRIX_TOKEN: &str = "bitrix-application-token";

struct Rig {
    _dir: tempfile::TempDir,
    sim: Sim,
    app: Arc<App>,
    /// `http://127.0.0.1:P`, the webhook listener.
    hooks: String,
    /// `http://127.0.0.1:P`, the admin listener.
    admin: String,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// A host whose `lobby` channel is on `provider`, with three copies of the
/// `commands` bot: `commands`, granted chat messages on it; `deaf`, granted
/// the channel but only custom events; `stranger`, granted chat messages
/// but not the channel.
async fn rig(provider: &str, lobby: &str) -> Rig {
    rig_with(provider, lobby, "").await
}

/// [`rig`], with more `[webhooks]` keys.
async fn rig_with(provider: &str, lobby: &str, webhooks_extra: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let sim = Sim::start(SimConfig::fast(1.0)).await.unwrap();
    let providers = support::sims::sim_providers(&sim, path);
    let secrets = path.join("secrets");
    for (name, value) in [
        ("admin-token", ADMIN_TOKEN),
        ("tencent-token", TENCENT_TOKEN),
        ("easemob-secret", EASEMOB_SECRET),
        ("bitrix-token", BITRIX_TOKEN),
    ] {
        std::fs::write(secrets.join(name), value).unwrap();
    }
    let hook_listener = triggers::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let admin_listener = triggers::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let hooks = format!("http://{}", hook_listener.local_addr().unwrap());
    let admin = format!("http://{}", admin_listener.local_addr().unwrap());
    let file =
        |name: &str| toml::Value::String(secrets.join(name).display().to_string()).to_string();
    let commands = toml::Value::String(example_plugin("commands").display().to_string());
    let text = format!(
        r#"
[runtime]
reload = false

[webhooks]
listen = "{listen}"
max_body_kb = 16
{webhooks_extra}

[admin]
listen = "127.0.0.1:0"
token = {{ file = {admin_token} }}

{providers}

[providers.bbb.inbound]
secret = {{ file = {bbb} }}
url = "{hooks}/webhooks/bbb"

[providers.tencent.inbound]
secret = {{ file = {tencent} }}

[providers.easemob.inbound]
secret = {{ file = {easemob} }}

[providers.bitrix24.inbound]
secret = {{ file = {bitrix} }}

[channels.lobby]
provider = "{provider}"
{lobby}

[plugins.commands]
path = {commands}
channels = ["lobby"]
events = ["chat-message", "custom", "delivery"]

[plugins.deaf]
path = {commands}
channels = ["lobby"]
events = ["custom"]

[plugins.stranger]
path = {commands}
channels = []
events = ["chat-message", "custom"]
"#,
        listen = hook_listener.local_addr().unwrap(),
        admin_token = file("admin-token"),
        bbb = file("bbb-secret"),
        tencent = file("tencent-token"),
        easemob = file("easemob-secret"),
        bitrix = file("bitrix-token"),
    );
    std::fs::write(path.join("botbox.toml"), &text).unwrap();
    let app = App::build(Config::load(&path.join("botbox.toml")).unwrap()).unwrap();
    let errors = app.load_plugins().await;
    assert!(errors.is_empty(), "{errors:?}");
    let app = Arc::new(app);
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let workers = app.delivery.start(stop.clone());
    tasks.spawn(async move { workers.wait().await });
    let hook_server = Arc::new(webhooks::WebhookServer::new(
        app.webhooks.clone().expect("[webhooks] is set"),
        &app.config,
        app.runtime.clone(),
        app.shared.replay.clone(),
        app.shared.metrics.clone(),
    ));
    tasks.spawn(hook_server.serve(hook_listener, stop.clone()));
    let admin_server = Arc::new(admin::AdminServer::new(
        app.admin.clone().expect("[admin] is set"),
        app.config.plugins.keys().cloned().collect(),
        app.runtime.clone(),
        app.delivery.clone(),
        app.shared.metrics.clone(),
    ));
    tasks.spawn(admin_server.serve(admin_listener, stop.clone()));
    tasks.spawn(admin::observe_delivery(
        app.delivery.clone(),
        Arc::new(app.config.clone()),
        app.shared.metrics.clone(),
        stop.clone(),
    ));
    Rig {
        _dir: dir,
        sim,
        app,
        hooks,
        admin,
        stop,
        tasks,
    }
}

impl Rig {
    /// Events a plugin was called with (handled or failed).
    fn calls(&self, plugin: &str) -> u64 {
        self.app
            .runtime
            .plugin(plugin)
            .unwrap()
            .stats
            .latency
            .snapshot()
            .1
    }

    fn handled(&self, plugin: &str) -> u64 {
        self.app
            .runtime
            .plugin(plugin)
            .unwrap()
            .stats
            .handled
            .load(Ordering::Relaxed)
    }

    async fn post(&self, path_and_query: &str, content_type: &str, body: &[u8]) -> CallbackReply {
        post(
            &format!("{}{path_and_query}", self.hooks),
            content_type,
            body,
        )
        .await
        .unwrap()
    }

    async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.sim.shutdown().await;
    }
}

fn assert_status(reply: &CallbackReply, status: u16, what: &str) {
    assert_eq!(reply.status, status, "{what}: {reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bbb_chat_reaches_the_granted_plugin_and_the_answer_lands_in_that_meeting() {
    let r = rig("bbb", "target = { meetings = \"all-running\" }").await;
    // The operator registers the callback with a signed hooks/create.
    let secret = r.sim.config().bbb.secret.clone();
    let callback = format!("{}/webhooks/bbb", r.hooks);
    let url = botbox_sim::sign::bbb_url(
        &r.sim.bbb_url(),
        "hooks/create",
        &[("callbackURL", &callback)],
        &secret,
        ChecksumAlg::Sha256,
    );
    let created = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(created.contains("SUCCESS"), "{created}");

    let replies = r.sim.bbb_send_chat("room-2", "u1", "Ada", "!help").await;
    assert_eq!(replies.len(), 1);
    let reply = replies[0].1.as_ref().unwrap();
    assert_status(reply, 200, "a signed chat event");

    let delivered = r
        .sim
        .wait_for_deliveries(Some(SimProvider::Bbb), 1, Duration::from_secs(10))
        .await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(
        delivered[0].target,
        Target::Meeting {
            id: "room-2".into()
        },
        "the answer goes to the meeting it was asked in, not to every running one"
    );
    assert!(
        delivered[0].content.to_string().contains("!time"),
        "the !help answer: {:?}",
        delivered[0].content
    );
    assert_eq!(r.handled("commands"), 1);
    assert_eq!(r.calls("deaf"), 0, "deaf is not granted chat-message");
    assert_eq!(
        r.calls("stranger"),
        0,
        "stranger is not granted the channel"
    );

    // Meeting events reach only plugins granted `meeting`: neither here.
    let joined = callbacks::bbb_meeting_event("user-joined", "room-1", Some(("u2", "Bob")));
    let replies = r.sim.bbb_send_event("room-1", &joined).await;
    assert_status(replies[0].1.as_ref().unwrap(), 200, "a meeting event");
    assert_eq!(r.calls("commands"), 1);

    // Forgeries, each refused and counted, none dispatched.
    let body = format!(
        "event={}",
        urlencode(&callbacks::bbb_chat_event("room-1", "u1", "Eve", "!help").to_string())
    );
    let signed = callbacks::bbb_signed_url(&callback, body.as_bytes(), &secret);
    let path = signed.strip_prefix(&r.hooks).unwrap().to_string();
    let form = "application/x-www-form-urlencoded";
    let wrong = callbacks::bbb_signed_url(&callback, body.as_bytes(), "not-the-secret");
    let wrong = wrong.strip_prefix(&r.hooks).unwrap();
    assert_status(
        &r.post(wrong, form, body.as_bytes()).await,
        401,
        "wrong secret",
    );
    assert_status(
        &r.post("/webhooks/bbb", form, body.as_bytes()).await,
        401,
        "no checksum",
    );
    let tampered = body.replace("Eve", "Mallory");
    assert_status(
        &r.post(&path, form, tampered.as_bytes()).await,
        401,
        "tampered body",
    );
    assert_status(
        &r.post(&path, form, body.as_bytes()).await,
        200,
        "the genuine call",
    );
    assert_status(
        &r.post(&path, form, body.as_bytes()).await,
        409,
        "its replay",
    );
    assert_eq!(r.calls("commands"), 2);
    let metrics = r.app.shared.metrics.clone();
    assert_eq!(metrics.webhook_count("bbb", "forged"), 3);
    assert_eq!(metrics.webhook_count("bbb", "replay"), 1);
    assert_eq!(metrics.webhook_count("bbb", "accepted"), 3);

    // The Bearer mode, and hostile bodies.
    let bearer = reqwest::Client::new()
        .post(format!("{}/webhooks/bbb", r.hooks))
        .header("Authorization", format!("Bearer {secret}"))
        .body(callbacks::bbb_meeting_event("meeting-ended", "room-1", None).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let bad_bearer = reqwest::Client::new()
        .post(format!("{}/webhooks/bbb", r.hooks))
        .header("Authorization", "Bearer guess")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_bearer.status(), 401);
    let garbage = b"{\"event\": [[[[";
    let signed = callbacks::bbb_signed_url(&callback, garbage, &secret);
    let reply = r
        .post(
            signed.strip_prefix(&r.hooks).unwrap(),
            "application/json",
            garbage,
        )
        .await;
    assert_status(&reply, 400, "an authentic but malformed body");
    // Genuinely signed, but its events are two hours old: the replay cache
    // no longer remembers that far back, so it is refused as stale.
    let mut old = callbacks::bbb_chat_event("room-1", "u1", "Eve", "!time");
    old[0]["data"]["event"]["ts"] = serde_json::json!(unix_ms() - 2 * 3_600_000);
    let old = format!("event={}", urlencode(&old.to_string()));
    let signed = callbacks::bbb_signed_url(&callback, old.as_bytes(), &secret);
    assert_status(
        &r.post(signed.strip_prefix(&r.hooks).unwrap(), form, old.as_bytes())
            .await,
        403,
        "stale events",
    );
    let huge = vec![b'a'; 17 << 10];
    assert_status(
        &r.post("/webhooks/bbb", form, &huge).await,
        413,
        "over max_body_kb",
    );
    assert_status(
        &r.post("/webhooks/nobody", form, b"x").await,
        404,
        "unknown provider",
    );
    assert!(r.sim.violations().is_empty(), "{:?}", r.sim.violations());
    r.shutdown().await;
}

fn urlencode(s: &str) -> String {
    url_escape(s)
}

/// Form encoding, enough for the tests.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_bot_message_is_answered_in_its_dialog() {
    let r = rig("bitrix24", "target = { dialogs = [\"chat1\"] }").await;
    let form = "application/x-www-form-urlencoded";
    let now = unix_ms() / 1000;
    let body = callbacks::bitrix_bot_message(BITRIX_TOKEN, "chat13", 501, "7", "Ada", "!help", now);
    assert_status(
        &r.post("/webhooks/bitrix24", form, body.as_bytes()).await,
        200,
        "genuine",
    );
    let delivered = r
        .sim
        .wait_for_deliveries(Some(SimProvider::Bitrix), 1, Duration::from_secs(10))
        .await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(
        delivered[0].target,
        Target::Chat { id: 13 },
        "answered in the dialog it was asked in, not the channel's chat1"
    );
    assert_status(
        &r.post("/webhooks/bitrix24", form, body.as_bytes()).await,
        409,
        "replay",
    );

    let forged = callbacks::bitrix_bot_message("guess", "chat13", 502, "7", "Eve", "!help", now);
    assert_status(
        &r.post("/webhooks/bitrix24", form, forged.as_bytes()).await,
        401,
        "wrong token",
    );
    let missing = body.replace("auth%5Bapplication_token%5D", "auth%5Bother%5D");
    assert_status(
        &r.post("/webhooks/bitrix24", form, missing.as_bytes()).await,
        401,
        "no token",
    );
    let stale =
        callbacks::bitrix_bot_message(BITRIX_TOKEN, "chat13", 503, "7", "Ada", "!help", now - 600);
    assert_status(
        &r.post("/webhooks/bitrix24", form, stale.as_bytes()).await,
        403,
        "stale",
    );
    let no_id =
        callbacks::bitrix_bot_message(BITRIX_TOKEN, "chat13", 504, "7", "Ada", "!help", now)
            .replace("data%5BPARAMS%5D%5BMESSAGE_ID%5D=504", "x=1");
    assert_status(
        &r.post("/webhooks/bitrix24", form, no_id.as_bytes()).await,
        400,
        "missing field",
    );
    assert_eq!(r.calls("commands"), 1);
    assert_eq!(r.calls("deaf"), 0);
    assert_eq!(r.calls("stranger"), 0);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tencent_group_callbacks_are_signed_timely_and_unique() {
    let r = rig("tencent", "").await;
    let sdkappid = r.sim.config().tencent.sdkappid;
    let command = "Group.CallbackAfterSendMsg";
    let json = "application/json";
    let body = callbacks::tencent_group_message("@TGS#lobby", "ada", 11, "!help").to_string();
    let now = unix_ms() / 1000;
    let url = |token: &str, time: u64| {
        callbacks::tencent_callback_url("/webhooks/tencent", sdkappid, command, token, time)
    };
    let ok = r
        .post(&url(TENCENT_TOKEN, now), json, body.as_bytes())
        .await;
    assert_status(&ok, 200, "genuine");
    assert!(ok.body.contains("\"ActionStatus\":\"OK\""), "{ok:?}");
    assert_eq!(
        r.calls("commands"),
        1,
        "the event reached the granted plugin"
    );
    assert_eq!(r.calls("deaf"), 0);
    assert_eq!(r.calls("stranger"), 0);
    // The answer goes into that one group with send_group_msg, not to
    // every audio-video group with the broadcast.
    let delivered = r
        .sim
        .wait_for_deliveries(Some(SimProvider::Tencent), 1, Duration::from_secs(10))
        .await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(
        delivered[0].target,
        Target::Group {
            id: "@TGS#lobby".into()
        }
    );
    assert_eq!(delivered[0].endpoint, "group_open_http_svc/send_group_msg");
    assert!(
        delivered[0].content.to_string().contains("!time"),
        "the !help answer: {:?}",
        delivered[0].content
    );
    assert_eq!(r.handled("commands"), 1);

    assert_status(
        &r.post(&url(TENCENT_TOKEN, now), json, body.as_bytes())
            .await,
        409,
        "replay",
    );
    let other_app = callbacks::tencent_callback_url(
        "/webhooks/tencent",
        sdkappid + 1,
        command,
        TENCENT_TOKEN,
        now,
    );
    let other = callbacks::tencent_group_message("@TGS#lobby", "eve", 13, "!help").to_string();
    assert_status(
        &r.post(&other_app, json, other.as_bytes()).await,
        401,
        "another app",
    );
    let other = callbacks::tencent_group_message("@TGS#lobby", "eve", 12, "!help").to_string();
    assert_status(
        &r.post(&url("guess", now), json, other.as_bytes()).await,
        401,
        "wrong token",
    );
    assert_status(
        &r.post(&url(TENCENT_TOKEN, now - 120), json, other.as_bytes())
            .await,
        403,
        "stale RequestTime",
    );
    assert_status(
        &r.post("/webhooks/tencent?SdkAppid=1", json, other.as_bytes())
            .await,
        401,
        "no Sign",
    );
    assert_status(
        &r.post(
            &url(TENCENT_TOKEN, now),
            json,
            b"{\"CallbackCommand\":\"Group.CallbackAfterSendMsg\"}",
        )
        .await,
        400,
        "missing GroupId",
    );
    assert_eq!(r.calls("commands"), 1);
    r.shutdown().await;
}

/// A one-to-one message to the bot (`C2C.CallbackAfterSendMsg`) reaches
/// the granted plugin in the conversation `c2c:{From_Account}`, and its
/// answer goes back to that one user with `openim/sendmsg`, as its
/// `To_Account`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tencent_one_to_one_callbacks_are_answered_with_sendmsg() {
    let r = rig("tencent", "").await;
    let sdkappid = r.sim.config().tencent.sdkappid;
    let url = callbacks::tencent_callback_url(
        "/webhooks/tencent",
        sdkappid,
        "C2C.CallbackAfterSendMsg",
        TENCENT_TOKEN,
        unix_ms() / 1000,
    );
    let body = callbacks::tencent_c2c_message("ada", "helpdesk", 31, "!help").to_string();
    let ok = r.post(&url, "application/json", body.as_bytes()).await;
    assert_status(&ok, 200, "genuine");
    assert_eq!(r.calls("commands"), 1);
    let delivered = r
        .sim
        .wait_for_deliveries(Some(SimProvider::Tencent), 1, Duration::from_secs(10))
        .await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].endpoint, "openim/sendmsg");
    assert_eq!(delivered[0].target, Target::Account { id: "ada".into() });
    assert!(
        delivered[0].content.to_string().contains("!time"),
        "the !help answer: {:?}",
        delivered[0].content
    );
    // The bot's own answer does not come back as a new callback.
    assert_eq!(
        delivered[0].content["ForbidCallbackControl"],
        serde_json::json!(["ForbidAfterSendMsgCallback"])
    );
    assert_eq!(r.handled("commands"), 1);
    assert_status(
        &r.post(&url, "application/json", body.as_bytes()).await,
        409,
        "replay",
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn easemob_message_callbacks_are_signed_timely_and_unique() {
    let r = rig("easemob", "target = \"chatrooms\"").await;
    let json = "application/json";
    let em = &r.sim.config().easemob;
    let appkey = format!("{}#{}", em.org, em.app);
    let appkey = appkey.as_str();
    let message = |secret: &str, id: &str, ts: u64| {
        callbacks::easemob_message(
            appkey,
            secret,
            ("chatroom", "ada", "room9"),
            id,
            "!help",
            ts,
        )
        .to_string()
    };
    let now = unix_ms();
    let ok = message(EASEMOB_SECRET, "m1", now);
    assert_status(
        &r.post("/webhooks/easemob", json, ok.as_bytes()).await,
        200,
        "genuine",
    );
    assert_eq!(r.calls("commands"), 1);
    assert_eq!(r.calls("deaf"), 0);
    assert_eq!(r.calls("stranger"), 0);
    // The answer goes into that one room with the chat-room message API,
    // not to every room with the broadcast.
    let delivered = r
        .sim
        .wait_for_deliveries(Some(SimProvider::Easemob), 1, Duration::from_secs(10))
        .await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].target, Target::ChatRoom { id: "room9".into() });
    assert_eq!(delivered[0].endpoint, "messages/chatrooms");
    assert!(
        delivered[0].content.to_string().contains("!time"),
        "the !help answer: {:?}",
        delivered[0].content
    );
    assert_status(
        &r.post("/webhooks/easemob", json, ok.as_bytes()).await,
        409,
        "replay",
    );
    let forged = message("guess", "m2", now);
    assert_status(
        &r.post("/webhooks/easemob", json, forged.as_bytes()).await,
        401,
        "wrong secret",
    );
    let other_app = callbacks::easemob_message(
        "other#app",
        EASEMOB_SECRET,
        ("chatroom", "ada", "room9"),
        "m5",
        "!help",
        now,
    )
    .to_string();
    assert_status(
        &r.post("/webhooks/easemob", json, other_app.as_bytes())
            .await,
        401,
        "another app's callback",
    );
    let stale = message(EASEMOB_SECRET, "m3", now - 300_000);
    assert_status(
        &r.post("/webhooks/easemob", json, stale.as_bytes()).await,
        403,
        "stale",
    );
    let mut unsigned: Value = serde_json::from_str(&message(EASEMOB_SECRET, "m4", now)).unwrap();
    unsigned.as_object_mut().unwrap().remove("security");
    let unsigned = unsigned.to_string();
    assert_status(
        &r.post("/webhooks/easemob", json, unsigned.as_bytes()).await,
        401,
        "no security",
    );
    assert_eq!(r.calls("commands"), 1);
    r.shutdown().await;
}

/// Easemob signs only `callId` and `timestamp`. A captured signature cannot
/// carry new bodies: calls are told apart by the signed callId, and an
/// unsigned `msg_id` or `appkey` that disagrees with it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn easemob_bodies_grafted_onto_a_captured_signature_are_refused() {
    use md5::{Digest, Md5};
    let r = rig("easemob", "target = \"chatrooms\"").await;
    let json = "application/json";
    let em = &r.sim.config().easemob;
    let appkey = format!("{}#{}", em.org, em.app);
    let now = unix_ms();
    let genuine = |msg_id: &str| {
        callbacks::easemob_message(
            &appkey,
            EASEMOB_SECRET,
            ("chatroom", "ada", "room9"),
            msg_id,
            "!help",
            now,
        )
    };
    // The current callId form names the message: `{appkey}_{msg_id}`.
    let mut grafted = genuine("966475585536657404");
    grafted["msg_id"] = "966475585536657405".into();
    grafted["to"] = "room666".into();
    grafted["from"] = "mallory".into();
    assert_status(
        &r.post("/webhooks/easemob", json, grafted.to_string().as_bytes())
            .await,
        401,
        "msg_id other than the signed callId's",
    );
    // The older form, `{appkey}_{uuid}`, ties nothing: the first body with
    // that signature is taken, any other one is a replay.
    let call_id = format!("{appkey}_1b2c3d4e-5f60-7182-93a4-b5c6d7e8f900");
    let mut first = genuine("m-old-1");
    first["callId"] = call_id.clone().into();
    first["security"] = hex::encode(Md5::digest(
        format!("{call_id}{EASEMOB_SECRET}{now}").as_bytes(),
    ))
    .into();
    assert_status(
        &r.post("/webhooks/easemob", json, first.to_string().as_bytes())
            .await,
        200,
        "the genuine call",
    );
    for (i, room) in ["room1", "room2", "room3"].into_iter().enumerate() {
        let mut injected = first.clone();
        injected["msg_id"] = format!("m-injected-{i}").into();
        injected["to"] = room.into();
        assert_status(
            &r.post("/webhooks/easemob", json, injected.to_string().as_bytes())
                .await,
            409,
            "a new msg_id under a used signature",
        );
    }
    assert_eq!(r.calls("commands"), 1);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_its_token_and_metrics_move() {
    let r = rig("bitrix24", "target = { dialogs = [\"chat1\"] }").await;
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut req = client.get(format!("{}{path}", r.admin));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    for path in ["/plugins", "/outbox", "/metrics"] {
        assert_eq!(
            get(path, None).await.unwrap().status(),
            401,
            "{path} without a token"
        );
        assert_eq!(
            get(path, Some("admin-token-0123456789abcdeX"))
                .await
                .unwrap()
                .status(),
            401,
            "{path} with a wrong token"
        );
    }
    let plugins: Value = get("/plugins", Some(ADMIN_TOKEN))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["commands", "deaf", "stranger"]);
    assert_eq!(
        plugins["plugins"][0]["grants"]["channels"],
        serde_json::json!(["lobby"])
    );

    // A custom event, the JSON of `botbox call --event`.
    let emit = |plugin: &str, body: &'static str| {
        client
            .post(format!("{}/plugins/{plugin}/events", r.admin))
            .bearer_auth(ADMIN_TOKEN)
            .body(body)
            .send()
    };
    let emitted = emit(
        "commands",
        r#"{"name": "chat", "payload": {"text": "!help"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(emitted.status(), 200);
    // The answer carries the receipt the plugin's broadcast got, with its
    // message's state and parts as the outbox has them.
    let emitted: Value = emitted.json().await.unwrap();
    assert_eq!(emitted["ok"], true, "{emitted}");
    let receipts = emitted["receipts"].as_array().expect("receipts");
    assert_eq!(receipts.len(), 1, "{emitted}");
    let receipt = &receipts[0];
    assert_eq!(receipt["channel"], "lobby", "{emitted}");
    assert!(receipt["eta_ms"].is_u64(), "{emitted}");
    assert!(
        ["queued", "sending", "delivered"].contains(&receipt["state"].as_str().unwrap()),
        "{emitted}"
    );
    assert!(receipt["parts"].is_array(), "{emitted}");
    assert_eq!(emitted["refused"], serde_json::json!([]), "{emitted}");
    let receipt_id = receipt["id"].as_str().expect("an id").to_owned();
    // A broadcast the plugin is refused is listed with the reason it heard,
    // beside the plugin's own failure.
    let refused = emit(
        "stranger",
        r#"{"name": "chat", "payload": {"text": "!help"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 422);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["receipts"], serde_json::json!([]), "{refused}");
    assert_eq!(refused["refused"][0]["channel"], "lobby", "{refused}");
    assert_eq!(
        refused["refused"][0]["error"]["kind"], "not-granted",
        "{refused}"
    );
    let missing = emit("ghost", r#"{"name": "x"}"#).await.unwrap();
    assert_eq!(missing.status(), 404);
    let not_granted = emit("deaf", r#"{"schedule": "tick"}"#).await.unwrap();
    assert_eq!(not_granted.status(), 403);
    let bad = emit("commands", "{nope").await.unwrap();
    assert_eq!(bad.status(), 400);

    r.sim
        .wait_for_deliveries(Some(SimProvider::Bitrix), 1, Duration::from_secs(10))
        .await;
    // The outbox, filtered, once the message has ended (the simulator
    // has it a moment before the host has read the answer).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let outbox: Value = loop {
        let outbox: Value = get("/outbox?plugin=commands", Some(ADMIN_TOKEN))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if outbox["messages"][0]["state"] == "delivered" {
            break outbox;
        }
        assert!(std::time::Instant::now() < deadline, "{outbox}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(outbox["messages"].as_array().unwrap().len(), 1, "{outbox}");
    assert_eq!(outbox["messages"][0]["channel"], "lobby");
    assert_eq!(outbox["messages"][0]["id"], receipt_id.as_str(), "{outbox}");
    // Delivery attempts apart from requests, and each part's own requests.
    let listed = &outbox["messages"][0];
    assert_eq!(
        (&listed["attempts"], &listed["requests"]),
        (&json!(1), &json!(1)),
        "{outbox}"
    );
    assert_eq!(listed["parts"][0]["requests"], 1, "{outbox}");
    let none: Value = get("/outbox?plugin=deaf", Some(ADMIN_TOKEN))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(none["messages"].as_array().unwrap().is_empty());
    assert_eq!(
        get("/outbox?state=bogus", Some(ADMIN_TOKEN))
            .await
            .unwrap()
            .status(),
        400
    );

    // A forged webhook call and a handled one, then the counters.
    let form = "application/x-www-form-urlencoded";
    let forged =
        callbacks::bitrix_bot_message("guess", "chat1", 1, "7", "Eve", "hi", unix_ms() / 1000);
    assert_status(
        &r.post("/webhooks/bitrix24", form, forged.as_bytes()).await,
        401,
        "forged",
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = get("/metrics", Some(ADMIN_TOKEN))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains(
            "botbox_broadcasts_total{provider=\"bitrix24\",outcome=\"delivered\",plugin=\"commands\"} 1",
        )
            || tokio::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for line in [
        "botbox_webhook_calls_total{provider=\"bitrix24\",outcome=\"forged\"} 1",
        "botbox_events_handled_total{plugin=\"commands\"} 1",
        "botbox_handle_duration_ms_count{plugin=\"commands\"} 1",
        "botbox_broadcasts_total{provider=\"bitrix24\",outcome=\"delivered\",plugin=\"commands\"} 1",
        "# TYPE botbox_handle_duration_ms histogram",
        "# TYPE botbox_throttle_wait_ms histogram",
        "botbox_throttle_wait_ms_count{endpoint=\"bitrix24/rest\",plugin=\"commands\"} 1",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(!text.contains(ADMIN_TOKEN) && !text.contains(BITRIX_TOKEN));
    r.shutdown().await;
}

#[test]
fn listener_sections_are_validated_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[webhooks]
listen = "127.0.0.1:8080"
[admin]
listen = "somewhere"
token = "inline-secret-value"
[providers.out]
kind = "console"
inbound = { secret = { env = "X" } }
[channels.lobby]
provider = "out"
"#;
    let path = dir.path().join("botbox.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(Path::new(&path)).unwrap();
    let Err(err) = App::build(config) else {
        panic!("a bad [admin] and a console inbound section must be refused");
    };
    let err = err.to_string();
    for key in ["admin.listen", "admin.token", "providers.out.inbound"] {
        assert!(err.contains(key), "missing {key} in {err}");
    }
    assert!(!err.contains("inline-secret-value"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_register_creates_the_bbb_hook_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimConfig::fast(1.0)).await.unwrap();
    let providers = support::sims::sim_providers(&sim, dir.path());
    let secrets = dir.path().join("secrets");
    let bbb_secret = toml::Value::String(secrets.join("bbb-secret").display().to_string());
    let text = format!(
        "[webhooks]\nlisten = \"127.0.0.1:8080\"\n\n{}\n[providers.bbb.inbound]\nsecret = {{ file = {bbb_secret} }}\nurl = \"https://bot.example.edu/webhooks/bbb\"\n",
        providers
    );
    let config = dir.path().join("botbox.toml");
    std::fs::write(&config, text).unwrap();
    let run = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_botbox"))
            .args(["webhooks", "register", "--config"])
            .arg(&config)
            .output()
    };
    let first = run().await.unwrap();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout.contains("bbb: registered https://bot.example.edu/webhooks/bbb"),
        "{stdout}"
    );
    let hooks = sim.bbb_hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        hooks[0].callback_url,
        "https://bot.example.edu/webhooks/bbb"
    );
    assert_eq!(hooks[0].meeting_id, None);
    let again = run().await.unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(stdout.contains("already registered"), "{stdout}");
    assert_eq!(sim.bbb_hooks().len(), 1);
    let everything = format!("{stdout}{}", String::from_utf8_lossy(&again.stderr));
    assert!(
        !everything.contains(&sim.config().bbb.secret),
        "{everything}"
    );
    sim.shutdown().await;
}

/// `botbox run --demo`: the BBB simulator's chatter posts signed chat
/// events to the registered hook, and the `commands` bot's answer is
/// delivered into that meeting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_closes_the_loop_from_chat_to_answer() {
    example_plugin("commands");
    // The demo config names `target/plugins/…` relative to where botbox
    // runs: a scratch folder whose `target/plugins` is the built one keeps
    // the demo's state out of the repository and works whatever the
    // target dir is.
    let scratch = tempfile::tempdir().unwrap();
    std::fs::create_dir(scratch.path().join("target")).unwrap();
    std::os::unix::fs::symlink(
        support::target_dir().join("plugins"),
        scratch.path().join("target/plugins"),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_botbox"))
        .args(["run", "--demo", "--no-reload", "--exit-after", "12"])
        .current_dir(scratch.path())
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("<Ada (sim)> !help"), "{text}");
    assert!(
        text.contains("meeting=room-1 <botbox> I understand: !help"),
        "the answer reaches room-1:\n{text}"
    );
    assert!(
        !text.contains("meeting=room-2 <botbox> I understand"),
        "{text}"
    );
}

/// `botbox run` starts the admin listener its config asks for, and stops
/// it with the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn botbox_run_serves_the_admin_api_from_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
    let commands = toml::Value::String(example_plugin("commands").display().to_string());
    let text = format!(
        r#"
[runtime]
reload = false
[admin]
listen = "127.0.0.1:{port}"
token = {{ file = "admin-token" }}
[providers.out]
kind = "console"
[channels.lobby]
provider = "out"
[plugins.commands]
path = {commands}
channels = ["lobby"]
"#
    );
    std::fs::write(dir.path().join("botbox.toml"), text).unwrap();
    let mut host = tokio::process::Command::new(env!("CARGO_BIN_EXE_botbox"))
        .args(["run", "--config", "botbox.toml", "--exit-after", "20"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let plugins = loop {
        let reply = client
            .get(format!("{url}/plugins"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await;
        if let Ok(r) = reply {
            break r.json::<Value>().await.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the admin API never came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(plugins["plugins"][0]["name"], "commands");
    assert_eq!(plugins["plugins"][0]["state"], "loaded");
    let emitted = client
        .post(format!("{url}/plugins/commands/events"))
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"name": "chat", "payload": {"text": "!roll d6"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(emitted.status(), 200);
    let metrics = client
        .get(format!("{url}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("botbox_events_handled_total{plugin=\"commands\"} 1"),
        "{metrics}"
    );
    let unauthorized = client.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    host.kill().await.unwrap();
}

/// A config reload rebinds the webhook listener with the new secrets and
/// keeps the replay cache: a call handled before the reload is still a
/// replay after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_reload_swaps_secrets_and_keeps_the_replay_cache() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(dir.path().join("code"), "webhookcode123").unwrap();
    std::fs::write(dir.path().join("old-token"), "old-application-token").unwrap();
    std::fs::write(dir.path().join("new-token"), "new-application-token").unwrap();
    let config = |token_file: &str| {
        format!(
            r#"
[runtime]
reload = true
[webhooks]
listen = "127.0.0.1:{port}"
[providers.portal]
kind = "bitrix24"
url = "http://127.0.0.1:9"
webhook = {{ user_id = 1, code = {{ file = "code" }} }}
[providers.portal.inbound]
secret = {{ file = "{token_file}" }}
"#
        )
    };
    let path = dir.path().join("botbox.toml");
    std::fs::write(&path, config("old-token")).unwrap();
    let mut host = tokio::process::Command::new(env!("CARGO_BIN_EXE_botbox"))
        .args(["run", "--config", "botbox.toml", "--exit-after", "30"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/webhooks/portal");
    let form = "application/x-www-form-urlencoded";
    let message = |token: &str, id: u64| {
        callbacks::bitrix_bot_message(token, "chat1", id, "7", "Ada", "hi", unix_ms() / 1000)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let first = loop {
        if let Ok(reply) = post(&url, form, message("old-application-token", 1).as_bytes()).await {
            break reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener never came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_status(&first, 200, "before the reload");

    std::fs::write(&path, config("new-token")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let reply = post(&url, form, message("new-application-token", 2).as_bytes()).await;
        if matches!(&reply, Ok(r) if r.status == 200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new token was never accepted: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old = post(&url, form, message("old-application-token", 3).as_bytes())
        .await
        .unwrap();
    assert_status(&old, 401, "the old token after the reload");
    let replay = post(&url, form, message("new-application-token", 1).as_bytes())
        .await
        .unwrap();
    assert_status(&replay, 409, "message 1 was handled before the reload");
    host.kill().await.unwrap();
}

/// Opens a connection to `base` (`http://host:port`) and sends `head`,
/// then nothing more.
async fn stall(base: &str, head: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Reads what the server sends until it closes the connection, or `None`
/// when it has not closed it within `within`.
async fn until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut answer)).await {
        Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(_) => None,
    }
}

/// A client that sends half its headers, or headers and half the body,
/// and then stalls is cut off after `read_timeout_s`; the listener goes on
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_is_cut_after_the_read_timeout() {
    let r = rig_with("easemob", "target = \"chatrooms\"", "read_timeout_s = 1").await;
    let mut half_body = stall(
        &r.hooks,
        "POST /webhooks/easemob HTTP/1.1\r\nHost: bot\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"callId\":",
    )
    .await;
    let mut half_head = stall(&r.hooks, "POST /webhooks/easemob HTTP/1.1\r\nHost: bot\r\n").await;
    let answer = until_closed(&mut half_body, Duration::from_secs(20))
        .await
        .expect("a half-sent body is cut off");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    until_closed(&mut half_head, Duration::from_secs(20))
        .await
        .expect("half-sent headers are cut off");
    assert_eq!(
        r.app.shared.metrics.webhook_count("easemob", "timeout"),
        1,
        "the cut body is counted"
    );
    // And the listener still serves.
    let em = &r.sim.config().easemob;
    let ok = callbacks::easemob_message(
        &format!("{}#{}", em.org, em.app),
        EASEMOB_SECRET,
        ("chatroom", "ada", "room9"),
        "m1",
        "!help",
        unix_ms(),
    )
    .to_string();
    assert_status(
        &r.post("/webhooks/easemob", "application/json", ok.as_bytes())
            .await,
        200,
        "a call after the stalled ones",
    );
    r.shutdown().await;
}

/// Past `max_connections`, a connection is answered 503 and closed at
/// once; when one of the open ones goes, calls are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused() {
    let r = rig_with(
        "easemob",
        "target = \"chatrooms\"",
        "read_timeout_s = 60\nmax_connections = 2",
    )
    .await;
    let head = "POST /webhooks/easemob HTTP/1.1\r\nHost: bot\r\n";
    let first = stall(&r.hooks, head).await;
    let _second = stall(&r.hooks, head).await;
    let probe = || r.post("/webhooks/nobody", "text/plain", b"x");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = probe().await;
        if reply.status == 503 {
            break;
        }
        assert_eq!(reply.status, 404, "{reply:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "a third connection was never refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = probe().await;
        if reply.status == 404 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "calls were not served again after a connection closed: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.shutdown().await;
}

/// `botbox run` with a Bitrix24 webhook listener and an admin API,
/// its stderr in `log`.
struct RunningHost {
    _dir: tempfile::TempDir,
    child: tokio::process::Child,
    hooks: String,
    admin: String,
    log: std::path::PathBuf,
}

async fn run_host(webhooks_extra: &str) -> RunningHost {
    let dir = tempfile::tempdir().unwrap();
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (hooks_port, admin_port) = (port(), port());
    std::fs::write(dir.path().join("code"), "webhookcode123").unwrap();
    std::fs::write(dir.path().join("token"), BITRIX_TOKEN).unwrap();
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
    let text = format!(
        r#"
[runtime]
reload = true
[webhooks]
listen = "127.0.0.1:{hooks_port}"
{webhooks_extra}
[admin]
listen = "127.0.0.1:{admin_port}"
token = {{ file = "admin-token" }}
[providers.portal]
kind = "bitrix24"
url = "http://127.0.0.1:9"
webhook = {{ user_id = 1, code = {{ file = "code" }} }}
[providers.portal.inbound]
secret = {{ file = "token" }}
"#
    );
    std::fs::write(dir.path().join("botbox.toml"), text).unwrap();
    let log = dir.path().join("stderr.log");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_botbox"))
        .args(["run", "--config", "botbox.toml", "--exit-after", "120"])
        .current_dir(dir.path())
        .env_remove("NO_COLOR")
        .env("BOTBOX_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let host = RunningHost {
        _dir: dir,
        child,
        hooks: format!("http://127.0.0.1:{hooks_port}"),
        admin: format!("http://127.0.0.1:{admin_port}"),
        log,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let probe = post(
            &format!("{}/webhooks/nobody", host.hooks),
            "text/plain",
            b"x",
        )
        .await;
        if probe.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener never came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    host
}

impl RunningHost {
    /// Sends SIGINT (Ctrl-C) and waits for the exit, at most `within`.
    async fn interrupt(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().unwrap().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .map(Result::unwrap)
    }
}

/// A slowloris client holding a half-sent body does not keep `botbox run`
/// from stopping after Ctrl-C: the listener closes what is still open at
/// its shutdown deadline (5 s), long before the read timeout (60 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn botbox_run_stops_within_the_deadline_while_a_slowloris_holds_a_connection() {
    let mut host = run_host("read_timeout_s = 60").await;
    let _slow = stall(
        &host.hooks,
        "POST /webhooks/portal HTTP/1.1\r\nHost: bot\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\nevent=ONIMBOT",
    )
    .await;
    let _slower = stall(&host.hooks, "POST /webhooks/portal HTTP/1.1\r\n").await;
    // Let the listener take both connections and start on the request.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let interrupted = std::time::Instant::now();
    let exited = host.interrupt(Duration::from_secs(20)).await;
    println!(
        "botbox run stopped {} ms after SIGINT with a slowloris connection open",
        interrupted.elapsed().as_millis()
    );
    let log = std::fs::read_to_string(&host.log).unwrap();
    assert!(
        exited.is_some(),
        "botbox run was still running 20 s after SIGINT:\n{log}"
    );
    assert!(log.contains("stopped"), "{log}");
}

/// 2,000 forged calls: `/metrics` counts every one, the log gets a few
/// lines and summaries, a bounded number of bytes in all, and no colour
/// codes when stderr is not a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_calls_is_counted_exactly_and_logged_in_summary() {
    let mut host = run_host("").await;
    let url = format!("{}/webhooks/portal", host.hooks);
    let form = "application/x-www-form-urlencoded";
    let mut calls = tokio::task::JoinSet::new();
    for worker in 0..4u64 {
        let url = url.clone();
        calls.spawn(async move {
            for i in 0..500u64 {
                let forged = callbacks::bitrix_bot_message(
                    "forged-token",
                    "chat1",
                    worker * 1000 + i,
                    "7",
                    "Mallory",
                    "hi",
                    unix_ms() / 1000,
                );
                let reply = post(&url, form, forged.as_bytes()).await.unwrap();
                assert_eq!(reply.status, 401, "{reply:?}");
            }
        });
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap();
    }
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", host.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("botbox_webhook_calls_total{provider=\"portal\",outcome=\"forged\"} 2000"),
        "{metrics}"
    );
    assert!(host.interrupt(Duration::from_secs(20)).await.is_some());
    let log = std::fs::read(&host.log).unwrap();
    let text = String::from_utf8_lossy(&log);
    let refused_lines = text.matches("webhook refused").count();
    println!(
        "2000 forged calls: {} bytes of log, {refused_lines} refusal lines",
        log.len()
    );
    assert!(
        log.len() < 16_000,
        "{} bytes of log for 2000 refusals:\n{text}",
        log.len()
    );
    assert!(refused_lines <= 50, "{text}");
    assert!(text.contains("not logged one by one"), "{text}");
    assert!(
        !log.contains(&0x1b),
        "colour codes in a log that is not a terminal:\n{text}"
    );
}

/// `GET /endpoints` shows each endpoint's throttle, the queue per plugin
/// and the provider's last refusal while a message waits for its retry,
/// and the same figures as gauges in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_show_the_throttle_the_queue_and_the_last_refusal() {
    let r = rig("bitrix24", "target = { dialogs = [\"chat1\"] }").await;
    let client = reqwest::Client::new();
    let get = |path: &str| {
        client
            .get(format!("{}{path}", r.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    assert_eq!(
        client
            .get(format!("{}/endpoints", r.admin))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "/endpoints without the token"
    );
    // Nothing sent yet: the bucket is empty, the slot is now, no queue.
    let idle: Value = get("/endpoints").await.unwrap().json().await.unwrap();
    let bitrix = |all: &Value| -> Value {
        all["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "bitrix24")
            .cloned()
            .unwrap_or_else(|| panic!("no bitrix24 endpoint: {all}"))
    };
    let endpoint = bitrix(&idle);
    let name = endpoint["endpoint"].as_str().unwrap().to_owned();
    assert_eq!(endpoint["limits"][0]["type"], "bucket", "{idle}");
    assert_eq!(endpoint["limits"][0]["burst"], 50, "{idle}");
    assert_eq!(endpoint["limits"][0]["level"], 0.0, "{idle}");
    assert_eq!(endpoint["next_slot_ms"], idle["now_ms"], "{idle}");
    assert_eq!(endpoint["queue"], serde_json::json!([]), "{idle}");
    assert_eq!(endpoint["last_refusal"], Value::Null, "{idle}");

    // The portal answers "too many requests" to every try: the message
    // waits for its retry, and the endpoint shows why.
    r.sim.inject(SimProvider::Bitrix, Fault::RateLimited, 1000);
    let emitted = client
        .post(format!("{}/plugins/commands/events", r.admin))
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"name": "chat", "payload": {"text": "!help"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(emitted.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let now: Value = get("/endpoints").await.unwrap().json().await.unwrap();
        if bitrix(&now)["last_refusal"].is_object() {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refusal shown: {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let endpoint = bitrix(&refused);
    assert_eq!(endpoint["last_refusal"]["outcome"], "too-fast", "{refused}");
    assert!(
        endpoint["last_refusal"]["at_ms"].as_u64().unwrap() <= refused["now_ms"].as_u64().unwrap(),
        "{refused}"
    );
    assert_eq!(
        endpoint["queue"],
        serde_json::json!([{"plugin": "commands", "messages": 1, "requests": 1}]),
        "{refused}"
    );
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    for line in [
        format!("botbox_queue_messages{{endpoint=\"{name}\",plugin=\"commands\"}} 1"),
        format!("botbox_throttle_limit{{endpoint=\"{name}\",limit=\"bucket 2/s burst 50\"}} 50"),
        format!(
            "botbox_provider_refusal_timestamp_seconds{{endpoint=\"{name}\",outcome=\"too-fast\"}} "
        ),
        format!("botbox_throttle_next_slot_seconds{{endpoint=\"{name}\"}} "),
    ] {
        assert!(metrics.contains(&line), "no `{line}` in:\n{metrics}");
    }

    // The portal takes requests again: the retry delivers, the queue empties.
    r.sim.clear_faults();
    r.sim
        .wait_for_deliveries(Some(SimProvider::Bitrix), 1, Duration::from_secs(20))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now: Value = get("/endpoints").await.unwrap().json().await.unwrap();
        if bitrix(&now)["queue"] == serde_json::json!([]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue stays: {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.shutdown().await;
}
