//! The command line (DECISIONS.md "Repository and tests"):
//!
//! ```text
//! sipfork --config FILE                        run the appliance
//! sipfork check-config FILE                    validate FILE and print what would run
//! sipfork devices EXT (--config FILE | --admin ADDR) [--json]
//!                                              the extension's devices, from the running
//!                                              instance's admin listener
//! ```
//! Exit codes: 0 success, 1 a runtime failure (the instance is unreachable, the extension is not
//! served), 2 a usage or configuration error.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::app::devices::DeviceReport;
use crate::config::Config;

/// Usage text.
pub const USAGE: &str = "\
usage:
  sipfork --config FILE          run the appliance described by FILE
  sipfork check-config FILE      validate FILE and print what would run
  sipfork devices EXT (--config FILE | --admin ADDR) [--json]
                                 list the devices registered for extension EXT, asking the
                                 running instance's admin listener (from FILE, or ADDR)
  sipfork --help | --version

Logs go to stderr; SIPFORK_LOG (or RUST_LOG) filters them, e.g. SIPFORK_LOG=debug.";

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
    /// Print the usage.
    Help,
    /// Print the version.
    Version,
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| format!("argument {a:?} is not UTF-8"))
        })
        .collect::<Result<_, _>>()?;
    let mut it = args.iter().map(String::as_str);
    let value = |flag: &str, v: Option<&str>| -> Result<String, String> {
        v.map(str::to_owned)
            .ok_or_else(|| format!("{flag} needs a value"))
    };
    match it.next() {
        None => Err("no command given".into()),
        Some("-h" | "--help" | "help") => Ok(Command::Help),
        Some("-V" | "--version") => Ok(Command::Version),
        Some("--config" | "-c") => {
            let file = value("--config", it.next())?;
            no_more(it)?;
            Ok(Command::Run(file.into()))
        }
        Some("check-config") => {
            let file = value("check-config", it.next())?;
            no_more(it)?;
            Ok(Command::CheckConfig(file.into()))
        }
        Some("devices") => {
            let (mut extension, mut admin, mut json) = (None, None, false);
            while let Some(arg) = it.next() {
                match arg {
                    "--json" => json = true,
                    "--config" | "-c" => set_once(
                        &mut admin,
                        AdminTarget::Config(value(arg, it.next())?.into()),
                    )?,
                    "--admin" => set_once(&mut admin, AdminTarget::Addr(value(arg, it.next())?))?,
                    flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
                    ext if extension.is_none() => extension = Some(ext.to_owned()),
                    extra => return Err(format!("unexpected argument {extra}")),
                }
            }
            let extension = extension.ok_or("devices needs an extension number")?;
            if extension.is_empty() || !extension.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("extension {extension:?} is not a number"));
            }
            let admin = admin.ok_or(
                "devices needs --config FILE (whose [server] admin names the listener) or --admin ADDR",
            )?;
            Ok(Command::Devices {
                extension,
                admin,
                json,
            })
        }
        Some(other) => Err(format!("unknown command or option {other}")),
    }
}

fn no_more<'a>(mut it: impl Iterator<Item = &'a str>) -> Result<(), String> {
    match it.next() {
        Some(extra) => Err(format!("unexpected argument {extra}")),
        None => Ok(()),
    }
}

fn set_once(slot: &mut Option<AdminTarget>, target: AdminTarget) -> Result<(), String> {
    if slot.replace(target).is_some() {
        return Err("give --config or --admin once".into());
    }
    Ok(())
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
        Err(why) => {
            eprintln!("sipfork: {why}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("sipfork {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
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
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn the_three_commands_parse() {
        assert_eq!(
            p(&["--config", "a.toml"]),
            Ok(Command::Run("a.toml".into()))
        );
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
        assert_eq!(p(&["--help"]), Ok(Command::Help));
        assert_eq!(p(&["--version"]), Ok(Command::Version));
    }

    #[test]
    fn mistakes_are_explained() {
        assert!(p(&[]).unwrap_err().contains("no command"));
        assert!(p(&["--config"]).unwrap_err().contains("needs a value"));
        assert!(p(&["--config", "a", "b"])
            .unwrap_err()
            .contains("unexpected"));
        assert!(p(&["run"]).unwrap_err().contains("unknown command"));
        assert!(p(&["devices", "1000"]).unwrap_err().contains("--admin"));
        assert!(p(&["devices", "10a0", "--admin", "x:1"])
            .unwrap_err()
            .contains("not a number"));
        assert!(p(&["devices", "1", "--admin", "a:1", "--config", "f"])
            .unwrap_err()
            .contains("once"));
        assert!(p(&["devices", "1", "--admin", "a:1", "--verbose"])
            .unwrap_err()
            .contains("unknown option"));
    }
}
