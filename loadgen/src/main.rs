//! `shardcast-loadgen`: the command-line entry point. Parses the command line (clap: bad
//! arguments exit with code 2 and a message naming the flag) and hands each subcommand to
//! its module: scenarios to `run.rs`, `sink`, `compare`, `plot`.
//!
//! Exit codes: 0 success; 1 the run or command failed (or, for `compare`, a regression);
//! 2 bad arguments.

use std::process::ExitCode;

use clap::Parser;
use shardcast_loadgen::cli::{Cli, Command};
use shardcast_loadgen::run::{execute, Invocation};
use shardcast_loadgen::scenario::{load_mix, Spec};
use shardcast_loadgen::{compare, plot, sink};

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHARDCAST_LOADGEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Echo(a) => execute(Invocation {
            scenario: "echo".into(),
            parts: vec![(
                "echo".into(),
                Spec::Echo {
                    connections: a.connections,
                    depth: a.depth,
                    rate: a.rate,
                },
            )],
            common: a.common,
        }),
        Command::Ack(a) => execute(Invocation {
            scenario: "ack".into(),
            parts: vec![(
                "ack".into(),
                Spec::Ack {
                    connections: a.connections,
                    depth: a.depth,
                    rate: a.rate,
                },
            )],
            common: a.common,
        }),
        Command::Fanout(a) => execute(Invocation {
            scenario: "fanout".into(),
            parts: vec![(
                "fanout".into(),
                Spec::Fanout {
                    rooms: a.rooms,
                    room_size: a.room_size,
                    publishers: a.publishers,
                    rate: a.rate,
                },
            )],
            common: a.common,
        }),
        Command::Rooms(a) => execute(Invocation {
            scenario: "rooms".into(),
            parts: vec![(
                "rooms".into(),
                Spec::Rooms {
                    rooms: a.rooms,
                    members: a.members,
                    rate: a.rate,
                },
            )],
            common: a.common,
        }),
        Command::Broadcast(a) => execute(Invocation {
            scenario: "broadcast".into(),
            parts: vec![(
                "broadcast".into(),
                Spec::Broadcast {
                    connections: a.connections,
                    publishers: a.publishers,
                    rate: a.rate,
                },
            )],
            common: a.common,
        }),
        Command::Connect(a) => {
            let mut common = a.common;
            // A storm measures from the start unless a warm-up is asked for.
            common.warmup.get_or_insert(std::time::Duration::ZERO);
            execute(Invocation {
                scenario: "connect".into(),
                parts: vec![(
                    "connect".into(),
                    Spec::Connect {
                        concurrency: a.concurrency,
                        rate: a.rate,
                    },
                )],
                common,
            })
        }
        Command::Hold(a) => {
            let mut common = a.common;
            if let Some(h) = a.hold {
                common.duration = h;
            }
            common.warmup.get_or_insert(std::time::Duration::ZERO);
            execute(Invocation {
                scenario: "hold".into(),
                parts: vec![(
                    "hold".into(),
                    Spec::Hold {
                        connections: a.connections,
                    },
                )],
                common,
            })
        }
        Command::Mixed(a) => match load_mix(&a.mix) {
            Ok(parts) => execute(Invocation {
                scenario: "mixed".into(),
                parts,
                common: a.common,
            }),
            Err(e) => Err(e.into()),
        },
        Command::Sink(a) => sink::run(a),
        Command::Compare(a) => compare::run(&a),
        Command::Plot(a) => plot::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shardcast-loadgen: {e:#}");
            ExitCode::from(1)
        }
    }
}
