//! The `botbox` binary: parses the command line, sets up the log and runs
//! the command (`botbox::cli`) on a multi-threaded tokio runtime.

use clap::Parser;

use botbox::cli::{Cli, execute, logging};

fn main() -> anyhow::Result<std::process::ExitCode> {
    // Error values (wasmtime's, anyhow's) capture a stack trace when
    // RUST_BACKTRACE is set, and wasmtime-wasi hands a guest the `{:?}` of
    // a stream error, trace included: the host's internals would reach
    // guest memory. RUST_LIB_BACKTRACE=0 turns that capture off and leaves
    // panics' backtraces to RUST_BACKTRACE; an operator's own setting wins.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: the first statement of `main`, before any thread exists.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
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
