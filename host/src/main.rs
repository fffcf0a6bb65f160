//! The `botbox` binary: parses the command line, sets up the log and runs
//! the command (`botbox::cli`) on a multi-threaded tokio runtime.

use clap::Parser;

use botbox::cli::{Cli, execute, logging};

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    if let Err(e) = logging::init(&cli) {
        // A usage error, as clap's own: nothing ran.
        eprintln!("error: {e}");
        return Ok(std::process::ExitCode::from(2));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(execute(cli))?;
    Ok(std::process::ExitCode::from(code))
}
