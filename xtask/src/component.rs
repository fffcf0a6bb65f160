//! Core module → component, and the check that a component is a well-behaved
//! botbox plugin: it imports nothing but the botbox interfaces and exports the
//! handler.

use anyhow::{Context, Result, bail};
use wit_component::ComponentEncoder;
use wit_parser::decoding::{DecodedWasm, decode};
use wit_parser::{Resolve, WorldItem, WorldKey};

/// One version of the `botbox:bot` contract: what a component built against
/// it may import and must export. A component names one version throughout
/// (its imports and its `handler` export); the host refuses mixes, and so
/// does this check.
#[derive(Debug)]
pub struct WitVersion {
    /// `0.1.0`.
    pub version: &'static str,
    /// The only instances a plugin of this version may import. `types`
    /// carries no functions, only the types the other interfaces share.
    pub imports: &'static [&'static str],
    /// What a plugin must export, and all it may.
    pub export: &'static str,
    /// Whether it may import `wasi:http/outgoing-handler@0.2.x` and the
    /// WASI interfaces its types come from ([`WASI_HTTP_IMPORTS`]).
    pub http: bool,
}

/// Every version the host serves (README "WIT versions"), oldest first.
pub const VERSIONS: &[WitVersion] = &[
    WitVersion {
        version: "0.1.0",
        imports: &[
            "botbox:bot/types@0.1.0",
            "botbox:bot/broadcast@0.1.0",
            "botbox:bot/log@0.1.0",
            "botbox:bot/settings@0.1.0",
            "botbox:bot/kv@0.1.0",
        ],
        export: "botbox:bot/handler@0.1.0",
        http: false,
    },
    WitVersion {
        version: "0.2.0",
        imports: &[
            "botbox:bot/types@0.2.0",
            "botbox:bot/broadcast@0.2.0",
            "botbox:bot/log@0.2.0",
            "botbox:bot/settings@0.2.0",
            "botbox:bot/kv@0.2.0",
        ],
        export: "botbox:bot/handler@0.2.0",
        http: true,
    },
];

/// The WASI interfaces (any `@0.2.x`) a 0.2.0 plugin without a language
/// runtime may import for outbound HTTP: the handler, the types it takes
/// and returns, and the interfaces those types `use` (streams, pollables,
/// errors, durations). wit-component keeps an import for every interface a
/// used one depends on, so all of them appear even if never called.
pub const WASI_HTTP_IMPORTS: &[&str] = &[
    "wasi:http/outgoing-handler",
    "wasi:http/types",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
];

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

/// Fail unless the component is a plugin of one served version: it exports
/// exactly that version's `handler` and imports only that version's
/// interfaces (plus, from 0.2.0 on, [`WASI_HTTP_IMPORTS`]).
pub fn check(component: &[u8]) -> Result<Interface> {
    check_with(component, false)
}

/// [`check`], or with `allow_wasi` the check for guests that embed a
/// language runtime (JS, Python): they may also import `wasi:*@0.2`, which
/// the host satisfies with a context that grants nothing (no files,
/// environment, arguments or network; `wasi:http` only from 0.2.0 on, behind
/// the operator's grant), and export things outside `botbox:` that the host
/// never calls (componentize-py's `exports.init`).
pub fn check_with(component: &[u8], allow_wasi: bool) -> Result<Interface> {
    let iface = interface(component)?;
    let exports: Vec<&str> = iface
        .exports
        .iter()
        .map(|e| e.name.as_str())
        .filter(|name| !allow_wasi || name.starts_with("botbox:"))
        .collect();
    let served = || {
        VERSIONS
            .iter()
            .map(|v| v.export)
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let version = match exports.as_slice() {
        [export] => VERSIONS.iter().find(|v| v.export == *export),
        _ => None,
    };
    let Some(version) = version else {
        bail!(
            "it exports [{}], expected exactly one of {}",
            exports.join(", "),
            served()
        );
    };
    let foreign: Vec<&str> = iface
        .imports
        .iter()
        .map(|i| i.name.as_str())
        .filter(|name| !version.imports.contains(name))
        .filter(|name| !(version.http && is_wasi_http_import(name)))
        .filter(|name| !(allow_wasi && is_wasi(name) && (version.http || !is_wasi_http(name))))
        .collect();
    if !foreign.is_empty() {
        let mut allowed = version.imports.join(", ");
        if version.http {
            allowed.push_str(" and wasi:http/outgoing-handler@0.2.x with the WASI types it uses");
        }
        if allow_wasi {
            allowed.push_str(" and wasi:*@0.2");
        }
        let mixed = foreign.iter().any(|name| name.starts_with("botbox:bot/"));
        let hint = if mixed {
            format!(
                "Every botbox import must name the version of the exported handler ({}): \
                 build the whole plugin against one WIT version.",
                version.version
            )
        } else if foreign.iter().any(|name| is_wasi_http(name)) && !version.http {
            "Outbound HTTP (wasi:http) needs botbox:bot@0.2.0: build against wit/0.2.0 \
             (the Rust SDK's `http` feature)."
                .to_owned()
        } else if allow_wasi {
            "The host provides only these and WASI 0.2.".to_owned()
        } else {
            "Build for wasm32-unknown-unknown and avoid crates that need WASI or JS glue; \
             C guests must not use stdio (printf links WASI)."
                .to_owned()
        };
        bail!(
            "it imports {} — a botbox:bot@{} plugin may import only {allowed}. {hint}",
            foreign.join(", "),
            version.version,
        );
    }
    Ok(iface)
}

/// `wasi:http/...@0.2.x`.
fn is_wasi_http(name: &str) -> bool {
    name.starts_with("wasi:http/") && is_wasi(name)
}

/// One of [`WASI_HTTP_IMPORTS`] at any `@0.2.x`.
fn is_wasi_http_import(name: &str) -> bool {
    is_wasi(name)
        && name
            .split_once('@')
            .is_some_and(|(interface, _)| WASI_HTTP_IMPORTS.contains(&interface))
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

    /// A component whose core module imports every function of `world`
    /// (wit-component's dummy module), against the repository's real WIT:
    /// both botbox versions and the vendored WASI 0.2.12 packages.
    fn component_of(world: &str) -> Vec<u8> {
        let root = crate::paths::root();
        let wasi = root.join("tests/wit/wasi-0.2.12");
        let mut resolve = Resolve::default();
        // Each package after the ones it uses.
        for package in [
            "io",
            "clocks",
            "random",
            "filesystem",
            "sockets",
            "cli",
            "http",
        ] {
            resolve
                .push_file(wasi.join(format!("{package}.wit")))
                .expect("vendored WASI WIT parses");
        }
        for bot in ["wit/bot.wit", "wit/0.2.0/bot.wit"] {
            resolve
                .push_file(root.join(bot))
                .expect("botbox WIT parses");
        }
        let package = resolve
            .push_str("test.wit", &format!("package test:plugin;\n{world}"))
            .expect("test world parses");
        let world = resolve.select_world(&[package], None).expect("one world");
        let mut module =
            wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .expect("embeds");
        componentize(&module).expect("componentizes")
    }

    fn refusal(world: &str) -> String {
        format!("{:#}", check(&component_of(world)).unwrap_err())
    }

    #[test]
    fn each_served_version_passes_on_its_own() {
        check(&component_of("world w { include botbox:bot/bot@0.1.0; }")).expect("0.1.0");
        check(&component_of("world w { include botbox:bot/bot@0.2.0; }")).expect("0.2.0");
    }

    #[test]
    fn a_0_2_plugin_may_import_outgoing_http_with_its_types() {
        let iface = check(&component_of(
            "world w { include botbox:bot/bot@0.2.0; import wasi:http/outgoing-handler@0.2.12; }",
        ))
        .expect("0.2.0 with wasi:http");
        let names: Vec<&str> = iface.imports.iter().map(|i| i.name.as_str()).collect();
        assert!(
            names.contains(&"wasi:http/outgoing-handler@0.2.12"),
            "{names:?}"
        );
        assert!(names.contains(&"wasi:io/streams@0.2.12"), "{names:?}");
    }

    #[test]
    fn a_0_1_plugin_may_not_import_wasi_http() {
        let err = refusal(
            "world w { include botbox:bot/bot@0.1.0; import wasi:http/outgoing-handler@0.2.12; }",
        );
        assert!(err.contains("wasi:http/outgoing-handler@0.2.12"), "{err}");
        assert!(err.contains("needs botbox:bot@0.2.0"), "{err}");
        // Nor with the language-runtime allowance for other WASI.
        let err = check_with(
            &component_of(
                "world w { include botbox:bot/bot@0.1.0; \
                 import wasi:http/outgoing-handler@0.2.12; }",
            ),
            true,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("needs botbox:bot@0.2.0"),
            "{err:#}"
        );
    }

    #[test]
    fn a_0_2_plugin_may_not_import_other_wasi() {
        let err =
            refusal("world w { include botbox:bot/bot@0.2.0; import wasi:sockets/tcp@0.2.12; }");
        assert!(err.contains("wasi:sockets/tcp@0.2.12"), "{err}");
    }

    #[test]
    fn versions_are_not_mixed() {
        // 0.2.0 handler, a 0.1.0 import.
        let err = refusal("world w { include botbox:bot/bot@0.2.0; import botbox:bot/log@0.1.0; }");
        assert!(err.contains("botbox:bot/log@0.1.0"), "{err}");
        assert!(err.contains("one WIT version"), "{err}");
        // 0.1.0 handler, a 0.2.0 import.
        let err = refusal("world w { include botbox:bot/bot@0.1.0; import botbox:bot/kv@0.2.0; }");
        assert!(err.contains("botbox:bot/kv@0.2.0"), "{err}");
        assert!(err.contains("botbox:bot@0.1.0 plugin"), "{err}");
        // Both handlers.
        let err = refusal(
            "world w { import botbox:bot/log@0.1.0; \
             export botbox:bot/handler@0.1.0; export botbox:bot/handler@0.2.0; }",
        );
        assert!(err.contains("expected exactly one of"), "{err}");
    }
}
