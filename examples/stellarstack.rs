//! A StellarStack-style backend on the shardcast library API: StellarStack's WebSocket
//! clients (`{"type": ...}` messages, seed 002) connect to `/api/ws` unchanged.
//!
//! Run: `cargo run --example stellarstack -- --port 3001` (also `--host ADDR`,
//! `--config FILE`, as in `examples/chat.rs`). It prints the `shardcast listening ...` line.
//!
//! - **Sessions.** Clients authenticate with a session token: a `{"type":"auth","token":T}`
//!   message, or the token on the upgrade request (`Authorization: Bearer T`, `?token=T`, or
//!   the cookie `better-auth.session_token=T`). The `authenticate` hook below looks the token
//!   up in a session table (a stand-in for your session store) and answers with the user id:
//!   `{"type":"auth_success","userId":"user_123"}`, or `auth_error` for an unknown token.
//!   Tokens: `session_token_abc123` (user_123, owns srv_abc123), `session_token_def456`
//!   (user_456, owns srv_def456 and srv_ghi789).
//! - **Subscriptions.** `{"type":"subscribe","serverId":S}` joins room S; a user may subscribe
//!   only to the servers it owns (others get `{"type":"error","error":"Not allowed to
//!   subscribe to S"}`).
//! - **Sync.** Every 5 s each server with subscribers gets one `server:sync` push with its
//!   complete state (the doc's data shape), published to its room through the library API;
//!   the servers are read in one batch per tick, as the doc describes.
//! - **Power.** A message type of this app: `{"type":"power","serverId":S,"action":A}` with
//!   A = `start`, `stop` or `restart` changes the server's status (owner only); the caller
//!   gets `{"type":"power","data":{"serverId":S,"status":...}}` and the next sync shows it.
//!
//! Try it with a stock client (Python `websockets`' interactive client):
//!
//! ```text
//! python -m websockets ws://127.0.0.1:3001/api/ws
//! > {"type":"auth","token":"session_token_abc123"}
//! < {"type":"auth_success","userId":"user_123"}
//! > {"type":"subscribe","serverId":"srv_abc123"}
//! < {"type":"subscribed","serverId":"srv_abc123"}
//! > {"type":"ping"}
//! < {"type":"pong"}
//! < {"type":"server:sync","serverId":"srv_abc123","data":{"id":"srv_abc123",...}}
//! > {"type":"power","serverId":"srv_abc123","action":"stop"}
//! ```
//!
//! or from a browser console, as in StellarStack's own documentation:
//!
//! ```js
//! const ws = new WebSocket('ws://127.0.0.1:3001/api/ws');
//! ws.onopen = () => ws.send(JSON.stringify({type: 'auth', token: 'session_token_abc123'}));
//! ws.onmessage = (e) => {
//!   const m = JSON.parse(e.data); console.log(m);
//!   if (m.type === 'auth_success') ws.send(JSON.stringify({type: 'subscribe', serverId: 'srv_abc123'}));
//! };
//! ```
//!
//! Another process can push too, over the HTTP API (with an `api_key` in the `--config`
//! file): `POST /api/publish {"room":"srv_abc123","event":"server:sync","data":{...}}`
//! reaches the subscribers in the same shape.

mod support;

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};
use shardcast::app::{AuthReject, ClientId, Context, Identity, Json, Server};
use shardcast::dialect::iso_utc;

/// How often subscribers get `server:sync` (the doc's period).
const SYNC_INTERVAL: Duration = Duration::from_secs(5);
/// The WebSocket path StellarStack's clients connect to.
const PATH: &str = "/api/ws";

/// Session token -> user id: a stand-in for the session store.
const SESSIONS: &[(&str, &str)] = &[
    ("session_token_abc123", "user_123"),
    ("session_token_def456", "user_456"),
];

/// One game server, as the "database" keeps it.
struct GameServer {
    id: &'static str,
    name: &'static str,
    owner: &'static str,
    node: &'static str,
    port: u16,
}

const SERVERS: &[GameServer] = &[
    GameServer {
        id: "srv_abc123",
        name: "my-server",
        owner: "user_123",
        node: "US-East-1",
        port: 25565,
    },
    GameServer {
        id: "srv_def456",
        name: "survival",
        owner: "user_456",
        node: "US-East-1",
        port: 25566,
    },
    GameServer {
        id: "srv_ghi789",
        name: "creative",
        owner: "user_456",
        node: "EU-West-1",
        port: 25567,
    },
];

/// What changes at run time: each server's status and when it last changed (ms).
static STATUS: LazyLock<Mutex<HashMap<&'static str, (&'static str, u64)>>> = LazyLock::new(|| {
    let now = now_ms();
    Mutex::new(SERVERS.iter().map(|s| (s.id, ("running", now))).collect())
});

/// Who is subscribed to which server, and which shard pushes its syncs. A room is pushed by
/// one shard only (the one its first subscriber came to): a publish from any shard reaches
/// the room's members on every shard.
static SUBSCRIPTIONS: LazyLock<Mutex<HashMap<String, Subscribed>>> = LazyLock::new(Mutex::default);

struct Subscribed {
    clients: HashSet<ClientId>,
    pusher: u16,
}

thread_local! {
    /// Whether this shard's sync loop runs.
    static PUSHING: Cell<bool> = const { Cell::new(false) };
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The complete state of the servers `ids`, read in one batch (the doc's `server:sync`
/// data: the server, its node, allocations and blueprint).
fn fetch_servers(ids: &[String]) -> Vec<(String, Value)> {
    let status = STATUS.lock().unwrap();
    ids.iter()
        .filter_map(|id| SERVERS.iter().find(|s| s.id == id))
        .map(|s| {
            let (state, changed) = status.get(s.id).copied().unwrap_or(("running", 0));
            let short = s.id.trim_start_matches("srv_");
            let node_id = format!("node_{}", s.node.to_lowercase().replace('-', ""));
            let data = json!({
                "id": s.id,
                "shortId": short,
                "name": s.name,
                "status": state,
                "suspended": false,
                "containerId": format!("container_{short}"),
                "memory": 2048,
                "disk": 10240,
                "cpu": 100,
                "cpuPinning": null,
                "swap": 0,
                "oomKillDisable": false,
                "backupLimit": 5,
                "nodeId": node_id,
                "blueprintId": "bp_789",
                "ownerId": s.owner,
                "createdAt": "2026-03-01T12:00:00.000Z",
                "updatedAt": iso_utc(changed),
                "node": {
                    "id": node_id,
                    "shortId": node_id.trim_start_matches("node_"),
                    "displayName": s.node,
                    "host": "node1.example.com",
                    "port": 443,
                    "protocol": "https",
                    "sftpPort": 2022,
                    "isOnline": true,
                    "fqdn": "node1.example.com",
                    "daemonPort": 8080,
                    "location": {"id": "loc_123", "name": s.node}
                },
                "allocations": [
                    {"id": format!("alloc_{short}"), "ip": "0.0.0.0", "port": s.port, "isPrimary": true}
                ],
                "blueprint": {"id": "bp_789", "name": "Minecraft Java"}
            });
            (s.id.to_owned(), data)
        })
        .collect()
}

/// A client joined `room`: note it, and make sure some shard pushes the room's syncs.
fn subscribed(ctx: &Context, room: &str) -> bool {
    if !room.starts_with("srv_") {
        return true;
    }
    let shard = ctx.id().location().shard;
    let mut subs = SUBSCRIPTIONS.lock().unwrap();
    let entry = subs.entry(room.to_owned()).or_insert_with(|| Subscribed {
        clients: HashSet::new(),
        pusher: shard,
    });
    entry.clients.insert(ctx.id());
    let ours = entry.pusher == shard;
    drop(subs);
    if ours && !PUSHING.get() {
        PUSHING.set(true);
        // The loop needs this shard's messaging handle; any client's context gives it
        // (`ctx.server()` sends server-wide, whoever the client was).
        glommio::spawn_local(push_syncs(ctx.clone(), shard)).detach();
    }
    true
}

/// A client left `room` (or disconnected): forget it; a room nobody follows is not pushed.
fn unsubscribed(ctx: &Context, room: &str) {
    let mut subs = SUBSCRIPTIONS.lock().unwrap();
    if let Some(entry) = subs.get_mut(room) {
        entry.clients.remove(&ctx.id());
        if entry.clients.is_empty() {
            subs.remove(room);
        }
    }
}

/// This shard's sync loop: every [`SYNC_INTERVAL`], one batch read of the servers it pushes,
/// then one room publish per server.
async fn push_syncs(handle: Context, shard: u16) {
    loop {
        glommio::timer::sleep(SYNC_INTERVAL).await;
        let rooms: Vec<String> = SUBSCRIPTIONS
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.pusher == shard)
            .map(|(room, _)| room.clone())
            .collect();
        if rooms.is_empty() {
            continue;
        }
        for (room, state) in fetch_servers(&rooms) {
            let _ = handle
                .server()
                .to(&room)
                .emit("server:sync", &Json::from_value(&state));
        }
    }
}

/// `{"type":"power","serverId":S,"action":A}` (the handler gets the whole message).
#[derive(Deserialize)]
struct Power {
    #[serde(rename = "serverId")]
    server_id: String,
    action: String,
}

async fn power(ctx: Context, msg: Power) {
    let user = ctx.user().unwrap_or_default();
    let Some(server) = SERVERS
        .iter()
        .find(|s| s.id == msg.server_id && s.owner == user)
    else {
        let _ = ctx.emit_value(
            "power",
            &json!({"serverId": msg.server_id, "error": "no such server"}),
        );
        return;
    };
    let status = match msg.action.as_str() {
        "start" | "restart" => "running",
        "stop" => "stopped",
        _ => {
            let _ = ctx.emit_value(
                "power",
                &json!({"serverId": server.id, "error": "action must be start, stop or restart"}),
            );
            return;
        }
    };
    STATUS.lock().unwrap().insert(server.id, (status, now_ms()));
    let _ = ctx.emit_value("power", &json!({"serverId": server.id, "status": status}));
}

fn main() {
    let config = support::config_or_exit("stellarstack");
    let started = Server::builder()
        .config(config)
        .dialect(PATH, "stellarstack")
        // The session token (from the `auth` message or the upgrade request) -> the user.
        // The identity's rooms are the servers the user owns: `subscribe` to any other is
        // refused with "Not allowed to subscribe to S".
        .authenticate(|_ctx, token| async move {
            let token = token.ok_or(AuthReject::new("Missing session token"))?;
            let user = SESSIONS
                .iter()
                .find(|(t, _)| *t == token)
                .map(|(_, user)| *user)
                .ok_or(AuthReject::new("Invalid or expired session"))?;
            let owned = SERVERS.iter().filter(|s| s.owner == user).map(|s| s.id);
            Ok(Identity::user(user).rooms(owned))
        })
        .on_join(subscribed)
        .on_leave(unsubscribed)
        .on("power", |ctx, data| async move {
            match data.parse::<Power>() {
                Ok(msg) => power(ctx, msg).await,
                Err(e) => {
                    let _ = ctx.emit_value("power", &json!({"error": e.to_string()}));
                }
            }
        })
        .start();
    // Until SIGINT / SIGTERM.
    support::run("stellarstack", started);
}
