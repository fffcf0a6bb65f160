//! `botbox new NAME --lang rust|js|ts|python|c`: a plugin project from the
//! templates in `sdk/templates`, embedded in the binary.
//!
//! The JS and TypeScript templates carry the world's TypeScript declarations
//! (`types/`, made by `jco guest-types`) and the Python one its
//! componentize-py bindings package (`wit_world/`), generated from this
//! host's `wit/bot.wit`, so an editor knows the imports before the first
//! build; each template's `build.sh` regenerates them from the project's
//! `wit/`.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::ExitCode;

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// The contract the project builds against: this host's.
const WIT: &str = include_str!("../../../wit/bot.wit");

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    // TypeScript, compiled by `tsc` before componentize-js.
    Ts,
    Python,
    C,
}

impl Lang {
    fn dir(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Ts => "ts",
            Lang::Python => "python",
            Lang::C => "c",
        }
    }
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name: lowercase letters, digits and '-'.
    pub name: String,
    /// The language of the project.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Where to create it (default: ./NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// A botbox checkout, for the Rust SDK and the componentize step of Rust
    /// and C builds (default: the checkout this botbox was built from).
    #[arg(long)]
    pub botbox_dir: Option<PathBuf>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Writes a project; returns the files written.
pub fn create(
    name: &str,
    lang: Lang,
    dir: &Path,
    botbox_dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        anyhow::bail!(
            "`{}` exists and is not empty; choose another --dir",
            dir.display()
        );
    }
    let botbox_dir = botbox_dir.display().to_string();
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{botbox_dir}}", &botbox_dir)
    };
    let mut written = Vec::new();
    for (template_lang, path, contents, executable) in TEMPLATE_FILES {
        if *template_lang != lang.dir() {
            continue;
        }
        let target = dir.join(fill(path));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::str::from_utf8(contents) {
            Ok(text) => std::fs::write(&target, fill(text))?,
            Err(_) => std::fs::write(&target, contents)?,
        }
        if *executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
        }
        written.push(target);
    }
    if written.is_empty() {
        anyhow::bail!("this botbox was built without the {} template", lang.dir());
    }
    let wit = dir.join("wit/bot.wit");
    std::fs::create_dir_all(dir.join("wit"))?;
    std::fs::write(&wit, WIT)?;
    written.push(wit);
    Ok(written)
}

pub async fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    if !valid_name(&args.name) {
        eprintln!(
            "error: `{}` is not a plugin name; use lowercase letters, digits and '-', starting with a letter",
            args.name
        );
        return Ok(2);
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    let botbox_dir = args.botbox_dir.clone().unwrap_or_else(|| {
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        checkout.canonicalize().unwrap_or(checkout)
    });
    let written = match create(&args.name, args.lang, &dir, &botbox_dir) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    println!("created {} ({} files)", dir.display(), written.len());
    println!();
    println!(
        "  cd {} && ./build.sh          # builds {}.wasm",
        dir.display(),
        args.name
    );
    println!(
        "  botbox call {}/{}.wasm --event '{{\"name\": \"hello\", \"payload\": \"Ada\"}}'",
        dir.display(),
        args.name
    );
    println!(
        "  botbox dev {}                 # rebuild and reload on every save",
        dir.display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_a_template_with_a_build_script() {
        for lang in Lang::value_variants() {
            assert!(
                TEMPLATE_FILES
                    .iter()
                    .any(|(l, path, _, executable)| *l == lang.dir()
                        && *path == "build.sh"
                        && *executable),
                "{lang:?}"
            );
        }
    }

    #[test]
    fn typed_templates_carry_the_worlds_declarations() {
        // Editors need them before the first build; `build.sh` keeps them
        // in sync with `wit/` afterwards.
        let has = |lang: Lang, path: &str| {
            TEMPLATE_FILES
                .iter()
                .any(|(l, p, _, _)| *l == lang.dir() && *p == path)
        };
        for lang in [Lang::Js, Lang::Ts] {
            assert!(has(lang, "types/bot.d.ts"), "{lang:?}");
            assert!(has(lang, "types/interfaces/botbox-bot-kv.d.ts"), "{lang:?}");
        }
        assert!(has(Lang::Js, "jsconfig.json"));
        assert!(has(Lang::Ts, "tsconfig.json"));
        assert!(has(Lang::Python, "wit_world/imports/kv.py"));
        assert!(has(Lang::Python, "componentize_py_types.py"));
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("hello-bot2"));
        for bad in ["", "Hello", "2bot", "a_b", "../x", "a b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn creates_a_filled_in_project() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("hello");
        let files = create("hello", Lang::Python, &project, Path::new("/opt/botbox")).unwrap();
        assert!(files.iter().any(|f| f.ends_with("wit/bot.wit")));
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            assert!(
                !text.contains("{{name}}") && !text.contains("{{botbox_dir}}"),
                "{}",
                f.display()
            );
        }
        assert!(
            create("hello", Lang::Python, &project, Path::new("/opt/botbox")).is_err(),
            "refuses a non-empty folder"
        );
    }
}
