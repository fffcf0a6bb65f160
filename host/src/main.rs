//! The `botbox` binary: parses the command line, sets up the log and runs
//! the command (`botbox::cli`) on a multi-threaded tokio runtime.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use botbox::cli::{Cli, execute, log_directives, log_filter};

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    let value = std::env::var("BOTBOX_LOG").ok();
    let filter = EnvFilter::try_new(log_directives(value.as_deref(), &cli)).unwrap_or_else(|e| {
        eprintln!(
            "warning: BOTBOX_LOG is not a log filter ({e}); logging at the default. \
             Write a level such as `debug`, or directives such as `info,botbox=debug`."
        );
        EnvFilter::new(log_filter(&cli))
    });
    // Colour only for a person at a terminal: never into a pipe, file or
    // journal, and never with NO_COLOR set (https://no-color.org).
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // The filter is the log's own (per layer), so the trace layer, idle
    // until `[telemetry]` starts it, picks its spans by itself.
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(log)
        .with(botbox::telemetry::layer())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(execute(cli))?;
    Ok(std::process::ExitCode::from(code))
}
