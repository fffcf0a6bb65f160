//! Provider answers are hostile input: a compromised or broken server can
//! send anything. Every reader (BigBlueButton XML, Tencent, Easemob and
//! Bitrix24 JSON) must turn it into an outcome, never a
//! panic.
#![no_main]

use arbitrary::Unstructured;
use botbox::providers::{bigbluebutton, bitrix24, easemob, tencent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let status = match u.int_in_range(0..=5u8).unwrap_or(0) {
        0 | 1 => 200,
        2 => 400,
        3 => 401,
        4 => 429,
        _ => 503,
    };
    // The rest of the input is the answer's body, whole, so text seeds work.
    let answer = u.take_rest();
    let message = botbox_fuzz::message(&mut Unstructured::new(b"\0\0\0\0hello")).ok();
    let Some(message) = message else { return };
    bigbluebutton::fuzz(answer, &message);
    tencent::fuzz(status, answer, &message, &[]);
    easemob::fuzz(status, answer, &message);
    bitrix24::fuzz(status, answer, &message);
});
