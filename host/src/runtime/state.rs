//! The data of one store: one plugin instance handling one event.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::limits::MemoryCap;
use super::stdio::GuestOutput;
use crate::capabilities::PluginContext;
use crate::capabilities::log::StdStream;

/// The most host-side resources (WASI streams, pollables, …) one instance
/// may hold at once. wasmtime-wasi puts each in the store's
/// `ResourceTable`, whose own default cap is a million entries, and a WASI
/// output stream brings a tokio task with it: a guest that calls
/// `get-stdout` in a loop and never drops the handles would grow host
/// memory by that much, times `max_concurrency`. JS and Python guests hold
/// a handful at a time; past this cap the push fails, the call fails with
/// [`HandleError::TooManyHandles`](super::HandleError::TooManyHandles).
pub const MAX_HOST_HANDLES: usize = 1024;

pub struct HostState {
    pub plugin: Arc<PluginContext>,
    pub memory: MemoryCap,
    /// When the call this store serves began: its deadline counts from here.
    pub started: std::time::Instant,
    /// Built on the first WASI call: only JS and Python guests make any, so
    /// other plugins' events skip seeding its random sources and setting up
    /// its output streams.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
}

impl HostState {
    pub fn new(plugin: Arc<PluginContext>) -> HostState {
        HostState {
            memory: MemoryCap::new(plugin.limits.memory_bytes),
            started: std::time::Instant::now(),
            wasi: None,
            table: bounded_table(),
            plugin,
        }
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
/// arguments, no stdin, no sockets, no name lookup.
fn deny_all_wasi(plugin: &PluginContext) -> WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(GuestOutput::new(plugin.log.clone(), StdStream::Stdout))
        .stderr(GuestOutput::new(plugin.log.clone(), StdStream::Stderr))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    builder.build()
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| deny_all_wasi(&self.plugin)),
            table: &mut self.table,
        }
    }
}
