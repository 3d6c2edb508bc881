use std::process::ExitCode;

fn main() -> ExitCode {
    sifhub::cli::main()
}
