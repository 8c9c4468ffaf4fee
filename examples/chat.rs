//! A chat server on the shardcast library API — copy it as a starting point.
//!
//! Run: `cargo run --release --example chat` (WebSocket on 3000, stelar TCP on 3001).
//!
//! - Clients connect with `?name=alice` (WebSocket) or send `{"event":"hello","data":"alice"}`;
//!   connections without a name are refused by the middleware (close 4001).
//! - `join-room` / `leave-room` are built in. `say` sends `{"room","text"}` to the room's
//!   other members as `said` with the speaker's name; `whisper` sends `{"to": id, "text"}`.
//! - The ACK `members` answers with the rooms the caller is in.
//! - Everyone is told when someone connects (`joined`) and leaves (`left`).

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
    let result = Server::builder()
        .configure(|c| c.port = 3000)
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
        .run();
    if let Err(e) = result {
        eprintln!("chat: {e}");
        std::process::exit(1);
    }
}
