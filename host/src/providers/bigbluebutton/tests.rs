use super::*;
use crate::providers::testing::{channel, context, message, secret_file, text};

fn provider() -> BigBlueButton {
    BigBlueButton {
        base: "https://bbb.example.edu/bigbluebutton/api".into(),
        secret: Secret::new("639259d4-9dd8-4b25-bf01-95f9567eaf4b".into()),
        algorithm: Checksum::Sha256,
        http: reqwest::Client::new(),
        last_running: Default::default(),
    }
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.as_bytes().to_vec(),
        retry_after: None,
    }
}

fn failed(key: &str, message: &str) -> String {
    format!(
        "<response><returncode>FAILED</returncode><messageKey>{key}</messageKey><message>{message}</message></response>"
    )
}

fn list_channel() -> ChannelConfig {
    channel(
        "bbb",
        Some(toml::toml! { meetings = ["room-a", "room-b"] }.into()),
        toml::Table::new(),
    )
}

#[test]
fn config_with_every_key_builds() {
    let (_dir, secret) = secret_file("s3cr3t-value\n");
    let mut options = toml::toml! {
        url = "https://bbb.example.edu/bigbluebutton/api/"
        checksum = "sha512"
        throttle = { sendChatMessage = ["2/1s"] }
    };
    options.insert("secret".into(), secret.clone());
    let p = BigBlueButton::from_options("providers.bbb", &options, &context()).unwrap();
    assert_eq!(p.base, "https://bbb.example.edu/bigbluebutton/api");
    assert_eq!(p.algorithm, Checksum::Sha512);
    assert_eq!(p.secret.expose(), "s3cr3t-value");
    let mut options = toml::toml! {
        url = "https://bbb.example.edu/bigbluebutton/api"
    };
    options.insert("secret".into(), secret);
    let p = BigBlueButton::from_options("providers.bbb", &options, &context()).unwrap();
    assert_eq!(p.algorithm, Checksum::Sha256, "sha256 is the default");
}

#[test]
fn config_problems_are_all_reported_without_secrets() {
    let options = toml::toml! {
        url = "ftp://bbb"
        secret = "inline-hunter2"
        checksum = "md5"
        secert = 1
    };
    let issues = match BigBlueButton::from_options("providers.bbb", &options, &context()) {
        Err(issues) => issues,
        Ok(_) => panic!("must fail"),
    };
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    for k in [
        "providers.bbb.url",
        "providers.bbb.secret",
        "providers.bbb.checksum",
        "providers.bbb.secert",
    ] {
        assert!(keys.contains(&k), "missing {k} in {keys:?}");
    }
    assert!(!format!("{issues:?}").contains("hunter2"));

    let issues = match BigBlueButton::from_options("providers.bbb", &toml::Table::new(), &context())
    {
        Err(issues) => issues,
        Ok(_) => panic!("must fail"),
    };
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, vec!["providers.bbb.url", "providers.bbb.secret"]);
}

#[test]
fn channel_targets_are_checked() {
    let p = provider();
    let ok = [
        toml::toml! { meetings = "all-running" },
        toml::toml! { meetings = ["ab", "room-2"] },
    ];
    for target in ok {
        let c = channel("bbb", Some(target.into()), toml::Table::new());
        assert!(p.check_channel("lobby", &c).is_empty());
    }
    let bad = [
        None,
        Some(toml::Value::String("all-running".into())),
        Some(toml::toml! { meetings = "some" }.into()),
        Some(toml::toml! { meetings = [] }.into()),
        Some(toml::toml! { meetings = ["a"] }.into()),
        Some(toml::toml! { meetings = ["a,b"] }.into()),
        Some(toml::toml! { meetings = ["ab", "ab"] }.into()),
        Some(toml::toml! { meetings = [1] }.into()),
        Some(
            toml::toml! { meetings = "all-running"
            extra = 1 }
            .into(),
        ),
    ];
    for target in bad {
        let c = channel("bbb", target.clone(), toml::Table::new());
        let issues = p.check_channel("lobby", &c);
        assert_eq!(issues.len(), 1, "{target:?}: {issues:?}");
        assert_eq!(issues[0].key, "channels.lobby.target");
    }
    let mut options = toml::Table::new();
    options.insert("priority".into(), toml::Value::String("high".into()));
    let c = channel(
        "bbb",
        Some(toml::toml! { meetings = "all-running" }.into()),
        options,
    );
    assert_eq!(
        p.check_channel("lobby", &c)[0].key,
        "channels.lobby.priority"
    );
}

#[test]
fn rules_are_text_only_and_split() {
    let r = provider().rules(&list_channel());
    assert_eq!(r.accepts, vec![ContentKind::Text]);
    assert_eq!(r.max_text_chars, 500);
    assert!(r.splits_long_text);
    assert_eq!(r.max_sender_chars, 255);
    assert_eq!(provider().endpoint(&list_channel()), "sendChatMessage");
    assert_eq!(
        provider().default_throttle("sendChatMessage"),
        ThrottleSpec::windows(&[(5, 1000)])
    );
}

#[test]
fn validate_refuses_what_the_server_would() {
    let p = provider();
    let c = list_channel();
    assert!(p.validate(&c, &message(text("hello"))).is_ok());
    let mut m = message(text("bell\u{7}"));
    assert!(matches!(
        p.validate(&c, &m),
        Err(BroadcastError::Invalid(_))
    ));
    m = message(text("multi\nline\r\nwith\ttab"));
    assert!(p.validate(&c, &m).is_ok());
    // 21 parts of 500 characters is too many.
    m = message(text(&"x".repeat(500 * 21)));
    assert!(matches!(
        p.validate(&c, &m),
        Err(BroadcastError::Invalid(_))
    ));
    m = message(text(&"x".repeat(500 * 20)));
    assert!(p.validate(&c, &m).is_ok());
    // 200 emoji are 200 characters but 400 UTF-16 units.
    m = message(text("hi"));
    m.sender = Some("😀".repeat(200));
    assert!(matches!(
        p.validate(&c, &m),
        Err(BroadcastError::Invalid(_))
    ));
    m.sender = Some("Bot".into());
    m.reply_to = Some("a,b".into());
    assert!(matches!(
        p.validate(&c, &m),
        Err(BroadcastError::Invalid(_))
    ));
    m.reply_to = Some("room-a".into());
    assert!(p.validate(&c, &m).is_ok());
}

#[tokio::test]
async fn plan_is_meeting_by_meeting_in_order() {
    let p = provider();
    let words: Vec<String> = (0..150).map(|i| format!("w{i:04}")).collect();
    let long = words.join(" ");
    let mut m = message(text(&long));
    m.sender = Some("Bot".into());
    let parts = p.plan("lobby", &list_channel(), &m).await.unwrap();
    let per_meeting = split_text(&long, 500).len();
    assert_eq!(per_meeting, 2);
    assert_eq!(parts.len(), 2 * per_meeting);
    let targets: Vec<&str> = parts.iter().map(|p| p.target.as_str()).collect();
    assert_eq!(targets, vec!["room-a", "room-a", "room-b", "room-b"]);
    let mut rejoined = String::new();
    for part in &parts[..2] {
        let Content::Text(t) = &part.message.content else {
            panic!()
        };
        assert!(utf16_len(t) <= 500);
        if !rejoined.is_empty() {
            rejoined.push(' ');
        }
        rejoined.push_str(t);
        assert_eq!(part.message.sender.as_deref(), Some("Bot"));
        assert_eq!(part.dedup_key, None);
    }
    assert_eq!(rejoined, long);
}

#[tokio::test]
async fn reply_to_targets_exactly_that_meeting() {
    let p = provider();
    let mut m = message(text("hi"));
    m.reply_to = Some("other-room".into());
    let all = channel(
        "bbb",
        Some(toml::toml! { meetings = "all-running" }.into()),
        toml::Table::new(),
    );
    // No getMeetings call: the plan is built without the network.
    let parts = p.plan("lobby", &all, &m).await.unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].target, "other-room");
}

#[test]
fn get_meetings_keeps_running_non_breakout_meetings() {
    let p = provider();
    let body = r#"<response><returncode>SUCCESS</returncode><meetings>
        <meeting><meetingID>idle</meetingID><running>false</running><isBreakout>false</isBreakout></meeting>
        <meeting><meetingID>live</meetingID><running>true</running><isBreakout>false</isBreakout></meeting>
        <meeting><meetingID>live-breakout</meetingID><running>true</running><isBreakout>true</isBreakout></meeting>
    </meetings></response>"#;
    assert_eq!(
        p.meetings_from("t", &reply(200, body)).unwrap(),
        vec!["live"]
    );
    let none = "<response><returncode>SUCCESS</returncode><meetings/><messageKey>noMeetings</messageKey><message>no meetings were found on this server</message></response>";
    assert_eq!(
        p.meetings_from("t", &reply(200, none)).unwrap(),
        Vec::<String>::new()
    );
    let old_none = failed("noMeetings", "no meetings were found on this server");
    assert_eq!(
        p.meetings_from("t", &reply(200, &old_none)).unwrap(),
        Vec::<String>::new()
    );
    assert!(matches!(
        p.meetings_from("t", &reply(200, &failed("checksumError", "bad"))),
        Err(DeliveryOutcome::CredentialsExpired { .. })
    ));
    assert!(matches!(
        p.meetings_from("t", &reply(502, "<html>bad gateway</html>")),
        Err(DeliveryOutcome::RetryLater { .. })
    ));
}

#[test]
fn send_answers_map_to_outcomes() {
    let p = provider();
    let ok = "<response><returncode>SUCCESS</returncode><messageKey></messageKey><message></message></response>";
    assert_eq!(
        p.interpret_send("t", &reply(200, ok)),
        DeliveryOutcome::Delivered {
            provider_ids: vec![]
        }
    );

    let outcome = p.interpret_send(
        "t",
        &reply(
            200,
            &failed(
                "checksumError",
                "You did not pass the checksum security check",
            ),
        ),
    );
    let DeliveryOutcome::CredentialsExpired { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.contains("checksumError") && reason.contains("sha256"),
        "{reason}"
    );
    assert!(!reason.contains("639259d4"), "{reason}");

    for key in [
        "missingParamMeetingID",
        "validationError",
        "meetingNotFound",
        "someNewKey",
    ] {
        let outcome = p.interpret_send("t", &reply(200, &failed(key, "text from server")));
        let DeliveryOutcome::Rejected { code, reason } = outcome else {
            panic!("{key}: {outcome:?}")
        };
        assert_eq!(code, key);
        assert!(reason.contains("text from server"), "{reason}");
    }
    let DeliveryOutcome::Rejected { reason, .. } =
        p.interpret_send("t", &reply(200, &failed("meetingNotFound", "")))
    else {
        panic!()
    };
    assert!(reason.contains("ended"), "{reason}");

    let no_key = "<response><returncode>FAILED</returncode></response>";
    assert!(matches!(
        p.interpret_send("t", &reply(200, no_key)),
        DeliveryOutcome::Rejected { code, .. } if code == "FAILED"
    ));
}

#[test]
fn garbage_and_server_errors_are_retried_with_a_clear_bounded_reason() {
    let p = provider();
    let hostile = format!("\x1b[31m<html>{}</html>", "z".repeat(5000));
    let outcome = p.interpret_send("t", &reply(200, &hostile));
    let DeliveryOutcome::RetryLater { reason, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("not a BigBlueButton response"), "{reason}");
    assert!(!reason.chars().any(char::is_control), "{reason}");
    assert!(reason.len() < 1000, "{}", reason.len());

    for status in [500, 502, 503, 504] {
        assert!(matches!(
            p.interpret_send("t", &reply(status, "oops")),
            DeliveryOutcome::RetryLater { .. }
        ));
    }
    // A 429 (BigBlueButton documents no limit; a proxy in front may have
    // one) is "too fast": the endpoint slows down.
    assert!(matches!(
        p.interpret_send("t", &reply(429, "oops")),
        DeliveryOutcome::Throttled {
            limit: crate::providers::RateLimited::Endpoint,
            ..
        }
    ));
    assert!(matches!(
        p.interpret_send("t", &reply(404, "<html>Not Found</html>")),
        DeliveryOutcome::Rejected { code, .. } if code == "http-404"
    ));
    // A well-formed envelope wins over the status.
    assert!(matches!(
        p.interpret_send("t", &reply(500, &failed("validationError", "x"))),
        DeliveryOutcome::Rejected { .. }
    ));
}

#[test]
fn signed_urls_carry_the_checksum_last_and_never_the_secret() {
    let p = provider();
    let url = p.url(
        "sendChatMessage",
        &[
            ("meetingID", "room a"),
            ("message", "Hi & bye!"),
            ("userName", "Bot"),
        ],
    );
    let (head, sum) = url.rsplit_once("&checksum=").unwrap();
    assert_eq!(
        head,
        "https://bbb.example.edu/bigbluebutton/api/sendChatMessage?meetingID=room+a&message=Hi+%26+bye%21&userName=Bot"
    );
    assert_eq!(
        sum,
        api::checksum(
            Checksum::Sha256,
            "sendChatMessage",
            "meetingID=room+a&message=Hi+%26+bye%21&userName=Bot",
            "639259d4-9dd8-4b25-bf01-95f9567eaf4b"
        )
    );
    assert!(!url.contains("639259d4"));
}

/// Each `messageKey` BigBlueButton 3.x's `sendChatMessage` and
/// `getMeetings` can answer (its constraint keys and the older
/// controller's, see `refusal_of`) is a rejection that says what was
/// wrong, with the key as the code and the server's words after it; a key
/// never seen before says the server refused, with its words, escaped and
/// bounded.
#[test]
fn every_message_key_is_a_rejection_that_says_what_was_wrong() {
    let p = provider();
    for (key, words) in [
        ("meetingNotFound", "ended or does not exist"),
        ("notFound", "ended or does not exist"),
        ("invalidMeetingId", "ended or does not exist"),
        ("invalidMeetingIdentifier", "ended or does not exist"),
        ("meetingForciblyEnded", "was ended"),
        ("missingParamMeetingID", "named no meeting"),
        ("missingParamMessage", "missing or empty"),
        ("nullError", "missing or empty"),
        ("emptyError", "missing or empty"),
        ("MissingParam", "missing or empty"),
        ("sizeError", "1 to 500"),
        ("validationError", "validation"),
        ("invalidMessage", "validation"),
        ("brandNewKey", "refused the message"),
    ] {
        for outcome in [
            p.interpret_send("t", &reply(200, &failed(key, "server words"))),
            p.meetings_from("t", &reply(200, &failed(key, "server words")))
                .expect_err("a FAILED getMeetings"),
        ] {
            let DeliveryOutcome::Rejected { code, reason } = outcome else {
                panic!("{key}: {outcome:?}")
            };
            assert_eq!(code, key);
            assert!(reason.contains(words), "{key}: {reason}");
            assert!(reason.ends_with(": server words"), "{key}: {reason}");
        }
    }
    // XML 1.0 carries no ESC or BEL; a newline and a tab are what a
    // hostile server can put in its words.
    let hostile = format!("line one\nline\ttwo{}", "w".repeat(5000));
    let DeliveryOutcome::Rejected { code, reason } =
        p.interpret_send("t", &reply(200, &failed("odd\nkey", &hostile)))
    else {
        panic!()
    };
    assert!(!code.chars().any(char::is_control), "{code}");
    assert!(!reason.chars().any(char::is_control), "{reason}");
    assert!(reason.len() < 1000, "{}", reason.len());
}
