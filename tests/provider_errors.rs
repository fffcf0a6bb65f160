//! Providers' error codes, end to end: a plugin's message, botbox's real
//! HTTP client, the simulator answering a documented code (by its own
//! checks, or injected with `Fault::ErrorAnswer` where its logic never
//! reaches the code), and the outcome the outbox records: rejected for good
//! with the code and words, or retried and delivered.
//!
//! The table-driven mapping of every code is in each provider's
//! `tests.rs`; here a few representative codes per provider cross the wire.
//! The harness is `tests/support/` (see `tests/providers_e2e.rs`).

mod support;

use botbox::delivery::store::MessageState;
use botbox_sim::{Fault, SimConfig, SimProvider, Target, endpoints};
use serde_json::json;
use support::host::{Host, assert_error_has, chat, deliveries_with_text};
use support::sender::text_to;
use support::sims::Setup;

/// Retries and throttles run fast here: only outcomes are checked.
const SCALE: f64 = 50.0;

// ---------------------------------------------------------------------------
// Tencent Cloud Chat

/// A reply to a one-to-one conversation (`c2c:ada`) goes to that user with
/// `openim/sendmsg` on its own endpoint (`tc/sendmsg`), with the channel's
/// sender as `From_Account`; its documented codes end as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tencent_one_to_one_replies_and_their_codes() {
    let setup = Setup::start(SimConfig::fast(SCALE), SCALE).await;
    let providers = setup.tencent("tc", &setup.cfg().tencent.secret_key.clone());
    let channels = "[channels.tc]\nprovider = \"tc\"\nsender = \"helpdesk\"\n";
    let reply =
        |text: &str| json!({ "channel": "tc", "content": { "text": text }, "reply-to": "c2c:ada" });
    let steps = vec![
        vec![reply("one to one")],
        vec![reply("to a user who blocked the bot")],
        vec![reply("after 20005")],
        vec![reply("after 60007")],
    ];
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();
    let ada = chat("tc", "c2c:ada");

    let sent = host.step_on(0, &ada).await;
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.endpoint, "tc/sendmsg");
    let got = deliveries_with_text(sim, SimProvider::Tencent, "one to one");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].endpoint, endpoints::TENCENT_SEND_C2C);
    assert_eq!(got[0].target, Target::Account { id: "ada".into() });
    assert_eq!(got[0].sender.as_deref(), Some("helpdesk"));
    // The MsgKey is the delivery's id.
    assert_eq!(fin.provider_ids, vec![got[0].provider_id.clone()]);

    // 20007: the recipient blocklisted the sender. Refused for good, after
    // one attempt, with the code and what it means.
    sim.inject_endpoint(
        SimProvider::Tencent,
        endpoints::TENCENT_SEND_C2C,
        Fault::error_answer_with("20007", 200, "blocked by the peer"),
        1,
    );
    let sent = host.step_on(1, &ada).await;
    let (rec, fin) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Failed, "{rec:?}");
    assert_eq!(rec.attempts, 1);
    assert_error_has(&rec, "20007: ");
    assert_error_has(&rec, "blocklisted");
    assert_error_has(&rec, "blocked by the peer");
    assert!(fin.detail.is_some_and(|d| d.contains("20007")));

    // 20005 (internal server error) and 60007 (the REST API's frequency
    // limit): tried again, then delivered.
    for (n, code, text) in [(2, "20005", "after 20005"), (3, "60007", "after 60007")] {
        sim.inject_endpoint(
            SimProvider::Tencent,
            endpoints::TENCENT_SEND_C2C,
            Fault::error_answer(code),
            1,
        );
        let sent = host.step_on(n, &ada).await;
        let (rec, _) = host.done(&sent[0].id()).await;
        assert_eq!(rec.state, MessageState::Delivered, "{code}: {rec:?}");
        assert_eq!(rec.attempts, 2, "{code}: {rec:?}");
        assert_error_has(&rec, code);
        assert_eq!(
            deliveries_with_text(sim, SimProvider::Tencent, text).len(),
            1
        );
    }
    host.audit().await;
}

// ---------------------------------------------------------------------------
// BigBlueButton

/// BigBlueButton 3.x's constraint keys for `sendChatMessage` (`sizeError`,
/// `notFound`): refused for good after one attempt, the key as the code,
/// what it means and the server's words in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigbluebutton_message_keys() {
    let setup = Setup::start(SimConfig::fast(SCALE), SCALE).await;
    let providers = setup.bbb("bbb", &setup.cfg().bbb.secret.clone());
    let channels = "[channels.room]\nprovider = \"bbb\"\ntarget = { meetings = [\"room-1\"] }\n";
    let steps = vec![
        vec![json!({ "channel": "room", "content": { "text": "too long, says the server" } })],
        vec![json!({ "channel": "room", "content": { "text": "to a meeting that went" } })],
    ];
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();
    for (n, key, words) in [(0, "sizeError", "size limits"), (1, "notFound", "ended")] {
        sim.inject_endpoint(
            SimProvider::Bbb,
            endpoints::BBB_SEND_CHAT_MESSAGE,
            Fault::error_answer_with(key, 200, "the server's own words"),
            1,
        );
        let sent = host.step(n).await;
        let (rec, fin) = host.done(&sent[0].id()).await;
        assert_eq!(rec.state, MessageState::Failed, "{key}: {rec:?}");
        assert_eq!(rec.attempts, 1, "{key}: {rec:?}");
        assert_error_has(&rec, &format!("{key}: "));
        assert_error_has(&rec, words);
        assert_error_has(&rec, "the server's own words");
        assert!(fin.detail.is_some_and(|d| d.contains(key)));
    }
    assert!(sim.deliveries_to(SimProvider::Bbb).is_empty());
    host.audit().await;
}

// ---------------------------------------------------------------------------
// Easemob

/// Easemob's common codes: a 404 (no such room) and a 500 that Easemob
/// documents as the request's own fault are refused for good; an ordinary
/// 500 is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn easemob_common_codes() {
    let setup = Setup::start(SimConfig::fast(SCALE), SCALE).await;
    let providers = setup.easemob("em", &setup.cfg().easemob.client_secret.clone());
    let channels = "[channels.em-rooms]\nprovider = \"em\"\ntarget = \"chatrooms\"\n";
    let steps = vec![
        vec![text_to("em-rooms", "no such room")],
        vec![text_to("em-rooms", "a wrong url")],
        vec![text_to("em-rooms", "after a 500")],
    ];
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();
    for (n, status, code, words) in [
        (0, 404, "service_resource_not_found", "does not exist"),
        (1, 500, "web_application", "check url"),
    ] {
        sim.inject_endpoint(
            SimProvider::Easemob,
            endpoints::EASEMOB_CHATROOMS,
            Fault::error_answer_with(code, status, "Easemob's own words"),
            1,
        );
        let sent = host.step(n).await;
        let (rec, _) = host.done(&sent[0].id()).await;
        assert_eq!(rec.state, MessageState::Failed, "{code}: {rec:?}");
        assert_eq!(rec.attempts, 1, "{code}: {rec:?}");
        assert_error_has(&rec, &format!("{code}: "));
        assert_error_has(&rec, words);
        assert_error_has(&rec, "Easemob's own words");
    }
    sim.inject_endpoint(
        SimProvider::Easemob,
        endpoints::EASEMOB_CHATROOMS,
        Fault::error_answer_with("internal_server_error", 500, "busy"),
        1,
    );
    let sent = host.step(2).await;
    let (rec, _) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.attempts, 2, "{rec:?}");
    assert_eq!(
        deliveries_with_text(sim, SimProvider::Easemob, "after a 500").len(),
        1
    );
    host.audit().await;
}

// ---------------------------------------------------------------------------
// Bitrix24

/// Bitrix24's system errors: `ERROR_METHOD_NOT_FOUND` is refused for good;
/// `OVERLOAD_LIMIT` waits (a minute, fast here) and is tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_system_errors() {
    let setup = Setup::start(SimConfig::fast(SCALE), SCALE).await;
    let providers = setup.bitrix_webhook("b24", &setup.cfg().bitrix.webhook_code.clone());
    let channels = "[channels.bx]\nprovider = \"b24\"\ntarget = { dialogs = [\"chat13\"] }\n";
    let steps = vec![
        vec![text_to("bx", "no such method")],
        vec![text_to("bx", "after an overload")],
    ];
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();
    sim.inject_endpoint(
        SimProvider::Bitrix,
        endpoints::BITRIX_MESSAGE_ADD,
        Fault::error_answer_with("ERROR_METHOD_NOT_FOUND", 404, "Method not found!"),
        1,
    );
    let sent = host.step(0).await;
    let (rec, _) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Failed, "{rec:?}");
    assert_eq!(rec.attempts, 1, "{rec:?}");
    assert_error_has(&rec, "ERROR_METHOD_NOT_FOUND: ");
    assert_error_has(&rec, "no such method");
    assert_error_has(&rec, "Method not found!");

    sim.inject_endpoint(
        SimProvider::Bitrix,
        endpoints::BITRIX_MESSAGE_ADD,
        Fault::error_answer_with(
            "OVERLOAD_LIMIT",
            503,
            "REST API is blocked due to overload.",
        ),
        1,
    );
    let sent = host.step(1).await;
    let (rec, _) = host.done(&sent[0].id()).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(rec.attempts, 2, "{rec:?}");
    assert_error_has(&rec, "OVERLOAD_LIMIT");
    assert_eq!(
        deliveries_with_text(sim, SimProvider::Bitrix, "after an overload").len(),
        1
    );
    host.audit().await;
}
