//! The layering of `host/src`, checked: ARCHITECTURE.md's rules are only as
//! strong as this test.
//!
//! Each top-level module (a "box") has a rank; a box imports only boxes of
//! lower rank. Inside a box, sibling modules import each other one way only
//! (no cycle); a parent and its children may name each other (a registry
//! line names its members, a member uses its parent's trait).
//!
//! Imports are read from the source text: every `crate::…` and `super::…`
//! path outside comments, string literals and `#[cfg(test)]` items, with use
//! groups (`crate::{a, b::{c, d}}`) expanded. A new top-level module fails
//! this test until it is given a rank here and a row in ARCHITECTURE.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A box may import only boxes listed before it.
const BOXES: &[&str] = &[
    "sanitize",
    "wit",
    "events",
    "config",
    "distribution",
    "telemetry",
    "storage",
    "providers",
    "delivery",
    "capabilities",
    "runtime",
    "router",
    "triggers",
    "app",
    "cli",
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Module path (`a::b`) of each source file, `lib`/`main` left out.
fn modules() -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("host/src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src_dir()).expect("under src");
            let mut parts: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                continue;
            }
            out.insert(parts.join("::"), path);
        }
    }
    // Modules declared under `#[cfg(test)]` (`tests.rs`, test helpers) are
    // tests, which may reach anywhere.
    let test_only: Vec<String> = out
        .iter()
        .flat_map(|(module, path)| {
            let src = std::fs::read_to_string(path).unwrap_or_default();
            let mut children = Vec::new();
            let mut rest = src.as_str();
            while let Some(at) = rest.find("#[cfg(test)]") {
                rest = &rest[at + "#[cfg(test)]".len()..];
                let item = rest.trim_start();
                let item = item.strip_prefix("pub(crate) ").unwrap_or(item);
                let item = item.strip_prefix("pub ").unwrap_or(item);
                if let Some(name) = item.strip_prefix("mod ") {
                    let name: String = name
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    children.push(if module.is_empty() {
                        name
                    } else {
                        format!("{module}::{name}")
                    });
                }
            }
            children
        })
        .collect();
    out.retain(|m, _| {
        !test_only
            .iter()
            .any(|t| m == t || m.starts_with(&format!("{t}::")))
    });
    out
}

/// The source with comments, string and char literals blanked out, and
/// every item under `#[cfg(test)]` removed (tests may reach anywhere).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r' && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#')) {
            // Raw string: r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            j += 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            i = j + close.len();
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3;
            out.push_str("' '");
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            // '\n', '\'', '\u{…}': past the escaped character, then to the quote.
            i += 3;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            let c = src[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
        }
    }
    strip_cfg_test(&out)
}

/// Removes each item that follows `#[cfg(test)]`: up to its `;` or `,`, its
/// balanced `{…}`, or the `}` that encloses it.
fn strip_cfg_test(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let mut depth = 0usize;
        let mut end = after.len();
        for (k, c) in after.char_indices() {
            match c {
                '{' => depth += 1,
                // A `#[cfg(test)]` field or arm ends at its enclosing `}`.
                '}' if depth == 0 => {
                    end = k;
                    break;
                }
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' | ',' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every path a `crate::`/`super::` reference in `code` names, as module
/// path segments relative to the crate root, use groups expanded.
fn referenced_paths(module: &str, code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts = |w: &str| code[i..].starts_with(w) && (i == 0 || !ident(bytes[i - 1]));
        let (base, skip): (Vec<String>, usize) = if starts("crate::") {
            (Vec::new(), "crate::".len())
        } else if starts("super::") {
            // `super` of a mod.rs is its parent's parent's child list.
            let mut base: Vec<String> = module.split("::").map(str::to_owned).collect();
            let mut k = i;
            let mut ups = 0;
            while code[k..].starts_with("super::") {
                ups += 1;
                k += "super::".len();
            }
            // `super` is the parent module, for `a/b.rs` and `a/b/mod.rs` alike.
            for _ in 0..ups {
                base.pop();
            }
            (base, k - i)
        } else {
            i += 1;
            continue;
        };
        i += skip;
        let (trees, used) = parse_tree(&code[i..]);
        i += used.max(1);
        for tree in trees {
            let mut path = base.clone();
            path.extend(tree);
            out.push(path);
        }
    }
    out
}

/// Parses `a::b::{c, d::{e}}` into its leaf paths; returns them and the
/// number of bytes read.
fn parse_tree(s: &str) -> (Vec<Vec<String>>, usize) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut prefix = Vec::new();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b.get(i) == Some(&b'{') {
            i += 1;
            let mut leaves = Vec::new();
            loop {
                while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    i += 1;
                    break;
                }
                let (sub, used) = parse_tree(&s[i..]);
                i += used.max(1);
                for mut leaf in sub {
                    let mut full = prefix.clone();
                    full.append(&mut leaf);
                    leaves.push(full);
                }
            }
            return (leaves, i);
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i == start {
            return (vec![prefix], i);
        }
        prefix.push(s[start..i].to_owned());
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// Module-to-module imports: for each module, the modules it names (the
/// longest prefix of each referenced path that is a module).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut graph = BTreeMap::new();
    for (module, path) in &modules {
        let src = std::fs::read_to_string(path).expect("a readable source file");
        let code = code_only(&src);
        let mut targets = BTreeSet::new();
        for reference in referenced_paths(module, &code) {
            for k in (1..=reference.len()).rev() {
                let candidate = reference[..k].join("::");
                if modules.contains_key(&candidate) {
                    if candidate != *module {
                        targets.insert(candidate);
                    }
                    break;
                }
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

fn top(module: &str) -> &str {
    module.split("::").next().expect("a non-empty path")
}

fn rank(module: &str) -> Option<usize> {
    BOXES.iter().position(|b| *b == top(module))
}

#[test]
fn every_box_has_a_rank() {
    let unranked: BTreeSet<String> = modules()
        .keys()
        .filter(|m| rank(m).is_none())
        .map(|m| top(m).to_owned())
        .collect();
    assert!(
        unranked.is_empty(),
        "top-level modules without a place in the layering: {unranked:?}; \
         add them to BOXES in tests/architecture.rs and to ARCHITECTURE.md"
    );
}

#[test]
fn boxes_import_only_boxes_below_them() {
    let mut upward = Vec::new();
    for (from, targets) in imports() {
        for to in targets {
            let (Some(a), Some(b)) = (rank(&from), rank(&to)) else {
                continue;
            };
            if b > a {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the layering (see ARCHITECTURE.md):\n  {}",
        upward.join("\n  ")
    );
}

/// Whether `a` is `b` or one of `b`'s ancestors or descendants.
fn related(a: &str, b: &str) -> bool {
    let prefix = |p: &str, q: &str| q == p || q.starts_with(&format!("{p}::"));
    prefix(a, b) || prefix(b, a)
}

#[test]
fn no_import_cycle_between_sibling_modules() {
    // Collapse each module to the sibling it belongs to under every common
    // parent, then look for a cycle among siblings.
    let graph = imports();
    let mut sibling_edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in &graph {
        for to in targets {
            if related(from, to) {
                continue;
            }
            let a: Vec<&str> = from.split("::").collect();
            let b: Vec<&str> = to.split("::").collect();
            let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            let sa = a[..=common].join("::");
            let sb = b[..=common].join("::");
            sibling_edges.entry(sa).or_default().insert(sb);
        }
    }
    // Depth-first search for a back edge.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    let mut cycles = Vec::new();
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(node, 1);
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let at = path.iter().position(|p| *p == next).unwrap_or(0);
                    cycles.push(format!("{} -> {next}", path[at..].join(" -> ")));
                }
                Some(_) => {}
                None => visit(next, edges, state, path, cycles),
            }
        }
        path.pop();
        state.insert(node, 2);
    }
    for node in sibling_edges.keys() {
        if !state.contains_key(node.as_str()) {
            visit(
                node,
                &sibling_edges,
                &mut state,
                &mut Vec::new(),
                &mut cycles,
            );
        }
    }
    assert!(
        cycles.is_empty(),
        "import cycles between modules:\n  {}",
        cycles.join("\n  ")
    );
}

#[test]
fn the_reader_sees_what_this_test_sees() {
    // The parser itself: a use group, `super`, a comment and a test module.
    let code = code_only(
        "use crate::a::{b, c::{d, e}};\n// crate::z\nuse super::f;\n\
         let s = \"crate::y\";\n#[cfg(test)]\nmod tests { use crate::x; }\n",
    );
    let paths = referenced_paths("m::n", &code);
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["a::b", "a::c::d", "a::c::e", "m::f"]);
}
