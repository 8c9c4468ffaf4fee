//! The command line (clap): one subcommand per scenario, plus `sink`, `compare` and `plot`.
//!
//! Every scenario shares [`CommonArgs`] (targets, shards, processes, timing, output) and
//! adds its own flags with defaults that make a sensible short run. Bad values are clap
//! errors (exit code 2) with a message naming the flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::net::url::TargetUrl;

/// shardcast-loadgen: drive shardcast (or any WebSocket echo/broadcast server) with
/// measured load; report latency percentiles, throughput, loss and errors.
#[derive(Parser, Debug)]
#[command(name = "shardcast-loadgen", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// C connections, D messages in flight each (or an open-loop --rate): round trips/s and RTT.
    Echo(EchoArgs),
    /// Request/response through the ACK mechanism (the built-in `echo` ACK).
    Ack(EchoArgs),
    /// Rooms of N members, P publishers each, total rate R: deliveries/s and end-to-end latency.
    Fanout(FanoutArgs),
    /// Many rooms (K rooms × M members), every member chatting at a low rate.
    Rooms(RoomsArgs),
    /// Everyone receives everything: P publishers broadcasting to C connections.
    Broadcast(BroadcastArgs),
    /// Connection storm: handshakes/s and handshake latency, failures by kind.
    Connect(ConnectArgs),
    /// Open C idle connections at a bounded rate and hold them: RSS per connection.
    Hold(HoldArgs),
    /// A weighted mix of scenarios defined in a TOML file.
    Mixed(MixedArgs),
    /// A trivial echo/broadcast server for measuring the load generator itself.
    Sink(SinkArgs),
    /// Print reports side by side with ratios; exit 1 on regressions beyond a threshold.
    Compare(CompareArgs),
    /// Draw latency percentile curves and throughput over time (PNG or SVG).
    Plot(PlotArgs),
}

/// What kind of server the targets are.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// shardcast's relay events (join-room, publish, broadcast, echo, ACKs).
    Shardcast,
    /// A plain WebSocket server that echoes (`/echo`) or rebroadcasts (`/broadcast`).
    Raw,
}

/// The dialect the receiving connections speak (`--dialect`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DialectArg {
    /// stelar (the default): relay events in `{"event","data"}` envelopes.
    #[default]
    Stelar,
    /// StellarStack: `{"type":"auth"}`, `subscribe` a `serverId`, `{"type":E,"serverId":R,"data":D}`.
    Stellarstack,
    /// ignis: `authenticate`, `join` `{rooms:[…]}`, `{"event":E,"data":D}`.
    Ignis,
    /// stonyx: `{"request":"auth"}`, `join-room`, `{"request":E,"data":D}`.
    Stonyx,
}

impl DialectArg {
    /// The wire kind, `None` for stelar.
    pub fn kind(self) -> Option<crate::dialects::Kind> {
        use crate::dialects::Kind;
        match self {
            DialectArg::Stelar => None,
            DialectArg::Stellarstack => Some(Kind::StellarStack),
            DialectArg::Ignis => Some(Kind::Ignis),
            DialectArg::Stonyx => Some(Kind::Stonyx),
        }
    }
}

/// Parses `10s`, `250ms`, `2m`, `1h`, `1.5s`, `30` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "s" | "sec" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=86_400.0 * 7.0).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_url(s: &str) -> Result<TargetUrl, String> {
    s.parse::<TargetUrl>().map_err(|e| format!("{e} in {s:?}"))
}

fn positive_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("invalid rate {s:?}"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("rate must be > 0, got {s:?}"))
    }
}

/// Options every scenario takes.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Target URL: ws://, wss://, tcp:// (stelar) or tcp+tls://; repeat to spread connections
    /// over several servers.
    #[arg(long = "url", short = 'u', value_parser = parse_url, default_value = "ws://127.0.0.1:3000")]
    pub urls: Vec<TargetUrl>,
    /// The URLs are nodes of one cluster (e.g. shardcast nodes sharing a Redis): rooms and
    /// broadcasts span them, and each room's members are dealt round-robin over the URLs
    /// (member m on URL m mod URLs, so the first --publishers are on the first URLs).
    #[arg(long)]
    pub cluster: bool,
    /// What the target is: shardcast (relay events) or raw (plain echo/broadcast WebSocket).
    #[arg(long, value_enum, default_value_t = TargetKind::Shardcast)]
    pub target: TargetKind,
    /// Raw target: send binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
    /// The dialect of the receiving connections (fanout, broadcast: the members that do not
    /// publish; hold: every connection). They connect to the --url path, which must be the
    /// server's path for that dialect (`shardcast --dialect /api/ws=stellarstack` →
    /// `--url ws://HOST:PORT/api/ws`), authenticate with a token (--jwt-secret), join in the
    /// dialect's way and wait for its confirmation. Publishers speak stelar on
    /// --publisher-path.
    #[arg(long, value_enum, default_value_t = DialectArg::Stelar)]
    pub dialect: DialectArg,
    /// With a --dialect other than stelar: the stelar path publishers connect to.
    #[arg(long, default_value = "/")]
    pub publisher_path: String,
    /// With a --dialect other than stelar: mint one HS256 JWT per receiving connection with
    /// this secret (the server's --jwt-secret), `sub` = `lg-<connection number>`, valid
    /// for a day.
    #[arg(long, value_name = "SECRET")]
    pub jwt_secret: Option<String>,
    /// Load generator shards (threads pinned one per core) per process.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub shards: u16,
    /// Load generator processes (each has its own open-file limit).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub procs: u16,
    /// Source addresses for client sockets: list and ranges, e.g. 127.0.0.1-127.0.0.32.
    #[arg(long)]
    pub source: Option<String>,
    /// Measured duration (after warm-up).
    #[arg(long, short = 'd', value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Warm-up before measuring, excluded from the figures [default: 1s; 0 for connect and hold].
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Stop after this many messages in all (split over the senders); the run ends at
    /// whichever of --duration and --messages comes first.
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: Option<u64>,
    /// Longest wait for in-flight messages after the window.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub drain: Duration,
    /// Connections opened per second during setup (all processes together).
    #[arg(long, value_parser = positive_rate, default_value = "2000")]
    pub connect_rate: f64,
    /// Longest TCP connect + TLS + upgrade for one connection.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,
    /// Longest setup (all connections open and joined) [default: 30s + twice the paced time].
    #[arg(long, value_parser = parse_duration)]
    pub setup_timeout: Option<Duration>,
    /// Data bytes per measured message (a 42-byte stamp, then padding).
    #[arg(long, short = 's', default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub size: u64,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Name of this run in compare/plot [default: scenario and target].
    #[arg(long)]
    pub label: Option<String>,
    /// Server process to watch (CPU time, RSS); repeat for several.
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
    /// TLS: do not verify the server certificate.
    #[arg(long)]
    pub insecure: bool,
    /// TLS: trust this PEM CA file (e.g. the sink's --cert-out).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    pub no_progress: bool,
    /// Internal: run as worker I of a --procs run.
    #[arg(long, hide = true)]
    pub worker_index: Option<u16>,
}

/// `echo` and `ack`.
#[derive(Args, Debug, Clone)]
pub struct EchoArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Messages in flight per connection (closed loop).
    #[arg(long, short = 'D', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub depth: u32,
    /// Open loop: total requests per second (all connections) instead of a closed loop.
    #[arg(long, short = 'r', value_parser = positive_rate)]
    pub rate: Option<f64>,
}

/// `fanout`.
#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Rooms.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub rooms: u32,
    /// Members per room (publishers included).
    #[arg(long, short = 'N', default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..))]
    pub room_size: u32,
    /// Publishers per room.
    #[arg(long, short = 'P', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub publishers: u32,
    /// Total publishes per second (all rooms).
    #[arg(long, short = 'r', default_value = "1000", value_parser = positive_rate)]
    pub rate: f64,
}

/// `rooms`.
#[derive(Args, Debug, Clone)]
pub struct RoomsArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Rooms.
    #[arg(long, short = 'K', default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub rooms: u32,
    /// Members per room (each one chats).
    #[arg(long, short = 'M', default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..))]
    pub members: u32,
    /// Total messages per second over all members [default: 1 per member per second].
    #[arg(long, short = 'r', value_parser = positive_rate)]
    pub rate: Option<f64>,
}

/// `broadcast`.
#[derive(Args, Debug, Clone)]
pub struct BroadcastArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections (all receive every message).
    #[arg(long, short = 'c', default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..))]
    pub connections: u32,
    /// Publishers among them.
    #[arg(long, short = 'P', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub publishers: u32,
    /// Total broadcasts per second.
    #[arg(long, short = 'r', default_value = "100", value_parser = positive_rate)]
    pub rate: f64,
}

/// `connect`.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Open loop: total connection attempts per second.
    #[arg(long, short = 'r', value_parser = positive_rate)]
    pub rate: Option<f64>,
}

/// `hold`.
#[derive(Args, Debug, Clone)]
pub struct HoldArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Idle connections to open and hold.
    #[arg(long, short = 'c', default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// How long to hold them once all are open [default: --duration].
    #[arg(long, value_parser = parse_duration)]
    pub hold: Option<Duration>,
}

/// `mixed`.
#[derive(Args, Debug, Clone)]
pub struct MixedArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The mix (TOML): see loadgen/README.md.
    #[arg(long, value_name = "FILE")]
    pub mix: PathBuf,
}

/// `sink`.
#[derive(Args, Debug, Clone)]
pub struct SinkArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// WebSocket port (0 = any free port).
    #[arg(long, short = 'p', default_value_t = 0)]
    pub port: u16,
    /// stelar TCP port [default: --port + 1, or any free port with --port 0].
    #[arg(long)]
    pub tcp_port: Option<u16>,
    /// Shards (threads pinned one per core).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub shards: u16,
    /// Serve TLS (wss and tcp+tls) with a self-signed certificate made at start.
    #[arg(long)]
    pub tls: bool,
    /// Write the self-signed certificate (PEM) here, for the client's --ca.
    #[arg(long, value_name = "FILE")]
    pub cert_out: Option<PathBuf>,
    /// Stop by itself after this long.
    #[arg(long, value_parser = parse_duration)]
    pub exit_after: Option<Duration>,
}

/// `compare`.
#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// Reports (the first is the baseline).
    #[arg(required = true, num_args = 2.., value_name = "REPORT.json")]
    pub reports: Vec<PathBuf>,
    /// Relative change counted as a regression, in percent.
    #[arg(long, default_value = "5", value_parser = positive_rate)]
    pub threshold: f64,
}

/// `plot`.
#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// Reports to draw.
    #[arg(required = true, num_args = 1.., value_name = "REPORT.json")]
    pub reports: Vec<PathBuf>,
    /// Output image: .png or .svg.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
    /// Image width in pixels.
    #[arg(long, default_value_t = 1200, value_parser = clap::value_parser!(u32).range(300..=8000))]
    pub width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u32).range(300..=8000))]
    pub height: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn bad_arguments_are_clap_errors() {
        for args in [
            vec!["lg", "echo", "--connections", "0"],
            vec!["lg", "echo", "--url", "http2://x"],
            vec!["lg", "echo", "--duration", "soon"],
            vec!["lg", "fanout", "--room-size", "1"],
            vec!["lg", "echo", "--rate", "-5"],
            vec!["lg", "compare", "one.json"],
            vec!["lg", "nonsense"],
        ] {
            let e = Cli::try_parse_from(&args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
        let ok = Cli::try_parse_from([
            "lg",
            "echo",
            "-c",
            "5",
            "-D",
            "4",
            "--url",
            "tcp://127.0.0.1:9",
        ])
        .unwrap();
        match ok.command {
            Command::Echo(a) => {
                assert_eq!((a.connections, a.depth), (5, 4));
                assert_eq!(a.common.urls[0].port, 9);
            }
            other => panic!("{other:?}"),
        }
    }
}
