//! Write botbox chat-bot plugins in Rust.
//!
//! A plugin is a WebAssembly component that targets the world `bot` of the
//! WIT package `botbox:bot@0.1.0`. It receives [`Event`]s, sends [`Message`]s
//! to *channels* (names the operator made up; a plugin never sees a provider,
//! URL or credential), reads its [`settings`], keeps small state in [`kv`] and
//! writes to the host's [`log`]. It imports nothing else: no WASI, no clock,
//! no randomness, no filesystem.
//!
//! Implement [`Bot`] for a type and export it with [`export_bot!`]:
//!
//! ```no_run
//! use botbox_sdk::{Bot, Event, EventKind, Manifest, Message, kv, settings};
//!
//! struct Echo;
//!
//! impl Bot for Echo {
//!     /// What the plugin asks for. The operator grants at most this.
//!     fn describe() -> Manifest {
//!         Manifest::new("echo", env!("CARGO_PKG_VERSION"))
//!             .channel("lobby")
//!             .event(EventKind::ChatMessage)
//!             .event(EventKind::Custom)
//!     }
//!
//!     fn handle(event: Event) -> Result<(), String> {
//!         match event {
//!             Event::ChatMessage(msg) => {
//!                 let Some(text) = msg.text.strip_prefix("!echo ") else {
//!                     return Ok(()); // not for us
//!                 };
//!                 let sender = settings::get_or("sender", "Echo");
//!                 let receipt = Message::text(&msg.channel, text)
//!                     .sender(sender)
//!                     .reply_to(&msg.conversation)
//!                     .send()?; // BroadcastError converts into the String error
//!                 botbox_sdk::info!("queued {} (sends in {} ms)", receipt.id, receipt.eta_ms);
//!
//!                 // Small persistent state, kept across restarts and reloads.
//!                 let echoed = kv::get_string("echoed")?.and_then(|s| s.parse::<u64>().ok());
//!                 kv::set_string("echoed", &(echoed.unwrap_or(0) + 1).to_string())?;
//!                 Ok(())
//!             }
//!             Event::Custom(custom) if custom.name == "say" => {
//!                 botbox_sdk::broadcast::send_text("lobby", &custom.payload)?;
//!                 Ok(())
//!             }
//!             other => {
//!                 botbox_sdk::debug!("ignoring a {:?} event", other.kind());
//!                 Ok(())
//!             }
//!         }
//!     }
//! }
//!
//! botbox_sdk::export_bot!(Echo);
//! ```
//!
//! Build it as a `cdylib` for `wasm32-unknown-unknown` and turn the core
//! module into a component (`wasm-tools component new`, or this repository's
//! `cargo xtask plugins`); the README next to this crate has both routes.
//!
//! # Testing
//!
//! The SDK also compiles for the host target, so `cargo test` runs a plugin's
//! pure logic (parsing, formatting, deciding what to send) natively. The
//! host's functions are not there natively: calling [`broadcast::send`],
//! [`settings::get`], [`kv::get`] or [`log`] from a native test panics. Keep
//! those calls at the edge of `handle` and test the code between them.

mod broadcast_error;
mod builders;
mod events;

pub mod broadcast;
#[cfg(feature = "http")]
pub mod http;
pub mod kv;
pub mod log;
pub mod settings;

/// The raw bindings `wit-bindgen` generates for the world `bot`.
///
/// Everything useful is re-exported at the crate root; reach in here only for
/// what the helpers do not cover.
pub mod bindings {
    #[cfg(not(feature = "http"))]
    wit_bindgen::generate!({
        // `wit` is a symlink to the repository's `wit/` package, resolved
        // relative to this crate's manifest, so the SDK finds its contract
        // wherever it is built from (path or git dependency, or packaged).
        path: "wit",
        world: "bot",
        // The export macro must be usable from plugin crates, and it embeds
        // the component-type section there, in the final module.
        pub_export_macro: true,
        export_macro_name: "__export_bot_world",
        default_bindings_module: "::botbox_sdk::bindings",
        additional_derives: [PartialEq],
    });

    // botbox:bot@0.2.0 plus `wasi:http/outgoing-handler` (see
    // `wit-0.2.0/world.wit`); the same settings otherwise.
    #[cfg(feature = "http")]
    wit_bindgen::generate!({
        path: "wit-0.2.0",
        world: "bot-http",
        // The WASI interfaces are generated here too (the SDK depends on
        // no `wasi` crate, whose wit-bindgen release may differ).
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_bot_world",
        default_bindings_module: "::botbox_sdk::bindings",
        additional_derives: [PartialEq],
        // It holds a resource (`wasi:io/error`), which has no equality.
        additional_derives_ignore: ["stream-error"],
    });
}

pub use bindings::botbox::bot::log::Level;
pub use bindings::botbox::bot::types::{
    ChannelInfo, ChatMessage, Content, ContentKind, CustomEvent, CustomPayload, DeliveryOutcome,
    DeliveryReport, Event, EventKind, Location, Media, MeetingEvent, MeetingEventKind, Message,
    MessageOptions, Priority, Receipt,
};
// 0.2.0 moved `manifest` from `types` to `handler` (and added `http`).
#[cfg(not(feature = "http"))]
pub use bindings::botbox::bot::types::Manifest;
#[cfg(feature = "http")]
pub use bindings::exports::botbox::bot::handler::Manifest;
pub use broadcast::channels;
pub use broadcast_error::BroadcastError;

/// A bot plugin: what it asks for, and how it handles one event.
///
/// The host creates a fresh instance for every call, so a plugin keeps no
/// state in memory between events: whatever must survive goes to [`kv`].
pub trait Bot {
    /// The channels, event kinds and schedules the plugin asks for. The host
    /// calls this once when it loads the plugin and grants the intersection
    /// with what the operator configured.
    fn describe() -> Manifest;

    /// Handle one event. An `Err` fails this event only; the host logs its
    /// text and shows it to the operator.
    fn handle(event: Event) -> Result<(), String>;
}

impl<T: Bot> bindings::exports::botbox::bot::handler::Guest for T {
    fn describe() -> Manifest {
        install_panic_hook();
        <T as Bot>::describe()
    }

    fn handle(event: Event) -> Result<(), String> {
        install_panic_hook();
        <T as Bot>::handle(event)
    }
}

/// On wasm32-unknown-unknown std's panic message goes nowhere (there is no
/// stderr), and the host sees only a trap. Send it to the host's log first so
/// the plugin's author can read why.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            log::error(&format!("panic: {info}"));
        }));
    });
}

/// Export a type that implements [`Bot`] as the plugin's `handler`.
///
/// Use it once, at the top level of the plugin's `cdylib` crate:
///
/// ```ignore
/// botbox_sdk::export_bot!(MyBot);
/// ```
#[macro_export]
macro_rules! export_bot {
    ($bot:ident) => {
        // The component's export names (`botbox:bot/handler@0.1.0#handle`)
        // are not valid in a native linker's version script, so a plugin's
        // `cdylib` would not link for `cargo test`. Natively, only check that
        // the type is a `Bot`.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_bot_world!($bot with_types_in $crate::bindings);
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn assert_bot<T: $crate::Bot>() {}
            let _ = assert_bot::<$bot>;
        };
    };
}
