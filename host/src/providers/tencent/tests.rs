use std::collections::HashSet;

use super::*;
use crate::providers::testing::test_server::{Answer as Canned, Server};
use crate::providers::testing::{channel, context, message, secret_file, text};
use crate::wit::types::{Content, CustomPayload, Media};

const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";

fn provider(base: &str) -> Tencent {
    Tencent {
        base: base.into(),
        sdkappid: 1_400_000_000,
        identifier: "administrator".into(),
        secret_key: Secret::new(KEY.into()),
        usersig_ttl: 86_400,
        http: reqwest::Client::new(),
        usersig: Mutex::new(None),
    }
}

fn no_target() -> ChannelConfig {
    channel("tim", None, toml::Table::new())
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.as_bytes().to_vec(),
        retry_after: None,
    }
}

fn fail(code: i64, info: &str) -> Answer {
    interpret(
        BROADCAST,
        &reply(
            200,
            &serde_json::json!({"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": info})
                .to_string(),
        ),
    )
}

#[test]
fn config_with_every_key_builds() {
    let (_dir, secret) = secret_file(KEY);
    let mut options = toml::toml! {
        url = "https://adminapisgp.im.qcloud.com"
        sdkappid = 1400000000
        identifier = "administrator"
        usersig_ttl_secs = 3600
        throttle = ["1/1s"]
    };
    options.insert("secret_key".into(), secret);
    let p = Tencent::from_options("providers.tim", &options, &context()).unwrap();
    assert_eq!(p.base, "https://adminapisgp.im.qcloud.com");
    assert_eq!(p.usersig_ttl, 3600);
    assert_eq!(p.sdkappid, 1_400_000_000);
    options.remove("usersig_ttl_secs");
    let p = Tencent::from_options("providers.tim", &options, &context()).unwrap();
    assert_eq!(p.usersig_ttl, 86_400);
}

#[test]
fn config_problems_are_all_reported_without_secrets() {
    let options = toml::toml! {
        url = "adminapisgp.im.qcloud.com"
        sdkappid = "1400000000"
        identifier = "has spaces and is far too long for a tencent user id"
        secret_key = "inline-hunter2"
        usersig_ttl_secs = 10
        region = "sgp"
    };
    let Err(issues) = Tencent::from_options("providers.tim", &options, &context()) else {
        panic!("must fail")
    };
    let keys: HashSet<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    for k in [
        "providers.tim.url",
        "providers.tim.sdkappid",
        "providers.tim.identifier",
        "providers.tim.secret_key",
        "providers.tim.usersig_ttl_secs",
        "providers.tim.region",
    ] {
        assert!(keys.contains(k), "missing {k} in {keys:?}");
    }
    assert!(!format!("{issues:?}").contains("hunter2"));
}

#[test]
fn channels_take_no_target() {
    let p = provider("https://x");
    assert!(p.check_channel("live", &no_target()).is_empty());
    let c = channel(
        "tim",
        Some(toml::Value::String("group".into())),
        toml::Table::new(),
    );
    assert_eq!(p.check_channel("live", &c)[0].key, "channels.live.target");
    assert_eq!(p.endpoint(&c), "send_broadcast_msg");
    assert_eq!(
        p.default_throttle("send_broadcast_msg"),
        ThrottleSpec::windows(&[(1, 1000)])
    );
}

#[test]
fn rules_accept_the_documented_elements() {
    let r = provider("https://x").rules(&no_target());
    assert_eq!(r.accepts.len(), 7);
    assert!(!r.accepts.contains(&ContentKind::Command));
    assert_eq!(r.max_sender_chars, 32);
}

#[test]
fn validate_enforces_the_12000_byte_msg_body() {
    let p = provider("https://x");
    let c = no_target();
    assert!(p.validate(&c, &message(text(&"a".repeat(11_900)))).is_ok());
    let Err(BroadcastError::Invalid(why)) = p.validate(&c, &message(text(&"a".repeat(12_000))))
    else {
        panic!()
    };
    assert!(why.contains("12000"), "{why}");
    // 4,000 CJK characters are 12,000 bytes of UTF-8: too much with the JSON.
    assert!(p.validate(&c, &message(text(&"字".repeat(4000)))).is_err());
    let big_custom = Content::Custom(CustomPayload {
        event: "e".into(),
        data: "d".repeat(12_000),
    });
    assert!(p.validate(&c, &message(big_custom)).is_err());
}

#[test]
fn validate_checks_sender_reply_to_and_video_thumbnails() {
    let p = provider("https://x");
    let c = no_target();
    let mut m = message(text("hi"));
    m.sender = Some("bot_1".into());
    assert!(p.validate(&c, &m).is_ok());
    m.sender = Some("名字".into());
    assert!(matches!(
        p.validate(&c, &m),
        Err(BroadcastError::Invalid(_))
    ));
    m.sender = None;
    m.reply_to = Some("@TGS#abc".into());
    assert!(p.validate(&c, &m).is_ok(), "a group reply");
    m.reply_to = Some("c2c:ada".into());
    assert!(p.validate(&c, &m).is_ok(), "a one-to-one reply");
    for bad in ["c2c:", "c2c:名字", &format!("c2c:{}", "u".repeat(33))] {
        m.reply_to = Some(bad.into());
        let Err(BroadcastError::Invalid(why)) = p.validate(&c, &m) else {
            panic!("{bad:?} was taken")
        };
        assert!(why.contains("To_Account"), "{why}");
    }
    for bad in ["", "two words", &"g".repeat(49)] {
        m.reply_to = Some(bad.into());
        assert!(
            matches!(p.validate(&c, &m), Err(BroadcastError::Invalid(_))),
            "{bad:?}"
        );
    }
    m.reply_to = None;
    let video = Content::Video(Media {
        url: "https://x/v.mp4".into(),
        filename: None,
        share_secret: None,
        size_bytes: None,
        format: None,
        width: None,
        height: None,
        duration_secs: None,
        thumbnail_url: None,
        thumbnail_share_secret: None,
    });
    let Err(BroadcastError::Invalid(why)) = p.validate(&c, &message(video)) else {
        panic!()
    };
    assert!(why.contains("thumbnail"), "{why}");
}

#[tokio::test]
async fn plan_draws_one_random_u32_as_the_dedup_key() {
    let p = provider("https://x");
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let parts = p
            .plan("live", &no_target(), &message(text("hi")))
            .await
            .unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].target, "");
        let key = parts[0].dedup_key.clone().unwrap();
        key.parse::<u32>().unwrap();
        seen.insert(key);
    }
    assert!(seen.len() > 1, "Random must be drawn per message");
}

#[test]
fn ok_is_delivered_with_msg_seq() {
    let a = interpret(
        BROADCAST,
        &reply(
            200,
            r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"MsgSeq":1283}"#,
        ),
    );
    assert_eq!(
        a,
        Answer::Done(DeliveryOutcome::Delivered {
            provider_ids: vec!["1283".into()]
        })
    );
}

#[test]
fn each_documented_code_has_its_outcome() {
    assert!(matches!(
        fail(10023, "too frequent"),
        Answer::Done(DeliveryOutcome::Throttled {
            after: Some(d),
            limit: crate::providers::RateLimited::Endpoint,
            ..
        }) if d == Duration::from_secs(1)
    ));
    // On send_group_msg, 10023 is the group's own 40 a second.
    let group_limited = reply(
        200,
        &serde_json::json!({"ActionStatus": "FAIL", "ErrorCode": 10023, "ErrorInfo": "freq"})
            .to_string(),
    );
    assert!(matches!(
        interpret(GROUP, &group_limited),
        Answer::Done(DeliveryOutcome::Throttled {
            limit: crate::providers::RateLimited::Key,
            ..
        })
    ));
    assert!(matches!(
        fail(10002, "internal"),
        Answer::Done(DeliveryOutcome::RetryLater { after: None, .. })
    ));
    for code in [10003, 10004] {
        assert!(matches!(
            fail(code, "x"),
            Answer::Done(DeliveryOutcome::Rejected { code: c, .. }) if c == code.to_string()
        ));
    }
    let Answer::Done(DeliveryOutcome::Rejected { code, reason }) = fail(10007, "no permission")
    else {
        panic!()
    };
    assert_eq!(code, "10007");
    assert!(
        reason.contains("console") && reason.contains("no permission"),
        "{reason}"
    );
    assert!(matches!(fail(70001, "expired"), Answer::UserSigExpired(_)));
    assert!(matches!(
        fail(80001, "something new"),
        Answer::Done(DeliveryOutcome::Rejected { code, .. }) if code == "80001"
    ));
}

#[test]
fn usersig_errors_are_credentials_problems_with_distinct_reasons() {
    let mut reasons = HashSet::new();
    for code in [
        70002, 70003, 70005, 70009, 70013, 70014, 70016, 70020, 70050, 70403, 70099,
    ] {
        let Answer::Done(DeliveryOutcome::CredentialsExpired { reason }) = fail(code, "info")
        else {
            panic!("{code}")
        };
        assert!(reason.contains(&code.to_string()), "{reason}");
        reasons.insert(reason.split(" (").next().unwrap().to_string());
    }
    assert_eq!(reasons.len(), 11, "{reasons:?}");
    assert!(matches!(
        fail(60010, "not admin"),
        Answer::Done(DeliveryOutcome::CredentialsExpired { .. })
    ));
    let Answer::Done(DeliveryOutcome::CredentialsExpired { reason }) = fail(70009, "") else {
        panic!()
    };
    assert!(reason.contains("signature"), "{reason}");
    let Answer::Done(DeliveryOutcome::CredentialsExpired { reason }) = fail(70013, "") else {
        panic!()
    };
    assert!(reason.contains("identifier"), "{reason}");
    let Answer::Done(DeliveryOutcome::CredentialsExpired { reason }) = fail(70003, "") else {
        panic!()
    };
    assert!(reason.contains("malformed"), "{reason}");
}

#[test]
fn http_errors_and_garbage() {
    for status in [500, 502, 503] {
        assert!(matches!(
            interpret(BROADCAST, &reply(status, "<html>")),
            Answer::Done(DeliveryOutcome::RetryLater { .. })
        ));
    }
    // A gateway's 429 is "too fast" too.
    assert!(matches!(
        interpret(BROADCAST, &reply(429, "<html>")),
        Answer::Done(DeliveryOutcome::Throttled { .. })
    ));
    assert!(matches!(
        interpret(BROADCAST, &reply(404, "not found")),
        Answer::Done(DeliveryOutcome::Rejected { code, .. }) if code == "http-404"
    ));
    let Answer::Done(DeliveryOutcome::RetryLater { reason, .. }) =
        interpret(BROADCAST, &reply(200, "\x1b[2J<html>proxy</html>"))
    else {
        panic!()
    };
    assert!(!reason.chars().any(char::is_control), "{reason}");
    // Hostile ErrorInfo is escaped and cut.
    let Answer::Done(DeliveryOutcome::Rejected { reason, .. }) =
        fail(10004, &format!("\u{202e}evil\n{}", "x".repeat(5000)))
    else {
        panic!()
    };
    assert!(!reason.contains('\n') && !reason.contains('\u{202e}') && reason.len() < 1200);
}

#[test]
fn usersig_is_cached_and_renewed_on_demand() {
    let p = provider("https://x");
    let first = p.usersig(false).unwrap();
    let f = usersig::decode(first.expose()).unwrap();
    assert_eq!(
        (f.identifier.as_str(), f.sdkappid, f.expire),
        ("administrator", 1_400_000_000, 86_400)
    );
    assert!(usersig::verify(
        first.expose(),
        KEY,
        "administrator",
        1_400_000_000
    ));
    {
        let cached = p.usersig.lock().unwrap();
        let c = cached.as_ref().unwrap();
        // Renewed at 90% of its lifetime.
        assert_eq!(c.renew_after, f.time + 77_760);
    }
    *p.usersig.lock().unwrap() = Some(CachedSig {
        value: Secret::new("cached".into()),
        renew_after: u64::MAX,
    });
    assert_eq!(p.usersig(false).unwrap().expose(), "cached");
    assert_ne!(p.usersig(true).unwrap().expose(), "cached");
    *p.usersig.lock().unwrap() = Some(CachedSig {
        value: Secret::new("stale".into()),
        renew_after: 0,
    });
    assert_ne!(p.usersig(false).unwrap().expose(), "stale");
}

#[tokio::test]
async fn expired_usersig_is_renewed_and_retried_once_with_the_same_random() {
    // First answer 70001, then OK.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    let server = Server::start(move |_| {
        if c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Canned::json(
                200,
                serde_json::json!({"ActionStatus":"FAIL","ErrorCode":70001,"ErrorInfo":"expired"}),
            )
        } else {
            Canned::json(
                200,
                serde_json::json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgSeq":7}),
            )
        }
    })
    .await;
    let p = provider(&server.base);
    let mut m = message(text("hello"));
    m.sender = Some("bot".into());
    let parts = p.plan("live", &no_target(), &m).await.unwrap();
    let random = parts[0].dedup_key.clone().unwrap();
    let outcome = p.send(&no_target(), &parts[0]).await;
    assert_eq!(
        outcome,
        DeliveryOutcome::Delivered {
            provider_ids: vec!["7".into()]
        }
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path(), "/v4/group_open_http_svc/send_broadcast_msg");
        let query = r.target.split_once('?').unwrap().1;
        assert!(query.starts_with("sdkappid=1400000000&identifier=administrator&usersig="));
        assert!(
            query.ends_with(&format!("&random={random}&contenttype=json")),
            "{query}"
        );
        let body = r.json();
        assert_eq!(body["Random"].to_string(), random);
        assert_eq!(body["From_Account"], "bot");
        assert_eq!(body["MsgBody"][0]["MsgContent"]["Text"], "hello");
    }

    // Expired twice: credentials, after exactly two calls.
    let server = Server::start(|_| {
        Canned::json(
            200,
            serde_json::json!({"ActionStatus":"FAIL","ErrorCode":70001,"ErrorInfo":"expired"}),
        )
    })
    .await;
    let p = provider(&server.base);
    let outcome = p.send(&no_target(), &parts[0]).await;
    let DeliveryOutcome::CredentialsExpired { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(server.requests().len(), 2);
    // The usersig travels in the URL; it never reaches a reason.
    let sent_sig = server.requests()[0]
        .target
        .split("usersig=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    assert!(
        !reason.contains(&sent_sig) && !reason.contains(KEY),
        "{reason}"
    );
}

#[tokio::test]
async fn a_reply_goes_to_its_group_with_send_group_msg_and_its_own_throttle() {
    let server = Server::start(|_| {
        Canned::json(
            200,
            serde_json::json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgTime":1700000000,"MsgSeq":42}),
        )
    })
    .await;
    let p = provider(&server.base);
    let c = no_target();
    let mut m = message(text("pong"));
    m.reply_to = Some("@TGS#lobby".into());
    assert_eq!(p.route(&c, &m), "send_group_msg");
    assert_eq!(p.reply_endpoints(&c), &["send_group_msg", "sendmsg"]);
    // The command's 200 a second for the app, and each group its own 40.
    assert_eq!(
        p.default_throttle("send_group_msg"),
        ThrottleSpec::windows(&[(200, 1000)])
    );
    assert_eq!(
        p.key_throttle("send_group_msg"),
        Some(ThrottleSpec::windows(&[(40, 1000)]))
    );
    assert_eq!(p.key_throttle("send_broadcast_msg"), None);
    let parts = p.plan("live", &c, &m).await.unwrap();
    assert_eq!(
        p.throttle_key("send_group_msg", &parts[0]).as_deref(),
        Some("@TGS#lobby")
    );
    let outcome = p.send(&c, &parts[0]).await;
    assert_eq!(
        outcome,
        DeliveryOutcome::Delivered {
            provider_ids: vec!["42".into()]
        }
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path(), "/v4/group_open_http_svc/send_group_msg");
    let body = seen[0].json();
    assert_eq!(body["GroupId"], "@TGS#lobby");
    assert_eq!(
        body["Random"].to_string(),
        parts[0].dedup_key.clone().unwrap()
    );
    assert_eq!(body["MsgBody"][0]["MsgContent"]["Text"], "pong");

    // A broadcast never merges a reply, nor the other way round.
    let mut merging = c.clone();
    merging
        .options
        .insert("merge".into(), toml::Value::Boolean(true));
    let broadcast = message(text("all"));
    let bparts = p.plan("live", &merging, &broadcast).await.unwrap();
    assert!(p.merge(&merging, &bparts[0], &m).is_none());
    assert!(p.merge(&merging, &parts[0], &broadcast).is_none());
    assert!(p.merge(&merging, &bparts[0], &broadcast).is_some());
}

#[test]
fn group_codes_say_what_went_wrong() {
    for (code, words) in [
        (10010, "dismissed"),
        (10015, "GroupId"),
        (10016, "callback"),
        (10017, "muted"),
        (80001, "sensitive"),
        (10007, "admin"),
    ] {
        let body = format!(r#"{{"ActionStatus":"FAIL","ErrorCode":{code},"ErrorInfo":"x"}}"#);
        match interpret(GROUP, &reply(200, &body)) {
            Answer::Done(DeliveryOutcome::Rejected { code: c, reason }) => {
                assert_eq!(c, code.to_string());
                assert!(reason.contains(words), "{code}: {reason}");
                assert!(reason.starts_with("tencent send_group_msg"), "{reason}");
            }
            other => panic!("{code}: {other:?}"),
        }
    }
}

fn fail_on(api: Api, code: i64, info: &str) -> Answer {
    interpret(
        api,
        &reply(
            200,
            &serde_json::json!({"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": info})
                .to_string(),
        ),
    )
}

/// The outcome a code should have, for the tables below.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Rejected,
    Retry,
    RateLimited,
    Credentials,
}

fn expect_of(answer: &Answer) -> (Expect, String) {
    match answer {
        Answer::Done(DeliveryOutcome::Rejected { reason, .. }) => {
            (Expect::Rejected, reason.clone())
        }
        Answer::Done(DeliveryOutcome::RetryLater {
            after: Some(d),
            reason,
        }) if *d == Duration::from_secs(1) => (Expect::RateLimited, reason.clone()),
        Answer::Done(DeliveryOutcome::RetryLater {
            after: None,
            reason,
        }) => (Expect::Retry, reason.clone()),
        Answer::Done(DeliveryOutcome::CredentialsExpired { reason }) => {
            (Expect::Credentials, reason.clone())
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Every documented code of `openim/sendmsg` and the REST API's public codes
/// (see `codes.rs` for the pages) has its outcome and words; the code and
/// Tencent's own text are in the reason.
#[test]
fn one_to_one_and_public_codes_map_as_documented() {
    use Expect::*;
    let table: &[(i64, Expect, &str)] = &[
        (20001, Rejected, "packet is invalid"),
        (20002, Credentials, "UserSig or A2"),
        (20003, Rejected, "To_Account"),
        (20004, Retry, "network"),
        (20005, Retry, "internal"),
        (20006, Rejected, "before-send callback"),
        (20007, Rejected, "blocklisted"),
        (20009, Rejected, "not friends"),
        (20010, Rejected, "not the recipient's friend"),
        (20011, Rejected, "not the sender's friend"),
        (20012, Rejected, "muted"),
        (90001, Rejected, "JSON"),
        (90002, Rejected, "MsgBody"),
        (90003, Rejected, "To_Account"),
        (90005, Rejected, "MsgRandom"),
        (90007, Rejected, "array"),
        (90009, Credentials, "admin"),
        (90010, Rejected, "message formats"),
        (90026, Rejected, "MsgLifeTime"),
        (90992, Retry, "internal"),
        (91000, Retry, "internal"),
        (93000, Rejected, "12 KB"),
        (60002, Rejected, "url"),
        (60003, Rejected, "JSON"),
        (60004, Credentials, "signature"),
        (60006, Credentials, "sdkappid"),
        (60007, RateLimited, "frequency"),
        (60008, Retry, "timed out"),
        (60009, Rejected, "region domain"),
        (60010, Credentials, "admin"),
        (60011, RateLimited, "frequency"),
        (60016, Credentials, "disabled"),
        (60018, RateLimited, "too many"),
        (60019, RateLimited, "too many"),
        (60020, Credentials, "package"),
        (60021, Credentials, "IP address"),
        (70051, Credentials, "blocklisted"),
        (70107, Rejected, "not imported"),
    ];
    for &(code, expect, words) in table {
        let (got, reason) = expect_of(&fail_on(C2C, code, "Tencent says"));
        assert_eq!(got, expect, "{code}: {reason}");
        assert!(reason.starts_with("tencent sendmsg: "), "{code}: {reason}");
        assert!(reason.contains(words), "{code}: {reason}");
        assert!(
            reason.contains(&format!("({code}: Tencent says)")),
            "{code}: {reason}"
        );
        if let Answer::Done(DeliveryOutcome::Rejected { code: c, .. }) = fail_on(C2C, code, "x") {
            assert_eq!(c, code.to_string());
        }
    }
}

/// The group APIs' codes beyond the four of the broadcast page: the
/// frequency limits are rate limits, the rest say what went wrong.
#[test]
fn more_group_codes_map_as_documented() {
    use Expect::*;
    for (code, expect, words) in [
        (10005, Rejected, "too many accounts"),
        (10006, RateLimited, "frequency"),
        (10008, Retry, "signature"),
        (10011, Rejected, "JSON"),
        (10012, Rejected, "From_Account"),
        (10019, Rejected, "import"),
        (10026, Rejected, "disabled"),
        (80002, Rejected, "12 KB"),
    ] {
        for api in [BROADCAST, GROUP] {
            let (got, reason) = expect_of(&fail_on(api, code, "info"));
            assert_eq!(got, expect, "{code}: {reason}");
            assert!(reason.contains(words), "{code}: {reason}");
        }
    }
}

/// A code Tencent has not documented is a rejection with Tencent's words,
/// escaped and cut.
#[test]
fn an_unknown_code_is_rejected_with_tencents_words() {
    let Answer::Done(DeliveryOutcome::Rejected { code, reason }) =
        fail_on(C2C, 29_999, "brand new\nreason")
    else {
        panic!()
    };
    assert_eq!(code, "29999");
    assert!(reason.contains("brand new"), "{reason}");
    let Answer::Done(DeliveryOutcome::Rejected { reason, .. }) = fail_on(
        C2C,
        29_999,
        &format!("\u{1b}[31mred\u{7}{}", "y".repeat(4000)),
    ) else {
        panic!()
    };
    assert!(!reason.chars().any(char::is_control), "{reason}");
    assert!(reason.len() < 1200, "{}", reason.len());
}

#[tokio::test]
async fn a_one_to_one_reply_goes_to_its_user_with_openim_sendmsg() {
    let server = Server::start(|_| {
        Canned::json(
            200,
            serde_json::json!({"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"MsgTime":1572870301,"MsgKey":"89541_2574206_1572870301"}),
        )
    })
    .await;
    let p = provider(&server.base);
    let c = no_target();
    let mut m = message(text("pong"));
    m.reply_to = Some("c2c:ada".into());
    m.sender = Some("helpdesk".into());
    assert_eq!(p.route(&c, &m), "sendmsg");
    assert!(p.reply_endpoints(&c).contains(&"sendmsg"));
    // "Maximum call frequency: 200 queries/sec" (1047/34919).
    assert_eq!(
        p.default_throttle("sendmsg"),
        ThrottleSpec::windows(&[(200, 1000)])
    );
    let parts = p.plan("live", &c, &m).await.unwrap();
    let outcome = p.send(&c, &parts[0]).await;
    assert_eq!(
        outcome,
        DeliveryOutcome::Delivered {
            provider_ids: vec!["89541_2574206_1572870301".into()]
        }
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path(), "/v4/openim/sendmsg");
    let query = seen[0].target.split_once('?').unwrap().1;
    assert!(query.starts_with("sdkappid=1400000000&identifier=administrator&usersig="));
    let body = seen[0].json();
    assert_eq!(body["To_Account"], "ada");
    assert_eq!(body["From_Account"], "helpdesk");
    assert_eq!(
        body["MsgRandom"].to_string(),
        parts[0].dedup_key.clone().unwrap()
    );
    assert_eq!(body["MsgBody"][0]["MsgContent"]["Text"], "pong");
    assert!(body.get("GroupId").is_none());

    // A one-to-one reply is never merged with a broadcast.
    let mut merging = c.clone();
    merging
        .options
        .insert("merge".into(), toml::Value::Boolean(true));
    let broadcast = message(text("all"));
    let bparts = p.plan("live", &merging, &broadcast).await.unwrap();
    assert!(p.merge(&merging, &bparts[0], &m).is_none());
}
