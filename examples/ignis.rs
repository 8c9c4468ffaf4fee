//! An ignis-style server on the shardcast library API: clients of ignis'
//! `WebSocketServerHelper` (the `{"event","data"}` envelope with `authenticate`, seed 003)
//! connect to `/ws` unchanged.
//!
//! Run: `cargo run --example ignis -- --port 3000` (also `--host ADDR`, `--config FILE`, as
//! in `examples/chat.rs`). It prints the `shardcast listening ...` line.
//!
//! - **Auth function.** A client sends `{"event":"authenticate","data":{"token":T}}` within
//!   `auth.timeout_ms` (else close 4001). The `authenticate` hook below maps the token to a
//!   user (a stand-in for your user store: `alice-token` = alice, an admin; `bob-token` = bob;
//!   `carol-token` = carol); the client gets `{"event":"connected","data":{"id":ID,
//!   "userId":U,"time":...}}`, or `error` and close 4003 for an unknown token.
//! - **Default rooms.** After authentication every client is in `ws-default`,
//!   `ws-notification` and `lobby` (this route's `default_rooms`), and in the room named by its
//!   own client id. `{"event":"join","data":{"rooms":[...]}}` / `leave` change rooms.
//! - **Messages.** `{"event":"chat","data":{"room":R,"text":T}}` reaches the room's other
//!   members as `chat` with the sender's user and e-mail; `{"event":"dm","data":{"to":U,
//!   "text":T}}` reaches every connection of user U (send-to-user, on whichever shard);
//!   an admin's `{"event":"announce","data":{"text":T}}` reaches everyone in
//!   `ws-notification` as `notification`.
//! - **Outbound transformer.** Runs per recipient for every event to an ignis client: `chat`
//!   reaches admins unchanged (the encode-once path) and everyone else without the sender's
//!   e-mail address.
//!
//! Try it with a stock client (Python `websockets`' interactive client), in two terminals:
//!
//! ```text
//! python -m websockets ws://127.0.0.1:3000/ws
//! > {"event":"authenticate","data":{"token":"alice-token"}}
//! < {"event":"connected","data":{"id":"...","userId":"alice","time":"..."}}
//!
//! python -m websockets ws://127.0.0.1:3000/ws
//! > {"event":"authenticate","data":{"token":"bob-token"}}
//! > {"event":"chat","data":{"room":"lobby","text":"hi"}}
//! > {"event":"dm","data":{"to":"alice","text":"psst"}}
//! # alice's terminal shows
//! < {"event":"chat","data":{"room":"lobby","from":"bob","email":"bob@example.com","text":"hi"}}
//! < {"event":"dm","data":{"from":"bob","text":"psst"}}
//! ```
//!
//! or ignis' own client code in a browser console:
//!
//! ```js
//! const ws = new WebSocket('ws://127.0.0.1:3000/ws');
//! ws.onopen = () => ws.send(JSON.stringify({event: 'authenticate', data: {token: 'bob-token'}}));
//! ws.onmessage = (e) => console.log(JSON.parse(e.data));
//! setInterval(() => ws.send(JSON.stringify({event: 'heartbeat'})), 30000);
//! ```

mod support;

use serde::Deserialize;
use serde_json::{json, Value};
use shardcast::app::{AuthReject, Context, Identity, Json, Server};
use shardcast::config::DialectRoute;
use shardcast::dialect::Transforming;

/// The WebSocket path ignis clients connect to (ignis' default).
const PATH: &str = "/ws";
/// Rooms every authenticated client joins (ignis' two defaults, and this app's lobby).
const DEFAULT_ROOMS: &[&str] = &["ws-default", "ws-notification", "lobby"];

/// A user, as the user store keeps it.
struct User {
    token: &'static str,
    id: &'static str,
    email: &'static str,
    admin: bool,
}

const USERS: &[User] = &[
    User {
        token: "alice-token",
        id: "alice",
        email: "alice@example.com",
        admin: true,
    },
    User {
        token: "bob-token",
        id: "bob",
        email: "bob@example.com",
        admin: false,
    },
    User {
        token: "carol-token",
        id: "carol",
        email: "carol@example.com",
        admin: false,
    },
];

fn user(id: &str) -> Option<&'static User> {
    USERS.iter().find(|u| u.id == id)
}

#[derive(Deserialize)]
struct Chat {
    room: String,
    text: String,
}

#[derive(Deserialize)]
struct Dm {
    to: String,
    text: String,
}

#[derive(Deserialize)]
struct Announce {
    text: String,
}

/// The sender's user record (every client here has one: authentication is required).
fn sender(ctx: &Context) -> Option<&'static User> {
    user(&ctx.user()?)
}

/// The outbound transformer: `chat` without the sender's e-mail for non-admins. `None`
/// leaves the message as it is, so admins share one encoded frame.
fn redact(out: &Transforming<'_>) -> Option<(String, Json)> {
    if out.event != "chat" || out.user.and_then(user).is_some_and(|u| u.admin) {
        return None;
    }
    let mut data: Value = serde_json::from_slice(out.data?).ok()?;
    data.as_object_mut()?.remove("email")?;
    Some((out.event.to_owned(), Json::from_value(&data)))
}

fn main() {
    let config = support::config_or_exit("ignis");
    let started = Server::builder()
        .config(config)
        // The route with its default rooms (TOML: `[[dialect]] path = "/ws" name = "ignis"
        // default_rooms = [...]`).
        .configure(|c| {
            c.dialects.push(DialectRoute {
                path: PATH.into(),
                name: "ignis".into(),
                default_rooms: Some(DEFAULT_ROOMS.iter().map(|r| r.to_string()).collect()),
            })
        })
        // The auth function: the token from `authenticate` -> the user.
        .authenticate(|_ctx, token| async move {
            let token = token.ok_or(AuthReject::new("Missing token"))?;
            let user = USERS
                .iter()
                .find(|u| u.token == token)
                .ok_or(AuthReject::new("Invalid token"))?;
            Ok(Identity::user(user.id))
        })
        .transform(redact)
        .on("chat", |ctx, data| async move {
            let (Ok(chat), Some(me)) = (data.parse::<Chat>(), sender(&ctx)) else {
                return;
            };
            if !ctx.rooms().contains(&chat.room) {
                let _ = ctx.emit_value("chat:refused", &json!({"room": chat.room}));
                return;
            }
            let msg =
                json!({"room": chat.room, "from": me.id, "email": me.email, "text": chat.text});
            let _ = ctx.to(&chat.room).emit("chat", &Json::from_value(&msg));
        })
        .on("dm", |ctx, data| async move {
            let (Ok(dm), Some(me)) = (data.parse::<Dm>(), sender(&ctx)) else {
                return;
            };
            let msg = json!({"from": me.id, "text": dm.text});
            let _ = ctx.to_user(&dm.to).emit("dm", &Json::from_value(&msg));
        })
        .on("announce", |ctx, data| async move {
            let (Ok(a), Some(me)) = (data.parse::<Announce>(), sender(&ctx)) else {
                return;
            };
            if me.admin {
                let msg = json!({"from": me.id, "text": a.text});
                let _ = ctx
                    .server()
                    .to("ws-notification")
                    .emit("notification", &Json::from_value(&msg));
            }
        })
        .start();
    // Until SIGINT / SIGTERM.
    support::run("ignis", started);
}
