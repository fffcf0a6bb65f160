//! What an operator writes and reads, end to end against the simulators:
//! each provider configured with the `url` its console or docs show and a
//! `target` in the one shape every provider shares, delivering; and
//! `botbox outbox list` telling delivery attempts from requests, per part.
//! (The accepted and refused forms, message by message, are unit tests in
//! `host/src/providers/setup_tests.rs`.)

mod support;

use botbox::delivery::store::MessageState;
use botbox_sim::{Fault, SimConfig, SimMeeting, SimProvider, Target};
use serde_json::json;
use support::host::{Host, botbox, deliveries_with_text};
use support::secrets::assert_no_secret;
use support::sender::text_to;
use support::sims::{Setup, toml_str, windows_sim};

/// `section` with its `url = "…"` line's value passed through `change`,
/// and the lines starting with any of `drop` left out.
fn rewrite(section: &str, change: impl Fn(&str) -> String, drop: &[&str]) -> String {
    section
        .lines()
        .filter(|line| !drop.iter().any(|d| line.starts_with(d)))
        .map(|line| match line.strip_prefix("url = ") {
            Some(quoted) => {
                let url: String = toml::from_str::<toml::Table>(&format!("u = {quoted}")).unwrap()
                    ["u"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                format!("url = {}", toml_str(&change(&url)))
            }
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_delivers_with_the_url_and_target_an_operator_copies() {
    // Tencent takes one call a second: a second is 200 ms real here.
    let setup = Setup::start(windows_sim(), 5.0).await;
    let c = setup.cfg().clone();
    let (org, app) = (c.easemob.org.clone(), c.easemob.app.clone());
    let providers = [
        // The server alone, and what `bbb-conf --secret` prints.
        rewrite(
            &setup.bbb("bbb-bare", &c.bbb.secret),
            |u| u.trim_end_matches("/bigbluebutton/api").to_owned(),
            &[],
        ),
        rewrite(
            &setup.bbb("bbb-conf", &c.bbb.secret),
            |u| u.replace("/bigbluebutton/api", "/bigbluebutton/"),
            &[],
        ),
        // The region domain with the version path.
        rewrite(
            &setup.tencent("tc", &c.tencent.secret_key),
            |u| format!("{u}/v4/"),
            &[],
        ),
        // The REST host with org and app, which then are not repeated.
        rewrite(
            &setup.easemob("em", &c.easemob.client_secret),
            |u| format!("{u}/{org}/{app}/"),
            &["org = ", "app = "],
        ),
        // The portal's REST address.
        rewrite(
            &setup.bitrix_webhook("b24", &c.bitrix.webhook_code),
            |u| format!("{u}/rest/"),
            &[],
        ),
    ]
    .concat();
    assert!(!providers.contains("/bigbluebutton/api"), "{providers}");
    assert!(!providers.contains("org = "), "{providers}");
    let channels = r#"
[channels.bbb-all]
provider = "bbb-bare"
target = { meetings = "all" }
[channels.bbb-listed]
provider = "bbb-conf"
target = { meetings = ["room-2"] }
[channels.tc]
provider = "tc"
target = { groups = "all" }
[channels.em-online]
provider = "em"
target = { users = "online" }
[channels.em-rooms]
provider = "em"
target = { chatrooms = "all" }
[channels.bx]
provider = "b24"
target = { dialogs = ["chat13", 1] }
"#;
    let steps = vec![vec![
        text_to("bbb-all", "to every running meeting"),
        text_to("bbb-listed", "to room-2"),
        text_to("tc", "to every group"),
        text_to("em-online", "to online users"),
        text_to("em-rooms", "to every room"),
        text_to("bx", "to two dialogs"),
    ]];
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();
    let sent = host.step(0).await;
    assert_eq!(sent.len(), 6);
    for s in &sent {
        let (rec, _) = host.done(&s.id()).await;
        assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    }
    let targets = |provider: SimProvider, text: &str| {
        let mut got: Vec<String> = deliveries_with_text(sim, provider, text)
            .into_iter()
            .map(|d| format!("{:?}", d.target))
            .collect();
        got.sort();
        got
    };
    let meeting = |id: &str| format!("{:?}", Target::Meeting { id: id.to_owned() });
    assert_eq!(
        targets(SimProvider::Bbb, "to every running meeting"),
        [meeting("room-1"), meeting("room-2")]
    );
    assert_eq!(targets(SimProvider::Bbb, "to room-2"), [meeting("room-2")]);
    assert_eq!(
        targets(SimProvider::Tencent, "to every group"),
        [format!("{:?}", Target::AllAvChatRooms)]
    );
    assert_eq!(
        targets(SimProvider::Easemob, "to online users"),
        [format!("{:?}", Target::OnlineUsers)]
    );
    assert_eq!(
        targets(SimProvider::Easemob, "to every room"),
        [format!(
            "{:?}",
            Target::ActiveChatRooms {
                level: "normal".into()
            }
        )]
    );
    assert_eq!(
        targets(SimProvider::Bitrix, "to two dialogs"),
        [
            format!("{:?}", Target::Chat { id: 13 }),
            format!("{:?}", Target::User { id: 1 })
        ]
    );
    host.audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_list_shows_delivery_attempts_and_each_parts_requests() {
    let setup = Setup::start(SimConfig::demo(), 50.0).await;
    setup
        .sim
        .bbb_upsert_meeting(SimMeeting::new("room-3", "Sim Room 3", true));
    let providers = setup.bbb("bbb", &setup.cfg().bbb.secret.clone());
    let channels = r#"
[channels.three]
provider = "bbb"
target = { meetings = ["room-1", "room-2", "room-3"] }
"#;
    // 150 words of nine characters: three chat messages of at most 500.
    let long = vec!["abcdefgh"; 150].join(" ");
    let steps = vec![
        vec![text_to("three", "to three meetings")],
        vec![json!({ "channel": "three", "content": { "text": long } })],
    ];
    let config = setup.write_config(&providers, channels, &steps, "");
    let config = config.to_str().unwrap().to_owned();
    let dir = setup.dir.path().to_owned();
    let host = Host::start(setup, &providers, channels, &steps).await;
    let sim = host.sim();

    // The first request fails once (a 502): the message goes out in two
    // attempts, its first part in two requests.
    sim.inject(SimProvider::Bbb, Fault::server_error(502), 1);
    let three = host.step(0).await[0].id();
    let (rec, _) = host.done(&three).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    let split = host.step(1).await[0].id();
    let (rec, _) = host.done(&split).await;
    assert_eq!(rec.state, MessageState::Delivered, "{rec:?}");
    assert_eq!(host.parts(&split).len(), 9);

    let (code, out) = botbox(&dir, &["outbox", "--config", &config, "list"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_no_secret("botbox outbox list", &out);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let at = |id: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not listed:\n{out}"))
    };
    let first = at(&three);
    assert!(
        lines[first].contains("delivered 2 attempts, 4 requests "),
        "{out}"
    );
    assert_eq!(
        lines[first + 1..first + 4],
        [
            "part 1/3 room-1: delivered, 2 requests",
            "part 2/3 room-2: delivered, 1 request",
            "part 3/3 room-3: delivered, 1 request",
        ],
        "{out}"
    );
    let second = at(&split);
    assert!(
        lines[second].contains("delivered 1 attempt, 9 requests "),
        "{out}"
    );
    // Each meeting gets the three slices in order.
    for (i, line) in lines[second + 1..second + 10].iter().enumerate() {
        let room = i / 3 + 1;
        assert_eq!(
            *line,
            format!("part {}/9 room-{room}: delivered, 1 request", i + 1),
            "{out}"
        );
    }
    host.audit().await;
}
