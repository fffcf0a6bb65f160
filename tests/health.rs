//! `/healthz` and `/readyz` on the admin listener, over real HTTP, on a
//! real SQLite file and a real PostgreSQL server: they answer without the
//! token, say nothing but their verdict, and `/readyz` turns 503 with the
//! reason when the outbox's folder takes no file or PostgreSQL is down.

#[path = "support/pg.rs"]
mod pg;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use botbox::app::App;
use botbox::config::Config;
use botbox::triggers::{self, admin};
use pg::PgServer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const ADMIN_TOKEN: &str = "health-token-0123456789abcdef";

/// A host with an admin listener and no plugin, on `storage`.
struct Probed {
    admin: String,
    _app: Arc<App>,
    stop: CancellationToken,
    tasks: TaskTracker,
    client: reqwest::Client,
}

impl Probed {
    async fn start(dir: &Path, storage: &str) -> Probed {
        std::fs::write(dir.join("admin-token"), ADMIN_TOKEN).unwrap();
        std::fs::write(
            dir.join("botbox.toml"),
            format!(
                "{storage}\n[runtime]\nreload = false\n\
                 [admin]\nlisten = \"127.0.0.1:0\"\ntoken = {{ file = \"admin-token\" }}\n\
                 [providers.out]\nkind = \"console\"\n[channels.lobby]\nprovider = \"out\"\n"
            ),
        )
        .unwrap();
        let app = Arc::new(App::build(Config::load(&dir.join("botbox.toml")).unwrap()).unwrap());
        let listener = triggers::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let admin = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let server = Arc::new(admin::AdminServer::new(
            app.admin.clone().expect("[admin] is set"),
            Vec::new(),
            app.runtime.clone(),
            app.delivery.clone(),
            app.shared.metrics.clone(),
        ));
        tasks.spawn(server.serve(listener, stop.clone()));
        Probed {
            admin,
            _app: app,
            stop,
            tasks,
            client: reqwest::Client::new(),
        }
    }

    /// GET `path` with `token`, if any: the status, the headers as text and
    /// the body.
    async fn get(&self, path: &str, token: Option<&str>) -> (u16, String, String) {
        let mut request = self.client.get(format!("{}{path}", self.admin));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let reply = request.send().await.expect("the admin listener answers");
        let status = reply.status().as_u16();
        let headers = format!("{:?}", reply.headers());
        (status, headers, reply.text().await.unwrap())
    }

    async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// A folder nobody can add a file to, this process included, until dropped:
/// `chmod a-w`, and, for root (whom permissions do not stop), the
/// immutable attribute (`chattr +i`, Debian's e2fsprogs).
struct ReadOnly {
    dir: PathBuf,
    immutable: bool,
}

impl ReadOnly {
    fn make(dir: &Path) -> ReadOnly {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let mut guard = ReadOnly {
            dir: dir.to_owned(),
            immutable: false,
        };
        if accepts_a_file(dir) {
            let out = Command::new("chattr").arg("+i").arg(dir).output();
            guard.immutable = out.as_ref().is_ok_and(|o| o.status.success());
            assert!(
                guard.immutable && !accepts_a_file(dir),
                "cannot make {} read-only for this user (as root this needs `chattr +i`, \
                 CAP_LINUX_IMMUTABLE and a file system with the attribute): {out:?}",
                dir.display()
            );
        }
        guard
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(&self.dir).status();
        }
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
    }
}

fn accepts_a_file(dir: &Path) -> bool {
    let probe = dir.join("test-probe");
    let created = std::fs::write(&probe, b"x").is_ok();
    let _ = std::fs::remove_file(&probe);
    created
}

/// What no probe answer may carry, whatever its verdict.
fn assert_reveals_nothing(answer: &(u16, String, String), secrets: &[&str]) {
    let (_, headers, body) = answer;
    for secret in secrets {
        assert!(
            !body.contains(secret) && !headers.contains(secret),
            "`{secret}` in a probe's answer: {headers} {body:?}"
        );
    }
    assert!(
        !headers.to_ascii_lowercase().contains("www-authenticate"),
        "a probe asked for the token: {headers}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_need_no_token_and_readyz_fails_when_the_outbox_folder_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let host = Probed::start(dir.path(), "[storage]\ndir = \"state\"\n").await;
    let state = dir.path().join("state");
    let state_path = state.display().to_string();
    let secrets = [
        ADMIN_TOKEN,
        state_path.as_str(),
        "outbox.sqlite",
        "botbox",
        "console",
        "lobby",
        env!("CARGO_PKG_VERSION"),
    ];

    // Without a token, with a wrong one, with the right one: the same
    // answer, and nothing in it but the verdict.
    for token in [
        None,
        Some("wrong-token-0123456789abcdef"),
        Some(ADMIN_TOKEN),
    ] {
        let health = host.get("/healthz", token).await;
        assert_eq!((health.0, health.2.as_str()), (200, "ok\n"), "{health:?}");
        assert_reveals_nothing(&health, &secrets);
        let ready = host.get("/readyz", token).await;
        assert_eq!((ready.0, ready.2.as_str()), (200, "ready\n"), "{ready:?}");
        assert_reveals_nothing(&ready, &secrets);
    }
    // Everything else still needs the token, unknown paths included.
    for path in [
        "/plugins",
        "/outbox",
        "/metrics",
        "/healthz/../plugins",
        "/nothing",
    ] {
        let refused = host.get(path, None).await;
        assert_eq!(refused.0, 401, "{path} without a token: {refused:?}");
        let refused = host.get(path, Some("wrong-token-0123456789abcdef")).await;
        assert_eq!(refused.0, 401, "{path} with a wrong token: {refused:?}");
    }
    assert_eq!(host.get("/plugins", Some(ADMIN_TOKEN)).await.0, 200);

    // The folder takes no new file: the open connection would still write,
    // but SQLite's journal and a restart could not.
    let read_only = ReadOnly::make(&state);
    let not_ready = host.get("/readyz", None).await;
    assert_eq!(
        (not_ready.0, not_ready.2.as_str()),
        (503, "not ready: outbox not writable\n"),
        "{not_ready:?}"
    );
    assert_reveals_nothing(&not_ready, &secrets);
    // Alive all the same.
    assert_eq!(host.get("/healthz", None).await.0, 200);

    drop(read_only);
    let ready = host.get("/readyz", None).await;
    assert_eq!((ready.0, ready.2.as_str()), (200, "ready\n"), "{ready:?}");
    // The probe leaves no file behind.
    let mut left: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".ready-"))
        .collect();
    left.sort();
    assert!(left.is_empty(), "probe files left behind: {left:?}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_postgresql_is_stopped_and_recovers_when_it_is_back() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    pg.write_url(dir.path());
    let host = Probed::start(dir.path(), &pg.storage_section("30s")).await;
    let port = pg.port().to_string();
    let secrets = [
        ADMIN_TOKEN,
        port.as_str(),
        "127.0.0.1",
        "postgres",
        "PostgreSQL",
    ];

    let ready = host.get("/readyz", None).await;
    assert_eq!((ready.0, ready.2.as_str()), (200, "ready\n"), "{ready:?}");

    pg.stop();
    let not_ready = host.get("/readyz", None).await;
    assert_eq!(
        (not_ready.0, not_ready.2.as_str()),
        (503, "not ready: outbox backend unreachable\n"),
        "{not_ready:?}"
    );
    assert_reveals_nothing(&not_ready, &secrets);
    assert_eq!(host.get("/healthz", None).await.0, 200);

    // The outbox reconnects by itself once the server is back; a probe may
    // still meet a connection the stop closed, at most once per connection.
    pg.start_again();
    let mut answers = Vec::new();
    for _ in 0..=botbox::delivery::store::postgres::CONNECTIONS {
        let answer = host.get("/readyz", None).await;
        let ready = answer.0 == 200;
        answers.push(answer);
        if ready {
            break;
        }
    }
    assert_eq!(
        answers.last().map(|a| (a.0, a.2.as_str())),
        Some((200, "ready\n")),
        "{answers:?}"
    );
    host.stop().await;
}
