//! The host side of each WIT import, one module per capability.
//!
//! A capability owns two things, in the manner of wasmtime-wasi's
//! `WasiView` and Spin's factors:
//!
//! - its **slice**: what every store of one plugin shares for it (a budget,
//!   a handle to a host service), built by [`Capability::slice`];
//! - its **projection** into the linker: [`Capability::add_to_linker`]
//!   adds its WIT interface for any store data that can lend out a
//!   [`Ctx`] of the slice ([`View`]), through wasmtime's
//!   [`HasData`](wasmtime::component::HasData) ([`HasCapability`]).
//!
//! The runtime puts the slices together (`runtime::state`, one line per
//! capability) and knows the capabilities only through them. Capabilities
//! import what lies below them (delivery, providers, config), never the
//! runtime.

pub mod broadcast;
pub mod http;
pub mod kv;
pub mod log;
pub mod rate;
pub mod settings;

use std::collections::BTreeSet;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::broadcast as observers;
use wasmtime::component::{HasData, Linker};

use crate::config::http::HostPattern;
use crate::config::{PluginConfig, PluginLimits};
use crate::delivery::Delivery;
use crate::wit::types::{Event, EventKind, Manifest};

pub use self::broadcast::Conversations;

/// What a plugin may use: what it asked for in `describe`, intersected with
/// what the operator granted in `botbox.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Channels it may send on and hear from.
    pub channels: BTreeSet<String>,
    /// Kinds of event it is handed.
    pub events: Vec<EventKind>,
    /// Schedules that fire for it.
    pub schedules: BTreeSet<String>,
    /// Hosts it may reach over outbound HTTP: what it asked for that one of
    /// the operator's `http` patterns covers.
    pub http: Vec<HostPattern>,
}

/// What a plugin asked for that the operator did not grant, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Denied {
    /// Channels asked for and not granted.
    pub channels: Vec<String>,
    /// Event kinds asked for and not granted.
    pub events: Vec<EventKind>,
    /// Schedules asked for and not configured.
    pub schedules: Vec<String>,
    /// HTTP hosts asked for and not granted (or not patterns at all), escaped.
    pub http: Vec<String>,
}

impl Grants {
    /// What the plugin gets, and what it asked for and does not.
    pub fn intersect(
        manifest: &Manifest,
        wants_http: &[String],
        config: &PluginConfig,
    ) -> (Grants, Denied) {
        let mut grants = Grants::default();
        let mut denied = Denied::default();
        for c in &manifest.channels {
            if config.channels.contains(c) {
                grants.channels.insert(c.clone());
            } else {
                denied.channels.push(c.clone());
            }
        }
        for e in &manifest.events {
            if config.events.contains(e) {
                if !grants.events.contains(e) {
                    grants.events.push(*e);
                }
            } else {
                denied.events.push(*e);
            }
        }
        for s in &manifest.schedules {
            if config.schedules.contains_key(s) {
                grants.schedules.insert(s.clone());
            } else {
                denied.schedules.push(s.clone());
            }
        }
        for asked in wants_http {
            match HostPattern::parse(asked) {
                Ok(p) if config.http.iter().any(|granted| granted.covers(&p)) => {
                    if !grants.http.contains(&p) {
                        grants.http.push(p);
                    }
                }
                Ok(_) => denied.http.push(crate::sanitize::for_log(asked, 64)),
                Err(reason) => denied.http.push(format!(
                    "{} ({reason})",
                    crate::sanitize::for_log(asked, 64)
                )),
            }
        }
        (grants, denied)
    }

    /// Whether events of this kind may reach the plugin. The router and the
    /// runtime's own check both ask this.
    pub fn allows_event(&self, kind: EventKind) -> bool {
        self.events.contains(&kind)
    }
}

/// Who a plugin is and what it may do: what every capability may read of
/// the plugin besides its own slice.
pub struct PluginInfo {
    /// Its name in `botbox.toml`: the kv namespace, the log tag.
    pub name: String,
    /// What it said in `describe`; `None` while `describe` itself runs.
    pub manifest: Option<Manifest>,
    /// What it may use; empty while `describe` runs.
    pub grants: Grants,
    /// Its budgets (`plugins.<name>.limits`).
    pub limits: PluginLimits,
}

/// Host services every plugin shares, handed to the capabilities that use
/// them when a plugin's slices are built. Swapped whole when a config
/// reload rebuilds the delivery engine.
#[derive(Clone)]
pub struct Services {
    /// The kv store (`kv`).
    pub kv: Arc<kv::KvStore>,
    /// The delivery engine messages go to (`broadcast`).
    pub delivery: Arc<Delivery>,
    /// Where plugin log lines are copied for `botbox dev` and tests (`log`).
    pub log_observers: observers::Sender<log::LogRecord>,
}

/// What a capability builds a plugin's slice from.
pub struct Setup<'a> {
    /// The plugin's name.
    pub name: &'a str,
    /// Its section of `botbox.toml`.
    pub config: &'a PluginConfig,
    /// The host services of the generation it is loaded into.
    pub services: &'a Services,
    /// Whether a version of this plugin is running with the same limits:
    /// a reload then keeps its budgets, so reloading is no way around them.
    pub same_limits: bool,
}

/// One WIT import's host side. Implemented by a marker type per capability
/// (`broadcast::Broadcast`, `kv::Kv`, …).
pub trait Capability: 'static {
    /// What every store of one plugin shares for this capability. Cloned
    /// only when a plugin loads.
    type Slice: Clone + Send + Sync + 'static;

    /// Builds a plugin's slice. `previous` is the slice of the version
    /// being replaced, if any, for state that outlives a reload.
    fn slice(setup: &Setup<'_>, previous: Option<&Self::Slice>) -> Self::Slice;

    /// Adds this capability's WIT interface to a linker whose store data
    /// lends out its view.
    fn add_to_linker<T: View<Self>>(linker: &mut Linker<T>) -> wasmtime::Result<()>;

    /// Sees each event just before the plugin is handed it (the runtime
    /// calls this after its grant check). Most capabilities ignore it.
    #[inline]
    fn before_event(_slice: &Self::Slice, _event: &Event) {}
}

/// What one call's host functions of a capability see: the plugin, the
/// capability's slice of it, when the call began (its deadline counts
/// from there) and its CPU turn. The bindgen'd `Host` traits are
/// implemented on it.
pub struct Ctx<'a, S> {
    /// Who is calling.
    pub plugin: &'a PluginInfo,
    /// This capability's slice of the plugin.
    pub slice: &'a S,
    /// When the call this store serves began.
    pub started: Instant,
    /// The call's CPU turn.
    pub turn: &'a dyn CallTurn,
}

/// A call's CPU turn as a host function sees it. Guest code runs only
/// while its call holds one of a few turns (the runtime's fair scheduler);
/// a host function that waits for work done off the guest threads (an
/// outbox write waiting for its commit) gives the turn to another call
/// meanwhile, so a waiting call holds no CPU, and takes one again, fairly,
/// before guest code goes on.
pub trait CallTurn: Send + Sync {
    /// Gives the call's turn back, if it holds one.
    fn give_back(&self);
    /// Waits for a turn again, if the call gave its turn back.
    fn take_again(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Awaits `wait`, work done off the guest threads, without holding the
/// call's CPU turn, and takes a turn again before returning (see
/// [`CallTurn`]).
pub async fn off_turn<F: Future>(turn: &dyn CallTurn, wait: F) -> F::Output {
    turn.give_back();
    let done = wait.await;
    turn.take_again().await;
    done
}

/// The turn of a call outside the scheduler (a store no pool runs):
/// nothing to give back.
pub struct NoTurn;

impl CallTurn for NoTurn {
    fn give_back(&self) {}
    fn take_again(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
}

/// Store data that can lend out a capability's [`Ctx`]: the runtime's
/// `HostState` implements it once per capability.
pub trait View<C: Capability + ?Sized>: Send + 'static {
    /// The call's view of capability `C`.
    fn view(&mut self) -> Ctx<'_, C::Slice>;
}

/// The [`HasData`] projection the bindgen'd `add_to_linker` functions take:
/// from the store's data to capability `C`'s [`Ctx`].
pub struct HasCapability<C: ?Sized>(PhantomData<fn() -> Box<C>>);

impl<C: Capability + ?Sized> HasData for HasCapability<C> {
    type Data<'a> = Ctx<'a, C::Slice>;
}

/// The `types` interface of every served version: type definitions only,
/// no functions. Every world import needs an instance in the linker, so
/// each gets an empty one.
pub fn add_types_to_linker<T: Send + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    crate::wit::types::add_to_linker::<T, NoFunctions>(linker, |_| NoFunctions)?;
    // 0.2.0's `types` is bound to 0.1.0's Rust types (`wit.rs`), so bindgen
    // writes no linker function for it; the empty instance is all it needs.
    linker.instance(&format!(
        "{}/types@{}",
        crate::wit::WIT_PACKAGE,
        crate::wit::WitVersion::V0_2
    ))?;
    Ok(())
}

/// The data behind an interface that has no functions.
pub struct NoFunctions;

impl HasData for NoFunctions {
    type Data<'a> = NoFunctions;
}

impl crate::wit::types::Host for NoFunctions {}
