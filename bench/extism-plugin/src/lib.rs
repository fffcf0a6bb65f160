//! The trivial plugin of the dispatch benchmark, written for Extism with its
//! Rust PDK: for every event it sends one text message to `lobby` through a
//! host function, as the WAT plugin does through botbox's `send-broadcast`.

use extism_pdk::*;

#[host_fn]
extern "ExtismHost" {
    fn send_broadcast(message: String) -> String;
}

#[plugin_fn]
pub fn handle(event: String) -> FnResult<()> {
    // The event is read (copied in) like botbox lifts it; its content is
    // not needed to send the fixed reply.
    let _ = event.len();
    // SAFETY: `send_broadcast` is the host function the benchmark registers
    // with this exact signature.
    let receipt = unsafe { send_broadcast("lobby\nhi".to_string())? };
    let _ = receipt.len();
    Ok(())
}
