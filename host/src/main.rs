use clap::Parser;
use tracing_subscriber::EnvFilter;

use botbox::cli::{Cli, execute, log_filter};

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    let filter =
        EnvFilter::try_from_env("BOTBOX_LOG").unwrap_or_else(|_| EnvFilter::new(log_filter(&cli)));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(execute(cli))?;
    Ok(std::process::ExitCode::from(code))
}
