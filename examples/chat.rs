//! A chat server on the shardcast library API — copy it as a starting point, with
//! `examples/support/mod.rs` (its command line and run loop, shared by the examples).
//!
//! Run: `cargo run --release --example chat [-- --config FILE] [--host ADDR] [--port PORT]`.
//! It listens where the server would (`shardcast --help`): by default WebSocket on
//! 0.0.0.0:3000 and stelar TCP on port + 1; a server TOML file (`--config` or
//! `SHARDCAST_CONFIG`) may set any setting, `SHARDCAST_HOST` / `SHARDCAST_PORT` override it,
//! and `--host` / `--port` override those. It prints the `shardcast listening ...` line.
//!
//! - WebSocket clients connect with `?name=alice`; a WebSocket connection without a name is
//!   refused by the middleware (close 4001). stelar TCP clients have no URL: they start as
//!   `anonymous`. Any client may (re)name itself with `{"event":"hello","data":"alice"}`.
//! - `join-room` / `leave-room` are built in. `say` sends `{"room","text"}` to the room's
//!   other members as `said` with the speaker's name; `whisper` sends `{"to": id, "text"}`
//!   to that client as `whisper` with the speaker's name.
//! - The ACK `members` answers with the rooms the caller is in.
//! - Everyone is told when someone connects (`joined`) and leaves (`left`); the newcomer
//!   gets `welcome` with its id and name.

mod support;

use serde::Deserialize;
use serde_json::json;
use shardcast::app::{Json, Reject, Server};

#[derive(Deserialize)]
struct Say {
    room: String,
    text: String,
}

#[derive(Deserialize)]
struct Whisper {
    to: String,
    text: String,
}

fn main() {
    let config = support::config_or_exit("chat");
    let started = Server::builder()
        .config(config)
        // Authentication: a name in the query string, or refuse (WebSocket close 4001,
        // TCP ERROR frame). TCP clients have no query: accept them as "anonymous".
        .middleware(|ctx| async move {
            let name = match ctx.request() {
                Some(_) => ctx.query("name").ok_or(Reject {
                    code: 4001,
                    reason: "add ?name=... to the URL".into(),
                })?,
                None => "anonymous".to_owned(),
            };
            ctx.set_meta("name", name);
            Ok(())
        })
        .on_connect(|ctx| async move {
            let name = ctx.meta("name").unwrap_or_default();
            let _ = ctx.emit_value(
                "welcome",
                &json!({"id": ctx.id().to_string(), "name": name}),
            );
            let _ = ctx.broadcast("joined", &Json::from_value(&json!({"name": name})));
        })
        .on_disconnect(|ctx| async move {
            let name = ctx.meta("name").unwrap_or_default();
            let _ = ctx
                .server()
                .broadcast("left", &Json::from_value(&json!({"name": name})), None);
        })
        .on("hello", |ctx, data| async move {
            if let Ok(name) = data.parse::<String>() {
                ctx.set_meta("name", name);
            }
        })
        .on("say", |ctx, data| async move {
            let Ok(say) = data.parse::<Say>() else { return };
            let name = ctx.meta("name").unwrap_or_default();
            let _ = ctx.to(&say.room).emit(
                "said",
                &Json::from_value(&json!({"from": name, "text": say.text})),
            );
        })
        .on("whisper", |ctx, data| async move {
            let Ok(w) = data.parse::<Whisper>() else {
                return;
            };
            let Some(to) = shardcast::app::ClientId::parse(w.to.as_bytes()) else {
                return;
            };
            let name = ctx.meta("name").unwrap_or_default();
            let _ = ctx.to_id(
                to,
                "whisper",
                &Json::from_value(&json!({"from": name, "text": w.text})),
            );
        })
        .on_ack("members", |ctx, _data| async move {
            Ok(Json::from_value(&ctx.rooms()))
        })
        .start();
    // Until SIGINT / SIGTERM.
    support::run("chat", started);
}
