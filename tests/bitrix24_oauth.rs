//! Bitrix24's OAuth pair across restarts, hosts and lost answers, against
//! the simulated portal, which invalidates a used refresh token and the
//! access token issued with it, as the portal documents.
//!
//! Each "host" is a provider registry built from its own `botbox.toml`, as
//! `botbox run` builds it: its own token store connection and lock holder
//! id, so hosts share nothing but the storage backend.

#[path = "support/pg.rs"]
mod pg;
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use botbox::app::App;
use botbox::config::{ChannelConfig, Config};
use botbox::providers::{DeliveryOutcome, Provider, Registry};
use botbox::wit::types::{Content, Message};
use botbox_sim::{Fault, Sim, SimConfig, SimProvider, endpoints};
use pg::PgServer;

const KEY: &str = "c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc";
const OTHER_KEY: &str = "0badc0de112233445566778899aabbccddeeff00112233445566778899aabbcc";

struct Host {
    provider: Arc<dyn Provider>,
    channel: ChannelConfig,
}

/// What a host's folder holds: the secrets as files, and `[storage]`.
struct HostFiles<'a> {
    dir: &'a Path,
    storage: &'a str,
    access: &'a str,
    refresh: &'a str,
    token_key: &'a str,
}

impl Host {
    /// Starts (or restarts) a host from the files in `f.dir`.
    fn start(sim: &Sim, f: HostFiles<'_>) -> Host {
        let c = &sim.config().bitrix;
        std::fs::create_dir_all(f.dir).unwrap();
        for (name, value) in [
            ("access", f.access),
            ("refresh", f.refresh),
            ("client-secret", c.client_secret.as_str()),
            ("token-key", f.token_key),
        ] {
            std::fs::write(f.dir.join(name), value).unwrap();
        }
        let text = format!(
            "{storage}dir = {data:?}\n\
             [providers.b24]\nkind = \"bitrix24\"\nurl = {url:?}\n\
             [providers.b24.oauth]\n\
             access_token = {{ file = \"access\" }}\n\
             refresh_token = {{ file = \"refresh\" }}\n\
             client_id = {client_id:?}\n\
             client_secret = {{ file = \"client-secret\" }}\n\
             token_url = {token_url:?}\n\
             token_key = {{ file = \"token-key\" }}\n\
             [channels.team]\nprovider = \"b24\"\ntarget = {{ dialogs = [\"chat1\"] }}\n",
            storage = f.storage,
            data = f.dir.join("data").display().to_string(),
            url = sim.bitrix_url(),
            client_id = c.client_id,
            token_url = format!("{}/oauth/token/", sim.bitrix_url()),
        );
        let config = Config::parse(&text, &f.dir.join("botbox.toml"), f.dir)
            .unwrap_or_else(|e| panic!("test config: {e}\n{text}"));
        let registry = Registry::from_config(&config).unwrap_or_else(|e| panic!("{e:?}"));
        Host {
            provider: registry.get("b24").unwrap().clone(),
            channel: config.channels["team"].clone(),
        }
    }

    async fn send(&self, text: &str) -> DeliveryOutcome {
        let message = Message {
            channel: "team".into(),
            content: Content::Text(text.into()),
            sender: None,
            extra: None,
            idempotency_key: None,
            reply_to: None,
            options: None,
        };
        let parts = self
            .provider
            .plan("team", &self.channel, &message)
            .await
            .unwrap();
        self.provider.send(&self.channel, &parts[0]).await
    }
}

const SQLITE: &str = "[storage]\n";

fn postgres(pg: &PgServer, dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    pg.write_url(dir);
    "[storage]\nbackend = \"postgres\"\npostgres_url = { file = \"pg-url\" }\n".into()
}

fn delivered(outcome: &DeliveryOutcome) -> bool {
    matches!(outcome, DeliveryOutcome::Delivered { .. })
}

fn fetches(sim: &Sim) -> u64 {
    sim.token_fetches(SimProvider::Bitrix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_refresh_uses_the_stored_pair() {
    let sim = Sim::start(SimConfig::demo()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let c = sim.config().bitrix.clone();
    let files = |token_key: &'static str| HostFiles {
        dir: tmp.path(),
        storage: SQLITE,
        access: &c.access_token,
        refresh: &c.refresh_token,
        token_key,
    };

    let host = Host::start(&sim, files(KEY));
    sim.bitrix_expire_access_tokens();
    let outcome = host.send("before the restart").await;
    assert!(delivered(&outcome), "{outcome:?}");
    assert_eq!(fetches(&sim), 1);
    drop(host);

    // The config's pair is dead now (the portal killed both with the
    // refresh); the restarted host sends with the stored one.
    let host = Host::start(&sim, files(KEY));
    let outcome = host.send("after the restart").await;
    assert!(delivered(&outcome), "{outcome:?}");
    assert_eq!(fetches(&sim), 1, "no refresh was needed");
    drop(host);

    // And it refreshes with the stored refresh token, not the config's.
    sim.bitrix_expire_access_tokens();
    let host = Host::start(&sim, files(KEY));
    let outcome = host.send("after the second expiry").await;
    assert!(delivered(&outcome), "{outcome:?}");
    assert_eq!(fetches(&sim), 2);
    drop(host);

    // The stored pair is sealed: another key does not open it, and the
    // error names the key to set, without a secret in it.
    let host = Host::start(&sim, files(OTHER_KEY));
    let outcome = host.send("with the wrong key").await;
    let DeliveryOutcome::CredentialsExpired { reason } = &outcome else {
        panic!("{outcome:?}");
    };
    assert!(reason.contains("providers.b24.oauth.token_key"), "{reason}");
    for secret in [KEY, OTHER_KEY, &c.client_secret, &c.refresh_token] {
        assert!(!reason.contains(secret), "{reason}");
    }
    assert_eq!(fetches(&sim), 2, "a wrong key never reaches the portal");
    let raw = std::fs::read(tmp.path().join("data/outbox.sqlite")).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(!raw.contains(&c.refresh_token) && !raw.contains(&c.access_token));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_on_postgresql_refresh_once_for_all() {
    let pg = PgServer::start();
    let sim = Sim::start(SimConfig::demo()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let c = sim.config().bitrix.clone();
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| tmp.path().join(format!("host{i}")))
        .collect();
    let storages: Vec<String> = dirs.iter().map(|d| postgres(&pg, d)).collect();
    let start_all = || -> Vec<Arc<Host>> {
        dirs.iter()
            .zip(&storages)
            .map(|(dir, storage)| {
                Arc::new(Host::start(
                    &sim,
                    HostFiles {
                        dir,
                        storage,
                        access: &c.access_token,
                        refresh: &c.refresh_token,
                        token_key: KEY,
                    },
                ))
            })
            .collect()
    };
    async fn send_all(hosts: &[Arc<Host>], round: &str) -> Vec<DeliveryOutcome> {
        let tasks: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let h = h.clone();
                let text = format!("{round} from host {i}");
                tokio::spawn(async move { h.send(&text).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    let hosts = start_all();
    // Every host learns its access token expired at about the same time;
    // the token server answers slowly, so the refreshes overlap.
    sim.bitrix_expire_access_tokens();
    sim.inject_endpoint(
        SimProvider::Bitrix,
        endpoints::BITRIX_OAUTH_TOKEN,
        Fault::slow(Duration::from_millis(400)),
        3,
    );
    let outcomes = send_all(&hosts, "first expiry").await;
    assert!(outcomes.iter().all(delivered), "{outcomes:?}");
    assert_eq!(fetches(&sim), 1, "one refresh for all three hosts");
    sim.clear_faults();

    // Restarted, all three use the stored pair.
    drop(hosts);
    let hosts = start_all();
    let outcomes = send_all(&hosts, "after the restart").await;
    assert!(outcomes.iter().all(delivered), "{outcomes:?}");
    assert_eq!(fetches(&sim), 1);

    // The next expiry, again one refresh, from the stored refresh token.
    sim.bitrix_expire_access_tokens();
    let outcomes = send_all(&hosts, "second expiry").await;
    assert!(outcomes.iter().all(delivered), "{outcomes:?}");
    assert_eq!(fetches(&sim), 2);
    assert_eq!(sim.deliveries_to(SimProvider::Bitrix).len(), 9);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_refresh_answer_stops_refreshing_until_the_operator_gives_a_new_pair() {
    let sim = Sim::start(SimConfig::demo()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let c = sim.config().bitrix.clone();
    let host = Host::start(
        &sim,
        HostFiles {
            dir: tmp.path(),
            storage: SQLITE,
            access: &c.access_token,
            refresh: &c.refresh_token,
            token_key: KEY,
        },
    );
    sim.bitrix_expire_access_tokens();
    // The portal issues the new pair, and the answer never arrives.
    sim.inject_endpoint(
        SimProvider::Bitrix,
        endpoints::BITRIX_OAUTH_TOKEN,
        Fault::LostResponse,
        1,
    );
    let outcome = host.send("lost").await;
    assert!(
        matches!(outcome, DeliveryOutcome::RetryLater { .. }),
        "{outcome:?}"
    );
    assert_eq!(fetches(&sim), 1);

    // The retry: the old pair is dead, the refresh token refused, and the
    // reason says what to do.
    let outcome = host.send("retried").await;
    let DeliveryOutcome::CredentialsExpired { reason } = &outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(fetches(&sim), 2);
    assert!(reason.contains("invalid_grant"), "{reason}");
    assert!(reason.contains("providers.b24.oauth"), "{reason}");
    assert!(reason.contains("re-install"), "{reason}");
    for secret in [&c.client_secret, &c.refresh_token, &c.access_token] {
        assert!(!reason.contains(secret.as_str()), "{reason}");
    }
    // No more refreshes with a pair the portal refused.
    for _ in 0..3 {
        let outcome = host.send("again").await;
        assert!(
            matches!(outcome, DeliveryOutcome::CredentialsExpired { .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(fetches(&sim), 2, "the refused pair is not tried again");
    drop(host);

    // The operator re-installs the app and puts the new pair in the
    // config: it wins over the stored chain, and is stored in turn.
    let (access, refresh) = sim.bitrix_issue_tokens();
    let files = || HostFiles {
        dir: tmp.path(),
        storage: SQLITE,
        access: &access,
        refresh: &refresh,
        token_key: KEY,
    };
    let host = Host::start(&sim, files());
    let outcome = host.send("with the new pair").await;
    assert!(delivered(&outcome), "{outcome:?}");
    sim.bitrix_expire_access_tokens();
    let outcome = host.send("new pair, refreshed").await;
    assert!(delivered(&outcome), "{outcome:?}");
    assert_eq!(fetches(&sim), 3);
    drop(host);
    let host = Host::start(&sim, files());
    let outcome = host.send("new pair, after a restart").await;
    assert!(delivered(&outcome), "{outcome:?}");
    assert_eq!(fetches(&sim), 3);
    sim.shutdown().await;
}

/// Processes killed when the test ends, however it ends.
struct Processes(Vec<std::process::Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `botbox run` folder on the shared PostgreSQL: the Bitrix24 OAuth
/// account, one channel, and a plugin that only holds its grant.
fn write_run_config(dir: &Path, sim: &Sim, pg: &PgServer) -> PathBuf {
    let c = &sim.config().bitrix;
    std::fs::create_dir_all(dir).unwrap();
    pg.write_url(dir);
    for (name, value) in [
        ("access", c.access_token.as_str()),
        ("refresh", c.refresh_token.as_str()),
        ("client-secret", c.client_secret.as_str()),
        ("token-key", KEY),
    ] {
        std::fs::write(dir.join(name), value).unwrap();
    }
    let bot = support::WatPlugin::new(support::Ask {
        channels: &["team"],
        events: &[4],
        ..support::Ask::default()
    })
    .build();
    std::fs::write(dir.join("bot.wasm"), bot).unwrap();
    let text = format!(
        "[runtime]\nreload = false\n\
         [storage]\nbackend = \"postgres\"\npostgres_url = {{ file = \"pg-url\" }}\nlease = \"5s\"\n\
         [providers.b24]\nkind = \"bitrix24\"\nurl = {url:?}\n\
         [providers.b24.oauth]\n\
         access_token = {{ file = \"access\" }}\n\
         refresh_token = {{ file = \"refresh\" }}\n\
         client_id = {client_id:?}\n\
         client_secret = {{ file = \"client-secret\" }}\n\
         token_url = {token_url:?}\n\
         token_key = {{ file = \"token-key\" }}\n\
         [channels.team]\nprovider = \"b24\"\ntarget = {{ dialogs = [\"chat1\"] }}\nmax_delay = \"1d\"\n\
         [plugins.bot]\npath = \"bot.wasm\"\nchannels = [\"team\"]\n",
        url = sim.bitrix_url(),
        client_id = c.client_id,
        token_url = format!("{}/oauth/token/", sim.bitrix_url()),
    );
    let path = dir.join("botbox.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start_processes(dirs: &[PathBuf]) -> Processes {
    Processes(
        dirs.iter()
            .map(|dir| {
                std::process::Command::new(env!("CARGO_BIN_EXE_botbox"))
                    .args(["run", "--config", "botbox.toml"])
                    .current_dir(dir)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    )
}

async fn wait_for_bitrix_deliveries(sim: &Sim, n: usize, dirs: &[PathBuf]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sim.deliveries_to(SimProvider::Bitrix).len() < n {
        if tokio::time::Instant::now() > deadline {
            let logs: Vec<String> = dirs
                .iter()
                .map(|d| std::fs::read_to_string(d.join("stderr.log")).unwrap_or_default())
                .collect();
            panic!(
                "{} of {n} delivered; host logs:\n{}",
                sim.deliveries_to(SimProvider::Bitrix).len(),
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same with `botbox run` processes: messages accepted into the shared
/// outbox before three hosts start, every access token expired, so each
/// host meets `expired_token` on its first send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_botbox_processes_refresh_once_and_survive_a_restart() {
    let pg = PgServer::start();
    let sim = Sim::start(SimConfig::demo()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| tmp.path().join(format!("host{i}")))
        .collect();
    for d in &dirs {
        write_run_config(d, &sim, &pg);
    }
    // An in-process host that only accepts, standing in for plugins.
    let front_config = write_run_config(&tmp.path().join("front"), &sim, &pg);
    let front = App::build(Config::load(&front_config).unwrap()).unwrap();
    let channel = front.delivery.channel("team").unwrap();
    let accept = |round: &str, n: usize| {
        for i in 0..n {
            let message = Message {
                channel: "team".into(),
                content: Content::Text(format!("{round} #{i}")),
                sender: None,
                extra: None,
                idempotency_key: None,
                reply_to: None,
                options: None,
            };
            front.delivery.accept("bot", &channel, message).unwrap();
        }
    };

    sim.bitrix_expire_access_tokens();
    accept("first", 12);
    let hosts = start_processes(&dirs);
    wait_for_bitrix_deliveries(&sim, 12, &dirs).await;
    assert_eq!(fetches(&sim), 1, "one refresh for the three processes");
    let url = pg.url();
    let senders: i64 = tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.query_one(
            "SELECT COUNT(DISTINCT claimed_by) FROM botbox_messages WHERE state = 'delivered'",
            &[],
        )
        .unwrap()
        .get(0)
    })
    .await
    .unwrap();
    // Each host claims the messages it sends; more than one sent.
    assert!(senders >= 2, "only {senders} host(s) sent");
    drop(hosts);

    // Restarted, they send with the stored pair: the config's is dead.
    accept("second", 6);
    let hosts = start_processes(&dirs);
    wait_for_bitrix_deliveries(&sim, 18, &dirs).await;
    assert_eq!(fetches(&sim), 1);
    drop(hosts);
    sim.shutdown().await;
}
