//! Faults under the host: the outbox's disk is busy or full, the clock
//! jumps, a provider hangs. Each time the plugin hears an error or the
//! delivery waits, and nothing is half-written or sent past a limit.
//! (A crash and restart under load: `kill_9_during_delivery_…` in delivery.rs.)

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use botbox::config::Config;
use botbox::delivery::store::{ListFilter, MessageState, SqliteOutbox};
use botbox::delivery::throttle::{Clock, ScaledClock, SharedClock};
use botbox::delivery::{Delivery, DeliveryObservers};
use botbox::providers::Registry;
use botbox::wit::types::{Content, CustomEvent, Event};
use botbox_sim::{Fault, Sim, SimConfig, SimProvider};
use support::sims::sim_config;
use support::text_message;
use support::{Ask, TestHost, WatPlugin, send_and_expect};
use tokio_util::sync::CancellationToken;

fn poke() -> Event {
    Event::Custom(CustomEvent {
        name: "poke".into(),
        payload: String::new(),
    })
}

/// Sends one message of `len` characters to lobby and traps unless
/// send-broadcast fails with `internal` (case 6).
fn sender_expecting_internal(len: usize) -> Vec<u8> {
    let mut p = WatPlugin::new(Ask::default());
    let msg = p.text_message("lobby", &"z".repeat(len));
    p.body(&format!(
        "{}\n(if (i32.ne (i32.load8_u (i32.const {})) (i32.const 6)) (then unreachable))",
        send_and_expect(msg, 1),
        support::SEND_RET + 8
    ))
    .build()
}

/// Sends one message to lobby and traps unless it is accepted.
fn sender_expecting_ok() -> Vec<u8> {
    let mut p = WatPlugin::new(Ask::default());
    let msg = p.text_message("lobby", "after the fault");
    p.body(&send_and_expect(msg, 0)).build()
}

fn message_count(host: &TestHost) -> usize {
    host.app
        .delivery
        .outbox()
        .list(&ListFilter {
            limit: 1000,
            ..Default::default()
        })
        .expect("list the outbox")
        .len()
}

fn integrity(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).expect("open the outbox file");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_outbox_fails_the_send_and_stores_nothing() {
    let host = TestHost::new(&[
        // The outbox waits 5 s for a lock; the deadline leaves room to
        // hear the answer.
        (
            "sender",
            sender_expecting_internal(20),
            "limits = { deadline_ms = 15000 }",
        ),
        ("after", sender_expecting_ok(), ""),
    ]);
    host.load_all().await;
    let path = host.dir.path().join(".botbox/outbox.sqlite");
    let lock = rusqlite::Connection::open(&path).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    host.app
        .runtime
        .dispatch("sender", &poke())
        .await
        .expect("the plugin heard `internal`");
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    assert_eq!(message_count(&host), 0, "nothing was stored");
    assert_eq!(integrity(&path), "ok");
    host.app
        .runtime
        .dispatch("after", &poke())
        .await
        .expect("the outbox works again once the lock is gone");
    assert_eq!(message_count(&host), 1);
}

/// A tmpfs of `size` mounted on a fresh folder, unmounted on drop.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    /// `None` when this process may not mount (not root, or no
    /// CAP_SYS_ADMIN); CI runs as root.
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { _dir: dir, path })
    }

    /// Writes a filler file until the disk refuses another byte.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&[0]).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_send_and_leaves_no_half_written_message() {
    let Some(disk) = SmallDisk::mount("4m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
        return;
    };
    let storage = disk.path.clone();
    let host = TestHost::with_top(
        &[
            ("sender", sender_expecting_internal(3900), ""),
            ("after", sender_expecting_ok(), ""),
        ],
        |_| format!("[storage]\ndir = \"{}\"\n", storage.display()),
    );
    host.load_all().await;
    // A first message, so the outbox's pages and WAL exist before the disk fills.
    host.app.runtime.dispatch("after", &poke()).await.unwrap();
    let filler = disk.fill();
    host.app
        .runtime
        .dispatch("sender", &poke())
        .await
        .expect("the plugin heard `internal`");
    std::fs::remove_file(&filler).unwrap();
    let messages = host
        .app
        .delivery
        .outbox()
        .list(&ListFilter {
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        messages.len(),
        1,
        "only the message from before the disk filled"
    );
    assert!(
        messages
            .iter()
            .all(|m| matches!(&m.message.content, Content::Text(t) if t == "after the fault")),
        "no trace of the refused message"
    );
    assert_eq!(integrity(&storage.join("outbox.sqlite")), "ok");
    host.app
        .runtime
        .dispatch("after", &poke())
        .await
        .expect("the outbox works again once there is room");
    assert_eq!(message_count(&host), 2);
}

/// A clock that follows another, plus an offset the test steps, as a wall
/// clock does when NTP or an operator sets it.
struct JumpingClock {
    inner: ScaledClock,
    offset_ms: AtomicI64,
}

impl Clock for JumpingClock {
    fn now_ms(&self) -> u64 {
        (self.inner.now_ms() as i64 + self.offset_ms.load(Ordering::SeqCst)) as u64
    }

    fn real(&self, ms: u64) -> Duration {
        self.inner.real(ms)
    }

    fn clock_ms(&self, real: Duration) -> u64 {
        self.inner.clock_ms(real)
    }
}

struct SimHost {
    _dir: tempfile::TempDir,
    sim: Sim,
    config: Config,
}

async fn sim_host(scale: f64, channels: &str) -> SimHost {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimConfig::fast(scale)).await.unwrap();
    let text = sim_config(&sim, dir.path(), scale, channels);
    let path = dir.path().join("botbox.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::load(&path).unwrap();
    SimHost {
        _dir: dir,
        sim,
        config,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jump_forward_or_back_keeps_the_throttle_within_limits() {
    // Easemob's online-users broadcast: 1 a minute; one simulated minute
    // is 1 s real.
    let h = sim_host(
        60.0,
        "[channels.live]\nprovider = \"easemob\"\ntarget = \"online-users\"\nmax_delay = \"100d\"\n",
    )
    .await;
    let clock = Arc::new(JumpingClock {
        inner: ScaledClock::new(60.0),
        offset_ms: AtomicI64::new(0),
    });
    let registry = Registry::from_config(&h.config).unwrap();
    let delivery = Arc::new(
        Delivery::new(
            &h.config,
            &registry,
            Arc::new(SqliteOutbox::in_memory().unwrap()),
            clock.clone() as SharedClock,
            DeliveryObservers::default(),
        )
        .unwrap(),
    );
    let channel = delivery.channel("live").unwrap();
    for i in 0..30 {
        delivery
            .accept("p", &channel, text_message("live", &format!("#{i}")))
            .expect("accepted");
    }
    let stop = CancellationToken::new();
    let workers = delivery.start(stop.clone());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // A (simulated) day forward: a throttle on this clock would think
    // every window long closed and send at once.
    clock.offset_ms.store(86_400_000, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before_back = h.sim.deliveries_to(SimProvider::Easemob).len();
    // Two days back: a throttle on this clock would wait a day.
    clock.offset_ms.store(-86_400_000, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop.cancel();
    workers.wait().await;
    let v = h.sim.violations();
    assert!(v.is_empty(), "rate-limit violations after a jump: {v:?}");
    let after_back = h.sim.deliveries_to(SimProvider::Easemob).len();
    assert!(
        after_back > before_back,
        "sending went on after the backward jump ({before_back} then {after_back})"
    );
    assert!(after_back < 30, "the backlog was not sent at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_provider_hits_the_request_deadline_and_other_endpoints_keep_going() {
    let h = sim_host(
        1.0,
        "[channels.stuck]\nprovider = \"tencent\"\nmax_delay = \"100d\"\n\
         [channels.fine]\nprovider = \"bitrix24\"\ntarget = { dialogs = [\"chat13\"] }\nmax_delay = \"100d\"\n",
    )
    .await;
    // Longer than the host's 15 s request timeout.
    h.sim.inject(
        SimProvider::Tencent,
        Fault::Hang {
            duration: Duration::from_secs(30),
        },
        1,
    );
    let registry = Registry::from_config(&h.config).unwrap();
    let delivery = Arc::new(
        Delivery::new(
            &h.config,
            &registry,
            Arc::new(SqliteOutbox::in_memory().unwrap()),
            Arc::new(ScaledClock::new(1.0)),
            DeliveryObservers::default(),
        )
        .unwrap(),
    );
    let stuck = delivery.channel("stuck").unwrap();
    let fine = delivery.channel("fine").unwrap();
    let hung = delivery
        .accept("p", &stuck, text_message("stuck", "waits for the deadline"))
        .unwrap();
    let stop = CancellationToken::new();
    let workers = delivery.start(stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // While Tencent hangs, Bitrix24's worker delivers.
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            delivery
                .accept("p", &fine, text_message("fine", &format!("#{i}")))
                .unwrap()
                .id,
        );
    }
    let open = delivery.wait_for(&ids, Duration::from_secs(10)).await;
    assert!(
        open.is_empty(),
        "bitrix24 stalled behind a hung tencent: {open:?}"
    );
    assert_eq!(
        h.sim.deliveries_to(SimProvider::Tencent).len(),
        0,
        "tencent is still hanging"
    );
    // The request deadline fires, the attempt is retried and delivered.
    let open = delivery
        .wait_for(std::slice::from_ref(&hung.id), Duration::from_secs(40))
        .await;
    stop.cancel();
    workers.wait().await;
    assert!(open.is_empty(), "the hung message was never retried");
    let rec = delivery.outbox().get(&hung.id).unwrap().unwrap();
    assert_eq!(rec.state, MessageState::Delivered);
    assert!(rec.attempts >= 2, "{}", rec.attempts);
    assert!(
        rec.last_error.as_deref().is_some_and(|e| e.contains("tim")),
        "{:?}",
        rec.last_error
    );
}
