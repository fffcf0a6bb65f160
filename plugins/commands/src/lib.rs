//! commands: answers chat commands.
//!
//! * `!help`: what it understands.
//! * `!time`: the time the message was sent, in UTC. A plugin has no clock:
//!   this reads the message's `sent-at-ms`, and says so when there is none.
//! * `!echo TEXT`: says TEXT back (but never another command).
//! * `!roll NdM`: rolls N dice with M sides (`!roll`, `!roll d20` work too).
//!   The dice are a deterministic PRNG seeded from the message, so a
//!   redelivered message rolls the same.
//! * `!stats`: how many commands it has answered (counted in kv).
//!
//! Chat messages are answered in their conversation (`reply-to`). The custom
//! event `chat` with payload `{"text": "!roll 2d6"}` runs a command from
//! `botbox call` and answers on the `lobby` channel.
//!
//! Settings: `prefix` (default `!`), `sender` (display name).

use botbox_sdk::{
    Bot, ChatMessage, CustomEvent, Event, EventKind, Manifest, Message, kv, settings,
};
use serde::Deserialize;

/// The one channel commands asks for, and where `chat` events are answered.
pub const CHANNEL: &str = "lobby";
/// kv prefix of the per-command counters (decimal text).
const COUNT_PREFIX: &str = "count/";
/// Longest echo; longer text is cut (at a character boundary).
pub const MAX_ECHO_CHARS: usize = 400;

/// The plugin.
pub struct Commands;

impl Bot for Commands {
    fn describe() -> Manifest {
        Manifest::new("commands", env!("CARGO_PKG_VERSION"))
            .channel(CHANNEL)
            .event(EventKind::ChatMessage)
            .event(EventKind::Custom)
    }

    fn handle(event: Event) -> Result<(), String> {
        let prefix = settings::get_or("prefix", "!");
        let sender = settings::get("sender").filter(|s| !s.trim().is_empty());
        let (command, message) = match event {
            Event::ChatMessage(chat) => {
                let Some(command) = Command::parse(&chat.text, &prefix) else {
                    return Ok(()); // ordinary chat
                };
                let reply = answer(&command, &prefix, seed_for(&chat), chat.sent_at_ms);
                (command, reply_to_chat(&chat, reply))
            }
            Event::Custom(custom) => {
                let text = chat_payload(&custom)?;
                let Some(command) = Command::parse(&text, &prefix) else {
                    return Err(format!(
                        "{text:?} is not a command (they start with {prefix:?})"
                    ));
                };
                // No message id or time to seed from: vary by how many
                // commands came before.
                let seed = fnv1a(&[text.as_bytes(), &count_of("total").to_le_bytes()]);
                let reply = answer(&command, &prefix, seed, None);
                (command, Message::text(CHANNEL, reply))
            }
            _ => return Ok(()),
        };
        count(&command);
        let message = match sender {
            Some(sender) => message.sender(sender),
            None => message,
        };
        let receipt = message.send()?;
        botbox_sdk::debug!("answered {} as {}", command.name(), receipt.id);
        Ok(())
    }
}

botbox_sdk::export_bot!(Commands);

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Time,
    Echo(String),
    Roll(String),
    Stats,
    Unknown(String),
}

impl Command {
    /// Parse a chat line; `None` when it is not a command at all.
    pub fn parse(text: &str, prefix: &str) -> Option<Self> {
        let rest = text.trim_start().strip_prefix(prefix)?;
        let rest = rest.trim_end();
        let (word, args) = match rest.split_once(char::is_whitespace) {
            Some((word, args)) => (word, args.trim()),
            None => (rest, ""),
        };
        // A bare prefix ("!") or one followed by a space is not a command.
        if word.is_empty() {
            return None;
        }
        Some(match word.to_lowercase().as_str() {
            "help" => Self::Help,
            "time" => Self::Time,
            "echo" => Self::Echo(args.to_owned()),
            "roll" => Self::Roll(args.to_owned()),
            "stats" => Self::Stats,
            _ => Self::Unknown(word.to_owned()),
        })
    }

    /// Its name for counters and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Help => "help",
            Self::Time => "time",
            Self::Echo(_) => "echo",
            Self::Roll(_) => "roll",
            Self::Stats => "stats",
            Self::Unknown(_) => "unknown",
        }
    }
}

/// The payload of a `chat` custom event.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatPayload {
    text: String,
}

fn chat_payload(event: &CustomEvent) -> Result<String, String> {
    if event.name != "chat" {
        return Err(format!(
            "unknown custom event `{}`: commands understands `chat` with {{\"text\": \"!help\"}}",
            event.name
        ));
    }
    Ok(event.payload_json::<ChatPayload>()?.text)
}

/// The answer to a command. `seed` drives the dice.
pub fn answer(command: &Command, prefix: &str, seed: u64, sent_at_ms: Option<u64>) -> String {
    match command {
        Command::Help => format!(
            "I understand: {p}help, {p}time, {p}echo TEXT, {p}roll NdM (e.g. {p}roll 2d6), {p}stats",
            p = prefix
        ),
        Command::Time => match sent_at_ms {
            Some(ms) => format!("Your message was sent at {}.", format_utc(ms)),
            None => "I can't tell: your message came without a timestamp, and I have no clock."
                .to_owned(),
        },
        Command::Echo(text) if text.is_empty() => format!("Usage: {prefix}echo TEXT"),
        // Echoing a command could set off this bot or another one.
        Command::Echo(text) if text.starts_with(prefix) => "I don't echo commands.".to_owned(),
        Command::Echo(text) => truncate_chars(text, MAX_ECHO_CHARS),
        Command::Roll(spec) => match Dice::parse(spec) {
            Ok(dice) => dice.roll(&mut SplitMix64(seed)),
            Err(err) => format!("{err}. Try {prefix}roll 2d6."),
        },
        Command::Stats => format_stats(&read_counts()),
        Command::Unknown(word) => format!("I don't know {prefix}{word}. Try {prefix}help."),
    }
}

fn reply_to_chat(chat: &ChatMessage, text: String) -> Message {
    let message = Message::text(&chat.channel, text).reply_to(&chat.conversation);
    match &chat.message_id {
        // A redelivered message gets the first answer back, not a second one.
        Some(id) => message.idempotency_key(format!("reply-{id}")),
        None => message,
    }
}

/// A seed that is the same whenever the same message is handled again.
pub fn seed_for(chat: &ChatMessage) -> u64 {
    fnv1a(&[
        chat.message_id.as_deref().unwrap_or("").as_bytes(),
        &chat.sent_at_ms.unwrap_or(0).to_le_bytes(),
        chat.sender_id.as_bytes(),
        chat.conversation.as_bytes(),
        chat.text.as_bytes(),
    ])
}

/// Dice to roll: `count` dice with `sides` sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dice {
    pub count: u32,
    pub sides: u32,
}

impl Dice {
    pub const MAX_COUNT: u32 = 100;
    pub const MAX_SIDES: u32 = 1000;

    /// Parse `NdM`, `dM` or nothing (1d6).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim().to_lowercase();
        if spec.is_empty() {
            return Ok(Self { count: 1, sides: 6 });
        }
        let Some((count, sides)) = spec.split_once('d') else {
            return Err(format!("{spec:?} is not dice like 2d6"));
        };
        let number = |s: &str, what: &str| -> Result<u32, String> {
            s.parse()
                .map_err(|_| format!("{s:?} is not a number of {what}"))
        };
        let count = if count.is_empty() {
            1
        } else {
            number(count, "dice")?
        };
        let sides = number(sides, "sides")?;
        if !(1..=Self::MAX_COUNT).contains(&count) {
            return Err(format!("I roll 1 to {} dice", Self::MAX_COUNT));
        }
        if !(2..=Self::MAX_SIDES).contains(&sides) {
            return Err(format!("dice have 2 to {} sides", Self::MAX_SIDES));
        }
        Ok(Self { count, sides })
    }

    /// Roll and describe the result.
    pub fn roll(self, rng: &mut SplitMix64) -> String {
        let rolls: Vec<u64> = (0..self.count)
            .map(|_| rng.below(u64::from(self.sides)) + 1)
            .collect();
        let total: u64 = rolls.iter().sum();
        let label = format!("{}d{}", self.count, self.sides);
        match rolls.as_slice() {
            [one] => format!("🎲 {label}: {one}"),
            few if few.len() <= 10 => {
                let parts: Vec<String> = few.iter().map(u64::to_string).collect();
                format!("🎲 {label}: {} = {total}", parts.join(" + "))
            }
            _ => format!("🎲 {label}: {total}"),
        }
    }
}

/// SplitMix64: tiny, fast and good enough for dice; not for secrets.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), without modulo bias: reject the top sliver.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

/// FNV-1a over several byte strings, each followed by a separator so that
/// ("ab", "c") and ("a", "bc") differ.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`, restricted to dates after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `!stats`'s answer from (command, count) pairs; `total` is among them.
pub fn format_stats(counts: &[(String, u64)]) -> String {
    let total = counts
        .iter()
        .find(|(name, _)| name == "total")
        .map_or(0, |(_, n)| *n);
    let parts: Vec<String> = counts
        .iter()
        .filter(|(name, n)| name != "total" && *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    if parts.is_empty() {
        format!("I have answered {total} command(s).")
    } else {
        format!("I have answered {total} command(s): {}.", parts.join(", "))
    }
}

fn count_of(name: &str) -> u64 {
    kv::get_string(&format!("{COUNT_PREFIX}{name}"))
        .ok()
        .flatten()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Count a command. Counting is a nicety: a kv failure is logged and the
/// answer still goes out.
fn count(command: &Command) {
    for name in ["total", command.name()] {
        let next = count_of(name) + 1;
        if let Err(err) = kv::set_string(&format!("{COUNT_PREFIX}{name}"), &next.to_string()) {
            botbox_sdk::warn!("could not count `{name}`: {err}");
        }
    }
}

fn read_counts() -> Vec<(String, u64)> {
    let keys = match kv::list_keys(COUNT_PREFIX, 32) {
        Ok(keys) => keys,
        Err(err) => {
            botbox_sdk::warn!("could not read counters: {err}");
            return Vec::new();
        }
    };
    keys.iter()
        .filter_map(|key| key.strip_prefix(COUNT_PREFIX))
        .map(|name| (name.to_owned(), count_of(name)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(text: &str, id: Option<&str>, at: Option<u64>) -> ChatMessage {
        ChatMessage {
            channel: "lobby".into(),
            conversation: "meeting-1".into(),
            sender_id: "u-1".into(),
            sender_name: Some("Ada".into()),
            text: text.into(),
            message_id: id.map(Into::into),
            sent_at_ms: at,
        }
    }

    #[test]
    fn parses_commands() {
        assert_eq!(Command::parse("!help", "!"), Some(Command::Help));
        assert_eq!(Command::parse("  !HELP  ", "!"), Some(Command::Help));
        assert_eq!(
            Command::parse("!echo  hello  world ", "!"),
            Some(Command::Echo("hello  world".into()))
        );
        assert_eq!(
            Command::parse("!roll 2d6", "!"),
            Some(Command::Roll("2d6".into()))
        );
        assert_eq!(
            Command::parse("!roll", "!"),
            Some(Command::Roll(String::new()))
        );
        assert_eq!(
            Command::parse("!dance", "!"),
            Some(Command::Unknown("dance".into()))
        );
        assert_eq!(Command::parse("/time", "/"), Some(Command::Time));
    }

    #[test]
    fn ignores_ordinary_chat() {
        for text in ["hello", "", "!", "! help", "say !help"] {
            assert_eq!(Command::parse(text, "!"), None, "{text:?}");
        }
    }

    #[test]
    fn formats_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_700_000_000_123), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_utc(4_102_444_799_000), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn time_without_timestamp_says_so() {
        let text = answer(&Command::Time, "!", 0, None);
        assert!(text.contains("without a timestamp"), "{text}");
        assert_eq!(
            answer(&Command::Time, "!", 0, Some(0)),
            "Your message was sent at 1970-01-01 00:00:00 UTC."
        );
    }

    #[test]
    fn echo() {
        assert_eq!(
            answer(&Command::Echo("hi there".into()), "!", 0, None),
            "hi there"
        );
        assert_eq!(
            answer(&Command::Echo(String::new()), "!", 0, None),
            "Usage: !echo TEXT"
        );
        assert_eq!(
            answer(&Command::Echo("!roll".into()), "!", 0, None),
            "I don't echo commands."
        );
        let long = "é".repeat(MAX_ECHO_CHARS + 5);
        let echoed = answer(&Command::Echo(long), "!", 0, None);
        assert_eq!(echoed.chars().count(), MAX_ECHO_CHARS + 1);
        assert!(echoed.ends_with('…'));
    }

    #[test]
    fn parses_dice() {
        assert_eq!(Dice::parse(""), Ok(Dice { count: 1, sides: 6 }));
        assert_eq!(Dice::parse("2d6"), Ok(Dice { count: 2, sides: 6 }));
        assert_eq!(
            Dice::parse("D20"),
            Ok(Dice {
                count: 1,
                sides: 20
            })
        );
        for bad in [
            "0d6",
            "101d6",
            "2d1",
            "2d1001",
            "2x6",
            "d",
            "-1d6",
            "2d6d6",
            "99999999999d6",
        ] {
            assert!(Dice::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rolls_are_deterministic_and_in_range() {
        let dice = Dice { count: 3, sides: 6 };
        let a = dice.roll(&mut SplitMix64(42));
        assert_eq!(a, dice.roll(&mut SplitMix64(42)));
        let mut rng = SplitMix64(7);
        for _ in 0..10_000 {
            assert!((0..6).contains(&rng.below(6)));
        }
    }

    #[test]
    fn roll_output_shapes() {
        let one = Dice {
            count: 1,
            sides: 20,
        }
        .roll(&mut SplitMix64(1));
        assert!(one.starts_with("🎲 1d20: "), "{one}");
        let few = Dice { count: 3, sides: 6 }.roll(&mut SplitMix64(1));
        assert!(
            few.starts_with("🎲 3d6: ") && few.matches(" + ").count() == 2,
            "{few}"
        );
        let many = Dice {
            count: 50,
            sides: 6,
        }
        .roll(&mut SplitMix64(1));
        let total: u64 = many
            .rsplit(' ')
            .next()
            .and_then(|t| t.parse().ok())
            .expect("total");
        assert!((50..=300).contains(&total), "{many}");
    }

    #[test]
    fn bad_roll_explains() {
        assert_eq!(
            answer(&Command::Roll("7x".into()), "!", 0, None),
            "\"7x\" is not dice like 2d6. Try !roll 2d6."
        );
    }

    #[test]
    fn seeds_depend_on_the_message() {
        let a = chat("!roll", Some("m1"), Some(5));
        assert_eq!(seed_for(&a), seed_for(&a.clone()));
        assert_ne!(seed_for(&a), seed_for(&chat("!roll", Some("m2"), Some(5))));
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
    }

    #[test]
    fn replies_go_into_the_conversation_once() {
        let msg = reply_to_chat(&chat("!help", Some("m9"), None), "hi".into());
        assert_eq!(msg.channel, "lobby");
        assert_eq!(msg.reply_to.as_deref(), Some("meeting-1"));
        assert_eq!(msg.idempotency_key.as_deref(), Some("reply-m9"));
        let msg = reply_to_chat(&chat("!help", None, None), "hi".into());
        assert_eq!(msg.idempotency_key, None);
    }

    #[test]
    fn chat_payload_is_checked() {
        let ev = |name: &str, payload: &str| CustomEvent {
            name: name.into(),
            payload: payload.into(),
        };
        assert_eq!(
            chat_payload(&ev("chat", r#"{"text": "!help"}"#)),
            Ok("!help".into())
        );
        assert!(chat_payload(&ev("chat", "!help")).is_err());
        assert!(
            chat_payload(&ev("talk", "{}"))
                .unwrap_err()
                .contains("unknown custom event")
        );
    }

    #[test]
    fn stats_text() {
        assert_eq!(format_stats(&[]), "I have answered 0 command(s).");
        assert_eq!(
            format_stats(&[
                ("help".into(), 2),
                ("roll".into(), 0),
                ("time".into(), 1),
                ("total".into(), 3),
            ]),
            "I have answered 3 command(s): help 2, time 1."
        );
    }
}
