//! Core module → component, and the check that a component is a well-behaved
//! botbox plugin: it imports nothing but the botbox interfaces and exports the
//! handler.

use anyhow::{Context, Result, bail};
use wit_component::ComponentEncoder;
use wit_parser::decoding::{DecodedWasm, decode};
use wit_parser::{Resolve, WorldItem, WorldKey};

/// The only instances a plugin may import. `types` carries no functions,
/// only the types the other interfaces share.
pub const ALLOWED_IMPORTS: &[&str] = &[
    "botbox:bot/types@0.1.0",
    "botbox:bot/broadcast@0.1.0",
    "botbox:bot/log@0.1.0",
    "botbox:bot/settings@0.1.0",
    "botbox:bot/kv@0.1.0",
];

/// What a plugin must export, and all it may.
pub const REQUIRED_EXPORT: &str = "botbox:bot/handler@0.1.0";

/// Turn a core module that embeds its WIT (wit-bindgen's `component-type`
/// custom section) into a component.
pub fn componentize(core: &[u8]) -> Result<Vec<u8>> {
    ComponentEncoder::default()
        .validate(true)
        .module(core)
        .context("reading the core module's component-type section")?
        .encode()
        .context("encoding the component")
}

/// One import or export of a component.
#[derive(Debug)]
pub struct Item {
    /// `botbox:bot/log@0.1.0`, or a bare name for a function or type.
    pub name: String,
    /// The functions it carries, for interfaces.
    pub functions: Vec<String>,
}

/// A component's imports and exports as WIT names.
#[derive(Debug)]
pub struct Interface {
    pub imports: Vec<Item>,
    pub exports: Vec<Item>,
}

/// Read a component's imports and exports.
pub fn interface(component: &[u8]) -> Result<Interface> {
    // The preamble's layer field (bytes 6..8) is 1 for components, 0 for
    // core modules; wit-parser would read a core module as an empty world.
    if component.starts_with(b"\0asm") && component.get(6..8) == Some(&[0, 0]) {
        bail!(
            "this is a core module, not a component: run `cargo xtask componentize CORE.wasm OUT.wasm`"
        );
    }
    let decoded = decode(component).context("decoding the component")?;
    let DecodedWasm::Component(resolve, world) = decoded else {
        bail!("this is a WIT package, not a component");
    };
    let world = &resolve.worlds[world];
    Ok(Interface {
        imports: items(&resolve, world.imports.iter()),
        exports: items(&resolve, world.exports.iter()),
    })
}

fn items<'a>(
    resolve: &Resolve,
    entries: impl Iterator<Item = (&'a WorldKey, &'a WorldItem)>,
) -> Vec<Item> {
    entries
        .map(|(key, item)| describe(resolve, key, item))
        .collect()
}

fn describe(resolve: &Resolve, key: &WorldKey, item: &WorldItem) -> Item {
    let functions = match item {
        WorldItem::Interface { id, .. } => {
            resolve.interfaces[*id].functions.keys().cloned().collect()
        }
        WorldItem::Function(_) | WorldItem::Type { .. } => Vec::new(),
    };
    Item {
        name: resolve.name_world_key(key),
        functions,
    }
}

/// Fail unless the component imports only [`ALLOWED_IMPORTS`] and exports
/// exactly [`REQUIRED_EXPORT`].
pub fn check(component: &[u8]) -> Result<Interface> {
    check_with(component, false)
}

/// [`check`], or with `allow_wasi` the check for guests that embed a
/// language runtime (JS, Python): they may also import `wasi:*@0.2`, which
/// the host satisfies with a context that grants nothing (no files,
/// environment, arguments or network), and export things outside `botbox:`
/// that the host never calls (componentize-py's `exports.init`).
pub fn check_with(component: &[u8], allow_wasi: bool) -> Result<Interface> {
    let iface = interface(component)?;
    let foreign: Vec<&str> = iface
        .imports
        .iter()
        .map(|i| i.name.as_str())
        .filter(|name| !ALLOWED_IMPORTS.contains(name))
        .filter(|name| !(allow_wasi && is_wasi(name)))
        .collect();
    if !foreign.is_empty() {
        let hint = if allow_wasi {
            "The host provides only these and WASI 0.2."
        } else {
            "Build for wasm32-unknown-unknown and avoid crates that need WASI or JS glue; \
             C guests must not use stdio (printf links WASI)."
        };
        bail!(
            "it imports {} — a plugin may import only {}{}. {hint}",
            foreign.join(", "),
            ALLOWED_IMPORTS.join(", "),
            if allow_wasi { " and wasi:*@0.2" } else { "" },
        );
    }
    let exports: Vec<&str> = iface
        .exports
        .iter()
        .map(|e| e.name.as_str())
        .filter(|name| !allow_wasi || name.starts_with("botbox:"))
        .collect();
    if exports != [REQUIRED_EXPORT] {
        bail!(
            "it exports [{}], expected exactly {REQUIRED_EXPORT}",
            exports.join(", ")
        );
    }
    Ok(iface)
}

/// A WASI 0.2 interface, such as `wasi:io/streams@0.2.12`.
pub fn is_wasi(name: &str) -> bool {
    name.starts_with("wasi:") && name.contains("@0.2.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_context() {
        let err = componentize(b"not wasm").unwrap_err();
        assert!(format!("{err:#}").contains("core module"), "{err:#}");
        assert!(check(b"not wasm").is_err());
    }

    #[test]
    fn wasi_means_wasi_0_2() {
        assert!(is_wasi("wasi:io/streams@0.2.12"));
        assert!(!is_wasi("wasi:http/types@0.3.0"));
        assert!(!is_wasi("botbox:bot/log@0.1.0"));
    }
}
