//! botbox: runs chat-bot logic as sandboxed WebAssembly components.
//!
//! The data flow, one module per box:
//! `events` (the event vocabulary every box shares), `triggers` (schedules, provider webhooks, CLI and admin calls) → `runtime` (fresh instance,
//! deadline, memory cap, `handle(event)`) → `capabilities` (the host side of
//! each WIT import; `broadcast` checks grants and provider rules) →
//! `delivery` (accepts the message, hands back a receipt, delivers it) →
//! `providers` (one module per provider: validate, sign, send, parse).

pub mod app;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod events;
pub mod providers;
pub mod router;
pub mod runtime;
pub mod sanitize;
pub mod storage;
pub mod triggers;
pub mod wit;
