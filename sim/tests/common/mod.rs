// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::time::Duration;

use botbox_sim::{Sim, SimConfig, sign};
use serde_json::Value;

pub async fn start(cfg: SimConfig) -> Sim {
    match Sim::start(cfg).await {
        Ok(sim) => sim,
        Err(e) => panic!("simulator failed to start: {e}"),
    }
}

/// The demo config with a clock that barely moves on its own (1 real second
/// is 1 simulated millisecond): tests that step time with `Sim::advance` stay
/// exact however slowly a loaded machine runs them.
pub fn steady() -> SimConfig {
    SimConfig::fast(0.001)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

pub struct Reply {
    pub status: u16,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.expect("request failed");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    Reply { status, text }
}

pub async fn get(url: &str) -> Reply {
    send(client().get(url)).await
}

/// The `<messageKey>` of a BigBlueButton XML answer ("" when empty or absent).
pub fn xml_tag(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.find(&open)
        .and_then(|i| {
            let rest = &xml[i + open.len()..];
            rest.find(&close).map(|j| rest[..j].to_owned())
        })
        .unwrap_or_default()
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh valid Tencent request URL for the demo admin.
pub fn tencent_url(sim: &Sim, random: u32) -> String {
    let c = &sim.config().tencent;
    let sig = sign::tencent_usersig(c.sdkappid, &c.identifier, &c.secret_key, now_unix(), 86_400);
    format!(
        "{}/v4/group_open_http_svc/send_broadcast_msg?{}",
        sim.tencent_url(),
        sign::tencent_query(c.sdkappid, &c.identifier, &sig, random)
    )
}

pub fn text_body(random: u32, text: &str) -> Value {
    serde_json::json!({
        "Random": random,
        "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}],
    })
}

pub async fn easemob_token(sim: &Sim) -> String {
    let c = &sim.config().easemob;
    let r = send(
        client()
            .post(format!("{}/{}/{}/token", sim.easemob_url(), c.org, c.app))
            .json(&serde_json::json!({
                "grant_type": "client_credentials",
                "client_id": c.client_id,
                "client_secret": c.client_secret,
            })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

pub fn easemob_url(sim: &Sim, endpoint: &str) -> String {
    let c = &sim.config().easemob;
    format!("{}/{}/{}/{endpoint}", sim.easemob_url(), c.org, c.app)
}

pub fn bitrix_webhook_url(sim: &Sim) -> String {
    let c = &sim.config().bitrix;
    format!(
        "{}/rest/{}/{}/im.message.add.json",
        sim.bitrix_url(),
        c.webhook_user_id,
        c.webhook_code
    )
}
