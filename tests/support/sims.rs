//! The provider simulators (botbox-sim) wired for a host under test: a TCP
//! tap in front of each, a folder with secret files, and the `[providers.*]`
//! sections and `botbox.toml` that point a host at them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use botbox_sim::{Sim, SimConfig, SimProvider};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::secrets::add_secret;
use super::sender::sender_plugin;
use super::{lock, log_buffer};

/// Real time a request may arrive early at the simulator without counting
/// as a violation: on a loaded two-core machine two requests the throttle
/// spaced correctly were seen arriving 30+ ms closer together than they
/// left. At the scale used with it (5) that is a tenth of a simulated second.
pub const JITTER_MS: u64 = 20;
/// `oauth.token_key` of the Bitrix24 OAuth accounts: seals the stored pair.
pub const BITRIX_TOKEN_KEY: &str =
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// The demo simulators with [`JITTER_MS`] of tolerance.
pub fn windows_sim() -> SimConfig {
    SimConfig {
        tolerance_ms: JITTER_MS,
        ..SimConfig::demo()
    }
}

/// `s` as a TOML string literal.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The `[providers.*]` sections `botbox sim` prints for `sim` (one per
/// provider, named after its kind), with the simulator's credentials written
/// as secret files under `dir/secrets`.
pub fn sim_providers(sim: &Sim, dir: &Path) -> String {
    let secrets = dir.join("secrets");
    botbox::cli::sim::write_secrets(&secrets, sim.config()).unwrap();
    botbox::cli::sim::provider_sections(sim, &secrets)
}

/// A host's config on `sim`: `[runtime]` (no reload, clocks at `scale`),
/// [`sim_providers`], then `channels`.
pub fn sim_config(sim: &Sim, dir: &Path, scale: f64, channels: &str) -> String {
    format!(
        "[runtime]\nreload = false\ntime_scale = {scale}\ntime_origin_ms = {}\n{}\n{channels}",
        sim.calendar_origin_ms(),
        sim_providers(sim, dir)
    )
}

/// The zone (minutes east of UTC, and its `utc±hh:mm` form) in which the
/// wall clock now reads about `minute` minutes past midnight: a simulator
/// started now begins its calendar there, whatever the time of day.
pub fn zone_where_it_is_now(minute: i32) -> (i32, String) {
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let now_min = (wall_ms / 60_000 % 1440) as i32;
    let offset = (minute - now_min + 720).rem_euclid(1440) - 720;
    let zone = format!(
        "utc{}{:02}:{:02}",
        if offset < 0 { '-' } else { '+' },
        offset.abs() / 60,
        offset.abs() % 60
    );
    (offset, zone)
}

// ---------------------------------------------------------------------------
// A TCP tap in front of each simulator: forwards bytes both ways and keeps
// them, so the credentials the host sends or receives are known.

/// One buffer per connection and direction.
type Streams = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

/// Forwards one simulator's port and keeps all the bytes that crossed it.
pub struct Tap {
    port: u16,
    streams: Streams,
}

impl Tap {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: u16) -> Tap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let streams: Streams = Arc::default();
        let keep = streams.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let up: Arc<Mutex<Vec<u8>>> = Arc::default();
                let down: Arc<Mutex<Vec<u8>>> = Arc::default();
                lock(&keep).extend([up.clone(), down.clone()]);
                tokio::spawn(async move {
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, up), pump(sr, cw, down));
                });
            }
        });
        Tap { port, streams }
    }

    /// Everything that crossed, one text per connection and direction.
    pub fn traffic(&self) -> Vec<String> {
        lock(&self.streams)
            .iter()
            .map(|s| String::from_utf8_lossy(&lock(s)).into_owned())
            .collect()
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    keep: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                lock(&keep).extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

// ---------------------------------------------------------------------------
// A simulator, its taps, a folder with secret files and a config.

/// The simulators (at `scale`), their taps, and the folder the host's
/// config, plugins and secret files are written to.
pub struct Setup {
    pub sim: Sim,
    /// One tap per simulator, with the simulator's URL through it.
    taps: Vec<(SimProvider, Tap, String)>,
    pub dir: tempfile::TempDir,
    scale: f64,
}

fn port_of(url: &str) -> u16 {
    let after = url.trim_start_matches("http://127.0.0.1:");
    after[..after.find('/').unwrap_or(after.len())]
        .parse()
        .unwrap()
}

impl Setup {
    pub async fn start(mut cfg: SimConfig, scale: f64) -> Setup {
        log_buffer();
        cfg.time_scale = scale;
        // The simulator's demo credentials are the real secrets here.
        for credential in botbox_sim::credentials(&cfg) {
            add_secret(&credential);
        }
        add_secret(BITRIX_TOKEN_KEY);
        let sim = Sim::start(cfg).await.expect("simulators start");
        let mut taps = Vec::new();
        for provider in SimProvider::ALL {
            let url = sim.url(provider);
            let tap = Tap::start(port_of(&url)).await;
            let tapped = url.replace(&format!(":{}", port_of(&url)), &format!(":{}", tap.port));
            taps.push((provider, tap, tapped));
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        Setup {
            sim,
            taps,
            dir,
            scale,
        }
    }

    pub fn cfg(&self) -> &SimConfig {
        self.sim.config()
    }

    /// Writes a secret file; returns the `{ file = … }` reference to it.
    pub fn secret(&self, name: &str, value: &str) -> String {
        add_secret(value);
        let path = self.dir.path().join("secrets").join(name);
        std::fs::write(&path, value).unwrap();
        format!("{{ file = {} }}", toml_str(&path.display().to_string()))
    }

    /// The URL of `provider`'s simulator through its tap.
    fn url(&self, provider: SimProvider) -> &str {
        let (_, _, url) = self.taps.iter().find(|(p, _, _)| *p == provider).unwrap();
        url
    }

    /// `provider`'s section as its simulator writes it, named `name`, with
    /// the credentials of `cfg` as secret files `{name}-{stem}`.
    pub fn section(&self, provider: SimProvider, cfg: &SimConfig, name: &str) -> String {
        botbox_sim::provider_section(
            provider,
            cfg,
            name,
            self.url(provider),
            &mut |stem, value| self.secret(&format!("{name}-{stem}"), value),
        )
    }

    pub fn bbb(&self, name: &str, secret: &str) -> String {
        let mut cfg = self.cfg().clone();
        cfg.bbb.secret = secret.to_owned();
        self.section(SimProvider::Bbb, &cfg, name)
    }

    pub fn tencent(&self, name: &str, key: &str) -> String {
        let mut cfg = self.cfg().clone();
        cfg.tencent.secret_key = key.to_owned();
        self.section(SimProvider::Tencent, &cfg, name)
    }

    pub fn easemob(&self, name: &str, client_secret: &str) -> String {
        let mut cfg = self.cfg().clone();
        cfg.easemob.client_secret = client_secret.to_owned();
        self.section(SimProvider::Easemob, &cfg, name)
    }

    pub fn bitrix_webhook(&self, name: &str, code: &str) -> String {
        let mut cfg = self.cfg().clone();
        cfg.bitrix.webhook_code = code.to_owned();
        self.section(SimProvider::Bitrix, &cfg, name)
    }

    pub fn bitrix_oauth(&self, name: &str, access: &str, refresh: &str) -> String {
        let c = &self.cfg().bitrix;
        format!(
            "[providers.{name}]\nkind = \"bitrix24\"\nurl = {url}\n\
             [providers.{name}.oauth]\naccess_token = {}\nrefresh_token = {}\nclient_id = {}\nclient_secret = {}\ntoken_url = {}\ntoken_key = {}\n",
            self.secret(&format!("{name}-access"), access),
            self.secret(&format!("{name}-refresh"), refresh),
            toml_str(&c.client_id),
            self.secret(&format!("{name}-client-secret"), &c.client_secret),
            toml_str(&format!("{}/oauth/token/", self.url(SimProvider::Bitrix))),
            self.secret(&format!("{name}-token-key"), BITRIX_TOKEN_KEY),
            url = toml_str(self.url(SimProvider::Bitrix)),
        )
    }

    /// Writes `botbox.toml` with the providers, channels and one plugin per
    /// step (`step0`, `step1`, …), each sending its messages on any event,
    /// then `extra` (more plugins).
    pub fn write_config(
        &self,
        providers: &str,
        channels: &str,
        steps: &[Vec<Value>],
        extra: &str,
    ) -> PathBuf {
        let mut text = format!(
            "[storage]\ndir = \"state\"\n[runtime]\nreload = false\ntime_scale = {:?}\ntime_origin_ms = {}\n{providers}\n{channels}\n",
            self.scale,
            self.sim.calendar_origin_ms()
        );
        let names: Vec<String> = channels
            .lines()
            .filter_map(|l| l.trim().strip_prefix("[channels."))
            .map(|l| l.trim_end_matches(']').to_string())
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let granted = names
            .iter()
            .map(|n| toml_str(n))
            .collect::<Vec<_>>()
            .join(", ");
        for (i, messages) in steps.iter().enumerate() {
            std::fs::write(
                self.dir.path().join(format!("step{i}.wasm")),
                sender_plugin(&names, messages),
            )
            .unwrap();
            text.push_str(&format!(
                "[plugins.step{i}]\npath = \"step{i}.wasm\"\nchannels = [{granted}]\n\
                 events = [\"custom\", \"meeting\", \"chat-message\"]\n\
                 limits = {{ deadline_ms = 20000 }}\n"
            ));
        }
        text.push_str(extra);
        let path = self.dir.path().join("botbox.toml");
        std::fs::write(&path, &text).unwrap();
        path
    }

    /// The taps, to harvest the credentials that crossed them.
    pub fn tap_refs(&self) -> Vec<&Tap> {
        self.taps.iter().map(|(_, tap, _)| tap).collect()
    }
}
