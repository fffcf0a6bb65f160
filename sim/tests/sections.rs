//! The `[providers.*]` sections and secret files each simulator writes for
//! botbox: `botbox sim` prints them and the demo runs with them, so their
//! text is pinned here (it was written by hand in the host before each
//! simulator wrote its own).

mod common;

use botbox_sim::{SimConfig, SimPorts, SimProvider};

#[tokio::test]
async fn the_sections_are_the_ones_botbox_sim_always_printed() {
    let sim = common::start(SimConfig::demo()).await;
    let dir = tempfile_dir();
    botbox_sim::write_secrets(&dir, sim.config()).unwrap();
    let file = |name: &str| toml::Value::String(dir.join(name).display().to_string()).to_string();
    let cfg = sim.config();
    let expected = format!(
        r#"[providers.bbb]
kind = "bigbluebutton"
url = "{bbb}"
secret = {{ file = {bbb_secret} }}
checksum = "sha256"

[providers.tencent]
kind = "tencent"
url = "{tencent}"
sdkappid = {sdkappid}
identifier = "{identifier}"
secret_key = {{ file = {tencent_key} }}

[providers.easemob]
kind = "easemob"
url = "{easemob}"
org = "{org}"
app = "{app}"
client_id = {{ file = {em_id} }}
client_secret = {{ file = {em_secret} }}

[providers.bitrix24]
kind = "bitrix24"
url = "{bitrix}"
webhook = {{ user_id = {user_id}, code = {{ file = {b24_code} }} }}
"#,
        bbb = sim.bbb_url(),
        bbb_secret = file("bbb-secret"),
        tencent = sim.tencent_url(),
        sdkappid = cfg.tencent.sdkappid,
        identifier = cfg.tencent.identifier,
        tencent_key = file("tencent-secret-key"),
        easemob = sim.easemob_url(),
        org = cfg.easemob.org,
        app = cfg.easemob.app,
        em_id = file("easemob-client-id"),
        em_secret = file("easemob-client-secret"),
        bitrix = sim.bitrix_url(),
        user_id = cfg.bitrix.webhook_user_id,
        b24_code = file("bitrix-webhook-code"),
    );
    // Simulators added later append their sections; these four stay as they were.
    let sections = botbox_sim::provider_sections(&sim, &dir);
    assert_eq!(&sections[..expected.len().min(sections.len())], expected);

    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files.retain(|(name, _)| {
        ["bbb-", "tencent-", "easemob-", "bitrix-"]
            .iter()
            .any(|p| name.starts_with(p))
    });
    let mut want = vec![
        ("bbb-secret", &cfg.bbb.secret),
        ("bitrix-webhook-code", &cfg.bitrix.webhook_code),
        ("easemob-client-id", &cfg.easemob.client_id),
        ("easemob-client-secret", &cfg.easemob.client_secret),
        ("tencent-secret-key", &cfg.tencent.secret_key),
    ];
    want.sort();
    let want: Vec<(String, String)> = want
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.clone()))
        .collect();
    assert_eq!(files, want);
    std::fs::remove_dir_all(&dir).unwrap();
    sim.shutdown().await;
}

#[test]
fn consecutive_ports_follow_the_simulator_order() {
    let p = SimPorts::consecutive(18080);
    assert_eq!(
        (p.bbb, p.tencent, p.easemob, p.bitrix),
        (18080, 18081, 18082, 18083)
    );
}

#[test]
fn every_provider_has_a_section_name() {
    let names: Vec<&str> = SimProvider::ALL
        .into_iter()
        .map(botbox_sim::section_name)
        .collect();
    assert_eq!(names[..4], ["bbb", "tencent", "easemob", "bitrix24"]);
}

/// A fresh folder under the system temp dir (this crate has no tempfile).
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "botbox-sim-sections-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
