//! BigBlueButton: checksum verification exactly as bbb-web does it, the
//! sendChatMessage error keys, meetings and hooks.

mod common;

use botbox_sim::sign::{bbb_checksum, bbb_query, bbb_url};
use botbox_sim::{ChecksumAlg, SimConfig, SimMeeting, SimProvider, Target};
use common::{get, start, xml_tag};

fn secret(sim: &botbox_sim::Sim) -> String {
    sim.config().bbb.secret.clone()
}

#[tokio::test]
async fn signed_chat_message_is_delivered_with_every_algorithm() {
    let sim = start(SimConfig::demo()).await;
    for (i, alg) in ChecksumAlg::ALL.into_iter().enumerate() {
        let text = format!("Welcome #{i}! 100% <ok> & ünïcode");
        let url = bbb_url(
            &sim.bbb_url(),
            "sendChatMessage",
            &[
                ("meetingID", "room-1"),
                ("message", &text),
                ("userName", "Bot"),
            ],
            &secret(&sim),
            alg,
        );
        let r = get(&url).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            xml_tag(&r.text, "returncode"),
            "SUCCESS",
            "{alg:?}: {}",
            r.text
        );
        assert_eq!(xml_tag(&r.text, "messageKey"), "");
    }
    let d = sim.deliveries_to(SimProvider::Bbb);
    assert_eq!(d.len(), 4);
    assert_eq!(
        d[0].target,
        Target::Meeting {
            id: "room-1".into()
        }
    );
    assert_eq!(d[0].sender.as_deref(), Some("Bot"));
    assert_eq!(
        d[3].text().as_deref(),
        Some("Welcome #3! 100% <ok> & ünïcode")
    );
    assert!(sim.violations().is_empty());
}

#[tokio::test]
async fn plus_is_a_space_and_the_default_sender_is_system() {
    let sim = start(SimConfig::demo()).await;
    // Hand-encoded: `+` and `%20` both decode to a space, as in Java's URLDecoder.
    let query = "meetingID=room-2&message=Hello+big%20world";
    let cs = bbb_checksum(ChecksumAlg::Sha256, "sendChatMessage", query, &secret(&sim));
    let r = get(&format!(
        "{}/sendChatMessage?{query}&checksum={cs}",
        sim.bbb_url()
    ))
    .await;
    assert_eq!(xml_tag(&r.text, "returncode"), "SUCCESS", "{}", r.text);
    let d = &sim.deliveries()[0];
    assert_eq!(d.text().as_deref(), Some("Hello big world"));
    assert_eq!(d.sender.as_deref(), Some("System"));
}

#[tokio::test]
async fn checksum_is_over_the_raw_query_wherever_it_sits() {
    let sim = start(SimConfig::demo()).await;
    let query = "meetingID=room-1&message=first";
    let cs = bbb_checksum(ChecksumAlg::Sha1, "sendChatMessage", query, &secret(&sim));
    let first = get(&format!(
        "{}/sendChatMessage?checksum={cs}&{query}",
        sim.bbb_url()
    ))
    .await;
    assert_eq!(
        xml_tag(&first.text, "returncode"),
        "SUCCESS",
        "{}",
        first.text
    );
    // getMeetings without parameters: the checksum is the whole query.
    let cs = bbb_checksum(ChecksumAlg::Sha1, "getMeetings", "", &secret(&sim));
    let r = get(&format!("{}/getMeetings?checksum={cs}", sim.bbb_url())).await;
    assert_eq!(xml_tag(&r.text, "returncode"), "SUCCESS", "{}", r.text);
}

#[tokio::test]
async fn every_forgery_is_a_checksum_error() {
    let mut cfg = SimConfig::demo();
    cfg.bbb.supported = vec![ChecksumAlg::Sha256, ChecksumAlg::Sha512];
    let sim = start(cfg).await;
    let base = sim.bbb_url();
    let s = secret(&sim);
    let query = bbb_query(&[("meetingID", "room-1"), ("message", "hi there")]);
    let good = bbb_checksum(ChecksumAlg::Sha256, "sendChatMessage", &query, &s);

    let forgeries = [
        // wrong secret
        format!(
            "{base}/sendChatMessage?{query}&checksum={}",
            bbb_checksum(ChecksumAlg::Sha256, "sendChatMessage", &query, "guess")
        ),
        // signed for another call
        format!(
            "{base}/sendChatMessage?{query}&checksum={}",
            bbb_checksum(ChecksumAlg::Sha256, "getMeetings", &query, &s)
        ),
        // a tampered query under the original checksum
        format!(
            "{base}/sendChatMessage?{}&checksum={good}",
            query.replace("hi", "hacked")
        ),
        // signed over the decoded text but sent encoded
        format!(
            "{base}/sendChatMessage?{query}&checksum={}",
            bbb_checksum(
                ChecksumAlg::Sha256,
                "sendChatMessage",
                "meetingID=room-1&message=hi there",
                &s
            )
        ),
        // upper-case hex: Java's equals is case-sensitive
        format!(
            "{base}/sendChatMessage?{query}&checksum={}",
            good.to_uppercase()
        ),
        // an algorithm the server does not support (SHA-1)
        format!(
            "{base}/sendChatMessage?{query}&checksum={}",
            bbb_checksum(ChecksumAlg::Sha1, "sendChatMessage", &query, &s)
        ),
        // a length that is no algorithm
        format!("{base}/sendChatMessage?{query}&checksum={}", &good[..50]),
        // no checksum at all
        format!("{base}/sendChatMessage?{query}"),
    ];
    for url in &forgeries {
        let r = get(url).await;
        assert_eq!(r.status, 200);
        assert_eq!(xml_tag(&r.text, "returncode"), "FAILED", "{url}");
        assert_eq!(xml_tag(&r.text, "messageKey"), "checksumError", "{url}");
    }
    assert!(sim.deliveries().is_empty());
    // …and the genuine one still works.
    let r = get(&format!("{base}/sendChatMessage?{query}&checksum={good}")).await;
    assert_eq!(xml_tag(&r.text, "returncode"), "SUCCESS");
}

#[tokio::test]
async fn send_chat_message_error_keys() {
    let sim = start(SimConfig::demo()).await;
    let s = secret(&sim);
    let call = |params: Vec<(&'static str, String)>| {
        let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        bbb_url(
            &sim.bbb_url(),
            "sendChatMessage",
            &p,
            &s,
            ChecksumAlg::Sha256,
        )
    };
    let key = |url: String| async move { xml_tag(&get(&url).await.text, "messageKey") };

    assert_eq!(
        key(call(vec![("message", "hi".into())])).await,
        "missingParamMeetingID"
    );
    assert_eq!(
        key(call(vec![
            ("meetingID", "".into()),
            ("message", "hi".into())
        ]))
        .await,
        "missingParamMeetingID"
    );
    assert_eq!(
        key(call(vec![
            ("meetingID", "nope".into()),
            ("message", "hi".into())
        ]))
        .await,
        "meetingNotFound"
    );
    assert_eq!(
        key(call(vec![
            ("meetingID", "room-idle".into()),
            ("message", "hi".into())
        ]))
        .await,
        "meetingNotFound",
        "a meeting that is not running"
    );
    assert_eq!(
        key(call(vec![("meetingID", "room-1".into())])).await,
        "validationError"
    );
    assert_eq!(
        key(call(vec![
            ("meetingID", "room-1".into()),
            ("message", "".into())
        ]))
        .await,
        "validationError"
    );
    assert_eq!(
        key(call(vec![
            ("meetingID", "room-1".into()),
            ("message", "x".repeat(501))
        ]))
        .await,
        "validationError"
    );
    assert_eq!(
        key(call(vec![
            ("meetingID", "room-1".into()),
            ("message", "hi".into()),
            ("userName", "u".repeat(256))
        ]))
        .await,
        "validationError"
    );
    // Java counts UTF-16 units: 250 emoji are 500 units, 251 are too many.
    assert_eq!(
        key(call(vec![
            ("meetingID", "room-1".into()),
            ("message", "😀".repeat(251))
        ]))
        .await,
        "validationError"
    );
    assert_eq!(
        key(call(vec![
            ("meetingID", "room-1".into()),
            ("message", "😀".repeat(250))
        ]))
        .await,
        ""
    );
    assert_eq!(
        key(call(vec![
            ("meetingID", "room-1".into()),
            ("message", "x".repeat(500))
        ]))
        .await,
        ""
    );
    assert_eq!(sim.deliveries().len(), 2);
    let rejected = sim.stats(SimProvider::Bbb).rejected;
    assert_eq!(rejected, 9);
}

#[tokio::test]
async fn meetings_lifecycle_through_the_api_and_the_handle() {
    let mut cfg = SimConfig::demo();
    cfg.bbb.meetings.clear();
    let sim = start(cfg).await;
    let s = secret(&sim);
    let api = |call: &str, params: &[(&str, &str)]| {
        bbb_url(&sim.bbb_url(), call, params, &s, ChecksumAlg::Sha1)
    };

    let r = get(&api("getMeetings", &[])).await;
    assert_eq!(xml_tag(&r.text, "messageKey"), "noMeetings");

    let r = get(&api("create", &[("meetingID", "m-1"), ("name", "Maths")])).await;
    assert_eq!(xml_tag(&r.text, "returncode"), "SUCCESS", "{}", r.text);
    let r = get(&api("create", &[("meetingID", "m-1"), ("name", "Maths")])).await;
    assert_eq!(xml_tag(&r.text, "messageKey"), "duplicateWarning");

    let r = get(&api("isMeetingRunning", &[("meetingID", "m-1")])).await;
    assert_eq!(xml_tag(&r.text, "running"), "false");
    let r = get(&api("getMeetings", &[])).await;
    assert_eq!(xml_tag(&r.text, "running"), "false");

    // A join makes it run, as when the user's browser follows the URL.
    let r = get(&api(
        "join",
        &[
            ("meetingID", "m-1"),
            ("fullName", "Ann"),
            ("password", "mp"),
            ("redirect", "false"),
        ],
    ))
    .await;
    assert_eq!(
        xml_tag(&r.text, "messageKey"),
        "successfullyJoined",
        "{}",
        r.text
    );
    let r = get(&api("isMeetingRunning", &[("meetingID", "m-1")])).await;
    assert_eq!(xml_tag(&r.text, "running"), "true");
    let r = get(&api("getMeetingInfo", &[("meetingID", "m-1")])).await;
    assert_eq!(xml_tag(&r.text, "meetingName"), "Maths");

    let r = get(&api("end", &[("meetingID", "m-1")])).await;
    assert_eq!(xml_tag(&r.text, "messageKey"), "sentEndMeetingRequest");
    let r = get(&api("getMeetingInfo", &[("meetingID", "m-1")])).await;
    assert_eq!(xml_tag(&r.text, "messageKey"), "notFound");

    // The handle changes what the API reports.
    sim.bbb_upsert_meeting(SimMeeting::new("h-1", "Handle Room", false));
    let send = api(
        "sendChatMessage",
        &[("meetingID", "h-1"), ("message", "hi")],
    );
    assert_eq!(
        xml_tag(&get(&send).await.text, "messageKey"),
        "meetingNotFound"
    );
    assert!(sim.bbb_set_running("h-1", true));
    assert_eq!(xml_tag(&get(&send).await.text, "returncode"), "SUCCESS");
    assert_eq!(
        sim.bbb_meetings(),
        vec![SimMeeting::new("h-1", "Handle Room", true)]
    );
}

#[tokio::test]
async fn hooks_create_stores_callbacks() {
    let sim = start(SimConfig::demo()).await;
    let s = secret(&sim);
    let url = |params: &[(&str, &str)]| {
        bbb_url(
            &sim.bbb_url(),
            "hooks/create",
            params,
            &s,
            ChecksumAlg::Sha256,
        )
    };
    let r = get(&url(&[("callbackURL", "http://127.0.0.1:9/bbb-events")])).await;
    assert_eq!(xml_tag(&r.text, "returncode"), "SUCCESS", "{}", r.text);
    assert_eq!(xml_tag(&r.text, "hookID"), "1");
    let r = get(&url(&[("callbackURL", "http://127.0.0.1:9/bbb-events")])).await;
    assert_eq!(xml_tag(&r.text, "messageKey"), "duplicateWarning");
    let r = get(&url(&[])).await;
    assert_eq!(xml_tag(&r.text, "messageKey"), "missingParamCallbackURL");
    // Signed with the wrong call name.
    let forged = format!(
        "{}/hooks/create?callbackURL=x&checksum={}",
        sim.bbb_url(),
        bbb_checksum(ChecksumAlg::Sha256, "create", "callbackURL=x", &s)
    );
    assert_eq!(
        xml_tag(&get(&forged).await.text, "messageKey"),
        "checksumError"
    );

    let hooks = sim.bbb_hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].callback_url, "http://127.0.0.1:9/bbb-events");
    let r = get(&bbb_url(
        &sim.bbb_url(),
        "hooks/list",
        &[],
        &s,
        ChecksumAlg::Sha1,
    ))
    .await;
    assert!(r.text.contains("bbb-events"), "{}", r.text);
}

#[tokio::test]
async fn malformed_query_is_a_bad_request() {
    let sim = start(SimConfig::demo()).await;
    let r = get(&format!(
        "{}/sendChatMessage?message=100%&checksum=x",
        sim.bbb_url()
    ))
    .await;
    assert_eq!(r.status, 400);
    let r = get(&format!("{}/", sim.bbb_url())).await;
    assert_eq!(xml_tag(&r.text, "returncode"), "SUCCESS");
}
