//! The plugin's own settings from the operator's `botbox.toml`.
//!
//! Settings are never secret. Strings come as they are; numbers, booleans,
//! arrays and tables come as JSON text, so `every = 3` reads as `"3"` and
//! [`get_parsed`] turns it into a number.

use std::fmt::Display;
use std::str::FromStr;

use crate::bindings::botbox::bot::settings as raw;

/// A setting is present but its value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting `{key}` = {value:?} is not valid: {reason}")]
pub struct SettingsError {
    /// The setting's key.
    pub key: String,
    /// The value the operator gave it.
    pub value: String,
    /// Why it does not parse.
    pub reason: String,
}

/// Lets `handle` use `?`: its error type is the WIT's `string`.
impl From<SettingsError> for String {
    fn from(err: SettingsError) -> Self {
        err.to_string()
    }
}

/// One setting, if the operator set it.
pub fn get(key: &str) -> Option<String> {
    raw::get(key)
}

/// One setting, or `default` when the operator did not set it.
pub fn get_or(key: &str, default: &str) -> String {
    get(key).unwrap_or_else(|| default.to_owned())
}

/// One setting parsed with [`FromStr`]; `Ok(None)` when it is not set.
pub fn get_parsed<T>(key: &str) -> Result<Option<T>, SettingsError>
where
    T: FromStr,
    T::Err: Display,
{
    get(key).map(|value| parse(key, value)).transpose()
}

/// One setting parsed with [`FromStr`], or `default` when it is not set.
pub fn get_parsed_or<T>(key: &str, default: T) -> Result<T, SettingsError>
where
    T: FromStr,
    T::Err: Display,
{
    Ok(get_parsed(key)?.unwrap_or(default))
}

/// One setting decoded from JSON (arrays and tables arrive as JSON text).
#[cfg(feature = "json")]
pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, SettingsError> {
    get(key)
        .map(|value| {
            serde_json::from_str(&value).map_err(|err| SettingsError {
                key: key.to_owned(),
                reason: err.to_string(),
                value,
            })
        })
        .transpose()
}

/// Every setting, sorted by key.
pub fn list() -> Vec<(String, String)> {
    raw::list()
}

/// Parse a setting's value; public so plugins can test how they read
/// settings without a host.
pub fn parse<T>(key: &str, value: String) -> Result<T, SettingsError>
where
    T: FromStr,
    T::Err: Display,
{
    // Operators write `every = "3"` as often as `every = 3`; both should work.
    let trimmed = value.trim().trim_matches('"');
    trimmed.parse().map_err(|err: T::Err| SettingsError {
        key: key.to_owned(),
        reason: err.to_string(),
        value: value.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_numbers_and_bools() {
        assert_eq!(parse::<u32>("every", "3".into()), Ok(3));
        assert_eq!(parse::<u32>("every", " \"3\" ".into()), Ok(3));
        assert_eq!(parse::<bool>("on", "true".into()), Ok(true));
    }

    #[test]
    fn parse_error_names_the_setting() {
        let err = parse::<u32>("every", "often".into()).unwrap_err();
        assert_eq!(err.key, "every");
        assert!(
            err.to_string()
                .starts_with("setting `every` = \"often\" is not valid"),
            "{err}"
        );
    }
}
