//! The `botbox` command line.

pub(crate) mod call;
mod check;
mod dev;
mod new;
mod outbox;
mod output;
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
    }
}

/// Filter for the log: plugin lines are printed by `call` itself.
pub fn log_filter(cli: &Cli) -> &'static str {
    match cli.command {
        Command::Call(_) | Command::Dev(_) => "error,plugin=off",
        _ => "info",
    }
}

pub(crate) fn load_config(config: Option<&PathBuf>) -> anyhow::Result<crate::config::Config> {
    let path = config
        .cloned()
        .unwrap_or_else(|| PathBuf::from("botbox.toml"));
    Ok(crate::config::Config::load(&path)?)
}
