//! The `sipfork` binary: the command line lives in [`sipfork::app::cli`].

fn main() -> std::process::ExitCode {
    sipfork::app::cli::main()
}
