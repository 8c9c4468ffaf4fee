//! What every example shares: its configuration from the file, the environment and the
//! command line, and running the server until SIGINT / SIGTERM. A subdirectory, so that
//! cargo does not take it for an example; each example says `mod support;`.

use std::path::Path;

use shardcast::config::Config;
use shardcast::server::{Running, StartError};

/// The server's configuration: defaults, then the TOML file, then the environment, then the
/// arguments (the same order as `shardcast`, for the settings the examples take:
/// `--config FILE`, `--host ADDR`, `--port PORT`). `name` is the example's, for the usage.
pub fn config(name: &str) -> Result<Config, String> {
    let usage = format!("usage: {name} [--config FILE] [--host ADDR] [--port PORT]");
    let env = |name: &'static str| std::env::var(name).ok().map(|v| (v, name));
    let (mut file, mut host, mut port) = (
        env("SHARDCAST_CONFIG"),
        env("SHARDCAST_HOST"),
        env("SHARDCAST_PORT"),
    );
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--config" | "-c" => &mut file,
            "--host" => &mut host,
            "--port" | "-p" => &mut port,
            "--help" | "-h" => return Err(usage),
            other => return Err(format!("unknown argument {other}\n{usage}")),
        };
        let value = args
            .next()
            .ok_or_else(|| format!("{arg} needs a value\n{usage}"))?;
        *slot = Some((value, "the command line"));
    }
    let mut config = match file {
        Some((path, _)) => Config::from_file(Path::new(&path)).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some((v, from)) = host {
        config.host = v
            .parse()
            .map_err(|e| format!("invalid host '{v}' ({from}): {e}"))?;
    }
    if let Some((v, from)) = port {
        config.port = v
            .parse()
            .map_err(|e| format!("invalid port '{v}' ({from}): {e}"))?;
    }
    Ok(config)
}

/// [`config`], or the error (or the usage) on stderr and exit status 2.
pub fn config_or_exit(name: &str) -> Config {
    config(name).unwrap_or_else(|e| {
        eprintln!("{name}: {e}");
        std::process::exit(2);
    })
}

/// Prints the `shardcast listening ...` line of the started server and runs it until
/// SIGINT / SIGTERM; a server that did not start, or stopped with an error, exits with 1.
pub fn run(name: &str, started: Result<Running, StartError>) {
    let running = started.unwrap_or_else(|e| {
        eprintln!("{name}: cannot start: {e}");
        std::process::exit(1);
    });
    shardcast::server::log_listening(&running);
    if let Err(e) = running.join() {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}
