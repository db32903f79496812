//! The keyplan command: parse the arguments, run, print the error chain,
//! exit 0 (done), 1 (error) or 2 (plan --detailed-exitcode: changes due;
//! status --check: an edge overdue or stuck).

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = keyplan::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(keyplan::cli::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            keyplan::cli::print_error(&error);
            ExitCode::from(1)
        }
    }
}
