//! The outbox and throttle stores against a real PostgreSQL server (the
//! harness in `support/pg.rs` starts one), and the scenarios both backends
//! must answer alike, run on each.
//!
//! These were unit tests of `delivery/postgres.rs`, which had to include the
//! harness from tests/ into the library; here they need nothing of it.

#[path = "support/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::Duration;

use botbox::config::Secret;
use botbox::delivery::store::postgres::CONNECTIONS;
use botbox::delivery::store::{
    Inserted, ListFilter, MessageState, OutboxError, OutboxRecord, OutboxStore, PartState,
    PgOutbox, Plan, Reservation, SqliteOutbox,
};
use botbox::delivery::throttle::{Layer, ThrottleSpec};
use botbox::providers::Part;
use botbox::wit::types::{Content, Message, MessageOptions};

/// A message at the caps a plugin may fill: 64 KiB of `extra`, three
/// 30 KiB options and a text long enough to be split.
fn heavy(channel: &str, text: &str) -> Message {
    Message {
        channel: channel.into(),
        content: Content::Text(text.into()),
        sender: Some("bot".into()),
        extra: Some(format!("{{\"x\":\"{}\"}}", "e".repeat(64 * 1024 - 10))),
        idempotency_key: None,
        reply_to: None,
        options: Some(MessageOptions {
            system: false,
            url_preview: None,
            attach: Some("a".repeat(30 * 1024)),
            keyboard: Some("k".repeat(30 * 1024)),
            menu: Some("m".repeat(30 * 1024)),
            priority: None,
        }),
    }
}

/// Five meetings' parts of `message` and one text slice, as a provider
/// plans them: each carries a whole copy of the message.
fn meeting_parts(message: &Message) -> Vec<Part> {
    let mut parts: Vec<Part> = (0..5)
        .map(|i| Part {
            target: format!("meeting-{i}"),
            message: message.clone(),
            dedup_key: Some(format!("{i}")),
            merged: Vec::new(),
        })
        .collect();
    let mut slice = message.clone();
    slice.content = Content::Text("the second half".into());
    parts.push(Part {
        target: "meeting-0".into(),
        message: slice,
        dedup_key: None,
        merged: Vec::new(),
    });
    parts
}

/// Leaves: `old` (finished at 100, reported), `unreported` (finished at
/// 100), `recent` (finished at 5000, reported), `queued`, and `owner`
/// (finished at 100, reported) with `member` merged into it.
fn prune_fixture(o: &dyn OutboxStore) {
    let rec = |id: &str, created: u64| {
        let mut r = rec(id, "p1", created, None);
        r.message.idempotency_key = Some(format!("key-{id}"));
        r
    };
    for (i, id) in ["old", "unreported", "recent", "queued", "owner", "member"]
        .into_iter()
        .enumerate()
    {
        o.insert(&rec(id, i as u64)).unwrap();
    }
    let part = |r: &OutboxRecord, merged: Vec<Message>| Part {
        target: "m".into(),
        message: r.message.clone(),
        dedup_key: None,
        merged,
    };
    for id in ["old", "unreported", "recent"] {
        o.save_plan(id, &[part(&rec(id, 0), vec![])], &[]).unwrap();
    }
    o.save_plan(
        "owner",
        &[part(&rec("owner", 0), vec![rec("member", 0).message])],
        &["member".into()],
    )
    .unwrap();
    for (id, at) in [
        ("old", 100),
        ("unreported", 100),
        ("recent", 5000),
        ("owner", 100),
    ] {
        o.finish(id, MessageState::Delivered, 1, at, None).unwrap();
    }
    for id in ["old", "recent", "owner", "member"] {
        o.mark_reported(id).unwrap();
    }
}

/// What [`prune_fixture`] leaves after pruning before 1000.
fn assert_pruned(o: &dyn OutboxStore) {
    // Two at most one at a time: `old` and `owner` (with `member`).
    assert_eq!(o.prune(1000, 1).unwrap(), 1);
    assert_eq!(o.prune(1000, 10).unwrap(), 1);
    assert_eq!(o.prune(1000, 10).unwrap(), 0);
    for gone in ["old", "owner", "member"] {
        assert!(o.get(gone).unwrap().is_none(), "{gone} pruned");
        assert!(o.parts(gone).unwrap().is_empty(), "{gone}'s parts pruned");
    }
    for kept in ["unreported", "recent", "queued"] {
        assert!(o.get(kept).unwrap().is_some(), "{kept} kept");
    }
    assert_eq!(o.parts("recent").unwrap().len(), 1);
    let listed: Vec<String> = o
        .list(&ListFilter {
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, ["queued", "recent", "unreported"]);
}

fn rec(id: &str, plugin: &str, created: u64, key: Option<&str>) -> OutboxRecord {
    OutboxRecord {
        id: id.into(),
        plugin: plugin.into(),
        channel: "lobby".into(),
        endpoint: "p/default".into(),
        message: Message {
            channel: "lobby".into(),
            content: Content::Text(format!("from {plugin}")),
            sender: None,
            extra: None,
            idempotency_key: key.map(str::to_string),
            reply_to: None,
            options: None,
        },
        state: MessageState::Queued,
        created_ms: created,
        next_attempt_ms: created,
        attempts: 0,
        planned: false,
        last_error: None,
        finished_ms: None,
        traceparent: None,
    }
}

fn record(id: &str, created: u64) -> OutboxRecord {
    OutboxRecord {
        id: id.into(),
        plugin: "p".into(),
        channel: "lobby".into(),
        endpoint: "t/default".into(),
        message: Message {
            channel: "lobby".into(),
            content: Content::Text(id.into()),
            sender: None,
            extra: None,
            idempotency_key: Some(format!("key-{id}")),
            reply_to: None,
            options: None,
        },
        state: MessageState::Queued,
        created_ms: created,
        next_attempt_ms: created,
        attempts: 0,
        planned: false,
        last_error: None,
        finished_ms: None,
        traceparent: None,
    }
}

fn host(server: &pg::PgServer, lease: Duration) -> PgOutbox {
    PgOutbox::open(&Secret::new(server.url()), lease).unwrap()
}

#[test]
fn two_hosts_never_claim_the_same_message_and_a_dead_hosts_claims_expire() {
    let server = pg::PgServer::start();
    let a = host(&server, Duration::from_secs(1));
    let b = host(&server, Duration::from_secs(1));
    a.insert(&record("m1", 1)).unwrap();
    a.insert(&record("m2", 2)).unwrap();
    assert_eq!(
        a.insert(&record("m3", 3)).unwrap(),
        Inserted::New,
        "a new key"
    );
    let mut dup = record("m4", 4);
    dup.message.idempotency_key = Some("key-m1".into());
    assert_eq!(b.insert(&dup).unwrap(), Inserted::Duplicate("m1".into()));
    let first = a.next_due("t/default", 10, None).unwrap().unwrap();
    let second = b.next_due("t/default", 10, None).unwrap().unwrap();
    assert_ne!(first.id, second.id);
    assert_eq!(first.id, "m1");
    // `a` dies holding m1. Until its lease passes, m1 is nobody else's.
    let third = b.next_due("t/default", 10, None).unwrap().unwrap();
    assert_eq!(third.id, "m3");
    assert!(b.next_due("t/default", 10, None).unwrap().is_none());
    std::thread::sleep(Duration::from_millis(1200));
    let taken = b.next_due("t/default", 10, None).unwrap().unwrap();
    assert_eq!(taken.id, "m1");
    // The dead host's claim is fenced: it gets no slot for m1 any more.
    let spec = ThrottleSpec::windows(&[(100, 1000)]);
    assert_eq!(
        a.reserve("t/default", &spec, 0, "m1", None).unwrap(),
        Reservation::LeaseLost
    );
    assert!(matches!(
        b.reserve("t/default", &spec, 0, "m1", None).unwrap(),
        Reservation::Granted(_)
    ));
    assert_eq!(b.pending_count("t/default").unwrap(), 3);
    b.finish("m1", MessageState::Delivered, 1, 20, None)
        .unwrap();
    assert_eq!(b.unreported(10).unwrap().len(), 1);
    assert!(
        a.unreported(10).unwrap().is_empty(),
        "the finishing host reports"
    );
}

/// A throttle slot and the move of an answered send sit between requests:
/// their commits skip the WAL flush (a killed host or a restarted server
/// loses nothing; README, "Durability"), each without a statement of its
/// own for it. An accept's commit still waits for its flush.
#[test]
fn slots_and_answered_sends_commit_without_waiting_for_the_wal_flush() {
    let server = pg::PgServer::start_lazy_wal_writer();
    let mut ask = server.client();
    let o = host(&server, Duration::from_secs(30));
    o.insert(&record("m1", 1)).unwrap();
    assert!(
        !pg::PgServer::wal_unflushed(&mut ask),
        "an accept waits for its flush"
    );
    let claimed = o.next_due("t/default", 10, None).unwrap().unwrap();
    let spec = ThrottleSpec::windows(&[(1000, 1000)]);
    // The WAL writer flushes now and then on its own, so count.
    let (mut after_slot, mut after_answer) = (0, 0);
    for _ in 0..20 {
        let Reservation::Granted(at) = o.reserve("t/default", &spec, 0, &claimed.id, None).unwrap()
        else {
            panic!("a slot of 1000 a second");
        };
        after_slot += usize::from(pg::PgServer::wal_unflushed(&mut ask));
        o.answered_at("t/default", &spec, 0, at, None).unwrap();
        after_answer += usize::from(pg::PgServer::wal_unflushed(&mut ask));
    }
    assert!(
        after_slot >= 15 && after_answer >= 15,
        "unflushed after {after_slot} of 20 slots and {after_answer} of 20 answers"
    );
}

/// Slots for several messages in one transaction: each decided in order
/// with the ones granted before it counted, the first refused stops the
/// rest, a claim this host lost is refused alone, and each answer moves
/// its own send of those stamped together.
#[test]
fn messages_take_their_slots_together_each_decided_in_order() {
    let server = pg::PgServer::start();
    let o = host(&server, Duration::from_secs(30));
    for i in 0..5 {
        o.insert(&record(&format!("m{i}"), i)).unwrap();
    }
    let claimed = o.claim_due("t/default", 100, 5, None).unwrap();
    assert_eq!(claimed.len(), 5);
    let spec = ThrottleSpec::windows(&[(3, 60_000)]);
    let layers = vec![Layer {
        name: "t/default".into(),
        spec: spec.clone(),
    }];
    let ids = ["m0", "gone", "m1", "m2", "m3", "m4"]
        .map(String::from)
        .to_vec();
    let answers = o
        .reserve_layers_for(layers.clone(), 0, ids, Some(1_000))
        .unwrap();
    assert_eq!(
        answers[..4],
        [
            Reservation::Granted(1_000),
            Reservation::LeaseLost,
            Reservation::Granted(1_000),
            Reservation::Granted(1_000),
        ]
    );
    let Reservation::Wait(ms) = answers[4] else {
        panic!("the fourth slot of a 3-a-minute window: {answers:?}");
    };
    assert!(ms >= 60_000, "{ms}");
    assert_eq!(answers[5], Reservation::Wait(ms), "the rest wait as long");
    assert_eq!(o.sends_since("t/default", 0).unwrap(), vec![1_000; 3]);
    // Each answer moves one of the three sends stamped together, whether
    // answered together or alone.
    let wide = ThrottleSpec::windows(&[(3, 1_000)]);
    o.answered_all_at("t/default", &wide, 0, &[1_000, 1_000], Some(1_500))
        .unwrap();
    assert_eq!(
        o.sends_since("t/default", 0).unwrap(),
        vec![1_000, 1_490, 1_490]
    );
    o.answered_at("t/default", &wide, 0, 1_000, Some(1_700))
        .unwrap();
    assert_eq!(
        o.sends_since("t/default", 0).unwrap(),
        vec![1_490, 1_490, 1_690]
    );
    // No claim held at all: nothing is written.
    let answers = o
        .reserve_layers_for(layers, 0, vec!["gone".into()], Some(2_000))
        .unwrap();
    assert_eq!(answers, vec![Reservation::LeaseLost]);
    assert_eq!(o.sends_since("t/default", 0).unwrap().len(), 3);
}

#[test]
fn hosts_racing_for_slots_stay_inside_every_window() {
    let server = pg::PgServer::start();
    let spec = ThrottleSpec::windows(&[(3, 400), (5, 3000)]);
    let hosts: Vec<Arc<PgOutbox>> = (0..3)
        .map(|_| Arc::new(host(&server, Duration::from_secs(30))))
        .collect();
    for i in 0..3 {
        hosts[0].insert(&record(&format!("m{i}"), i)).unwrap();
    }
    let threads: Vec<_> = hosts
        .iter()
        .map(|h| {
            let h = h.clone();
            let spec = spec.clone();
            std::thread::spawn(move || {
                let claimed = h.next_due("t/default", 10, None).unwrap().unwrap();
                let mut granted = 0;
                let deadline = std::time::Instant::now() + Duration::from_millis(2500);
                while std::time::Instant::now() < deadline {
                    match h.reserve("t/default", &spec, 0, &claimed.id, None).unwrap() {
                        Reservation::Granted(_) => granted += 1,
                        Reservation::Wait(ms) => {
                            std::thread::sleep(Duration::from_millis(ms.min(50)))
                        }
                        Reservation::LeaseLost => panic!("lost a live claim"),
                    }
                }
                granted
            })
        })
        .collect();
    let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let sends = hosts[0].sends_since("t/default", 0).unwrap();
    assert_eq!(sends.len(), granted);
    // Within 2.5 s of "3 per 400 ms, 5 per 3 s": 3 at once, 2 more
    // after 404 ms, then nothing: the whole quota, and no more.
    assert_eq!(granted, 5);
    for (count, period) in [(3usize, 400u64), (5, 3000)] {
        for (i, start) in sends.iter().enumerate() {
            let within = sends[i..]
                .iter()
                .take_while(|t| **t < start + period)
                .count();
            assert!(within <= count, "{within} sends within {period} ms");
        }
    }
}

#[test]
fn sslmode_require_runs_over_tls_and_verify_full_refuses_the_wrong_ca() {
    let server = pg::PgServer::start_tls();
    let lease = Duration::from_secs(30);
    let open =
        |query: &str| PgOutbox::open(&Secret::new(format!("{}?{query}", server.url())), lease);
    let require = open("sslmode=require").unwrap();
    assert!(
        require.session_tls().unwrap(),
        "require: TLS, as pg_stat_ssl says"
    );
    let ca = server.ca();
    let full = open(&format!("sslmode=verify-full&sslrootcert={}", ca.display())).unwrap();
    assert!(full.session_tls().unwrap(), "verify-full with the right CA");
    let wrong = server.wrong_ca();
    let err = open(&format!(
        "sslmode=verify-full&sslrootcert={}",
        wrong.display()
    ))
    .err()
    .expect("verify-full with the wrong CA is refused")
    .to_string();
    assert!(
        err.contains("TLS") && err.contains("sslrootcert") && err.contains("UnknownIssuer"),
        "{err}"
    );
    let plain = open("sslmode=disable").unwrap();
    assert!(!plain.session_tls().unwrap(), "disable: no TLS");
    // The default (prefer) takes TLS when the server offers it.
    let default = PgOutbox::open(&Secret::new(server.url()), lease).unwrap();
    assert!(default.session_tls().unwrap());
}

/// What a worker does for `ids`: accepted, claimed, planned as one part,
/// delivered and ended; the receipts' backlog counted.
fn deliver_on(o: &PgOutbox, ids: &[&str], created: u64) {
    for (i, id) in ids.iter().enumerate() {
        o.insert(&record(id, created + i as u64)).unwrap();
    }
    o.pending_count("t/default").unwrap();
    let claimed = o
        .claim_due("t/default", created + 100, ids.len(), None)
        .unwrap();
    assert_eq!(claimed.len(), ids.len());
    for r in &claimed {
        o.save_plan(&r.id, &meeting_parts(&r.message)[..1], &[])
            .unwrap();
    }
    let done: Vec<botbox::delivery::store::Delivered> = claimed
        .iter()
        .map(|r| botbox::delivery::store::Delivered {
            id: r.id.clone(),
            index: 0,
            provider_ids: vec![],
            attempts: 1,
            finished_ms: created + 200,
        })
        .collect();
    o.delivered(&done).unwrap();
    o.pending_count("t/default").unwrap();
}

/// Each statement is prepared once per connection and kept: a statement
/// prepared for each call costs a round trip of its own and a parse and
/// plan on the server, which the profiles put at a third of PostgreSQL's
/// time in delivery.
#[test]
fn a_connection_prepares_each_statement_once_and_runs_it_again_from_then_on() {
    let server = pg::PgServer::start();
    let o = PgOutbox::open_with(&Secret::new(server.url()), Duration::from_secs(30), 1).unwrap();
    deliver_on(&o, &["m1", "m2"], 1_000);
    let kept = o.prepared_statements().unwrap();
    let count = |needle: &str| kept.iter().filter(|s| s.contains(needle)).count();
    assert_eq!(
        count("SELECT COUNT(*) FROM botbox_messages WHERE endpoint = $1"),
        1,
        "the backlog count, asked twice, was prepared once: {kept:#?}"
    );
    assert_eq!(count("FOR UPDATE SKIP LOCKED"), 1, "the claim: {kept:#?}");
    // The same work again prepares nothing new.
    deliver_on(&o, &["m3", "m4"], 2_000);
    assert_eq!(o.prepared_statements().unwrap(), kept);
}

#[test]
fn an_unreachable_engine_is_an_error_that_says_so_and_it_reconnects() {
    let server = pg::PgServer::start();
    let a = host(&server, Duration::from_secs(30));
    a.insert(&record("m1", 1)).unwrap();
    server.stop();
    let err = a.insert(&record("m2", 2)).unwrap_err();
    assert!(matches!(err, OutboxError::Unavailable(_)), "{err}");
    let err = a.pending_count("t/default").unwrap_err().to_string();
    assert!(err.contains("PostgreSQL"), "{err}");
    server.start_again();
    let mut back = None;
    for _ in 0..CONNECTIONS + 1 {
        if let Ok(n) = a.pending_count("t/default") {
            back = Some(n);
            break;
        }
    }
    assert_eq!(back, Some(1), "one message, and m2 was never accepted");
    let url = Secret::new("postgres://u:hunter2@127.0.0.1:1/x".into());
    let err = PgOutbox::open(&url, Duration::from_secs(30))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

fn part_bytes(server: &pg::PgServer) -> (i64, i64) {
    let row = server
        .client()
        .query_one(
            "SELECT COUNT(*), COALESCE(SUM(octet_length(part)), 0)::bigint FROM botbox_parts",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn parts_store_the_body_once_and_old_parts_are_migrated() {
    let server = pg::PgServer::start();
    let o = host(&server, Duration::from_secs(30));
    let mut a = rec("a", "p1", 1, None);
    a.message = heavy("lobby", "the first half the second half");
    o.insert(&a).unwrap();
    let parts = meeting_parts(&a.message);
    o.save_plan("a", &parts, &[]).unwrap();
    let (rows, bytes) = part_bytes(&server);
    assert_eq!(rows, 6);
    assert!(bytes < 1024, "parts hold {bytes} bytes");
    let read: Vec<Part> = o.parts("a").unwrap().into_iter().map(|p| p.part).collect();
    assert_eq!(read, parts);
    // A database written before: whole parts and no recorded format.
    let mut c = server.client();
    for (i, part) in parts.iter().enumerate() {
        c.execute(
            "UPDATE botbox_parts SET part = $3 WHERE message_id = $1 AND idx = $2",
            &[&"a", &(i as i32), &serde_json::to_string(part).unwrap()],
        )
        .unwrap();
    }
    c.execute("DELETE FROM botbox_schema", &[]).unwrap();
    assert!(part_bytes(&server).1 > 6 * 150_000);
    // Old parts read as they are, and the next host to start rewrites them.
    assert_eq!(o.parts("a").unwrap()[0].part, parts[0]);
    let o = host(&server, Duration::from_secs(30));
    let (rows, bytes) = part_bytes(&server);
    assert_eq!(rows, 6);
    assert!(bytes < 1024, "after the migration parts hold {bytes} bytes");
    let read: Vec<Part> = o.parts("a").unwrap().into_iter().map(|p| p.part).collect();
    assert_eq!(read, parts);
}

#[test]
fn pruning_removes_reported_messages_past_the_retention_and_keeps_the_rest() {
    let server = pg::PgServer::start();
    let o = host(&server, Duration::from_secs(30));
    prune_fixture(&o);
    assert_pruned(&o);
    let orphans: i64 = server
        .client()
        .query_one(
            "SELECT COUNT(*) FROM botbox_parts WHERE message_id NOT IN (SELECT id FROM botbox_messages)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0);
}

/// Both backends, fresh: an SQLite file and a PostgreSQL database.
fn both(server: &pg::PgServer, dir: &std::path::Path) -> Vec<(&'static str, Box<dyn OutboxStore>)> {
    vec![
        (
            "sqlite",
            Box::new(SqliteOutbox::open(&dir.join("outbox.sqlite")).unwrap()),
        ),
        ("postgres", Box::new(host(server, Duration::from_secs(30)))),
    ]
}

#[test]
fn a_plan_that_merges_a_message_no_longer_queued_is_refused_on_both_backends() {
    // Between `mergeable` and `save_plan` the message to carry along was
    // cancelled (or, with several hosts, taken by another): carrying it
    // would send what was cancelled, or send it twice. Both backends refuse
    // the plan and write nothing; the worker plans again.
    let server = pg::PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    for (backend, o) in both(&server, dir.path()) {
        let a = rec("a", "p1", 1, None);
        let mut b = rec("b", "p1", 2, None);
        b.message.idempotency_key = Some("kb".into());
        o.insert(&a).unwrap();
        o.insert(&b).unwrap();
        assert!(o.cancel("b", 3).unwrap(), "{backend}");
        let part = Part {
            target: String::new(),
            message: a.message.clone(),
            dedup_key: None,
            merged: vec![b.message.clone()],
        };
        let err = o
            .save_plan("a", std::slice::from_ref(&part), &["b".into()])
            .unwrap_err();
        assert!(matches!(err, OutboxError::Conflict(_)), "{backend}: {err}");
        assert!(
            o.parts("a").unwrap().is_empty(),
            "{backend}: no parts written"
        );
        assert!(
            !o.get("a").unwrap().unwrap().planned,
            "{backend}: not planned"
        );
        let b = o.get("b").unwrap().unwrap();
        assert_eq!(b.state, MessageState::Cancelled, "{backend}");
        // Planned again without it, the message goes through.
        let alone = Part {
            merged: Vec::new(),
            ..part
        };
        o.save_plan("a", std::slice::from_ref(&alone), &[]).unwrap();
        assert_eq!(o.parts("a").unwrap()[0].part, alone, "{backend}");
    }
}

#[test]
fn claims_take_plugins_in_turns_and_leave_what_is_not_due_on_both_backends() {
    let server = pg::PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    for (backend, o) in both(&server, dir.path()) {
        for (id, plugin, created) in [
            ("a1", "a", 1),
            ("a2", "a", 2),
            ("a3", "a", 3),
            ("b1", "b", 4),
            ("b2", "b", 5),
            ("c1", "c", 6),
            ("d1", "d", 7),
        ] {
            let mut r = rec(id, plugin, created, None);
            if id == "c1" {
                // Waiting for a retry until 1000.
                r.next_attempt_ms = 1000;
            }
            o.insert(&r).unwrap();
        }
        let ids = |claimed: Vec<OutboxRecord>| -> Vec<String> {
            assert!(
                claimed.iter().all(|r| r.state == MessageState::Sending),
                "{backend}"
            );
            claimed.into_iter().map(|r| r.id).collect()
        };
        // `a` was served last: the plugins after it first, one message
        // each a round, each plugin's oldest first; `c` has none due.
        assert_eq!(
            ids(o.claim_due("p/default", 100, 4, Some("a")).unwrap()),
            ["b1", "d1", "a1", "b2"],
            "{backend}"
        );
        assert_eq!(
            ids(o.claim_due("p/default", 100, 10, Some("b")).unwrap()),
            ["a2", "a3"],
            "{backend}"
        );
        assert!(
            o.claim_due("p/default", 100, 10, None).unwrap().is_empty(),
            "{backend}"
        );
        assert_eq!(
            ids(o.claim_due("p/default", 1000, 10, None).unwrap()),
            ["c1"],
            "{backend}"
        );
        assert!(
            o.claim_due("other/default", 1000, 10, None)
                .unwrap()
                .is_empty(),
            "{backend}"
        );
    }
}

#[test]
fn plans_saved_together_each_stand_or_fall_alone_on_both_backends() {
    // The worker stores the plans of the messages it starts together in
    // one call (one transaction on SQLite). A plan refused halfway, after
    // it took one member and then found the next one cancelled, leaves
    // nothing behind, and the plans around it are stored.
    let server = pg::PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    for (backend, o) in both(&server, dir.path()) {
        for (i, id) in ["a", "b", "c", "b1", "b2"].into_iter().enumerate() {
            o.insert(&rec(id, "p1", i as u64 + 1, Some(id))).unwrap();
        }
        assert!(o.cancel("b2", 9).unwrap(), "{backend}");
        let alone = |id: &str| Part {
            target: String::new(),
            message: rec(id, "p1", 0, None).message,
            dedup_key: Some(format!("{id}-random")),
            merged: Vec::new(),
        };
        let carrying = Part {
            merged: vec![
                rec("b1", "p1", 0, None).message,
                rec("b2", "p1", 0, None).message,
            ],
            ..alone("b")
        };
        let plans = [
            Plan {
                id: "a".into(),
                parts: vec![alone("a")],
                absorbed: Vec::new(),
            },
            Plan {
                id: "b".into(),
                parts: vec![carrying],
                absorbed: vec!["b1".into(), "b2".into()],
            },
            Plan {
                id: "c".into(),
                parts: vec![alone("c")],
                absorbed: Vec::new(),
            },
        ];
        let answers = o.save_plans(&plans);
        assert_eq!(answers.len(), 3, "{backend}");
        assert!(answers[0].is_ok(), "{backend}: {:?}", answers[0]);
        assert!(
            matches!(answers[1], Err(OutboxError::Conflict(_))),
            "{backend}: {:?}",
            answers[1]
        );
        assert!(answers[2].is_ok(), "{backend}: {:?}", answers[2]);
        for id in ["a", "c"] {
            assert!(o.get(id).unwrap().unwrap().planned, "{backend}: {id}");
            let parts = o.parts(id).unwrap();
            assert_eq!(parts.len(), 1, "{backend}: {id}");
            assert_eq!(parts[0].part, alone(id), "{backend}: {id}");
        }
        assert!(
            o.parts("b").unwrap().is_empty(),
            "{backend}: b has no parts"
        );
        assert!(!o.get("b").unwrap().unwrap().planned, "{backend}");
        assert_eq!(
            o.get("b1").unwrap().unwrap().state,
            MessageState::Queued,
            "{backend}: the member b took before the refusal is queued again"
        );
    }
}

#[test]
fn both_backends_store_and_read_records_parts_and_merges_alike() {
    let server = pg::PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    for (backend, o) in both(&server, dir.path()) {
        let mut a = rec("a", "p1", 1, Some("ka"));
        a.message = heavy("lobby", "the first half the second half");
        let mut b = rec("b", "p1", 2, Some("kb"));
        b.message = heavy("lobby", "second");
        o.insert(&a).unwrap();
        o.insert(&b).unwrap();
        let mut parts = meeting_parts(&a.message);
        parts[0].merged = vec![b.message.clone()];
        o.save_plan("a", &parts, &["b".into()]).unwrap();
        let read: Vec<Part> = o.parts("a").unwrap().into_iter().map(|p| p.part).collect();
        assert_eq!(read, parts, "{backend}");
        let got = o.get("a").unwrap().unwrap();
        assert!(got.planned, "{backend}");
        assert_eq!(got.message, a.message, "{backend}");
        assert_eq!(got.created_ms, 1, "{backend}");
        assert_eq!(got.finished_ms, None, "{backend}");
        assert_eq!(
            o.get("b").unwrap().unwrap().state,
            MessageState::Merged,
            "{backend}"
        );
        let members: Vec<String> = o.members("a").unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(members, ["b"], "{backend}");
        o.finish("a", MessageState::Partial, 3, 7, Some("m1: gone"))
            .unwrap();
        let got = o.get("a").unwrap().unwrap();
        assert_eq!(
            (
                got.state,
                got.attempts,
                got.finished_ms,
                got.last_error.as_deref()
            ),
            (MessageState::Partial, 3, Some(7), Some("m1: gone")),
            "{backend}"
        );
        assert_eq!(
            o.get("b").unwrap().unwrap().state,
            MessageState::Partial,
            "{backend}"
        );
    }
}

/// What `botbox outbox list` reads: delivery attempts (times a worker took
/// the message) apart from requests, which are counted per part. A message
/// to three meetings whose first request failed once went out in two
/// attempts and four requests; a text split into three slices for three
/// meetings, in one attempt and nine requests. A merged message names its
/// carrier. Both backends answer alike.
#[test]
fn both_backends_list_attempts_apart_from_each_parts_requests() {
    let server = pg::PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    for (backend, o) in both(&server, dir.path()) {
        let meetings = ["room-1", "room-2", "room-3"];
        let three = rec("three", "p1", 1, Some("k3"));
        let mut split = rec("split", "p1", 2, Some("ks"));
        split.message.content = Content::Text("long".into());
        let carried = rec("carried", "p1", 3, Some("kc"));
        for r in [&three, &split, &carried] {
            o.insert(r).unwrap();
        }
        let part = |r: &OutboxRecord, target: &str| Part {
            target: target.into(),
            message: r.message.clone(),
            dedup_key: None,
            merged: Vec::new(),
        };
        // Each round as the worker runs it: take the message, mark it
        // sending, count a request before each send.
        let take = |id: &str| {
            let due = o.next_due("p/default", 10, None).unwrap().unwrap();
            assert_eq!(due.id, id, "{backend}");
            o.mark_sending(id).unwrap();
        };
        take("three");
        let plan: Vec<Part> = meetings.iter().map(|m| part(&three, m)).collect();
        o.save_plan("three", &plan, &[]).unwrap();
        o.part_requested("three", 0).unwrap();
        o.requeue("three", 1_000, 1, "HTTP 502").unwrap();
        take("split");
        let mut plan = Vec::new();
        for m in meetings {
            for _slice in 0..3 {
                plan.push(part(&split, m));
            }
        }
        o.save_plan("split", &plan, &["carried".into()]).unwrap();
        for i in 0..9 {
            o.part_requested("split", i).unwrap();
            o.part_done("split", i, PartState::Delivered, &[], None)
                .unwrap();
        }
        o.finish("split", MessageState::Delivered, 9, 20, None)
            .unwrap();
        let due = o.next_due("p/default", 1_000, None).unwrap().unwrap();
        assert_eq!(due.id, "three", "{backend}");
        o.mark_sending("three").unwrap();
        for i in 0..3 {
            o.part_requested("three", i).unwrap();
            let (state, error) = if i == 2 {
                (PartState::Failed, Some("meetingNotFound: gone"))
            } else {
                (PartState::Delivered, None)
            };
            o.part_done("three", i, state, &[], error).unwrap();
        }
        o.finish("three", MessageState::Partial, 4, 1_001, None)
            .unwrap();

        let listed = o
            .list_progress(&ListFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        let ids: Vec<&str> = listed.iter().map(|m| m.record.id.as_str()).collect();
        assert_eq!(ids, ["carried", "split", "three"], "{backend}");
        let three = &listed[2];
        assert_eq!((three.attempts, three.requests()), (2, 4), "{backend}");
        let progress: Vec<(u32, &str, PartState, u32)> = three
            .parts
            .iter()
            .map(|p| (p.index, p.target.as_str(), p.state, p.requests))
            .collect();
        assert_eq!(
            progress,
            [
                (0, "room-1", PartState::Delivered, 2),
                (1, "room-2", PartState::Delivered, 1),
                (2, "room-3", PartState::Failed, 1)
            ],
            "{backend}"
        );
        assert_eq!(
            three.parts[2].last_error.as_deref(),
            Some("meetingNotFound: gone"),
            "{backend}"
        );
        // The retry policy's count is the old one: requests, as reported.
        assert_eq!(three.record.attempts, 4, "{backend}");
        let split = &listed[1];
        assert_eq!((split.attempts, split.requests()), (1, 9), "{backend}");
        assert_eq!(split.parts.len(), 9, "{backend}");
        assert!(split.parts.iter().all(|p| p.requests == 1), "{backend}");
        assert_eq!(split.parts[3].target, "room-2", "{backend}");
        let carried = &listed[0];
        assert_eq!(carried.merged_into.as_deref(), Some("split"), "{backend}");
        assert_eq!((carried.attempts, carried.requests()), (0, 0), "{backend}");
        // The filters apply as in `list`.
        let only: Vec<String> = o
            .list_progress(&ListFilter {
                state: Some(MessageState::Partial),
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|m| m.record.id)
            .collect();
        assert_eq!(only, ["three"], "{backend}");
    }
}

/// A clock that stands where the test puts it (and is not the wall clock,
/// so PostgreSQL counts in it too).
struct At(std::sync::atomic::AtomicU64);

impl At {
    fn set(&self, ms: u64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl botbox::delivery::throttle::Clock for At {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn real(&self, ms: u64) -> Duration {
        Duration::from_millis(ms)
    }
    fn clock_ms(&self, real: Duration) -> u64 {
        real.as_millis() as u64
    }
}

/// Both throttle stores (one host's over SQLite, several hosts' in
/// PostgreSQL) keep a history per key under the endpoint's and the
/// account's: two groups each get their own 40 a second until the
/// account's ceiling of 60 stops the second; a provider's "too fast" for
/// one group halves that group alone; and a budget counts the reported
/// execution time.
#[test]
fn both_throttle_stores_key_histories_under_the_ceiling_and_slow_one_key_down() {
    use botbox::delivery::store::{HostThrottles, ThrottleStore};
    use botbox::delivery::throttle::{Clock, ThrottleKey};
    let server = pg::PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteOutbox::open(&dir.path().join("outbox.sqlite")).unwrap());
    let pg = Arc::new(host(&server, Duration::from_secs(30)));
    /// A backend's name, its throttle store and the outbox its claims live in.
    type Backend = (&'static str, Arc<dyn ThrottleStore>, Arc<dyn OutboxStore>);
    let stores: Vec<Backend> = vec![
        (
            "sqlite",
            Arc::new(HostThrottles::new(sqlite.clone())),
            sqlite,
        ),
        ("postgres", pg.clone(), pg),
    ];
    let key = ThrottleKey {
        per_key: Some(ThrottleSpec::windows(&[(40, 1000)])),
        ceiling: Some(("t/@rest".into(), ThrottleSpec::windows(&[(60, 1000)]))),
        ..ThrottleKey::plain("t/default", ThrottleSpec::windows(&[(200, 1000)]), 0)
    };
    for (backend, throttles, outbox) in stores {
        // PostgreSQL grants slots only to the holder of a message.
        outbox.insert(&record("m1", 1)).unwrap();
        let claimed = outbox.next_due("t/default", 10, None).unwrap().unwrap();
        assert_eq!(claimed.id, "m1");
        let clock = At(std::sync::atomic::AtomicU64::new(10_000));
        let burst = |group: &str| {
            let mut n = 0;
            while let Reservation::Granted(_) =
                throttles.take(&key, Some(group), "m1", &clock).unwrap()
            {
                n += 1;
            }
            n
        };
        assert_eq!(burst("@TGS#a"), 40, "{backend}: group a's own 40");
        assert_eq!(burst("@TGS#b"), 20, "{backend}: the ceiling's 60 in all");
        // Group a's "too fast": a alone slows to half.
        let layers = key.layers(Some("@TGS#a"));
        assert_eq!(layers[1].name, "t/default#@TGS#a");
        let factor = throttles.slow_down(&key, &layers[1], &clock).unwrap();
        assert_eq!(factor, 0.5, "{backend}");
        clock.set(10_000 + 1_020);
        assert!(
            matches!(
                throttles.take(&key, Some("@TGS#a"), "m1", &clock).unwrap(),
                Reservation::Wait(_)
            ),
            "{backend}: group a waits two windows now"
        );
        assert!(
            matches!(
                throttles.take(&key, Some("@TGS#b"), "m1", &clock).unwrap(),
                Reservation::Granted(_)
            ),
            "{backend}: group b is not slowed"
        );
        // The account's "too fast": admission's estimate sees it.
        let before = throttles.estimate(&key, 2, clock.now_ms()).unwrap();
        let layers = key.layers(None);
        assert_eq!(layers[1].name, "t/@rest");
        throttles.slow_down(&key, &layers[1], &clock).unwrap();
        let after = throttles.estimate(&key, 2, clock.now_ms()).unwrap();
        assert!(after > before, "{backend}: {after} ≤ {before}");

        // A budget of 10 s per minute: held once 90% would be spent.
        let budget = ThrottleKey::plain(
            "t/budget",
            ThrottleSpec::parse(&["budget 10s/1m".into()]).unwrap(),
            0,
        );
        let mut granted = 0;
        for _ in 0..10 {
            let now = clock.now_ms();
            match throttles.take(&budget, None, "m1", &clock).unwrap() {
                Reservation::Granted(at) => {
                    granted += 1;
                    throttles.charge(&budget, at, 2_000).unwrap();
                }
                other => {
                    assert!(matches!(other, Reservation::Wait(_)), "{other:?}");
                    break;
                }
            }
            clock.set(now + 1);
        }
        assert_eq!(granted, 4, "{backend}: 4 × 2 s + 2 s more would pass 9 s");
    }
}

/// A quota per calendar day (`3/day utc`) is decided alike by the one-host
/// store and PostgreSQL, from the send history since the day's midnight:
/// used up late on one day, it is whole again right after midnight, where
/// a rolling 24 hours would still hold it.
#[test]
fn both_throttle_stores_count_a_calendar_day_from_its_midnight() {
    use botbox::delivery::store::{HostThrottles, ThrottleStore};
    use botbox::delivery::throttle::ThrottleKey;
    let server = pg::PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteOutbox::open(&dir.path().join("outbox.sqlite")).unwrap());
    let pg = Arc::new(host(&server, Duration::from_secs(30)));
    type Backend = (&'static str, Arc<dyn ThrottleStore>, Arc<dyn OutboxStore>);
    let stores: Vec<Backend> = vec![
        (
            "sqlite",
            Arc::new(HostThrottles::new(sqlite.clone())),
            sqlite,
        ),
        ("postgres", pg.clone(), pg),
    ];
    const MIN: u64 = 60_000;
    // 2026-12-06 00:00 UTC.
    let midnight: u64 = 1_796_515_200_000;
    let margin = 30;
    let key = ThrottleKey::plain(
        "t/default",
        ThrottleSpec::parse(&["3/day utc".into()]).unwrap(),
        margin,
    );
    for (backend, throttles, outbox) in stores {
        outbox.insert(&record("m1", 1)).unwrap();
        let claimed = outbox.next_due("t/default", 10, None).unwrap().unwrap();
        assert_eq!(claimed.id, "m1");
        let clock = At(std::sync::atomic::AtomicU64::new(midnight - 60 * MIN));
        for i in 0..3 {
            clock.set(midnight - 60 * MIN + i * MIN);
            assert!(
                matches!(
                    throttles.take(&key, None, "m1", &clock).unwrap(),
                    Reservation::Granted(_)
                ),
                "{backend}: send {i} of the day"
            );
        }
        // The day is used up: the next waits for midnight and the margin.
        clock.set(midnight - 30 * MIN);
        match throttles.take(&key, None, "m1", &clock).unwrap() {
            Reservation::Wait(wait) => assert_eq!(
                wait,
                30 * MIN + margin,
                "{backend}: until midnight and the margin"
            ),
            other => panic!("{backend}: {other:?}"),
        }
        // Right after midnight the new day's three go, as the stored
        // history since midnight is empty.
        clock.set(midnight + margin);
        for i in 0..3 {
            assert!(
                matches!(
                    throttles.take(&key, None, "m1", &clock).unwrap(),
                    Reservation::Granted(_)
                ),
                "{backend}: send {i} of the new day"
            );
        }
        assert!(
            matches!(
                throttles.take(&key, None, "m1", &clock).unwrap(),
                Reservation::Wait(_)
            ),
            "{backend}: the new day is used up too"
        );
    }
}

/// Inserts `per_sender` messages from each of `senders` threads at once,
/// every one with an idempotency key of its own plus one key all senders
/// share; returns each sender's answers.
fn accept_concurrently(
    o: &Arc<dyn OutboxStore>,
    senders: usize,
    per_sender: usize,
) -> Vec<Vec<(String, Result<Inserted, OutboxError>)>> {
    let threads: Vec<_> = (0..senders)
        .map(|s| {
            let o = o.clone();
            std::thread::spawn(move || {
                (0..=per_sender)
                    .map(|i| {
                        let id = format!("s{s}-{i}");
                        let key = if i == per_sender {
                            "shared".to_string()
                        } else {
                            format!("k-{id}")
                        };
                        let answer = o.insert(&rec(&id, "p1", i as u64, Some(&key)));
                        (id, answer)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn concurrent_accepts_all_land_as_rows_with_distinct_ids_on_both_backends() {
    // 64 senders at once share commits (group commit): each still hears
    // its own answer, every receipt is a row of its own, and the one key
    // they all used is stored once, every other sender told its id.
    let server = pg::PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    for (backend, o) in both(&server, dir.path()) {
        let o: Arc<dyn OutboxStore> = Arc::from(o);
        let answers = accept_concurrently(&o, 64, 20);
        let mut stored = std::collections::HashSet::new();
        let mut shared = Vec::new();
        for (id, answer) in answers.into_iter().flatten() {
            match answer.unwrap_or_else(|e| panic!("{backend}: {id}: {e}")) {
                Inserted::New => {
                    assert!(stored.insert(id.clone()), "{backend}: {id} twice");
                    let row = o.get(&id).unwrap();
                    assert_eq!(
                        row.map(|r| r.id),
                        Some(id),
                        "{backend}: a receipt without its row"
                    );
                }
                Inserted::Duplicate(first) => shared.push(first),
            }
        }
        // 64 × 20 own keys, and the shared key's first sender.
        assert_eq!(stored.len(), 64 * 20 + 1, "{backend}");
        assert_eq!(shared.len(), 63, "{backend}");
        assert!(
            shared
                .iter()
                .all(|first| first == &shared[0] && stored.contains(first)),
            "{backend}"
        );
        let listed = o
            .list(&ListFilter {
                limit: 10_000,
                ..ListFilter::default()
            })
            .unwrap();
        assert_eq!(
            listed.len(),
            stored.len(),
            "{backend}: rows nobody was told of"
        );
    }
}

/// What `insert_batch` answers: one result per record, in order.
type Answers = Vec<Result<Inserted, OutboxError>>;

/// A backend's `insert_batch`.
type InsertBatch<'a> = dyn Fn(&[(&OutboxRecord, u32)]) -> Answers + 'a;

#[test]
fn a_batch_with_one_bad_row_fails_only_that_rows_caller_on_both_backends() {
    // A batch whose statement or transaction is refused is tried again row
    // by row: the caller whose row is bad (here an id already stored) hears
    // the error, the others their receipts, each on disk.
    let server = pg::PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteOutbox::open(&dir.path().join("outbox.sqlite")).unwrap();
    let pg = host(&server, Duration::from_secs(30));
    let batch = |o: &dyn OutboxStore, insert: &InsertBatch, backend: &str| {
        o.insert(&rec("taken", "p1", 0, None)).unwrap();
        let records: Vec<OutboxRecord> = ["a", "taken", "b", "c"]
            .into_iter()
            .map(|id| rec(id, "p2", 1, None))
            .collect();
        let refs: Vec<(&OutboxRecord, u32)> = records.iter().map(|r| (r, 1)).collect();
        let answers = insert(&refs);
        assert_eq!(answers.len(), 4, "{backend}");
        assert!(
            answers[1].is_err(),
            "{backend}: the bad row's caller hears it"
        );
        for (i, id) in [(0, "a"), (2, "b"), (3, "c")] {
            assert_eq!(
                answers[i].as_ref().unwrap(),
                &Inserted::New,
                "{backend}: {id}"
            );
            assert_eq!(
                o.get(id).unwrap().unwrap().plugin,
                "p2",
                "{backend}: {id} stored"
            );
        }
        assert_eq!(
            o.get("taken").unwrap().unwrap().plugin,
            "p1",
            "{backend}: untouched"
        );
    };
    batch(&sqlite, &|r| sqlite.insert_batch(r), "sqlite");
    batch(&pg, &|r| pg.insert_batch(r), "postgres");
}

/// Set in the child process of
/// `a_killed_host_answered_only_for_rows_on_disk_on_sqlite`: the outbox file
/// it accepts into until it is killed.
const CRASH_CHILD: &str = "BOTBOX_TEST_CRASH_OUTBOX";

#[test]
fn a_killed_host_answered_only_for_rows_on_disk_on_sqlite() {
    use std::io::{BufRead, Write};
    if let Some(path) = std::env::var_os(CRASH_CHILD) {
        // The child: 32 senders accept as fast as batches commit, and print
        // each receipt the moment they hold it, until the parent kills the
        // process in the middle of a batch.
        let o = Arc::new(SqliteOutbox::open(std::path::Path::new(&path)).unwrap());
        let senders: Vec<_> = (0..32)
            .map(|s| {
                let o = o.clone();
                std::thread::spawn(move || {
                    for i in 0.. {
                        let id = format!("s{s}-{i}");
                        if o.insert(&rec(&id, "p1", i, None)).unwrap() == Inserted::New {
                            let mut out = std::io::stdout().lock();
                            writeln!(out, "{id}").unwrap();
                            out.flush().unwrap();
                        }
                    }
                })
            })
            .collect();
        for s in senders {
            let _ = s.join();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_killed_host_answered_only_for_rows_on_disk_on_sqlite",
            "--exact",
            "--nocapture",
        ])
        .env(CRASH_CHILD, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut answered = Vec::new();
    let mut line = String::new();
    // Kill it once it has answered a good many (libtest's own lines aside).
    while answered.len() < 2000 {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child stopped early"
        );
        if let Some(id) = line.strip_suffix('\n').filter(|l| l.starts_with('s')) {
            answered.push(id.to_string());
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // What it printed before it died counts too; a half-written last line
    // does not.
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(id) = line.strip_suffix('\n').filter(|l| l.starts_with('s')) {
            answered.push(id.to_string());
        }
    }
    let o = SqliteOutbox::open(&path).unwrap();
    for id in &answered {
        assert!(
            o.get(id).unwrap().is_some(),
            "receipt {id} answered, no row"
        );
    }
}

#[test]
fn a_stopped_engine_mid_batch_answered_only_for_committed_rows_on_postgres() {
    // 16 senders accept until PostgreSQL is stopped under them (sessions
    // cut, batches in flight aborted): every receipt they were given is a
    // row once it is back; every other sender heard an error.
    let server = pg::PgServer::start();
    let o = Arc::new(host(&server, Duration::from_secs(30)));
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let senders: Vec<_> = (0..16)
        .map(|s| {
            let (o, count) = (o.clone(), count.clone());
            std::thread::spawn(move || {
                let mut answered = Vec::new();
                for i in 0.. {
                    let id = format!("s{s}-{i}");
                    match o.insert(&rec(&id, "p1", i, None)) {
                        Ok(_) => {
                            answered.push(id);
                            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(_) => break,
                    }
                }
                answered
            })
        })
        .collect();
    while count.load(std::sync::atomic::Ordering::Relaxed) < 500 {
        std::thread::yield_now();
    }
    server.stop();
    let answered: Vec<String> = senders
        .into_iter()
        .flat_map(|s| s.join().unwrap())
        .collect();
    server.start_again();
    let after = host(&server, Duration::from_secs(30));
    for id in &answered {
        assert!(
            after.get(id).unwrap().is_some(),
            "receipt {id} answered, no row"
        );
    }
}
