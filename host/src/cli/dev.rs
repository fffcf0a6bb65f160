//! `botbox dev PLUGIN_DIR`: rebuild on save, reload, and show what the
//! plugin does.
//!
//! The project's `./build.sh` (every `botbox new` template has one) builds
//! the component; after each successful build the plugin is loaded with
//! exactly what it asks for, on console channels (or on the channels of
//! `--config`), the `--event`s are sent again, and its log lines,
//! broadcasts and deliveries are printed. Lines typed on stdin are sent as
//! events too. A failed build or a broken component leaves the previous
//! version running.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use notify::{RecursiveMode, Watcher as _};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use super::ExitCode;
use super::output::Printer;
use crate::app::supervisor::{Generation, Triggers};
use crate::app::{App, BuildOptions, ad_hoc};
use crate::events::parse_event;
use crate::runtime::CompileSource;
use crate::runtime::compile::{DEFAULT_INCREMENTAL_CACHE_BYTES, IncrementalCache};
use crate::runtime::reload::is_content_change;
use crate::sanitize;
use crate::wit::types::Event;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// The plugin project (made by `botbox new`).
    pub dir: PathBuf,
    /// An event to send after every reload; repeatable.
    #[arg(long, short)]
    pub event: Vec<String>,
    /// A plugin setting, `key=value`; repeatable.
    #[arg(long = "setting", short = 's', value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// The build command, run in the project folder.
    #[arg(long, default_value = "./build.sh")]
    pub build: String,
    /// The component the build writes (default: DIR/NAME.wasm, NAME the folder's name).
    #[arg(long)]
    pub wasm: Option<PathBuf>,
    /// Where kv data, the outbox and the compile cache live.
    #[arg(long, default_value = ".botbox")]
    pub storage: PathBuf,
    /// Stop after this many seconds (for scripts and tests).
    #[arg(long, value_name = "SECS")]
    pub exit_after: Option<u64>,
}

/// Files whose change means "rebuild": sources, not build output.
fn is_source(path: &Path) -> bool {
    let skip_dirs = [
        "target",
        "node_modules",
        "gen",
        "build",
        ".git",
        "__pycache__",
        ".venv",
        ".mypy_cache",
        ".botbox",
    ];
    if path
        .components()
        .any(|c| skip_dirs.contains(&c.as_os_str().to_str().unwrap_or("")))
    {
        return false;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !(name.ends_with(".wasm")
        || name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".swp"))
}

fn newest_wasm(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

async fn build(dir: &Path, command: &str) -> bool {
    println!("build {command}");
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .await;
    match output {
        Ok(out) => {
            for line in String::from_utf8_lossy(&out.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&out.stderr).lines())
            {
                println!("build | {}", sanitize::for_log(line, 500));
            }
            if out.status.success() {
                true
            } else {
                println!("build FAILED ({}); the running version stays", out.status);
                false
            }
        }
        Err(e) => {
            println!("build FAILED: cannot run `{command}`: {e}");
            false
        }
    }
}

/// One loaded version: its host (delivery workers only) and printer.
struct Loaded {
    generation: Generation,
    printer: Printer,
    /// How the component was compiled.
    compiled: CompileSource,
}

impl Loaded {
    /// A host for the component at `wasm`, compiled with the session's
    /// incremental cache: each host is new, the cache outlives them.
    async fn start(
        wasm: &Path,
        args: &DevArgs,
        incremental: &Arc<IncrementalCache>,
    ) -> anyhow::Result<Loaded> {
        let options = BuildOptions {
            incremental: Some(incremental.clone()),
            ..BuildOptions::default()
        };
        // Asking the plugin what it wants compiles it; the host below
        // loads that from the compile cache.
        let (config, compiled) =
            ad_hoc::config_with(wasm, &args.settings, &args.storage, options.clone()).await?;
        let app = App::build_with(config, options)?;
        let plugin = app.config.plugins[ad_hoc::PLUGIN].clone();
        app.runtime.load(ad_hoc::PLUGIN, &plugin).await?;
        let generation = Generation::start(Arc::new(app), Triggers::None);
        let printer = Printer::start(generation.app());
        Ok(Loaded {
            generation,
            printer,
            compiled,
        })
    }

    /// How the plugin was compiled, for the `dev   loaded` line.
    fn compiled(&self) -> String {
        match self.compiled {
            CompileSource::Incremental(reuse) => format!(
                "compiled {} functions, reused {} ({}%)",
                reuse.compiled,
                reuse.reused,
                reuse.percent()
            ),
            CompileSource::Compiled => "compiled".into(),
            CompileSource::Cache => "from the compile cache".into(),
        }
    }

    async fn send(&self, event: &Event) {
        match self
            .generation
            .app()
            .runtime
            .dispatch(ad_hoc::PLUGIN, event)
            .await
        {
            Ok(()) => println!("ok    event handled"),
            Err(e) => println!("FAIL  {e}"),
        }
    }

    async fn stop(self) {
        // Let the last deliveries finish printing.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.generation.stop().await;
        self.printer.stop().await;
    }
}

pub async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.canonicalize().map_err(|e| {
        anyhow::anyhow!(
            "`{}` is not a plugin project folder: {e}",
            args.dir.display()
        )
    })?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("plugin")
        .to_string();
    let wasm = args.wasm.clone();
    let default_wasm = dir.join(format!("{name}.wasm"));
    let mut events = Vec::new();
    for e in &args.event {
        match parse_event(e) {
            Ok(ev) => events.push(ev),
            Err(err) => {
                eprintln!("error: --event `{e}`: {err}");
                return Ok(2);
            }
        }
    }

    let (changed_tx, mut changed) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        let Ok(event) = result else { return };
        let content = is_content_change(&event.kind);
        if content && event.paths.iter().any(|p| is_source(p)) {
            let _ = changed_tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::Recursive)?;
    println!("dev   watching {} (Ctrl-C stops)", dir.display());

    // One incremental compile cache for the whole session: every save
    // reuses the machine code of what did not change (see
    // `runtime::compile`). `botbox run` has none.
    let incremental = IncrementalCache::new(DEFAULT_INCREMENTAL_CACHE_BYTES);
    let mut current: Option<Loaded> = None;
    let reload = |current: Option<Loaded>| {
        let incremental = &incremental;
        let args = &args;
        let wasm = &wasm;
        let default_wasm = &default_wasm;
        let events = &events;
        let dir = &dir;
        async move {
            let started = Instant::now();
            if !build(dir, &args.build).await {
                return current;
            }
            let built = Instant::now();
            // The folder may be named differently from the project: then
            // the newest component the build left in it.
            let wasm = match wasm {
                Some(w) => w.clone(),
                None if default_wasm.is_file() => default_wasm.clone(),
                None => newest_wasm(dir).unwrap_or_else(|| default_wasm.clone()),
            };
            match Loaded::start(&wasm, args, incremental).await {
                Ok(next) => {
                    // Serving from here: the new host answers events.
                    let load_ms = built.elapsed().as_millis();
                    if let Some(old) = current {
                        old.stop().await;
                    }
                    println!(
                        "dev   loaded {} in {} ms (build {} ms, then serving after {} ms: {})",
                        wasm.display(),
                        started.elapsed().as_millis(),
                        (built - started).as_millis(),
                        load_ms,
                        next.compiled()
                    );
                    for event in events {
                        next.send(event).await;
                    }
                    Some(next)
                }
                Err(e) => {
                    println!("FAIL  {e}; the running version stays");
                    current
                }
            }
        }
    };
    current = reload(current).await;

    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let exit_after = async {
        match args.exit_after {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(exit_after);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = &mut exit_after => break,
            Some(()) = changed.recv() => {
                // Debounce: wait until saving has settled.
                while let Ok(Some(())) =
                    tokio::time::timeout(Duration::from_millis(200), changed.recv()).await
                {}
                current = reload(current).await;
            }
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) if line.trim().is_empty() => {}
                Ok(Some(line)) => match (parse_event(&line), &current) {
                    (Ok(event), Some(loaded)) => loaded.send(&event).await,
                    (Ok(_), None) => println!("FAIL  nothing is loaded yet: fix the build first"),
                    (Err(e), _) => println!("FAIL  {e}"),
                },
                _ => stdin_open = false,
            },
        }
    }
    if let Some(loaded) = current {
        loaded.stop().await;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_and_checker_caches_are_not_sources() {
        for source in [
            "bot/bot.ts",
            "bot/types/interfaces/botbox-bot-kv.d.ts",
            "bot/tsconfig.json",
            "bot/app.py",
            "bot/wit_world/imports/kv.py",
            "bot/wit/bot.wit",
        ] {
            assert!(is_source(Path::new(source)), "{source}");
        }
        for output in [
            // tsc's output (tsconfig.json: outDir) and the component.
            "bot/build/bot.js",
            "bot/bot.wasm",
            "bot/node_modules/typescript/package.json",
            "bot/.mypy_cache/3.11/app.data.json",
            "bot/__pycache__/app.cpython-311.pyc",
        ] {
            assert!(!is_source(Path::new(output)), "{output}");
        }
    }
}
