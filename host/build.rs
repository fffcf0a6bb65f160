//! Embeds the plugin project templates (`sdk/templates`) and the WIT
//! contract into the binary, so `botbox new` works from anywhere.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // Build output and installed dependencies of a template someone built in place.
        if [
            "node_modules",
            "target",
            "build",
            "gen",
            "__pycache__",
            ".venv",
            ".mypy_cache",
        ]
        .contains(&name)
            || name.ends_with(".wasm")
        {
            continue;
        }
        if path.is_dir() {
            collect(&path, root, out);
        } else {
            out.push(
                path.strip_prefix(root)
                    .map(Path::to_path_buf)
                    .unwrap_or(path),
            );
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let templates = manifest.join("../sdk/templates");
    println!("cargo:rerun-if-changed={}", templates.display());
    let mut files = Vec::new();
    collect(&templates, &templates, &mut files);
    let mut code = String::from(
        "/// (language, path inside the project, contents, executable)\npub const TEMPLATE_FILES: &[(&str, &str, &[u8], bool)] = &[\n",
    );
    for file in &files {
        let mut parts = file.components();
        let Some(lang) = parts.next().and_then(|c| c.as_os_str().to_str()) else {
            continue;
        };
        let rest: PathBuf = parts.collect();
        if rest.as_os_str().is_empty() {
            continue;
        }
        let absolute = templates.join(file);
        println!("cargo:rerun-if-changed={}", absolute.display());
        let executable = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&absolute)
                .map(|m| m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        };
        let _ = writeln!(
            code,
            "    ({lang:?}, {rest:?}, include_bytes!({absolute:?}), {executable}),",
            rest = rest.display().to_string(),
            absolute = absolute.display().to_string(),
        );
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("templates.rs");
    std::fs::write(out, code).expect("write templates.rs");
}
