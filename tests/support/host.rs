//! A host running on the simulators of a [`Setup`]: delivery workers
//! started, finished reports and plugin log lines collected, and the helpers
//! that drive it (dispatch a step, wait for a message, audit for secrets).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use botbox::app::App;
use botbox::config::Config;
use botbox::delivery::Finished;
use botbox::delivery::store::{ListFilter, OutboxRecord, PartRecord};
use botbox::wit::types::{ChatMessage, CustomEvent, Event};
use botbox_sim::{Sim, SimDelivery, SimProvider};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::secrets::{assert_no_secret, harvest};
use super::sender::{Sent, guest_memory};
use super::sims::Setup;
use super::{captured_logs, lock};

/// A running host on a [`Setup`]: delivery workers started, finished
/// reports and plugin log lines collected.
pub struct Host {
    setup: Setup,
    pub app: App,
    stop: CancellationToken,
    workers: TaskTracker,
    finished: Arc<Mutex<Vec<Finished>>>,
    plugin_lines: Mutex<Vec<String>>,
}

impl Host {
    pub async fn start(
        setup: Setup,
        providers: &str,
        channels: &str,
        steps: &[Vec<Value>],
    ) -> Host {
        Host::start_with(setup, providers, channels, steps, "").await
    }

    pub async fn start_with(
        setup: Setup,
        providers: &str,
        channels: &str,
        steps: &[Vec<Value>],
        extra: &str,
    ) -> Host {
        let path = setup.write_config(providers, channels, steps, extra);
        let text = std::fs::read_to_string(&path).unwrap();
        let config = Config::parse(&text, &path, setup.dir.path())
            .unwrap_or_else(|e| panic!("config: {e}\n{text}"));
        let app = App::build(config).unwrap_or_else(|e| panic!("build: {e}"));
        let errors = app.load_plugins().await;
        assert!(errors.is_empty(), "{errors:?}");
        let finished: Arc<Mutex<Vec<Finished>>> = Arc::default();
        let mut rx = app.delivery.observers().finished.subscribe();
        let keep = finished.clone();
        tokio::spawn(async move {
            while let Ok(f) = rx.recv().await {
                lock(&keep).push(f);
            }
        });
        let stop = CancellationToken::new();
        let workers = app.delivery.start(stop.clone());
        Host {
            setup,
            app,
            stop,
            workers,
            finished,
            plugin_lines: Mutex::default(),
        }
    }

    pub fn sim(&self) -> &Sim {
        &self.setup.sim
    }

    /// Dispatches a custom event to plugin `step{n}` and returns what each
    /// of its `send-broadcast` calls answered.
    pub async fn step(&self, n: usize) -> Vec<Sent> {
        let go = Event::Custom(CustomEvent {
            name: "go".into(),
            payload: String::new(),
        });
        self.step_on(n, &go).await
    }

    /// Dispatches `event` to a plugin; returns the receipts it got.
    pub async fn dispatch(&self, plugin: &str, event: &Event) -> Vec<String> {
        let mut accepted = self.app.delivery.observers().accepted.subscribe();
        self.app
            .runtime
            .dispatch(plugin, event)
            .await
            .unwrap_or_else(|e| panic!("{plugin}: {e}"));
        let mut receipts = Vec::new();
        while let Ok(a) = accepted.try_recv() {
            receipts.push(a.receipt.id);
        }
        receipts
    }

    pub async fn step_on(&self, n: usize, event: &Event) -> Vec<Sent> {
        let mut logs = self.app.runtime.services().log_observers.subscribe();
        let mut accepted = self.app.delivery.observers().accepted.subscribe();
        self.app
            .runtime
            .dispatch(&format!("step{n}"), event)
            .await
            .unwrap_or_else(|e| panic!("step{n}: {e}"));
        assert_no_secret(
            &format!("the linear memory of step{n}"),
            &guest_memory(&self.app, &format!("step{n}")),
        );
        let mut lines = Vec::new();
        while let Ok(r) = logs.try_recv() {
            lines.push(r.message);
        }
        lock(&self.plugin_lines).extend(lines.iter().cloned());
        let mut receipts = Vec::new();
        while let Ok(a) = accepted.try_recv() {
            receipts.push(a.receipt.id);
        }
        let mut receipts = receipts.into_iter();
        let mut sent: Vec<Sent> = Vec::new();
        let mut lines = lines.into_iter();
        while let Some(line) = lines.next() {
            let Some(rest) = line.strip_prefix("send ") else {
                continue;
            };
            if rest.contains("r=0") {
                sent.push(Sent {
                    receipt: Some(receipts.next().expect("a receipt per accepted send")),
                    error: None,
                });
            } else {
                let case = rest.rsplit("c=").next().unwrap().as_bytes()[0] - b'0';
                let text = if case == 4 || case == 5 {
                    String::new()
                } else {
                    lines.next().unwrap_or_default()
                };
                sent.push(Sent {
                    receipt: None,
                    error: Some((case, text)),
                });
            }
        }
        sent
    }

    pub fn record(&self, id: &str) -> OutboxRecord {
        self.app.delivery.outbox().get(id).unwrap().expect("stored")
    }

    pub fn parts(&self, id: &str) -> Vec<PartRecord> {
        self.app.delivery.outbox().parts(id).unwrap()
    }

    /// Waits for a message's final state and its finished report.
    pub async fn done(&self, id: &str) -> (OutboxRecord, Finished) {
        let open = self
            .app
            .delivery
            .wait_for(&[id.to_string()], Duration::from_secs(30))
            .await;
        assert!(open.is_empty(), "{id} not final: {:?}", self.record(id));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = lock(&self.finished)
                .iter()
                .find(|f| f.receipt_id == id)
                .cloned();
            if let Some(f) = found {
                return (self.record(id), f);
            }
            assert!(Instant::now() < deadline, "no finished report for {id}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `check` holds for the stored record.
    pub async fn until(&self, id: &str, what: &str, check: impl Fn(&OutboxRecord) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check(&self.record(id)) {
            assert!(
                Instant::now() < deadline,
                "{id}: {what}: {:?}",
                self.record(id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// No secret in the host's logs, outbox, reports or plugin lines; no
    /// rate-limit violation at the simulator. Stops the workers.
    pub async fn audit(self) {
        self.audit_expecting(&[]).await
    }

    /// [`Host::audit`], with the simulator's violations expected to be
    /// exactly these (limit, code) pairs.
    pub async fn audit_expecting(self, violations: &[(&str, &str)]) {
        self.stop.cancel();
        self.workers.wait().await;
        harvest(&self.setup.tap_refs());
        let records = self
            .app
            .delivery
            .outbox()
            .list(&ListFilter {
                limit: 10_000,
                ..ListFilter::default()
            })
            .unwrap();
        assert!(!records.is_empty());
        for r in &records {
            assert_no_secret("an outbox record", &format!("{r:?}"));
            for p in self.parts(&r.id) {
                assert_no_secret("an outbox part", &format!("{p:?}"));
            }
        }
        for f in lock(&self.finished).iter() {
            assert_no_secret("a finished report", &format!("{f:?}"));
        }
        for line in lock(&self.plugin_lines).iter() {
            assert_no_secret("a plugin's log line", line);
        }
        assert_no_secret("the host's log", &captured_logs());
        let seen: Vec<(String, String)> = self
            .sim()
            .violations()
            .into_iter()
            .map(|v| (v.limit, v.code))
            .collect();
        let expected: Vec<(String, String)> = violations
            .iter()
            .map(|(l, c)| (l.to_string(), c.to_string()))
            .collect();
        assert_eq!(seen, expected, "rate-limit violations");
    }
}

/// A chat message on `channel` in `conversation`, which the plugin may then
/// name in reply-to.
pub fn chat(channel: &str, conversation: &str) -> Event {
    Event::ChatMessage(ChatMessage {
        channel: channel.into(),
        conversation: conversation.into(),
        sender_id: "u1".into(),
        sender_name: None,
        text: "hi".into(),
        message_id: None,
        sent_at_ms: None,
    })
}

/// What `provider`'s simulator delivered with exactly this text.
pub fn deliveries_with_text(sim: &Sim, provider: SimProvider, text: &str) -> Vec<SimDelivery> {
    sim.deliveries_to(provider)
        .into_iter()
        .filter(|d| d.text().as_deref() == Some(text))
        .collect()
}

/// Fails unless the record's `last_error` contains `needle`.
pub fn assert_error_has(record: &OutboxRecord, needle: &str) {
    let e = record.last_error.as_deref().unwrap_or("");
    assert!(e.contains(needle), "last_error {e:?} lacks {needle:?}");
}

// ---------------------------------------------------------------------------
// The botbox binary: check, call and outbox list against the simulators.

/// Runs the `botbox` binary in `dir` with debug logging; its exit code and
/// stdout and stderr together.
pub async fn botbox(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_botbox"))
        .args(args)
        .current_dir(dir)
        .env("BOTBOX_LOG", "debug")
        .output()
        .await
        .expect("run botbox");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}
