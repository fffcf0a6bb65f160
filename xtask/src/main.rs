//! Project automation: `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! Guest plugins build with a different compiler and target from the host,
//! in their own workspace and target dir (`plugins/target`); this is the one
//! place that knows how.

mod bench;
mod component;
mod componentize;
mod demo;
mod fuzz;
mod guests;
mod inspect;
mod paths;
mod plugins;
mod setup;
mod step;
mod templates;
mod test;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup          make sure every guest toolchain exists: Rust for wasm32-unknown-unknown
                 (rustup target, or Debian's rustc-web), clang + wasi-libc for C, node +
                 componentize-js, python + componentize-py (installs with apt as root)
  plugins        build every bot in plugins/ (Rust, js/, python/, c/) and write
                 components to target/plugins/
  guests [LANG…] build only the js, python and c bots (all three by default)
  componentize CORE OUT
                 turn a core module built with the SDK into a checked component
  c-bindings WIT OUT
                 write the C bindings of world `bot` (bot.h, bot.c,
                 bot_component_type.o) for a C plugin outside this repository
  inspect FILE…  print a component's imports and exports
  template-types regenerate the WIT declarations (jco guest-types) and bindings
                 (componentize-py bindings) that sdk/templates/{js,ts,python} ship,
                 after a change to wit/bot.wit
  test           plugins, then fmt, clippy and tests of the host, SDK and plugins
  demo [ARGS…]   plugins, then `botbox run --demo` (extra ARGS go to botbox)
  fuzz [SECONDS] [TARGET…]
                 build the fuzz targets in fuzz/ and run each for SECONDS (20)
  bench [SECTION…]
                 plugins and the Extism comparison crates, then every benchmark of
                 BENCHMARKS.md in one run (sections: dispatch, reload, startup, delivery);
                 prints the table and writes target/bench/results.json
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let result = match command.as_str() {
        "setup" => setup::run(),
        "plugins" => plugins::run(),
        "guests" => guests::run(rest),
        "componentize" => componentize::run(rest),
        "c-bindings" => c_bindings(rest),
        "inspect" => inspect::run(rest),
        "template-types" => templates::run(),
        "test" => test::run(),
        "demo" => demo::run(rest),
        "fuzz" => fuzz::run(rest),
        "bench" => bench::run(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("unknown command `{other}`\n\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask {command}: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask c-bindings WIT OUT`.
fn c_bindings(args: &[String]) -> anyhow::Result<()> {
    let [wit, out] = args else {
        anyhow::bail!("usage: cargo xtask c-bindings WIT_DIR OUT_DIR");
    };
    for file in guests::cbind::generate(std::path::Path::new(wit), std::path::Path::new(out))? {
        eprintln!("{}", file.display());
    }
    Ok(())
}
