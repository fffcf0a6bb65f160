//! Bots in JavaScript, Python and C: `plugins/js/<name>/bot.js`,
//! `plugins/python/<name>/app.py`, `plugins/c/<name>/*.c`, each built to a
//! checked component at `<target>/plugins/<name>.wasm`, next to the Rust ones.
//!
//! | language | tool | recipe |
//! |---|---|---|
//! | JavaScript | componentize-js (npm, `plugins/js/node_modules`) | `componentize-js bot.js --wit wit -n bot -d http fetch-event -o OUT` |
//! | Python | componentize-py (pip, venv in `<target>/guests`) | `componentize-py -d wit -w bot componentize app -p DIR -o OUT` |
//! | C | clang + wasi-libc; bindings and componentization in-process | `clang --target=wasm32-wasi -mexec-model=reactor … bot.c *.c bot_component_type.o`, then `wit-component` |
//!
//! A component is rebuilt only when something it is made from is newer than
//! it: its sources, `wit/`, the installed tool (and for C, this xtask).

pub mod cbind;
pub mod tools;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};

use crate::{component, paths, step};

/// A guest language other than Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Js,
    Python,
    C,
}

impl Lang {
    pub const ALL: [Lang; 3] = [Lang::Js, Lang::Python, Lang::C];

    /// The folder under `plugins/`, and the name on the command line.
    pub fn dir_name(self) -> &'static str {
        match self {
            Lang::Js => "js",
            Lang::Python => "python",
            Lang::C => "c",
        }
    }

    pub fn parse(name: &str) -> Option<Lang> {
        match name {
            "js" | "javascript" => Some(Lang::Js),
            "python" | "py" => Some(Lang::Python),
            "c" => Some(Lang::C),
            _ => None,
        }
    }

    /// The file that makes a folder a bot of this language.
    fn marker(self) -> &'static str {
        match self {
            Lang::Js => "bot.js",
            Lang::Python => "app.py",
            Lang::C => "*.c",
        }
    }

    /// Whether a component in this language may import WASI. JS and Python
    /// runtimes do (clocks, random, stdio, and for Python even sockets); the
    /// host satisfies them with a context that grants nothing. C bots build
    /// without stdio and import nothing but botbox.
    pub fn imports_wasi(self) -> bool {
        matches!(self, Lang::Js | Lang::Python)
    }
}

/// One bot of one language.
#[derive(Debug, Clone)]
pub struct Guest {
    pub lang: Lang,
    /// The folder's name; also the component's file name.
    pub name: String,
    pub dir: PathBuf,
}

/// The project folder of a language: `plugins/<lang>`.
pub fn lang_dir(lang: Lang) -> PathBuf {
    paths::plugins_workspace().join(lang.dir_name())
}

/// Every bot under `plugins/{js,python,c}/`, sorted by language then name.
pub fn discover(langs: &[Lang]) -> Result<Vec<Guest>> {
    let mut guests = Vec::new();
    for &lang in langs {
        let root = lang_dir(lang);
        let Ok(entries) = fs::read_dir(&root) else {
            continue;
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", root.display()))?;
            let dir = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !dir.is_dir() || name.starts_with('.') || name == "node_modules" {
                continue;
            }
            let is_bot = match lang {
                Lang::C => !c_sources(&dir)?.is_empty(),
                _ => dir.join(lang.marker()).is_file(),
            };
            if !is_bot {
                continue;
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                bail!(
                    "{}: a bot's folder name is its component's name; use lowercase letters, digits and `-`",
                    dir.display()
                );
            }
            found.push(Guest { lang, name, dir });
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        guests.extend(found);
    }
    Ok(guests)
}

/// `cargo xtask guests [LANG…]`.
pub fn run(args: &[String]) -> Result<()> {
    let mut langs = Vec::new();
    for arg in args {
        let lang = Lang::parse(arg)
            .with_context(|| format!("unknown language `{arg}`; choose js, python or c"))?;
        langs.push(lang);
    }
    if langs.is_empty() {
        langs = Lang::ALL.to_vec();
    }
    build(&langs, &[]).map(drop)
}

/// Build every bot of `langs`; `taken` are component names already in use
/// (the Rust plugins). Returns the components.
pub fn build(langs: &[Lang], taken: &[String]) -> Result<Vec<PathBuf>> {
    let guests = discover(langs)?;
    let mut names: Vec<&str> = taken.iter().map(String::as_str).collect();
    for guest in &guests {
        if names.contains(&guest.name.as_str()) {
            bail!(
                "two plugins are called `{}` (one is {}): component names must be unique",
                guest.name,
                guest.dir.display()
            );
        }
        names.push(&guest.name);
    }
    let out_dir = paths::components_dir();
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut builder = Builder::default();
    let started = Instant::now();
    let mut outputs = Vec::new();
    for guest in &guests {
        let out = out_dir.join(format!("{}.wasm", guest.name));
        let status = builder
            .build(guest, &out)
            .with_context(|| format!("{} bot `{}`", guest.lang.dir_name(), guest.name))?;
        let size = fs::metadata(&out).map_or(0, |m| m.len());
        eprintln!(
            "    {:<12} {:>8} bytes  {:<6} {status:<20}  {}",
            guest.name,
            size,
            guest.lang.dir_name(),
            out.display()
        );
        outputs.push(out);
    }
    eprintln!(
        "==> {} guest components (js, python, c) in {} ({:.1}s)",
        outputs.len(),
        out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(outputs)
}

/// The tools, set up the first time a bot of their language needs building.
#[derive(Default)]
struct Builder {
    js: Option<(PathBuf, PathBuf)>,
    python: Option<(PathBuf, PathBuf)>,
    c: Option<(tools::Clang, PathBuf)>,
}

impl Builder {
    /// Build `guest` into `out` unless it is up to date; says which.
    fn build(&mut self, guest: &Guest, out: &Path) -> Result<String> {
        let mut inputs = source_times(&guest.dir)?;
        inputs.extend(source_times(&paths::root().join("wit"))?);
        match guest.lang {
            Lang::Js => {
                let project = lang_dir(Lang::Js);
                inputs.push(tools::mtime(&project.join("package.json")));
                // A missing node_modules makes the output stale.
                inputs.push(Some(
                    tools::mtime(&project.join("node_modules/.package-lock.json"))
                        .unwrap_or_else(SystemTime::now),
                ));
            }
            Lang::Python => {
                inputs.push(tools::mtime(&requirements()));
                inputs.push(Some(
                    tools::mtime(&tools::python_venv().join("installed-requirements.txt"))
                        .unwrap_or_else(SystemTime::now),
                ));
            }
            Lang::C => {
                // Bindings, flags and the encoder live in this xtask.
                inputs.push(std::env::current_exe().ok().and_then(|p| tools::mtime(&p)));
            }
        }
        if tools::is_fresh(out, &inputs) {
            return Ok("up to date".into());
        }
        let started = Instant::now();
        let tmp = out.with_extension("wasm.tmp");
        let _ = fs::remove_file(&tmp);
        match guest.lang {
            Lang::Js => self.build_js(guest, &tmp)?,
            Lang::Python => self.build_python(guest, &tmp)?,
            Lang::C => self.build_c(guest, &tmp)?,
        }
        let bytes = fs::read(&tmp).with_context(|| format!("reading {}", tmp.display()))?;
        let iface = component::check_with(&bytes, guest.lang.imports_wasi())
            .context("the component is not a valid botbox plugin")?;
        // The host hot-reloads plugin files: it must never see half a file.
        fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
        let wasi = iface
            .imports
            .iter()
            .filter(|i| i.name.starts_with("wasi:"))
            .count();
        Ok(format!(
            "built in {:.1}s{}",
            started.elapsed().as_secs_f64(),
            if wasi > 0 {
                format!(", {wasi} WASI imports")
            } else {
                String::new()
            }
        ))
    }

    fn build_js(&mut self, guest: &Guest, out: &Path) -> Result<()> {
        let project = lang_dir(Lang::Js);
        if self.js.is_none() {
            self.js = Some(tools::ensure_componentize_js(&project)?);
        }
        let (componentize_js, _) = self.js.as_ref().expect("set above");
        step::run(
            &format!("componentize-js {}", guest.name),
            Command::new(componentize_js)
                .current_dir(&project)
                .arg(guest.dir.join("bot.js"))
                .arg("--wit")
                .arg(paths::root().join("wit"))
                .args(["--world-name", cbind::WORLD])
                // The bot world has no HTTP; without these componentize-js
                // adds wasi:http imports and a fetch-event export.
                .args(["--disable", "http", "fetch-event"])
                .arg("--out")
                .arg(out),
        )?;
        Ok(())
    }

    fn build_python(&mut self, guest: &Guest, out: &Path) -> Result<()> {
        if self.python.is_none() {
            self.python = Some(tools::ensure_componentize_py(&requirements())?);
        }
        let (componentize_py, _) = self.python.as_ref().expect("set above");
        step::run(
            &format!("componentize-py {}", guest.name),
            Command::new(componentize_py)
                .current_dir(&guest.dir)
                // Only the bot's own folder: never a venv's site-packages.
                .env_remove("VIRTUAL_ENV")
                .arg("--quiet")
                .arg("--wit-path")
                .arg(paths::root().join("wit"))
                .args(["--world", cbind::WORLD, "componentize"])
                .arg("--python-path")
                .arg(&guest.dir)
                .arg("app")
                .arg("--output")
                .arg(out),
        )?;
        Ok(())
    }

    fn build_c(&mut self, guest: &Guest, out: &Path) -> Result<()> {
        if self.c.is_none() {
            let clang = tools::ensure_clang()?;
            let bindings = c_bindings()?;
            self.c = Some((clang, bindings));
        }
        let (clang, bindings) = self.c.as_ref().expect("set above");
        let build_dir = paths::host_target_dir().join("guests").join("c");
        fs::create_dir_all(&build_dir)
            .with_context(|| format!("creating {}", build_dir.display()))?;
        let core = build_dir.join(format!("{}.core.wasm", guest.name));
        let [_, bindings_c, type_object] = cbind::outputs(bindings);
        step::run(
            &format!("clang {}", guest.name),
            clang
                .command()
                .args(C_FLAGS)
                .arg("-Werror")
                .arg("-I")
                .arg(bindings)
                .arg("-o")
                .arg(&core)
                .arg(&bindings_c)
                .args(c_sources(&guest.dir)?)
                .arg(&type_object),
        )?;
        let module = fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
        let component = component::componentize(&module)?;
        fs::write(out, &component).with_context(|| format!("writing {}", out.display()))?;
        Ok(())
    }
}

/// Flags for every C guest: small code, C17, warnings on, no symbols.
pub const C_FLAGS: &[&str] = &[
    "-Oz",
    "-flto",
    "-std=c17",
    "-Wall",
    "-Wextra",
    "-Wl,--strip-all",
];

/// `plugins/python/requirements.txt`: the componentize-py (and mypy) pins.
pub fn requirements() -> PathBuf {
    lang_dir(Lang::Python).join("requirements.txt")
}

/// The C bindings of `wit/`, in `<target>/guests/c-bindings`, regenerated
/// when `wit/` or this xtask is newer than them.
fn c_bindings() -> Result<PathBuf> {
    let dir = paths::host_target_dir().join("guests").join("c-bindings");
    let wit = paths::root().join("wit");
    let mut inputs = source_times(&wit)?;
    inputs.push(std::env::current_exe().ok().and_then(|p| tools::mtime(&p)));
    let fresh = cbind::outputs(&dir)
        .iter()
        .all(|file| tools::is_fresh(file, &inputs));
    if !fresh {
        cbind::generate(&wit, &dir)?;
    }
    Ok(dir)
}

/// The `.c` files of a folder, sorted.
fn c_sources(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut sources = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "c") && path.is_file() {
            sources.push(path);
        }
    }
    sources.sort();
    Ok(sources)
}

/// Modification times of every file under `dir`, skipping dot-files, caches
/// and `node_modules`.
fn source_times(dir: &Path) -> Result<Vec<Option<SystemTime>>> {
    let mut times = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "__pycache__" || name == "node_modules" {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                times.push(tools::mtime(&path));
            }
        }
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovers_the_example_bots() {
        let guests = discover(&Lang::ALL).expect("plugins/ reads");
        let found: Vec<(&str, Lang)> = guests.iter().map(|g| (g.name.as_str(), g.lang)).collect();
        assert_eq!(
            found,
            [
                ("poll", Lang::Js),
                ("faq", Lang::Python),
                ("countdown", Lang::C)
            ]
        );
        let only_c = discover(&[Lang::C]).expect("plugins/ reads");
        assert_eq!(only_c.len(), 1);
    }

    #[test]
    fn languages_parse_by_folder_name() {
        for lang in Lang::ALL {
            assert_eq!(Lang::parse(lang.dir_name()), Some(lang));
        }
        assert_eq!(Lang::parse("rust"), None);
    }

    #[test]
    fn sources_skip_caches() {
        let dir = std::env::temp_dir().join(format!("xtask-sources-{}", std::process::id()));
        fs::create_dir_all(dir.join("__pycache__")).expect("temp dir");
        fs::write(dir.join("app.py"), "").expect("write");
        fs::write(dir.join("__pycache__/app.pyc"), "").expect("write");
        fs::write(dir.join(".hidden"), "").expect("write");
        assert_eq!(source_times(&dir).expect("lists").len(), 1);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
