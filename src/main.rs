//! The `shardcast` binary: the standalone relay server.
//!
//! Settings come, lowest precedence first, from the defaults, the `--config` TOML file,
//! `SHARDCAST_*` environment variables and command-line flags (see `--help`).

use std::ffi::{OsStr, OsString};
use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use shardcast::config::Config;
use shardcast::{server, Server};

/// What `check-config` prints instead of the API key.
const REDACTED: &str = "<redacted>";

/// shardcast: a thread-per-core real-time messaging server speaking the stelar protocol over
/// WebSocket (port) and stelar binary TCP (port + 1).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve(ServeArgs),
    /// Print the effective configuration as TOML (the --config format) and exit; an API key
    /// is printed as "<redacted>".
    CheckConfig(ServeArgs),
}

#[derive(Args, Debug, Clone, Default)]
struct ServeArgs {
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, short = 'c', env = "SHARDCAST_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0].
    #[arg(long, env = "SHARDCAST_HOST")]
    host: Option<IpAddr>,
    /// WebSocket + HTTP port; 0 picks a free one [default: 3000].
    #[arg(long, short = 'p', env = "SHARDCAST_PORT")]
    port: Option<u16>,
    /// stelar TCP port; 0 disables TCP [default: --port + 1, which stelar TCP clients dial].
    #[arg(long, env = "SHARDCAST_TCP_PORT")]
    tcp_port: Option<u16>,
    /// Shards (threads pinned one per core) [default: every available core].
    #[arg(long, env = "SHARDCAST_SHARDS")]
    shards: Option<usize>,
    /// Add the raw /echo and /broadcast WebSocket paths (Autobahn, load comparisons).
    #[arg(long, env = "SHARDCAST_BENCH_ENDPOINTS")]
    bench_endpoints: bool,
    /// Require this key for the HTTP API (/api/*): `Authorization: Bearer KEY` or `X-API-Key`.
    #[arg(long, env = "SHARDCAST_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Most simultaneous clients; 0 = unlimited [default: 0].
    #[arg(long, env = "SHARDCAST_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Largest WebSocket frame payload / stelar TCP frame, in bytes [default: 10485760].
    #[arg(long, env = "SHARDCAST_MAX_FRAME_SIZE")]
    max_frame_size: Option<usize>,
    /// Largest message after reassembly and decompression, in bytes [default: 10485760].
    #[arg(long, env = "SHARDCAST_MAX_MESSAGE_SIZE")]
    max_message_size: Option<usize>,
    /// Server heartbeat (ping) interval in milliseconds [default: 30000].
    #[arg(long, env = "SHARDCAST_HEARTBEAT_INTERVAL_MS")]
    heartbeat_interval_ms: Option<u64>,
    /// Drop a client silent for this many milliseconds [default: 60000].
    #[arg(long, env = "SHARDCAST_HEARTBEAT_TIMEOUT_MS")]
    heartbeat_timeout_ms: Option<u64>,
    /// Close sockets that have not completed a handshake/request within this many ms [default: 10000].
    #[arg(long, env = "SHARDCAST_HANDSHAKE_TIMEOUT_MS")]
    handshake_timeout_ms: Option<u64>,
    /// Disable permessage-deflate (otherwise negotiated when a client offers it).
    #[arg(long, env = "SHARDCAST_NO_COMPRESSION")]
    no_compression: bool,
    /// Log format: text or json [default: text].
    #[arg(long, env = "SHARDCAST_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Log filter (tracing env-filter syntax, e.g. info, shardcast=debug) [default: info].
    #[arg(long, env = "SHARDCAST_LOG", default_value = "info")]
    log: String,
}

impl ServeArgs {
    fn to_config(&self) -> Result<Config, String> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        if let Some(v) = self.host {
            c.host = v;
        }
        if let Some(v) = self.port {
            c.port = v;
        }
        if let Some(v) = self.tcp_port {
            c.tcp_port = Some(v);
        }
        if let Some(v) = self.shards {
            c.shards = v;
        }
        if self.bench_endpoints {
            c.bench_endpoints = true;
        }
        if let Some(v) = &self.api_key {
            c.api_key = Some(v.clone());
        }
        if let Some(v) = self.max_connections {
            c.limits.max_connections = v;
        }
        if let Some(v) = self.max_frame_size {
            c.limits.max_frame_size = v;
        }
        if let Some(v) = self.max_message_size {
            c.limits.max_message_size = v;
        }
        if let Some(v) = self.heartbeat_interval_ms {
            c.timeouts.heartbeat_interval_ms = v;
        }
        if let Some(v) = self.heartbeat_timeout_ms {
            c.timeouts.heartbeat_timeout_ms = v;
        }
        if let Some(v) = self.handshake_timeout_ms {
            c.timeouts.handshake_timeout_ms = v;
        }
        if self.no_compression {
            c.compression.enabled = false;
        }
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }
}

/// The configuration as `check-config` prints it: TOML that `--config` reads back, with the
/// API key (if any) replaced by [`REDACTED`].
fn printable_config(config: &Config) -> Result<String, String> {
    let mut shown = config.clone();
    if shown.api_key.is_some() {
        shown.api_key = Some(REDACTED.to_owned());
    }
    let toml = toml::to_string_pretty(&shown).map_err(|e| e.to_string())?;
    Ok(format!(
        "# shardcast effective configuration (defaults < config file < environment < flags)\n{toml}"
    ))
}

/// Whether log lines carry ANSI colours: only on a terminal, and not when `NO_COLOR` is set
/// to anything non-empty (no-color.org).
fn log_colours(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

fn init_logging(args: &ServeArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = log_colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    // A log line that cannot be written (a closed pipe) is dropped: by default the subscriber
    // reports it with `eprintln!`, which panics on the same closed pipe and would take down
    // the thread that logged (a shard, or the signal thread).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .log_internal_errors(false);
    if args.log_format.as_deref() == Some("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Parses the command line; on a usage error exits 2 with clap's message, except that a bad
/// value taken from an environment variable is reported under the variable's name.
fn parse_cli() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut cmd = cli_command(args.get(1).map(OsString::as_os_str));
    let err = match cmd.try_get_matches_from_mut(&args) {
        Ok(matches) => match Cli::from_arg_matches(&matches) {
            Ok(cli) => return cli,
            Err(e) => e.format(&mut cmd),
        },
        Err(e) => e,
    };
    match env_value_error(&err, args) {
        Some(message) => {
            eprintln!("shardcast: {message}");
            std::process::exit(2);
        }
        None => err.exit(),
    }
}

/// The parser for a command line whose first argument is `first`. A subcommand comes first
/// (the top level's flags conflict with one) and has its own copy of the flags, which reads
/// the environment; the top level's copy must not read it too, or a bad variable would be
/// reported where the subcommand's flag replaces it (`SHARDCAST_PORT=x shardcast serve -p 1`).
fn cli_command(first: Option<&OsStr>) -> clap::Command {
    let cmd = Cli::command();
    let subcommand = first
        .and_then(OsStr::to_str)
        .is_some_and(|a| a == "help" || cmd.find_subcommand(a).is_some());
    if subcommand {
        cmd.mut_args(|a| a.env(None))
    } else {
        cmd
    }
}

/// For a value error whose value came from the environment, the message naming the variable
/// (`invalid value 'abc' for SHARDCAST_PORT: invalid digit found in string`). `None` when the
/// value was on the command line: clap's message, which names the flag, is right then.
fn env_value_error(err: &clap::Error, args: impl IntoIterator<Item = OsString>) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let ContextValue::String(arg) = err.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let ContextValue::String(value) = err.get(ContextKind::InvalidValue)? else {
        return None;
    };
    let mut cmd = Cli::command();
    // Built, so that flags render as clap's messages render them (`--port <PORT>`).
    cmd.build();
    // Every command takes the same flags, so the top level names them all.
    let var = cmd
        .get_arguments()
        .find(|a| a.to_string() == *arg)?
        .get_env()?
        .to_owned();
    if std::env::var_os(&var).as_deref() != Some(OsStr::new(value)) {
        return None;
    }
    // clap reads a variable only for a flag the command line left out. Whether it did: the
    // command line parses without any variable exactly when the bad value was not on it.
    let mut bare = Cli::command().mut_args(|a| a.env(None));
    let subcommands: Vec<String> = bare
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in subcommands {
        bare = bare.mut_subcommand(name, |s| s.mut_args(|a| a.env(None)));
    }
    bare.try_get_matches_from(args).ok()?;
    let why = match err.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(valid)) => format!("possible values: {}", valid.join(", ")),
        _ => std::error::Error::source(err).map_or_else(String::new, ToString::to_string),
    };
    let var = var.to_string_lossy();
    Some(if why.is_empty() {
        format!("invalid value '{value}' for {var}")
    } else {
        format!("invalid value '{value}' for {var}: {why}")
    })
}

/// Raises the soft open-file limit to the hard one: each connection is a descriptor, and the
/// usual soft default (1024) would cap the server far below what it can serve.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a plain struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                tracing::debug!(
                    from = lim.rlim_cur,
                    to = lim.rlim_max,
                    "raised the open-file limit"
                );
                return;
            }
        }
    }
    tracing::debug!(limit = lim.rlim_cur, "open-file limit unchanged");
}

fn main() -> ExitCode {
    let cli = parse_cli();
    let (args, check_only) = match cli.command {
        Some(Command::Serve(a)) => (a, false),
        Some(Command::CheckConfig(a)) => (a, true),
        None => (cli.serve, false),
    };
    init_logging(&args);
    let config = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardcast: {e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        return match printable_config(&config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("shardcast: cannot print the configuration as TOML: {e}");
                ExitCode::from(1)
            }
        };
    }
    raise_open_file_limit();
    let running = match Server::builder().config(config).relay(true).start() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shardcast: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    server::log_listening(&running);
    match running.join() {
        Ok(()) => {
            tracing::info!("shut down");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shardcast: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(std::iter::once("shardcast").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        match cli.command {
            Some(Command::Serve(a) | Command::CheckConfig(a)) => a,
            None => cli.serve,
        }
    }

    #[test]
    fn check_config_prints_toml_that_reads_back() {
        let c = parse(&["--port=4000", "--max-frame-size=1000"])
            .to_config()
            .unwrap();
        let text = printable_config(&c).unwrap();
        assert_eq!(Config::from_toml(&text).unwrap(), c, "{text}");
        assert!(!text.contains("api_key"), "{text}");
    }

    #[test]
    fn check_config_redacts_the_api_key() {
        let c = parse(&["--api-key=s3cret"]).to_config().unwrap();
        let text = printable_config(&c).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        let shown = Config::from_toml(&text).unwrap();
        assert_eq!(shown.api_key.as_deref(), Some(REDACTED));
        assert_eq!(
            Config {
                api_key: c.api_key.clone(),
                ..shown
            },
            c
        );
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(log_colours(true, Some(OsStr::new(""))));
        assert!(!log_colours(true, Some(OsStr::new("1"))));
        assert!(!log_colours(false, None));
        assert!(!log_colours(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn a_bad_flag_value_is_reported_by_clap() {
        // On the command line the flag is named, by clap: no variable is involved.
        let args = ["shardcast", "--port", "abc"];
        let err = Cli::try_parse_from(args).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(env_value_error(&err, args.map(OsString::from)), None);
    }
}
