use std::process::ExitCode;

use clap::Parser;
use pyclave::cli::{Cli, exit_code};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "pyclave=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut cli = Cli::parse();
    if let Err(error) = cli.prepare() {
        eprintln!("pyclave: {}", pyclave::zygote::error_chain(error.as_ref()));
        return ExitCode::from(exit_code::ERROR);
    }
    // One thread: the supervisor's work per job is small and I/O-bound, and
    // on a 2-core host cross-thread wake-ups cost more than they buy
    // (measured: ~20 % less supervisor CPU per job). Validating a big output
    // table runs on the blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pyclave: cannot start the async runtime: {error}");
            return ExitCode::from(exit_code::ERROR);
        }
    };
    match runtime.block_on(cli.execute()) {
        Ok(status) => ExitCode::from(status),
        Err(error) => {
            eprintln!("pyclave: {}", pyclave::zygote::error_chain(error.as_ref()));
            ExitCode::from(exit_code::ERROR)
        }
    }
}
