//! The command line, on `clap` (derive):
//!
//! ```text
//! sipfork --config FILE                        run the appliance
//! sipfork check-config FILE                    validate FILE and print what would run
//! sipfork devices EXT (--config FILE | --admin ADDR) [--json]
//!                                              the extension's devices, from the running
//!                                              instance's admin listener
//! sipfork metrics-doc                          print docs/metrics.md (every metric exposed)
//! ```
//! Exit codes: 0 success, 1 a runtime failure (the instance is unreachable, the extension is not
//! served), 2 a usage or configuration error.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app::devices::DeviceReport;
use crate::config::Config;

/// The `sipfork` command line.
#[derive(Debug, Parser)]
#[command(
    name = "sipfork",
    version,
    about = "Carrier-edge SIP forking proxy and registrar: one extension, many devices, first answer wins",
    after_help = "Logs go to stderr; SIPFORK_LOG (or RUST_LOG) filters them, e.g. SIPFORK_LOG=debug.\n\
                  While running: SIGHUP reloads the configuration, SIGTERM or SIGINT stops \
                  (draining first when [server] drain_seconds is set).",
    arg_required_else_help = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Run the appliance described by FILE.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A command other than running.
    #[command(subcommand)]
    pub command: Option<Sub>,
}

/// The subcommands.
#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum Sub {
    /// Validate FILE and print what would run.
    CheckConfig {
        /// The configuration file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// List the devices registered for extension EXT, asking the running instance's admin
    /// listener (from FILE's [server] admin, or ADDR).
    Devices(DevicesArgs),
    /// Print the metrics reference (docs/metrics.md): every metric /metrics exposes.
    MetricsDoc,
    /// Print the licensing report of FILE as JSON: channels billed per service provider.
    Licensing {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// `sipfork devices`.
#[derive(Debug, Args, PartialEq, Eq)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["config", "admin"])))]
pub struct DevicesArgs {
    /// The extension number.
    #[arg(value_name = "EXT", value_parser = parse_extension)]
    pub extension: String,
    /// The running instance's configuration file (its [server] admin names the listener).
    #[arg(
        short,
        long,
        value_name = "FILE",
        required_unless_present = "admin",
        conflicts_with = "admin"
    )]
    pub config: Option<PathBuf>,
    /// The admin listener's address (IP:PORT or HOST:PORT).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_extension(s: &str) -> Result<String, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("extension {s:?} is not a number"));
    }
    Ok(s.to_owned())
}

/// Where `devices` finds the admin listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminTarget {
    /// The `[server] admin` of this configuration file.
    Config(PathBuf),
    /// This address (`IP:PORT` or `HOST:PORT`).
    Addr(String),
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the appliance.
    Run(PathBuf),
    /// Validate a configuration.
    CheckConfig(PathBuf),
    /// Print an extension's devices.
    Devices {
        /// The extension.
        extension: String,
        /// Where to ask.
        admin: AdminTarget,
        /// JSON instead of a table.
        json: bool,
    },
    /// Print the metrics reference.
    MetricsDoc,
    /// Print the licensing report of a configuration.
    Licensing(PathBuf),
}

/// Parses the arguments after the program name; `Err` is clap's error (usage, `--help` and
/// `--version` included), which knows how to print itself and its exit code.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, clap::Error> {
    let cli = Cli::try_parse_from(std::iter::once(OsString::from("sipfork")).chain(args))?;
    Ok(match (cli.config, cli.command) {
        (_, Some(Sub::CheckConfig { file })) => Command::CheckConfig(file),
        (_, Some(Sub::MetricsDoc)) => Command::MetricsDoc,
        (_, Some(Sub::Licensing { config })) => Command::Licensing(config),
        (_, Some(Sub::Devices(d))) => Command::Devices {
            extension: d.extension,
            admin: match (d.config, d.admin) {
                (Some(file), _) => AdminTarget::Config(file),
                (None, Some(addr)) => AdminTarget::Addr(addr),
                // clap enforces one of the two.
                (None, None) => unreachable!("devices needs --config or --admin"),
            },
            json: d.json,
        },
        (Some(file), None) => Command::Run(file),
        // arg_required_else_help: clap answers an empty command line itself.
        (None, None) => unreachable!("clap requires --config or a subcommand"),
    })
}

/// Sets up logging to stderr, filtered by `SIPFORK_LOG`, else `RUST_LOG`, else `info`.
pub fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SIPFORK_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Runs the command line of this process; what `main` calls.
pub fn main() -> ExitCode {
    let command = match parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and exit 0; usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    match command {
        Command::MetricsDoc => {
            print!("{}", metrics_doc());
            ExitCode::SUCCESS
        }
        Command::Licensing(file) => match Config::load(&file) {
            Ok(cfg) => {
                println!("{:#}", cfg.tenancy.licensing_json());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sipfork: {e}");
                ExitCode::from(2)
            }
        },
        Command::CheckConfig(file) => match Config::load(&file) {
            Ok(cfg) => {
                // The summary ends with the configuration's warnings.
                print!("{cfg}");
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sipfork: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run(file) => {
            init_logging();
            match crate::app::run(&file) {
                Ok(()) => ExitCode::SUCCESS,
                Err(crate::app::AppError::Config(e)) => {
                    eprintln!("sipfork: {e}");
                    tracing::error!("not started: {e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("sipfork: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Devices {
            extension,
            admin,
            json,
        } => match devices(&extension, &admin, json) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err((code, why)) => {
                eprintln!("sipfork: {why}");
                ExitCode::from(code)
            }
        },
    }
}

/// `docs/metrics.md` as the code generates it.
pub fn metrics_doc() -> String {
    crate::app::metrics::reference_markdown(&crate::app::admin::reference().reference())
}

/// Asks the admin listener for `extension`'s devices; the text to print, or an exit code and why.
fn devices(extension: &str, target: &AdminTarget, json: bool) -> Result<String, (u8, String)> {
    let addr = admin_addr(target)?;
    let (status, body) = http_get(addr, &format!("/extensions/{extension}/devices"))
        .map_err(|e| (1, format!("cannot reach the admin listener at {addr}: {e}")))?;
    match status {
        200 => {
            let report: DeviceReport = serde_json::from_slice(&body)
                .map_err(|e| (1, format!("unexpected answer from {addr}: {e}")))?;
            if json {
                let mut text = serde_json::to_string_pretty(&report)
                    .map_err(|e| (1, format!("cannot encode JSON: {e}")))?;
                text.push('\n');
                Ok(text)
            } else {
                Ok(report.table())
            }
        }
        404 => Err((
            1,
            format!("{extension} is not an extension served by the instance at {addr}"),
        )),
        other => Err((
            1,
            format!(
                "the instance at {addr} answered {other}: {}",
                String::from_utf8_lossy(&body).trim()
            ),
        )),
    }
}

fn admin_addr(target: &AdminTarget) -> Result<SocketAddr, (u8, String)> {
    match target {
        AdminTarget::Config(file) => {
            let cfg = Config::load(file).map_err(|e| (2, e.to_string()))?;
            cfg.server.admin.ok_or_else(|| {
                (
                    2,
                    format!(
                        "{}: [server] admin is not set, so the instance has no admin listener",
                        file.display()
                    ),
                )
            })
        }
        AdminTarget::Addr(addr) => addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| (2, format!("--admin {addr}: expected IP:PORT or HOST:PORT"))),
    }
}

/// One `GET` over HTTP/1.1 with `Connection: close`; returns the status and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let status = std::str::from_utf8(&raw[..split])
        .ok()
        .and_then(|head| head.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, raw[split + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from)).map_err(|e| e.to_string())
    }

    #[test]
    fn the_commands_parse() {
        assert_eq!(
            p(&["--config", "a.toml"]),
            Ok(Command::Run("a.toml".into()))
        );
        assert_eq!(p(&["-c", "a.toml"]), Ok(Command::Run("a.toml".into())));
        assert_eq!(
            p(&["check-config", "a.toml"]),
            Ok(Command::CheckConfig("a.toml".into()))
        );
        assert_eq!(
            p(&["devices", "1000", "--config", "a.toml", "--json"]),
            Ok(Command::Devices {
                extension: "1000".into(),
                admin: AdminTarget::Config("a.toml".into()),
                json: true
            })
        );
        assert_eq!(
            p(&["devices", "--admin", "127.0.0.1:8080", "0100"]),
            Ok(Command::Devices {
                extension: "0100".into(),
                admin: AdminTarget::Addr("127.0.0.1:8080".into()),
                json: false
            })
        );
        assert_eq!(p(&["metrics-doc"]), Ok(Command::MetricsDoc));
    }

    #[test]
    fn help_and_version_are_answers_not_errors() {
        for args in [
            &["--help"][..],
            &["devices", "--help"],
            &["check-config", "-h"],
        ] {
            let e = parse(args.iter().map(OsString::from)).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(e.exit_code(), 0);
        }
        let e = parse([OsString::from("--version")]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        assert!(e.to_string().contains(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn mistakes_are_explained() {
        let err = |args: &[&str]| {
            let e = parse(args.iter().map(OsString::from)).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
            e.to_string()
        };
        assert!(err(&["--config"]).contains("a value is required"));
        assert!(err(&["--config", "a", "b"]).contains("'b'"));
        assert!(err(&["run"]).contains("unrecognized subcommand"));
        assert!(err(&["devices", "1000"]).contains("--admin"));
        assert!(err(&["devices", "10a0", "--admin", "x:1"]).contains("not a number"));
        assert!(err(&["devices", "1", "--admin", "a:1", "--config", "f"])
            .contains("cannot be used with"));
        assert!(
            err(&["devices", "1", "--admin", "a:1", "--verbose"]).contains("unexpected argument")
        );
        assert!(err(&["--config", "a", "check-config", "b"]).contains("cannot be used with"));
    }

    #[test]
    fn docs_metrics_md_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md");
        let want = metrics_doc();
        if std::env::var_os("SIPFORK_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/metrics.md is not what the code exposes; regenerate it with \
             `target/release/sipfork metrics-doc > docs/metrics.md` \
             (or SIPFORK_BLESS=1 cargo test --release --lib docs_metrics_md_is_current)"
        );
    }
}
