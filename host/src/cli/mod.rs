//! The `botbox` command line.

pub(crate) mod call;
mod check;
mod dev;
pub mod logging;
mod new;
mod outbox;
mod output;
mod plugin;
mod run;
pub mod sim;
mod webhooks;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Runs chat-bot logic as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "botbox", version, about)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `botbox`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host: load plugins, fire schedules, deliver messages.
    Run(run::RunArgs),
    /// Send one event into one plugin and print what it does.
    Call(call::CallArgs),
    /// Validate a config and load every plugin, without running anything.
    Check(check::CheckArgs),
    /// List the outbox, and retry or cancel a message.
    Outbox(outbox::OutboxArgs),
    /// Run local simulators of every provider.
    Sim(sim::SimArgs),
    /// Create a plugin project in Rust, JavaScript, Python or C.
    New(new::NewArgs),
    /// Rebuild a plugin project on every save, reload it, and show what it does.
    Dev(dev::DevArgs),
    /// Register botbox's callback URL with BigBlueButton (`hooks/create`).
    Webhooks(webhooks::WebhooksArgs),
    /// Push a component to an OCI registry, or pull one (the wkg layout).
    Plugin(plugin::PluginArgs),
}

/// What a command wants the process to exit with.
pub type ExitCode = u8;

/// Runs the parsed command line.
pub async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Call(args) => call::call(args).await,
        Command::Check(args) => check::check(args).await,
        Command::Outbox(args) => outbox::outbox(args).await,
        Command::Sim(args) => sim::sim(args).await,
        Command::New(args) => new::new(args).await,
        Command::Dev(args) => dev::dev(args).await,
        Command::Webhooks(args) => webhooks::webhooks(args).await,
        Command::Plugin(args) => plugin::plugin(args).await,
    }
}

/// Filter for the log: plugin lines are printed by `call` itself.
pub fn log_filter(cli: &Cli) -> &'static str {
    match cli.command {
        Command::Call(_) | Command::Dev(_) => "error,plugin=off",
        _ => "info",
    }
}

/// The log filter for `BOTBOX_LOG`'s value, or the command's default when
/// it is unset or empty.
///
/// A bare level more verbose than `info` (`debug`, `trace`) is botbox's
/// own: it applies to botbox, its simulators and plugin lines, while the
/// crates beneath (wasmtime, Cranelift, hyper) stay at `info`; without this
/// `botbox check` alone wrote megabytes of Cranelift's debug lines per
/// plugin. Anything else is a `tracing` filter used as written, so
/// `info,botbox=debug,wasmtime=debug` still reaches wasmtime.
pub fn log_directives(value: Option<&str>, cli: &Cli) -> String {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return log_filter(cli).to_owned();
    };
    let level = value.to_ascii_lowercase();
    match level.as_str() {
        "debug" | "trace" => {
            format!("info,botbox={level},botbox_sim={level},plugin={level}")
        }
        _ => value.to_owned(),
    }
}

pub(crate) fn load_config(config: Option<&PathBuf>) -> anyhow::Result<crate::config::Config> {
    let path = config
        .cloned()
        .unwrap_or_else(|| PathBuf::from("botbox.toml"));
    Ok(crate::config::Config::load(&path)?)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn a_bare_verbose_level_is_botboxs_own_and_a_filter_is_used_as_written() {
        let run = Cli::parse_from(["botbox", "check"]);
        assert_eq!(log_directives(None, &run), "info");
        assert_eq!(log_directives(Some("  "), &run), "info");
        assert_eq!(
            log_directives(Some("debug"), &run),
            "info,botbox=debug,botbox_sim=debug,plugin=debug"
        );
        assert_eq!(
            log_directives(Some("TRACE"), &run),
            "info,botbox=trace,botbox_sim=trace,plugin=trace"
        );
        assert_eq!(log_directives(Some("warn"), &run), "warn");
        assert_eq!(
            log_directives(Some("info,wasmtime=debug"), &run),
            "info,wasmtime=debug"
        );
        let call = Cli::parse_from(["botbox", "call", "x.wasm", "--event", "{}"]);
        assert_eq!(log_directives(None, &call), "error,plugin=off");
    }
}
