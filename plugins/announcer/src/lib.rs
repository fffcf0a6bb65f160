//! announcer: posts recurring notices to the `announcements` channel.
//!
//! Notices live in kv, so they survive restarts and reloads. Time is counted
//! in *ticks*: each firing of the schedule `tick` (the operator decides how
//! often, e.g. `tick = "every 5m"`) is one tick. A plugin has no clock.
//!
//! Custom events (from `botbox call` or the admin API):
//! * `add` `{"text": "...", "every": 3, "times": 2, "delay": 0}`: post `text`
//!   every 3 ticks, 2 times in all (`every`, `times`, `delay` are optional;
//!   without `times` it repeats until removed; the first post is `delay`
//!   ticks after the next tick).
//! * `list`: log every notice.
//! * `remove` `{"id": 3}`: forget notice 3.
//! * `tick`: behave as if the schedule fired (handy for trying it out).
//!
//! Delivery reports of its posts are logged (failures as warnings).
//!
//! Settings: `sender`, `prefix` (put before every notice), `default-every`
//! (1), `max-per-tick` (5), `max-notices` (50), `seed` (a JSON list of
//! `add` payloads, added on the first ticks), `seed-per-tick` (20).

use botbox_sdk::{
    Bot, CustomEvent, DeliveryOutcome, Event, EventKind, Manifest, Message, kv, settings,
};
use serde::{Deserialize, Serialize};

/// The one channel announcer asks for.
/// The channel it posts to unless the `channel` setting names another:
/// one build can serve several channels as several configured plugins.
pub const CHANNEL: &str = "announcements";
/// The schedule announcer asks for.
pub const SCHEDULE: &str = "tick";

/// kv key of the tick counter (decimal text).
const TICK_KEY: &str = "tick";
/// kv key of the next notice id (decimal text).
const NEXT_ID_KEY: &str = "next-id";
/// kv prefix of notices (JSON [`Notice`]).
const NOTICE_PREFIX: &str = "notice/";
/// Set once the `seed` setting has been applied in full.
const SEEDED_KEY: &str = "seeded";
/// How far seeding has got (JSON [`SeedProgress`]) while it is under way.
const SEED_PROGRESS_KEY: &str = "seed-progress";
/// Longest notice text accepted; the channel's provider may allow less.
pub const MAX_TEXT_CHARS: usize = 4000;
/// The longest interval between posts, in ticks.
pub const MAX_EVERY: u64 = 100_000;

/// The plugin.
pub struct Announcer;

impl Bot for Announcer {
    fn describe() -> Manifest {
        Manifest::new("announcer", env!("CARGO_PKG_VERSION"))
            .channel(settings::get_or("channel", CHANNEL))
            .event(EventKind::Schedule)
            .event(EventKind::Custom)
            .event(EventKind::Delivery)
            .schedule(SCHEDULE)
    }

    fn handle(event: Event) -> Result<(), String> {
        let config = Config::from_settings()?;
        match event {
            Event::Schedule(name) if name == SCHEDULE => tick(&config),
            Event::Custom(custom) => handle_custom(&custom, &config),
            Event::Delivery(report) => {
                // Retrying is the host's job; this only tells the operator
                // which notices did not reach people.
                match describe_outcome(&report.outcome) {
                    None => botbox_sdk::debug!("{} delivered", report.receipt_id),
                    Some(why) => botbox_sdk::warn!("{} {why}", report.receipt_id),
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

botbox_sdk::export_bot!(Announcer);

/// What announcer reads from its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub channel: String,
    pub sender: Option<String>,
    pub prefix: String,
    pub default_every: u64,
    pub max_per_tick: usize,
    pub max_notices: u32,
    pub seed_per_tick: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            channel: CHANNEL.to_owned(),
            sender: None,
            prefix: String::new(),
            default_every: 1,
            max_per_tick: 5,
            max_notices: 50,
            seed_per_tick: 20,
        }
    }
}

impl Config {
    fn from_settings() -> Result<Self, String> {
        let defaults = Self::default();
        let config = Self {
            channel: settings::get_or("channel", CHANNEL),
            sender: settings::get("sender").filter(|s| !s.trim().is_empty()),
            prefix: settings::get_or("prefix", &defaults.prefix),
            default_every: settings::get_parsed_or("default-every", defaults.default_every)?,
            max_per_tick: settings::get_parsed_or("max-per-tick", defaults.max_per_tick)?,
            max_notices: settings::get_parsed_or("max-notices", defaults.max_notices)?,
            seed_per_tick: settings::get_parsed_or("seed-per-tick", defaults.seed_per_tick)?,
        };
        if !(1..=MAX_EVERY).contains(&config.default_every) {
            return Err(format!(
                "setting `default-every` must be 1 to {MAX_EVERY} ticks"
            ));
        }
        Ok(config)
    }
}

/// One recurring notice, as stored in kv.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub id: u64,
    pub text: String,
    /// Ticks between posts.
    pub every: u64,
    /// The tick at which it is next due.
    pub next_tick: u64,
    /// Posts left; `None` repeats until removed.
    #[serde(default)]
    pub remaining: Option<u32>,
    /// Posts so far (including ones the channel refused).
    #[serde(default)]
    pub sent: u64,
}

/// The payload of `add`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    pub text: String,
    #[serde(default)]
    pub every: Option<u64>,
    #[serde(default)]
    pub times: Option<u32>,
    #[serde(default)]
    pub delay: Option<u64>,
}

/// The payload of `remove`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    pub id: u64,
}

fn handle_custom(event: &CustomEvent, config: &Config) -> Result<(), String> {
    match event.name.as_str() {
        "add" => add(event.payload_json()?, config),
        "list" => {
            let notices = load_notices(config)?;
            botbox_sdk::info!(
                "{} notice(s), {} tick(s) so far",
                notices.len(),
                read_counter(TICK_KEY)?
            );
            for notice in &notices {
                botbox_sdk::info!("{}", describe_notice(notice));
            }
            Ok(())
        }
        "remove" => {
            let RemoveRequest { id } = event.payload_json()?;
            let key = notice_key(id);
            if kv::get(&key)?.is_none() {
                return Err(format!("there is no notice #{id}"));
            }
            kv::delete(&key)?;
            botbox_sdk::info!("removed notice #{id}");
            Ok(())
        }
        "tick" => tick(config),
        other => Err(format!(
            "unknown custom event `{other}`: announcer understands add, list, remove and tick"
        )),
    }
}

fn add(request: AddRequest, config: &Config) -> Result<(), String> {
    if count_notices(config)? >= config.max_notices as usize {
        return Err(format!(
            "already {} notices (setting `max-notices`); remove one first",
            config.max_notices
        ));
    }
    let id = read_counter(NEXT_ID_KEY)? + 1;
    let notice = new_notice(request, id, read_counter(TICK_KEY)?, config)?;
    kv::set_string(NEXT_ID_KEY, &id.to_string())?;
    kv::set_json(&notice_key(id), &notice)?;
    botbox_sdk::info!("added {}", describe_notice(&notice));
    Ok(())
}

/// Adds the notices of the `seed` setting (a JSON list of `add` payloads),
/// at most `seed-per-tick` of them per tick, so an operator can ship a bot
/// with its notices in `botbox.toml` and a long list still fits the
/// plugin's deadline.
///
/// The host keeps the kv writes of an event that fails or runs out of
/// time, so every step is safe to repeat: the seed's ids are reserved up
/// front ([`SeedProgress`]), each notice is written under its own reserved
/// id (a repeat overwrites it), the progress moves only after its batch is
/// written, and `seeded` is set only after the last one.
fn seed_step(config: &Config) -> Result<(), String> {
    if kv::get(SEEDED_KEY)?.is_some() {
        return Ok(());
    }
    let entries: Vec<serde_json::Value> = settings::get_json("seed")?.unwrap_or_default();
    let progress = match kv::get_json::<SeedProgress>(SEED_PROGRESS_KEY)? {
        Some(p) => p,
        None => {
            let p = SeedProgress {
                next: 0,
                first_id: read_counter(NEXT_ID_KEY)? + 1,
                len: entries.len() as u64,
            };
            kv::set_json(SEED_PROGRESS_KEY, &p)?;
            p
        }
    };
    // Reserve the ids, again if the event that first tried was cut short.
    let last_id = progress.first_id + progress.len.saturating_sub(1);
    if progress.len > 0 && read_counter(NEXT_ID_KEY)? < last_id {
        kv::set_string(NEXT_ID_KEY, &last_id.to_string())?;
    }
    let current_tick = read_counter(TICK_KEY)?;
    let end = seed_batch_end(progress.next, progress.len, config.seed_per_tick);
    let mut count = count_notices(config)?;
    for index in progress.next..end {
        let id = progress.first_id + index;
        let key = notice_key(id);
        let entry = entries.get(index as usize).cloned().unwrap_or_default();
        let notice = serde_json::from_value::<AddRequest>(entry)
            .map_err(|e| format!("not an `add` payload: {e}"))
            .and_then(|request| new_notice(request, id, current_tick, config));
        let notice = match notice {
            Ok(n) => n,
            Err(err) => {
                botbox_sdk::error!("seed entry {} skipped: {err}", index + 1);
                continue;
            }
        };
        let exists = kv::get(&key)?.is_some();
        if !exists && count >= config.max_notices as usize {
            botbox_sdk::error!(
                "seed entry {} skipped: already {} notices (setting `max-notices`)",
                index + 1,
                config.max_notices
            );
            continue;
        }
        kv::set_json(&key, &notice)?;
        if !exists {
            count += 1;
        }
    }
    if end < progress.len {
        kv::set_json(
            SEED_PROGRESS_KEY,
            &SeedProgress {
                next: end,
                ..progress
            },
        )?;
        botbox_sdk::info!("seeded {end} of {} notice(s)", progress.len);
        return Ok(());
    }
    kv::set_string(SEEDED_KEY, "1")?;
    kv::delete(SEED_PROGRESS_KEY)?;
    botbox_sdk::info!("seeded {} notice(s)", progress.len);
    Ok(())
}

/// Where seeding has got to, kept in kv between ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedProgress {
    /// The index of the next seed entry to add.
    pub next: u64,
    /// The id reserved for entry 0; entry `i` gets `first_id + i`.
    pub first_id: u64,
    /// How many entries the seed has.
    pub len: u64,
}

/// The end of the batch that starts at `next`: at most `per_tick` entries.
pub fn seed_batch_end(next: u64, len: u64, per_tick: u64) -> u64 {
    next.saturating_add(per_tick.max(1)).min(len)
}

/// How many notices there are, from their keys alone.
fn count_notices(config: &Config) -> Result<usize, String> {
    Ok(kv::list_keys(NOTICE_PREFIX, config.max_notices.saturating_add(1))?.len())
}

/// One tick: count it, then post what is due.
fn tick(config: &Config) -> Result<(), String> {
    seed_step(config)?;
    // Count the tick before sending: if this call dies halfway, the unsent
    // notices are still due next tick, and the sent ones carry idempotency
    // keys that make a repeat a no-op.
    let tick = read_counter(TICK_KEY)? + 1;
    kv::set_string(TICK_KEY, &tick.to_string())?;

    let notices = load_notices(config)?;
    for notice in due(&notices, tick, config.max_per_tick) {
        let message = notice_message(notice, config);
        match message.send() {
            Ok(receipt) => {
                botbox_sdk::info!(
                    "tick {tick}: posted notice #{} as {}",
                    notice.id,
                    receipt.id
                );
            }
            Err(err) if err.is_retryable() => {
                // The rest stay due and go out on a later tick.
                botbox_sdk::warn!("tick {tick}: holding notices back: {err}");
                break;
            }
            Err(err) => {
                // Retrying a message the channel refuses would fail every
                // tick; skip this occurrence and say why.
                botbox_sdk::error!("tick {tick}: notice #{} refused: {err}", notice.id);
            }
        }
        let key = notice_key(notice.id);
        match advance(notice, tick) {
            Some(next) => kv::set_json(&key, &next)?,
            None => {
                kv::delete(&key)?;
                botbox_sdk::info!("notice #{} is done", notice.id);
            }
        }
    }
    Ok(())
}

fn load_notices(config: &Config) -> Result<Vec<Notice>, String> {
    let keys = kv::list_keys(NOTICE_PREFIX, config.max_notices)?;
    let mut notices = Vec::with_capacity(keys.len());
    for key in keys {
        // A value that does not decode was written by something else: say so
        // and keep going rather than blocking every other notice.
        match kv::get_json::<Notice>(&key) {
            Ok(Some(notice)) => notices.push(notice),
            Ok(None) => {}
            Err(err) => botbox_sdk::warn!("skipping {key}: {err}"),
        }
    }
    Ok(notices)
}

fn read_counter(key: &str) -> Result<u64, String> {
    match kv::get_string(key)? {
        None => Ok(0),
        Some(text) => parse_counter(key, &text),
    }
}

/// Parse a counter stored as decimal text.
pub fn parse_counter(key: &str, text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|err| format!("kv `{key}` holds {text:?}, not a count: {err}"))
}

/// The kv key of a notice; zero-padded so that keys sort by id.
pub fn notice_key(id: u64) -> String {
    format!("{NOTICE_PREFIX}{id:010}")
}

/// Validate an `add` request into a notice, due `delay` ticks after the next
/// tick.
pub fn new_notice(
    request: AddRequest,
    id: u64,
    current_tick: u64,
    config: &Config,
) -> Result<Notice, String> {
    let text = request.text.trim();
    if text.is_empty() {
        return Err("`add` needs a non-empty `text`".to_owned());
    }
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(format!(
            "`text` has {chars} characters; at most {MAX_TEXT_CHARS} are allowed"
        ));
    }
    let every = request.every.unwrap_or(config.default_every);
    if !(1..=MAX_EVERY).contains(&every) {
        return Err(format!(
            "`every` must be 1 to {MAX_EVERY} ticks, not {every}"
        ));
    }
    if request.times == Some(0) {
        return Err("`times` must be at least 1 (leave it out to repeat forever)".to_owned());
    }
    let delay = request.delay.unwrap_or(0).min(MAX_EVERY);
    Ok(Notice {
        id,
        text: text.to_owned(),
        every,
        next_tick: current_tick + 1 + delay,
        remaining: request.times,
        sent: 0,
    })
}

/// The notices due at `tick`, most overdue first, at most `max`.
pub fn due(notices: &[Notice], tick: u64, max: usize) -> Vec<&Notice> {
    let mut due: Vec<&Notice> = notices.iter().filter(|n| n.next_tick <= tick).collect();
    due.sort_by_key(|n| (n.next_tick, n.id));
    due.truncate(max);
    due
}

/// The notice after one post at `tick`, or `None` when it has run out.
/// Missed ticks are not caught up: the next post is `every` ticks from now.
pub fn advance(notice: &Notice, tick: u64) -> Option<Notice> {
    let remaining = match notice.remaining {
        Some(1) | Some(0) => return None,
        Some(n) => Some(n - 1),
        None => None,
    };
    Some(Notice {
        next_tick: tick + notice.every,
        remaining,
        sent: notice.sent + 1,
        ..notice.clone()
    })
}

/// The message for one post of a notice.
pub fn notice_message(notice: &Notice, config: &Config) -> Message {
    let message = Message::text(&config.channel, format!("{}{}", config.prefix, notice.text))
        // Keyed by the occurrence, so posting it again after a failure
        // between send and save returns the first receipt.
        .idempotency_key(format!("notice-{}-{}", notice.id, notice.next_tick));
    match &config.sender {
        Some(sender) => message.sender(sender),
        None => message,
    }
}

/// What went wrong with a delivery, or `None` when it went out.
pub fn describe_outcome(outcome: &DeliveryOutcome) -> Option<String> {
    match outcome {
        DeliveryOutcome::Delivered => None,
        DeliveryOutcome::PartiallyDelivered(why) => Some(format!("was partly delivered: {why}")),
        DeliveryOutcome::Failed(why) => Some(format!("failed: {why}")),
        DeliveryOutcome::Cancelled => Some("was cancelled by an operator".to_owned()),
    }
}

/// One line about a notice, for the log.
pub fn describe_notice(notice: &Notice) -> String {
    let repeat = match notice.remaining {
        Some(n) => format!("{n} more time(s)"),
        None => "until removed".to_owned(),
    };
    format!(
        "notice #{}: every {} tick(s), next at tick {}, {repeat}, posted {}: {:?}",
        notice.id, notice.every, notice.next_tick, notice.sent, notice.text
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(json: &str) -> Result<Notice, String> {
        let request: AddRequest = CustomEvent {
            name: "add".into(),
            payload: json.into(),
        }
        .payload_json()?;
        new_notice(request, 7, 10, &Config::default())
    }

    fn notice(id: u64, next_tick: u64, remaining: Option<u32>) -> Notice {
        Notice {
            id,
            text: format!("notice {id}"),
            every: 3,
            next_tick,
            remaining,
            sent: 0,
        }
    }

    #[test]
    fn add_defaults() {
        let n = add(r#"{"text": "  Lunch at noon  "}"#).expect("valid");
        assert_eq!(
            n,
            Notice {
                id: 7,
                text: "Lunch at noon".into(),
                every: 1,
                next_tick: 11,
                remaining: None,
                sent: 0,
            }
        );
    }

    #[test]
    fn add_with_every_times_and_delay() {
        let n = add(r#"{"text": "x", "every": 4, "times": 2, "delay": 3}"#).expect("valid");
        assert_eq!((n.every, n.remaining, n.next_tick), (4, Some(2), 14));
    }

    #[test]
    fn add_rejects_bad_requests() {
        for (json, needle) in [
            (r#"{"text": " "}"#, "non-empty"),
            (r#"{"text": "x", "every": 0}"#, "`every` must be"),
            (r#"{"text": "x", "times": 0}"#, "`times` must be"),
            (r#"{"text": "x", "evry": 2}"#, "not valid"),
            (r#"{"every": 2}"#, "not valid"),
            ("", "not valid"),
        ] {
            let err = add(json).expect_err(json);
            assert!(err.contains(needle), "{json}: {err}");
        }
        let long = format!(r#"{{"text": "{}"}}"#, "a".repeat(MAX_TEXT_CHARS + 1));
        assert!(add(&long).expect_err("too long").contains("characters"));
    }

    #[test]
    fn due_orders_by_lateness_and_caps() {
        let notices = [
            notice(1, 5, None),
            notice(2, 3, None),
            notice(3, 9, None),
            notice(4, 3, None),
        ];
        let ids = |v: Vec<&Notice>| v.iter().map(|n| n.id).collect::<Vec<_>>();
        assert_eq!(ids(due(&notices, 5, 10)), [2, 4, 1]);
        assert_eq!(ids(due(&notices, 5, 2)), [2, 4]);
        assert_eq!(ids(due(&notices, 2, 10)), Vec::<u64>::new());
    }

    #[test]
    fn advance_counts_down_and_does_not_catch_up() {
        let n = notice(1, 2, Some(2));
        let next = advance(&n, 10).expect("one more");
        assert_eq!(
            (next.next_tick, next.remaining, next.sent),
            (13, Some(1), 1)
        );
        assert_eq!(advance(&next, 13), None);
        let forever = advance(&notice(1, 2, None), 4).expect("forever");
        assert_eq!(forever.remaining, None);
    }

    #[test]
    fn message_is_keyed_by_occurrence() {
        let config = Config {
            prefix: "📢 ".into(),
            sender: Some("Office".into()),
            ..Config::default()
        };
        let msg = notice_message(&notice(4, 12, None), &config);
        assert_eq!(msg.channel, CHANNEL);
        assert_eq!(msg.as_text(), Some("📢 notice 4"));
        assert_eq!(msg.idempotency_key.as_deref(), Some("notice-4-12"));
        assert_eq!(msg.sender.as_deref(), Some("Office"));
    }

    #[test]
    fn keys_sort_by_id() {
        assert_eq!(notice_key(42), "notice/0000000042");
        assert!(notice_key(9) < notice_key(10));
    }

    #[test]
    fn stored_notices_round_trip_and_tolerate_missing_fields() {
        let n = notice(1, 2, Some(3));
        let bytes = kv::encode_json("k", &n).expect("encodes");
        assert_eq!(kv::decode_json::<Notice>("k", &bytes), Ok(n));
        let old: Notice =
            kv::decode_json("k", br#"{"id":1,"text":"t","every":2,"next_tick":5}"#).expect("old");
        assert_eq!((old.remaining, old.sent), (None, 0));
    }

    #[test]
    fn seeding_goes_in_bounded_batches_to_the_end() {
        assert_eq!(seed_batch_end(0, 200, 20), 20);
        assert_eq!(seed_batch_end(180, 200, 20), 200);
        assert_eq!(seed_batch_end(190, 200, 20), 200);
        assert_eq!(seed_batch_end(0, 0, 20), 0);
        // A zero setting still makes progress.
        assert_eq!(seed_batch_end(3, 10, 0), 4);
    }

    #[test]
    fn counters() {
        assert_eq!(parse_counter("tick", " 12 "), Ok(12));
        assert!(parse_counter("tick", "x").is_err());
    }

    #[test]
    fn outcomes() {
        assert_eq!(describe_outcome(&DeliveryOutcome::Delivered), None);
        assert_eq!(
            describe_outcome(&DeliveryOutcome::Failed("403 forbidden".into())).as_deref(),
            Some("failed: 403 forbidden")
        );
    }

    #[test]
    fn describe_reads_well() {
        assert_eq!(
            describe_notice(&notice(2, 5, Some(1))),
            "notice #2: every 3 tick(s), next at tick 5, 1 more time(s), posted 0: \"notice 2\""
        );
    }
}
