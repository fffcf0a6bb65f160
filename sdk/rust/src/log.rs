//! Write to the host's log.
//!
//! The host prefixes the plugin's name, escapes control characters, truncates
//! long lines and drops lines past the plugin's log rate, so a plugin can log
//! what it likes without harming anyone else.
//!
//! The macros [`trace!`](crate::trace), [`debug!`](crate::debug),
//! [`info!`](crate::info), [`warn!`](crate::warn) and
//! [`error!`](crate::error) take `format!` arguments.

use crate::Level;
use crate::bindings::botbox::bot::log as raw;

/// Write one line at a level.
pub fn log(level: Level, message: &str) {
    raw::log(level, message);
}

/// Write one line at `trace` level.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Write one line at `debug` level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Write one line at `info` level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Write one line at `warn` level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Write one line at `error` level.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Log at `trace` level with `format!` arguments.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::log($crate::Level::Trace, &::std::format!($($arg)+)) };
}

/// Log at `debug` level with `format!` arguments.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::log($crate::Level::Debug, &::std::format!($($arg)+)) };
}

/// Log at `info` level with `format!` arguments.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::log($crate::Level::Info, &::std::format!($($arg)+)) };
}

/// Log at `warn` level with `format!` arguments.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::log($crate::Level::Warn, &::std::format!($($arg)+)) };
}

/// Log at `error` level with `format!` arguments.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::log($crate::Level::Error, &::std::format!($($arg)+)) };
}
