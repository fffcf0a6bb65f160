//! botbox: runs chat-bot logic as sandboxed WebAssembly components.
//!
//! The data flow, one module per box (ARCHITECTURE.md has the map, and
//! `tests/architecture.rs` checks that imports run one way, bottom to top):
//! `triggers` (provider webhooks, schedules, delivery reports, the admin
//! API) → `router` (which plugins get the event) → `runtime` (fresh
//! instance, deadline, memory cap, `handle(event)`) → `capabilities` (the
//! host side of each WIT import; `broadcast` checks grants and provider
//! rules) → `delivery` (accepts the message, hands back a receipt, delivers
//! it through its throttle) → `providers` (one folder per provider: plan,
//! sign, send, parse; and its webhooks: verify, parse, ack).
//!
//! Beneath them: `storage` (opening SQLite or PostgreSQL, sealed
//! credentials), `distribution` (a plugin's bytes from its file or an OCI
//! registry, checked against its digest pin), `config` (`botbox.toml`), `events` (the event vocabulary),
//! `wit` (the contract's bindings), `sanitize`. Above them: `app` (a
//! running host: generations, reload, listeners) and `cli`.

#![warn(missing_docs)]

pub mod app;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod distribution;
pub mod events;
pub mod providers;
pub mod router;
pub mod runtime;
pub mod sanitize;
pub mod storage;
pub mod telemetry;
pub mod triggers;
pub mod wit;
