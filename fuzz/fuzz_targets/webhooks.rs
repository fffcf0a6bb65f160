//! Webhook bodies and queries come from anyone who can reach the listener.
//! The parsers run only after authentication, but a provider (or a leaked
//! secret) can still send anything: every parser must refuse or produce
//! events whose strings are bounded and free of control characters.
#![no_main]

use arbitrary::Unstructured;
use axum::http::HeaderMap;
use botbox::wit::types::Event;
use libfuzzer_sys::fuzz_target;

/// `clean_text`'s bound, in characters.
const MAX_TEXT_CHARS: usize = 16_000;

fn check(field: &str) {
    assert!(field.chars().count() <= MAX_TEXT_CHARS, "unbounded field");
    assert!(
        !field
            .chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t')
                || botbox::sanitize::is_bidi_control(c)),
        "control character in {field:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let query_len = u.int_in_range(0..=64usize).unwrap_or(0);
    let query = u.bytes(query_len).unwrap_or_default().to_vec();
    let now_ms = 1_700_000_000_000 + u.int_in_range(0..=10_000_000u64).unwrap_or(0);
    let body = u.take_rest();
    let headers = HeaderMap::new();
    for event in botbox::triggers::webhooks::fuzz_parse(&query, &headers, body, now_ms) {
        match event {
            Event::ChatMessage(m) => {
                for f in [&m.conversation, &m.sender_id, &m.text] {
                    check(f);
                }
                for f in [&m.sender_name, &m.message_id].into_iter().flatten() {
                    check(f);
                }
            }
            Event::Meeting(m) => {
                check(&m.meeting_id);
                for f in [&m.meeting_name, &m.user_id, &m.user_name]
                    .into_iter()
                    .flatten()
                {
                    check(f);
                }
            }
            _ => panic!("a webhook produced an event of another kind"),
        }
    }
});
