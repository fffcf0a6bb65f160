//! Project automation: `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! Guest plugins build with a different compiler and target from the host,
//! in their own workspace and target dir (`plugins/target`); this is the one
//! place that knows how.

mod component;
mod componentize;
mod demo;
mod inspect;
mod paths;
mod plugins;
mod setup;
mod step;
mod test;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup          make sure a Rust toolchain for wasm32-unknown-unknown exists
                 (rustup target, or Debian's rustc-web; installs it with apt as root)
  plugins        build every bot in plugins/ and write components to target/plugins/
  componentize CORE OUT
                 turn a core module built with the SDK into a checked component
  inspect FILE…  print a component's imports and exports
  test           plugins, then fmt, clippy and tests of the host, SDK and plugins
  demo [ARGS…]   plugins, then `botbox run --demo` (extra ARGS go to botbox)
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
        "componentize" => componentize::run(rest),
        "inspect" => inspect::run(rest),
        "test" => test::run(),
        "demo" => demo::run(rest),
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
