//! The data of one store (one plugin instance handling one event), and
//! the capabilities' slices put together: one line per capability, in the
//! `capabilities!` list below.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::clock::WallClock;
use super::limits::MemoryCap;
use super::stdio::GuestOutput;
use crate::capabilities::http::HttpHooks;
use crate::capabilities::log::StdStream;
use crate::capabilities::{self, CallTurn, Capability, Ctx, NoTurn, PluginInfo, Setup, View};
use crate::wit::types::Event;

/// Puts the capabilities together from one line each (`field: Type`):
/// the field of [`Slices`] that holds its slice, and the type that
/// implements [`Capability`]. From that list it writes [`Slices`] (with
/// its constructor and event hook), `HostState`'s [`View`] of each
/// capability, and [`add_to_linker`].
macro_rules! capabilities {
    ($($field:ident: $capability:ty),* $(,)?) => {
        /// Every capability's slice of one plugin, shared by all its stores.
        #[derive(Clone)]
        pub struct Slices {
            $(
                #[doc = concat!("The `", stringify!($field), "` capability's slice.")]
                pub $field: <$capability as Capability>::Slice,
            )*
        }

        impl Slices {
            /// Each capability builds its slice; `previous` holds the
            /// slices of the version being replaced.
            pub fn new(setup: &Setup<'_>, previous: Option<&Slices>) -> Slices {
                Slices {
                    $($field: <$capability as Capability>::slice(
                        setup,
                        previous.map(|p| &p.$field),
                    ),)*
                }
            }

            /// Shows each capability the event the plugin is about to get.
            #[inline]
            pub fn before_event(&self, event: &Event) {
                $(<$capability as Capability>::before_event(&self.$field, event);)*
            }
        }

        $(
            impl View<$capability> for HostState {
                #[inline]
                fn view(&mut self) -> Ctx<'_, <$capability as Capability>::Slice> {
                    Ctx {
                        plugin: &self.plugin.info,
                        slice: &self.plugin.slices.$field,
                        started: self.started,
                        turn: &*self.turn,
                    }
                }
            }
        )*

        /// Adds every capability's WIT interface (and the shared `types`)
        /// to the linker. WASI is added by the runtime.
        pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
            capabilities::add_types_to_linker(linker)?;
            $(<$capability as Capability>::add_to_linker(linker)?;)*
            Ok(())
        }
    };
}

capabilities! {
    broadcast: capabilities::broadcast::Broadcast,
    http: capabilities::http::Http,
    kv: capabilities::kv::Kv,
    log: capabilities::log::Log,
    settings: capabilities::settings::Settings,
}

/// Everything a plugin's stores share: who it is, and each capability's
/// slice. It reads as its [`PluginInfo`] (`context.grants`,
/// `context.name`).
pub struct PluginContext {
    /// Who the plugin is and what it may do.
    pub info: PluginInfo,
    /// Each capability's slice.
    pub slices: Slices,
}

impl Deref for PluginContext {
    type Target = PluginInfo;

    fn deref(&self) -> &PluginInfo {
        &self.info
    }
}

/// The most host-side resources (WASI streams, pollables, …) one instance
/// may hold at once. wasmtime-wasi puts each in the store's
/// `ResourceTable`, whose own default cap is a million entries, and a WASI
/// output stream brings a tokio task with it: a guest that calls
/// `get-stdout` in a loop and never drops the handles would grow host
/// memory by that much, times `max_concurrency`. JS and Python guests hold
/// a handful at a time; past this cap the push fails, the call fails with
/// [`HandleError::TooManyHandles`](super::HandleError::TooManyHandles).
pub const MAX_HOST_HANDLES: usize = 1024;

/// The data of one store: the plugin's shared context, and what belongs
/// to this one call (its memory cap, its start, its WASI state).
pub struct HostState {
    /// The plugin's identity and capability slices.
    pub plugin: Arc<PluginContext>,
    /// The call's memory cap (`limits.memory_mb`).
    pub memory: MemoryCap,
    /// When the call this store serves began: its deadline counts from here.
    pub started: Instant,
    /// The wall clock WASI's `wall-clock` reads (the host's, fixed under
    /// `botbox test`).
    wall_clock: WallClock,
    /// Built on the first WASI call: only JS and Python guests make any, so
    /// other plugins' events skip seeding its random sources and setting up
    /// its output streams.
    wasi: Option<WasiCtx>,
    /// Built on the first `wasi:http` call, like `wasi`: the hooks through
    /// which every outbound request passes the plugin's grant and limits.
    http: Option<(WasiHttpCtx, HttpHooks)>,
    table: ResourceTable,
    /// The call's CPU turn, shared with the store's epoch callback.
    turn: Arc<dyn CallTurn>,
}

impl HostState {
    /// A store's data for one call of `plugin`, whose WASI wall clock
    /// reads `wall_clock`.
    pub fn new(plugin: Arc<PluginContext>, wall_clock: WallClock) -> HostState {
        HostState {
            memory: MemoryCap::new(plugin.limits.memory_bytes),
            started: Instant::now(),
            wall_clock,
            wasi: None,
            http: None,
            table: bounded_table(),
            turn: Arc::new(NoTurn),
            plugin,
        }
    }

    /// The same, for a call whose CPU turn is `turn`.
    pub fn with_turn(mut self, turn: Arc<dyn CallTurn>) -> HostState {
        self.turn = turn;
        self
    }
}

fn bounded_table() -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_HOST_HANDLES);
    table
}

/// WASI for guests whose toolchains import it (JS, Python, C with
/// wasi-libc): clocks and random work, everything that reaches outside the
/// sandbox is absent. No preopened directories, no environment, no
/// arguments, no stdin, no sockets, no name lookup. Stdout and stderr go
/// to the plugin's log. The wall clock is the host's (see [`WallClock`]).
fn deny_all_wasi(plugin: &PluginContext, wall_clock: &WallClock) -> WasiCtx {
    let log = &plugin.slices.log;
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(GuestOutput::new(log.clone(), StdStream::Stdout))
        .stderr(GuestOutput::new(log.clone(), StdStream::Stderr))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .wall_clock(wall_clock.clone());
    builder.build()
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self
                .wasi
                .get_or_insert_with(|| deny_all_wasi(&self.plugin, &self.wall_clock)),
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let (ctx, hooks) = self.http.get_or_insert_with(|| {
            (
                WasiHttpCtx::new(),
                capabilities::http::hooks(
                    &self.plugin.info,
                    &self.plugin.slices.http,
                    self.started,
                ),
            )
        });
        WasiHttpCtxView {
            ctx,
            hooks,
            table: &mut self.table,
        }
    }
}
