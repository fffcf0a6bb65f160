//! The conversion of a plugin's WIT `message` into each provider's request:
//! any field a plugin can set, with any text, must become a request or a
//! refusal, never a panic; BigBlueButton's split keeps every character.
#![no_main]

use arbitrary::Unstructured;
use botbox::providers::{bigbluebutton, bitrix24, easemob, tencent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(message) = botbox_fuzz::message(&mut u) else {
        return;
    };
    let rest: Vec<_> = (0..u.int_in_range(0..=3u8).unwrap_or(0))
        .filter_map(|_| botbox_fuzz::message(&mut u).ok())
        .collect();
    bigbluebutton::fuzz(b"", &message);
    tencent::fuzz(200, b"{}", &message, &rest);
    easemob::fuzz(200, b"{}", &message);
    bitrix24::fuzz(200, b"{}", &message);
});
