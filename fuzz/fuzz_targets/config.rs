//! `botbox.toml` is written by an operator, who makes mistakes: any text
//! must parse or fail with an error, never panic, and an error never
//! repeats a secret's value.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match botbox::config::Config::parse(text, Path::new("botbox.toml"), Path::new("/nonexistent")) {
        Ok(config) => {
            let _ = format!("{config:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
