//! The web console in a real browser: headless Chromium, driven through
//! chromedriver, against a real `botbox run` on the provider simulators.
//! One host and one browser go through every step; each wait polls the
//! page until what it looks for shows, within a generous overall limit.
//!
//! `BOTBOX_UPDATE_SCREENSHOTS=1` also saves one PNG of each page under
//! `docs/console/` (the README shows them).

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use botbox_sim::{Fault, SimProvider};
use browser::Browser;
use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use support::sender::text_to;
use support::sims::{Setup, windows_sim};
use support::{Ask, WatPlugin};

const ADMIN_TOKEN: &str = "console-token-0123456789abcdef";
/// How long any one wait may take before the step fails.
const WAIT_LIMIT: Duration = Duration::from_secs(90);
/// What the hostile plugin logs: markup that would set a flag if it ran.
const HOSTILE: &str = "pwn <script>window.__botbox_pwned = 1</script>\
    <img src=x onerror=\"window.__botbox_pwned = 2\"> bel\x07 end";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `botbox run` on the simulators, with the admin and webhook listeners.
struct Run {
    setup: Setup,
    host: tokio::process::Child,
    admin: String,
    webhooks: String,
    http: reqwest::Client,
}

impl Run {
    async fn start() -> Run {
        let setup = Setup::start(windows_sim(), 1.0).await;
        let key = setup.cfg().tencent.secret_key.clone();
        // One request per 4 s on the broadcast endpoint, so a window fills
        // and a message waits in the queue long enough to be seen; and a
        // daily quota to show.
        // An inbound section, so the webhook listener runs and refuses.
        let providers = format!(
            "{}[providers.tc.throttle]\nsend_broadcast_msg = [\"1/4s\", \"500/day utc\"]\n\
             [providers.tc.inbound]\nsecret = {}\n",
            setup.tencent("tc", &key),
            setup.secret("tc-inbound", "console-inbound-secret-0123456789"),
        );
        let channels = "[channels.tc]\nprovider = \"tc\"\nsender = \"news-bot\"\n";
        let steps = vec![
            vec![text_to("tc", "refused once, then retried")],
            vec![text_to("tc", "second"), text_to("tc", "third")],
        ];
        let ask = || Ask {
            channels: &["tc"],
            ..Ask::default()
        };
        let crash = WatPlugin::new(ask()).body("unreachable").build();
        let mut noisy = WatPlugin::new(ask());
        let (ptr, len) = noisy.data.string(HOSTILE);
        let noisy = noisy
            .body(&format!(
                "(call $log (i32.const 2) (i32.const {ptr}) (i32.const {len}))"
            ))
            .build();
        let dir = setup.dir.path();
        std::fs::write(dir.join("crash.wasm"), crash).unwrap();
        std::fs::write(dir.join("noisy.wasm"), noisy).unwrap();
        std::fs::write(dir.join("admin-token"), ADMIN_TOKEN).unwrap();
        let (admin_port, webhook_port) = (free_port(), free_port());
        let extra = format!(
            "[plugins.crash]\npath = \"crash.wasm\"\nchannels = [\"tc\"]\nevents = [\"custom\"]\n\
             [plugins.noisy]\npath = \"noisy.wasm\"\nchannels = [\"tc\"]\nevents = [\"custom\"]\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = {{ file = \"admin-token\" }}\n\
             [webhooks]\nlisten = \"127.0.0.1:{webhook_port}\"\n"
        );
        setup.write_config(&providers, channels, &steps, &extra);
        let log = std::fs::File::create(dir.join("botbox.log")).unwrap();
        let host = tokio::process::Command::new(env!("CARGO_BIN_EXE_botbox"))
            .args(["run", "--config", "botbox.toml"])
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start botbox run");
        let run = Run {
            setup,
            host,
            admin: format!("http://127.0.0.1:{admin_port}"),
            webhooks: format!("http://127.0.0.1:{webhook_port}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        };
        let started = Instant::now();
        let mut run = run;
        loop {
            if let Ok(Some(status)) = run.host.try_wait() {
                panic!(
                    "botbox run exited ({status}) before it was ready:\n{}",
                    run.log()
                );
            }
            let ready = run.http.get(format!("{}/readyz", run.admin)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                started.elapsed() < WAIT_LIMIT,
                "botbox run did not become ready:\n{}",
                run.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        run
    }

    fn log(&self) -> String {
        let text =
            std::fs::read_to_string(self.setup.dir.path().join("botbox.log")).unwrap_or_default();
        let cut = text.len().saturating_sub(6000);
        text[text.floor_char_boundary(cut)..].to_string()
    }

    /// Sends a custom event to `plugin` through the admin API; its answer.
    async fn emit(&self, plugin: &str) -> (u16, Value) {
        let answer = self
            .http
            .post(format!("{}/plugins/{plugin}/events", self.admin))
            .bearer_auth(ADMIN_TOKEN)
            .body(r#"{"name": "poke", "payload": {}}"#)
            .send()
            .await
            .expect("the admin API answers");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.admin)
    }

    async fn stop(mut self) {
        let _ = self.host.start_kill();
        let _ = self.host.wait().await;
        self.setup.sim.shutdown().await;
    }
}

/// The text of everything `css` matches on the current page, joined.
async fn texts(client: &Client, css: &str) -> String {
    let mut out = Vec::new();
    if let Ok(found) = client.find_all(Locator::Css(css)).await {
        for element in found {
            if let Ok(text) = element.text().await {
                out.push(text);
            }
        }
    }
    out.join("\n")
}

/// Loads `url` again and again until the text under `css` satisfies
/// `done`; fails the step `what` with the last text after [`WAIT_LIMIT`].
async fn poll_page(
    client: &Client,
    url: &str,
    css: &str,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let started = Instant::now();
    loop {
        client.goto(url).await.expect("the browser loads the page");
        let text = texts(client, css).await;
        if done(&text) {
            return text;
        }
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "step `{what}`: `{css}` on {url} never showed it; last:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Like [`poll_page`] but without reloading: for what the page's own
/// script adds.
async fn poll_dom(client: &Client, css: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let text = texts(client, css).await;
        if done(&text) {
            return text;
        }
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "step `{what}`: `{css}` never showed it; last:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Saves the page as `docs/console/{name}.png` when asked to.
async fn screenshot(client: &Client, name: &str) {
    if std::env::var("BOTBOX_UPDATE_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let png = client.screenshot().await.expect("a screenshot");
    let dir = support::repo_root().join("docs/console");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Whether the hostile log line's script ever ran in this page.
async fn pwned(client: &Client) -> Value {
    client
        .execute(
            "return window.__botbox_pwned === undefined ? null : window.__botbox_pwned;",
            vec![],
        )
        .await
        .expect("the browser runs the test's script")
}

/// Clicks the form button `id` and waits until the page its POST leads
/// to has loaded: a WebDriver click returns before the navigation it
/// starts, so reading the page (or loading another) right after it races
/// the form's own request.
async fn submit(client: &Client, id: &str) -> String {
    let before = client.current_url().await.unwrap();
    click(client, id).await;
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let at = client.current_url().await.unwrap();
        let loaded = client
            .execute("return document.readyState;", vec![])
            .await
            .ok();
        if at != before && loaded == Some(json!("complete")) {
            return at.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the answer to `{id}` never came: still at {at}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks the button `id`; returns before any page it leads to.
async fn click(client: &Client, id: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("the button `{id}`: {e}"))
        .click()
        .await
        .unwrap();
}

async fn log_in(client: &Client, run: &Run, token: &str) {
    client.goto(&run.url("/console/login")).await.unwrap();
    let field = client
        .find(Locator::Id("token"))
        .await
        .expect("the login form");
    field.send_keys(token).await.unwrap();
    click(client, "login").await;
    // A click does not wait for the page it leads to: wait until the
    // answer is shown (the console, or the login page with its refusal).
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let at = client.current_url().await.unwrap();
        let refused = client.find(Locator::Id("login-error")).await.is_ok();
        if refused || !at.path().ends_with("/console/login") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the login form's answer never came: at {at}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_and_acts_on_a_running_host_in_a_real_browser() {
    let run = Run::start().await;
    let browser = Browser::start().await;
    let client = &browser.client;

    // Step 1: the headers and the cookie, as any client sees them.
    let login_page = run
        .http
        .get(run.url("/console/login"))
        .send()
        .await
        .unwrap();
    let headers = login_page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let logged_in = run
        .http
        .post(run.url("/console/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(logged_in.status().as_u16(), 303, "step `login over HTTP`");
    let cookie = logged_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    for part in [
        "botbox_console=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
    ] {
        assert!(cookie.contains(part), "step `session cookie`: {cookie}");
    }
    assert!(
        !cookie.contains(ADMIN_TOKEN),
        "the token itself is never the cookie"
    );

    // Step 2: a wrong token is refused with a clear message and nothing else.
    log_in(client, &run, "not-the-admin-token-at-all").await;
    let refusal = texts(client, "#login-error").await;
    assert!(
        refusal.contains("Wrong token"),
        "step `wrong token`: {refusal:?}"
    );
    let cookies = client.get_all_cookies().await.unwrap();
    assert!(
        cookies.is_empty(),
        "step `wrong token`: no session: {cookies:?}"
    );
    client.goto(&run.url("/console/plugins")).await.unwrap();
    let at = client.current_url().await.unwrap();
    assert!(
        at.path().ends_with("/console/login"),
        "step `wrong token`: at {at}"
    );
    screenshot(client, "login").await;

    // Step 3: the right token.
    log_in(client, &run, ADMIN_TOKEN).await;
    let at = client.current_url().await.unwrap();
    assert!(
        at.path().ends_with("/console/plugins"),
        "step `log in`: at {at}\n{}",
        run.log()
    );

    // Step 4: a plugin fails; the page shows the trap and its message.
    let (status, answer) = run.emit("crash").await;
    assert_eq!(status, 422, "step `crash`: {answer}");
    let failure = poll_page(
        client,
        &run.url("/console/plugins"),
        "#plugin-crash .failure",
        "plugin failure",
        |t| t.contains("trap") && t.contains("unreachable"),
    )
    .await;
    assert!(!failure.is_empty());
    screenshot(client, "plugins").await;

    // Step 5: the live tail shows a hostile line as text; its script never runs.
    client.goto(&run.url("/console/logs")).await.unwrap();
    poll_dom(client, "#tail-status", "tail connects", |t| t == "live").await;
    let (status, answer) = run.emit("noisy").await;
    assert_eq!(status, 200, "step `noisy`: {answer}");
    let tail = poll_dom(client, "#tail .text", "live tail line", |t| {
        t.contains("window.__botbox_pwned = 2")
    })
    .await;
    assert!(
        tail.contains("<script>window.__botbox_pwned = 1</script>"),
        "shown as text: {tail}"
    );
    assert!(
        tail.contains("bel\\u{7} end"),
        "the BEL is shown escaped: {tail:?}"
    );
    assert_eq!(
        pwned(client).await,
        Value::Null,
        "step `live tail`: the plugin's script ran"
    );
    screenshot(client, "logs").await;
    // The page's recent lines, rendered by the server, the same.
    let recent = poll_page(
        client,
        &run.url("/console/logs"),
        "#tail .text",
        "recent lines",
        |t| t.contains("<script>window.__botbox_pwned = 1</script>"),
    )
    .await;
    assert!(
        !recent.contains('\x07'),
        "control characters are escaped: {recent:?}"
    );
    assert_eq!(
        pwned(client).await,
        Value::Null,
        "step `recent lines`: the plugin's script ran"
    );

    // Step 6: a refused webhook call shows by provider and reason.
    let refused = run
        .http
        .post(format!("{}/webhooks/tc", run.webhooks))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(
        refused.status().is_client_error(),
        "step `webhook refusal`: {}",
        refused.status()
    );
    poll_page(
        client,
        &run.url("/console/webhooks"),
        ".refusal-counts td",
        "webhook refusals",
        |t| t.contains("tc"),
    )
    .await;
    screenshot(client, "webhooks").await;

    // Step 7: a message the provider refuses is failed, with its answer.
    run.setup.sim.inject(
        SimProvider::Tencent,
        Fault::error_answer_with("20007", 200, "blocked by the peer"),
        1,
    );
    let (status, answer) = run.emit("step0").await;
    assert_eq!(status, 200, "step `refused message`: {answer}");
    let refused_id = answer["receipts"][0]["id"]
        .as_str()
        .expect("a receipt")
        .to_string();
    let refused_page = run.url(&format!("/console/outbox/{refused_id}"));
    poll_page(
        client,
        &refused_page,
        "#message-state",
        "message failed",
        |t| t == "failed",
    )
    .await;
    let error = texts(client, "#message-error").await;
    assert!(error.contains("20007"), "step `provider answer`: {error}");

    // Step 8: a POST without, or with a wrong, CSRF token does nothing.
    let statuses = client
        .execute(
            "const url = location.pathname + '/retry';
             const form = { 'Content-Type': 'application/x-www-form-urlencoded' };
             return Promise.all([
               fetch(url, { method: 'POST', headers: form, body: '' }).then(r => r.status),
               fetch(url, { method: 'POST', headers: form, body: 'csrf=0123456789abcdef' }).then(r => r.status),
             ]);",
            vec![],
        )
        .await
        .expect("the fetches run");
    assert_eq!(statuses, json!([403, 403]), "step `CSRF`");
    client.refresh().await.unwrap();
    assert_eq!(
        texts(client, "#message-state").await,
        "failed",
        "step `CSRF`: nothing retried"
    );
    screenshot(client, "message").await;

    // Step 9: two messages: one goes, the other waits its turn, queued,
    // then is delivered; the window fills.
    let (status, answer) = run.emit("step1").await;
    assert_eq!(status, 200, "step `two messages`: {answer}");
    let third = answer["receipts"][1]["id"]
        .as_str()
        .expect("a receipt")
        .to_string();
    let third_page = run.url(&format!("/console/outbox/{third}"));
    let seen = poll_page(
        client,
        &third_page,
        "#message-state",
        "message queued",
        |t| t == "queued" || t == "delivered",
    )
    .await;
    assert_eq!(
        seen, "queued",
        "step `message queued`: the window lets one through per 4 s"
    );
    let window = "section[data-endpoint='tc/send_broadcast_msg'] tr[data-limit='1/4s'] .used";
    poll_page(
        client,
        &run.url("/console/endpoints"),
        window,
        "window fills",
        |t| t == "1 / 1",
    )
    .await;
    screenshot(client, "endpoints").await;
    client.goto(&run.url("/console/outbox")).await.unwrap();
    screenshot(client, "outbox").await;
    poll_page(
        client,
        &third_page,
        "#message-state",
        "message delivered",
        |t| t == "delivered",
    )
    .await;

    // Step 10: the window drains.
    poll_page(
        client,
        &run.url("/console/endpoints"),
        window,
        "window drains",
        |t| t == "0 / 1",
    )
    .await;

    // Step 11: retry the failed message from its page; it is delivered.
    client.goto(&refused_page).await.unwrap();
    let at = submit(client, "retry").await;
    let done = texts(client, "#done").await;
    assert_eq!(
        done,
        "Queued again.",
        "step `retry`: at {at}, notice {:?}\n{}",
        texts(client, "#notice").await,
        run.log()
    );
    poll_page(
        client,
        &refused_page,
        "#message-state",
        "retried message delivered",
        |t| t == "delivered",
    )
    .await;
    let filtered = poll_page(
        client,
        &run.url("/console/outbox?state=delivered&plugin=step0"),
        "tr.message",
        "outbox filter",
        |t| t.contains(&refused_id),
    )
    .await;
    assert!(
        !filtered.contains(&third),
        "the filter keeps step0's only: {filtered}"
    );

    // Step 12: logout ends the session.
    client.goto(&run.url("/console/plugins")).await.unwrap();
    submit(client, "logout").await;
    client.goto(&run.url("/console/outbox")).await.unwrap();
    let at = client.current_url().await.unwrap();
    assert!(
        at.path().ends_with("/console/login"),
        "step `logout`: at {at}"
    );
    assert!(Path::new(browser::CHROMIUM).is_file());

    browser.stop().await;
    run.stop().await;
}
