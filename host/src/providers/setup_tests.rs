//! One way to configure a provider: every `url` an operator may copy from a
//! provider's console or docs, normalised to the base the requests use;
//! every `url` that cannot be right, refused with the line to write; every
//! `target` form of every provider, and each mistake, with exact messages.
//! The end-to-end runs against the simulators are in
//! `tests/provider_setup.rs`.

use std::path::Path;

use super::common::{CopiedUrl, api_url};
use super::{Registry, bigbluebutton, bitrix24, easemob, tencent};
use crate::config::{Config, ConfigIssue};

fn easemob_rule(url: &CopiedUrl) -> Result<String, String> {
    easemob::rest_host(url).map(|(host, _)| host)
}

/// Every accepted form of every provider's `url` and the base it becomes.
#[test]
fn every_url_an_operator_copies_becomes_the_api_base() {
    type Rule = fn(&CopiedUrl) -> Result<String, String>;
    let bbb: Rule = bigbluebutton::api_base;
    let tc: Rule = tencent::api_base;
    let em: Rule = easemob_rule;
    let b24: Rule = bitrix24::portal;
    let cases: &[(Rule, &str, &str)] = &[
        (
            bbb,
            "https://bbb.example.com",
            "https://bbb.example.com/bigbluebutton/api",
        ),
        (
            bbb,
            "https://bbb.example.com/",
            "https://bbb.example.com/bigbluebutton/api",
        ),
        (
            bbb,
            "https://bbb.example.com/bigbluebutton",
            "https://bbb.example.com/bigbluebutton/api",
        ),
        (
            bbb,
            "https://bbb.example.com/bigbluebutton/",
            "https://bbb.example.com/bigbluebutton/api",
        ),
        (
            bbb,
            "https://bbb.example.com/bigbluebutton/api",
            "https://bbb.example.com/bigbluebutton/api",
        ),
        (
            bbb,
            " https://bbb.example.com/bigbluebutton/api/ ",
            "https://bbb.example.com/bigbluebutton/api",
        ),
        (
            bbb,
            "https://lb.example.com/tenant-a/bigbluebutton/",
            "https://lb.example.com/tenant-a/bigbluebutton/api",
        ),
        (
            bbb,
            "http://127.0.0.1:8090/bigbluebutton/api",
            "http://127.0.0.1:8090/bigbluebutton/api",
        ),
        (
            tc,
            "https://adminapisgp.im.qcloud.com",
            "https://adminapisgp.im.qcloud.com",
        ),
        (
            tc,
            "https://console.tim.qq.com/",
            "https://console.tim.qq.com",
        ),
        (
            tc,
            "https://adminapiger.im.qcloud.com/v4",
            "https://adminapiger.im.qcloud.com",
        ),
        (
            tc,
            "https://adminapiusa.im.qcloud.com/v4/",
            "https://adminapiusa.im.qcloud.com",
        ),
        (em, "https://a1.easemob.com", "https://a1.easemob.com"),
        (em, "https://a1.easemob.com/", "https://a1.easemob.com"),
        (
            em,
            "https://a1.easemob.com/1122161011178276/demo",
            "https://a1.easemob.com",
        ),
        (
            em,
            "https://a61.easemob.com/org-1/app_2/",
            "https://a61.easemob.com",
        ),
        (
            b24,
            "https://portal.bitrix24.com",
            "https://portal.bitrix24.com",
        ),
        (
            b24,
            "https://portal.bitrix24.com/",
            "https://portal.bitrix24.com",
        ),
        (
            b24,
            "https://portal.bitrix24.com/rest",
            "https://portal.bitrix24.com",
        ),
        (
            b24,
            "https://portal.bitrix24.com/rest/",
            "https://portal.bitrix24.com",
        ),
        (b24, "http://localhost:8080/rest/", "http://localhost:8080"),
    ];
    for (rule, raw, base) in cases {
        assert_eq!(api_url(raw, rule).as_deref(), Ok(*base), "{raw}");
    }
}

/// Every `url` that cannot be right, with its exact message, which names
/// the fix and never repeats a password, a query or an unknown path.
#[test]
fn a_url_that_cannot_be_right_says_what_to_write() {
    type Rule = fn(&CopiedUrl) -> Result<String, String>;
    let bbb: Rule = bigbluebutton::api_base;
    let tc: Rule = tencent::api_base;
    let em: Rule = easemob_rule;
    let b24: Rule = bitrix24::portal;
    let cases: &[(Rule, &str, &str)] = &[
        // Common to every provider.
        (
            bbb,
            "ftp://bbb.example.com/bigbluebutton",
            "must start with https:// (or http:// for a local simulator): write url = \"https://bbb.example.com\"",
        ),
        (
            bbb,
            "bbb.example.com/bigbluebutton/",
            "has no https:// in front: write url = \"https://bbb.example.com/bigbluebutton/api\"",
        ),
        (
            tc,
            "adminapisgp.im.qcloud.com",
            "has no https:// in front: write url = \"https://adminapisgp.im.qcloud.com\"",
        ),
        (
            em,
            "hunter2hunter2",
            "has no https:// in front: write it like \"https://host\"",
        ),
        (
            bbb,
            "https://admin:hunter2@bbb.example.com/bigbluebutton",
            "must not carry a user name or password (they would be sent and logged with every request; credentials belong in secret references): write url = \"https://bbb.example.com/bigbluebutton/api\"",
        ),
        (
            bbb,
            "https://bbb.example.com/bigbluebutton/api?checksum=hunter2",
            "must not have a query (?…) or fragment (#…): botbox builds each request's own query and signs it; write url = \"https://bbb.example.com/bigbluebutton/api\"",
        ),
        (
            b24,
            "https://portal.bitrix24.com/#hunter2",
            "must not have a query (?…) or fragment (#…): botbox builds each request's own query and signs it; write url = \"https://portal.bitrix24.com\"",
        ),
        (
            bbb,
            "https://",
            "is not a valid URL (empty host); write it like \"https://host/path\"",
        ),
        // BigBlueButton.
        (
            bbb,
            "https://bbb.example.com/b/hunter2-room",
            "is not a BigBlueButton API address (the API is at /bigbluebutton/api on the server): write url = \"https://bbb.example.com/bigbluebutton/api\", the URL `bbb-conf --secret` prints",
        ),
        (
            bbb,
            "https://bbb.example.com/bigbluebutton/api/getMeetings?checksum=hunter2",
            "names the API call `getMeetings`; botbox adds each call itself: write url = \"https://bbb.example.com/bigbluebutton/api\"",
        ),
        (
            bbb,
            "https://lb.example.com/hunter2/bigbluebutton/api/create",
            "names the API call `create`; botbox adds each call itself: write url = \"https://lb.example.com/…/bigbluebutton/api\"",
        ),
        (
            bbb,
            "https://bbb.example.com/bigbluebutton/presentation/hunter2",
            "is not a BigBlueButton API address (its path goes past /bigbluebutton): write url = \"https://bbb.example.com/bigbluebutton/api\"",
        ),
        // Tencent.
        (
            tc,
            "https://adminapisgp.im.qcloud.com/v4/group_open_http_svc/send_broadcast_msg?sdkappid=1&usersig=hunter2",
            "names a REST command; botbox adds each command's /v4/… path itself: write url = \"https://adminapisgp.im.qcloud.com\"",
        ),
        (
            tc,
            "https://im.tencentcloudapi.com",
            "is the Tencent Cloud API 3.0 (signed with a SecretId and SecretKey), not the Chat REST API botbox calls with a UserSig: write url = https://console.tim.qq.com (China), https://adminapisgp.im.qcloud.com (Singapore), or the domain of the app's region in the REST API docs",
        ),
        (
            tc,
            "https://adminapisgp.im.qcloud.com/hunter2",
            "is not a Chat REST API address (the region domain, optionally with /v4): write url = \"https://adminapisgp.im.qcloud.com\", if that is the app's region domain (https://console.tim.qq.com (China), https://adminapisgp.im.qcloud.com (Singapore), or the domain of the app's region in the REST API docs)",
        ),
        // Easemob.
        (
            em,
            "https://a1.easemob.com/org/app/messages/users",
            "goes past the app's address; botbox adds each API path (/token, /messages/…) itself: write url = \"https://a1.easemob.com/org/app\"",
        ),
        (
            em,
            "https://a1.easemob.com/hunter2",
            "is not an Easemob REST address: write url = \"https://a1.easemob.com\" with org and app, or url = \"https://a1.easemob.com/{org}/{app}\"",
        ),
        (
            em,
            "https://a1.easemob.com/org/app?x=hunter2",
            "must not have a query (?…) or fragment (#…): botbox builds each request's own query and signs it; write url = \"https://a1.easemob.com\"",
        ),
        // Bitrix24.
        (
            b24,
            "https://portal.bitrix24.com/rest/1/hunter2code0123/",
            "is an inbound webhook's URL, whose path holds the webhook's secret code: write url = \"https://portal.bitrix24.com\" and webhook = { user_id = 1, code = { env = \"BITRIX24_WEBHOOK_CODE\" } }, with the code (what follows /rest/1/) in that variable or in a file (code = { file = \"…\" })",
        ),
        (
            b24,
            "https://portal.bitrix24.com/rest/1/hunter2code0123/im.message.add.json",
            "is an inbound webhook's URL, whose path holds the webhook's secret code: write url = \"https://portal.bitrix24.com\" and webhook = { user_id = 1, code = { env = \"BITRIX24_WEBHOOK_CODE\" } }, with the code (what follows /rest/1/) in that variable or in a file (code = { file = \"…\" })",
        ),
        (
            b24,
            "https://portal.bitrix24.com/rest/im.message.add",
            "names a REST method; botbox adds /rest/im.message.add itself: write url = \"https://portal.bitrix24.com\"",
        ),
        (
            b24,
            "https://portal.bitrix24.com/crm/deal/hunter2/",
            "is not a Bitrix24 portal address (the portal, optionally with /rest): write url = \"https://portal.bitrix24.com\"",
        ),
    ];
    for (rule, raw, message) in cases {
        let got = api_url(raw, rule);
        assert_eq!(got, Err(message.to_string()), "{raw}");
        assert!(!message.contains("hunter2"), "{raw}: {message}");
    }
}

/// A config with one provider of each kind and `extra` after it; its
/// secret files live in `dir`.
fn config(dir: &Path, providers: &str, channels: &str) -> Result<Registry, Vec<ConfigIssue>> {
    for (name, value) in [
        ("bbb", "bbb-secret-0123456789"),
        ("tencent", "tencent-key-0123456789"),
        ("em-id", "YXA6client-id"),
        ("em-secret", "YXA6client-secret"),
        ("b24", "webhookcode0123456789"),
    ] {
        std::fs::write(dir.join(name), value).unwrap();
    }
    let text = format!("{providers}\n{channels}");
    let config = Config::parse(&text, &dir.join("botbox.toml"), dir)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    Registry::from_config(&config)
}

const PROVIDERS: &str = r#"
[providers.bbb]
kind = "bigbluebutton"
url = "https://bbb.example.com/bigbluebutton/"
secret = { file = "bbb" }
[providers.tc]
kind = "tencent"
url = "https://adminapisgp.im.qcloud.com/v4/"
sdkappid = 1400000001
identifier = "administrator"
secret_key = { file = "tencent" }
[providers.em]
kind = "easemob"
url = "https://a1.easemob.com/1122161011178276/demo"
client_id = { file = "em-id" }
client_secret = { file = "em-secret" }
[providers.b24]
kind = "bitrix24"
url = "https://portal.bitrix24.com/rest/"
webhook = { user_id = 1, code = { file = "b24" } }
"#;

/// Every target form of every provider reads; the older forms too.
#[test]
fn every_target_form_of_every_provider_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let channels = r#"
[channels.bbb-all]
provider = "bbb"
target = { meetings = "all" }
[channels.bbb-all-running]
provider = "bbb"
target = { meetings = "all-running" }
[channels.bbb-listed]
provider = "bbb"
target = { meetings = ["room-1", "room-2"] }
[channels.tc-default]
provider = "tc"
[channels.tc-all]
provider = "tc"
target = { groups = "all" }
[channels.em-users]
provider = "em"
target = { users = "all" }
[channels.em-online]
provider = "em"
target = { users = "online" }
[channels.em-rooms]
provider = "em"
target = { chatrooms = "all" }
priority = "high"
[channels.em-old-users]
provider = "em"
target = "all-users"
[channels.em-old-online]
provider = "em"
target = "online-users"
[channels.em-old-rooms]
provider = "em"
target = "chatrooms"
[channels.b24]
provider = "b24"
target = { dialogs = ["chat13", 256] }
"#;
    let registry = config(dir.path(), PROVIDERS, channels).unwrap_or_else(|e| panic!("{e:?}"));
    let text = format!("{PROVIDERS}\n{channels}");
    let config = Config::parse(&text, &dir.path().join("botbox.toml"), dir.path()).unwrap();
    let endpoint = |channel: &str| {
        let c = &config.channels[channel];
        registry.get(&c.provider).unwrap().endpoint(c)
    };
    // The old and new Easemob forms reach the same broadcast.
    for (new, old, endpoint_name) in [
        ("em-users", "em-old-users", "all-users-broadcast"),
        ("em-online", "em-old-online", "online-users-broadcast"),
        ("em-rooms", "em-old-rooms", "chatrooms-broadcast"),
    ] {
        assert_eq!(endpoint(new), endpoint_name);
        assert_eq!(endpoint(old), endpoint_name);
    }
}

/// Each target mistake, per provider, with its exact message and key.
#[test]
fn a_wrong_target_says_what_to_write_instead() {
    const BBB: &str = "write target = { meetings = \"all\" } (every running meeting, listed with getMeetings) or target = { meetings = [\"meetingID\", …] }";
    const TC: &str =
        "write target = { groups = \"all\" } (every audio-video group, with send_broadcast_msg)";
    const EM: &str = "write target = { users = \"all\" } (every user of the app, with /messages/broadcast), target = { users = \"online\" } (the users online, with /messages/users/broadcast) or target = { chatrooms = \"all\" } (every active chat room, with /messages/chatrooms/broadcast)";
    const B24: &str = "write target = { dialogs = [\"chat13\", 256, …] }";
    let cases: Vec<(&str, &str, String)> = vec![
        ("bbb", "", format!("is missing: {BBB}")),
        (
            "bbb",
            "target = \"all-running\"",
            format!("must be a table; {BBB}"),
        ),
        (
            "bbb",
            "target = { meeting = \"all\" }",
            format!("names `meeting`, which a bigbluebutton channel does not post to; {BBB}"),
        ),
        (
            "bbb",
            "target = { meetings = \"some\" }",
            format!("`meetings` takes \"all\" or a list of meeting IDs; {BBB}"),
        ),
        (
            "bbb",
            "target = { meetings = [] }",
            "lists no meetings".into(),
        ),
        (
            "bbb",
            "target = { meetings = [\"a,b\"] }",
            "`a,b` is not a meeting ID: 2 to 256 characters, no commas".into(),
        ),
        (
            "bbb",
            "target = { meetings = [\"room-1\", \"room-1\"] }",
            "lists `room-1` twice".into(),
        ),
        (
            "bbb",
            "target = { meetings = [12] }",
            "meetings must be strings".into(),
        ),
        (
            "tc",
            "target = { groups = [\"@TGS#1\"] }",
            format!("`groups` takes \"all\"; {TC}"),
        ),
        (
            "tc",
            "target = \"all-avchatrooms\"",
            format!("must be a table; {TC}"),
        ),
        ("em", "", format!("is missing: {EM}")),
        (
            "em",
            "target = \"everybody\"",
            format!("must be a table; {EM}"),
        ),
        (
            "em",
            "target = { chatrooms = \"online\" }",
            format!("`chatrooms` takes \"all\"; {EM}"),
        ),
        (
            "em",
            "target = { groups = \"all\" }",
            format!("names `groups`, which an easemob channel does not post to; {EM}"),
        ),
        ("b24", "", format!("is missing: {B24}")),
        (
            "b24",
            "target = { dialogs = \"all\" }",
            format!(
                "`dialogs` takes a list of dialog IDs (chatN for a chat, a user id for a private dialog); {B24}"
            ),
        ),
        (
            "b24",
            "target = { dialogs = [\"chat0\"] }",
            "`chat0` is neither chatN nor a positive user id".into(),
        ),
        (
            "b24",
            "target = { dialogs = [1.5] }",
            "dialogs must be strings or integers".into(),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (provider, target, message) in cases {
        let channels = format!("[channels.lobby]\nprovider = \"{provider}\"\n{target}\n");
        let Err(issues) = config(dir.path(), PROVIDERS, &channels) else {
            panic!("{provider} {target}: accepted");
        };
        assert_eq!(
            issues,
            [ConfigIssue {
                key: "channels.lobby.target".into(),
                message
            }],
            "{provider} {target}"
        );
    }
}

/// The url issues carry the file's key; Easemob's org and app may come with
/// the url, and keys that disagree with it are named.
#[test]
fn url_issues_name_their_key_and_easemob_names_may_come_with_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let providers = PROVIDERS
        .replace(
            "https://portal.bitrix24.com/rest/",
            "https://portal.bitrix24.com/rest/1/webhookcode0123456789/",
        )
        .replace(
            "client_id = { file = \"em-id\" }",
            "org = \"1122161011178276\"\napp = \"other\"\nclient_id = { file = \"em-id\" }",
        );
    let Err(issues) = config(dir.path(), &providers, "") else {
        panic!("accepted");
    };
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["providers.b24.url", "providers.em.app"]);
    assert!(!format!("{issues:?}").contains("webhookcode0123456789"));
    assert_eq!(
        issues[1].message,
        "is not the app the url names (`demo`); remove app or make the two agree"
    );
    // The org and app as keys beside the bare host, as before.
    let providers = PROVIDERS.replace(
        "url = \"https://a1.easemob.com/1122161011178276/demo\"",
        "url = \"https://a1.easemob.com\"\norg = \"1122161011178276\"\napp = \"demo\"",
    );
    config(dir.path(), &providers, "").unwrap_or_else(|e| panic!("{e:?}"));
    // Neither in the url nor as keys: both are missing.
    let providers = PROVIDERS.replace(
        "url = \"https://a1.easemob.com/1122161011178276/demo\"",
        "url = \"https://a1.easemob.com\"",
    );
    let Err(issues) = config(dir.path(), &providers, "") else {
        panic!("accepted");
    };
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["providers.em.org", "providers.em.app"]);
}

/// The example in the README's config section, exactly.
#[test]
fn the_readme_example_of_two_problems_is_what_check_prints() {
    let dir = tempfile::tempdir().unwrap();
    let providers = PROVIDERS
        .replace("[providers.b24]", "[providers.portal]")
        .replace(
            "https://portal.bitrix24.com/rest/",
            "https://portal.bitrix24.com/rest/1/webhookcode0123456789/",
        )
        .replace("[providers.bbb]", "[providers.campus-bbb]");
    let channels = "[channels.lobby]\nprovider = \"campus-bbb\"\ntarget = { meeting = \"all\" }\n";
    for (name, value) in [
        ("bbb", "bbb-secret-0123456789"),
        ("tencent", "k-0123456789"),
        ("em-id", "YXA6client-id"),
        ("em-secret", "YXA6client-secret"),
        ("b24", "webhookcode0123456789"),
    ] {
        std::fs::write(dir.path().join(name), value).unwrap();
    }
    let text = format!("{providers}\n{channels}");
    let config = Config::parse(&text, Path::new("botbox.toml"), dir.path()).unwrap();
    let Err(issues) = Registry::from_config(&config) else {
        panic!("accepted");
    };
    // As `botbox check` prints a config's problems.
    let err = crate::config::ConfigError::Invalid {
        path: "botbox.toml".into(),
        issues,
    };
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let example = format!("error: {err}");
    assert!(readme.contains(&example), "README lacks:\n{example}");
}
