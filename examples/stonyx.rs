//! A @stonyx/sockets-style server on the shardcast library API: stonyx clients
//! (`{"request":R,"data":D}` -> `{"request":R,"response":X}`, seed 004) connect to `/`
//! unchanged, with encryption off (`SOCKET_ENCRYPTION=false`; put the server behind wss://,
//! README "Dialects").
//!
//! Run: `cargo run --example stonyx -- --port 2667` (also `--host ADDR`, `--config FILE`, as
//! in `examples/chat.rs`). It prints the `shardcast listening ...` line. The shared key is
//! `SOCKET_AUTH_KEY` (default `AUTH_KEY`, stonyx' own default).
//!
//! Each request is answered by the handler of its name, and **the handler's return value is
//! the response** (`null`: no response):
//!
//! - `auth` (the mandatory handler): `{"authKey":K}` (and optionally `"user":U`) ->
//!   `"success"`; a wrong key returns `false`, which closes the connection with 4003.
//! - `version` skips auth (`.skip_auth()`): it answers before `auth` too.
//! - `scanGames` -> the list of games; `validateGame` `{"game":G}` -> `true` / `false`;
//!   `sum` `[1,2,3]` -> `6`.
//! - `announce` `{"msg":M}` -> no response; every authenticated client receives
//!   `{"request":"announcement","data":{"msg":M}}` (stonyx' `server.broadcast`).
//! - `heartBeat` is built in (`true`). Any other request before `auth` closes the
//!   connection with 4003 "Authentication required", as stonyx does.
//!
//! Try it with a stock client (Python `websockets`' interactive client):
//!
//! ```text
//! python -m websockets ws://127.0.0.1:2667/
//! > {"request":"version"}
//! < {"request":"version","response":{"name":"shardcast-stonyx-example","version":"0.1.0"}}
//! > {"request":"auth","data":{"authKey":"AUTH_KEY"}}
//! < {"request":"auth","response":"success"}
//! > {"request":"sum","data":[1,2,3]}
//! < {"request":"sum","response":6}
//! > {"request":"announce","data":{"msg":"shutdown in 5m"}}
//! < {"request":"announcement","data":{"msg":"shutdown in 5m"}}
//! ```
//!
//! or a stonyx client: `SOCKET_ADDRESS=ws://127.0.0.1:2667 SOCKET_ENCRYPTION=false`.

mod support;

use serde::Deserialize;
use serde_json::json;
use shardcast::app::{AckError, Json, Server};
use subtle::ConstantTimeEq;

/// The path stonyx clients connect to (they dial the server's address as is).
const PATH: &str = "/";

const GAMES: &[&str] = &["chess", "go", "checkers"];

#[derive(Deserialize)]
struct Auth {
    #[serde(rename = "authKey")]
    auth_key: String,
    user: Option<String>,
}

#[derive(Deserialize)]
struct Game {
    game: String,
}

fn main() {
    let config = support::config_or_exit("stonyx");
    let key = std::env::var("SOCKET_AUTH_KEY").unwrap_or_else(|_| "AUTH_KEY".into());
    let started = Server::builder()
        .config(config)
        .dialect(PATH, "stonyx")
        // The mandatory auth handler: a result other than null / false authenticates the
        // client and is the response; false closes the connection with 4003.
        .on_request("auth", move |ctx, data| {
            let key = key.clone();
            async move {
                let Ok(auth) = data.parse::<Auth>() else {
                    return Ok(Json::from_value(&false));
                };
                if !bool::from(auth.auth_key.as_bytes().ct_eq(key.as_bytes())) {
                    return Ok(Json::from_value(&false));
                }
                if let Some(user) = auth.user {
                    // The user then receives what is sent to it (`ctx.to_user`, the API).
                    ctx.set_user(&user)
                        .map_err(|e| AckError::new("forbidden", e.to_string()))?;
                }
                Ok(Json::string("success"))
            }
        })
        .on_request("version", |_ctx, _data| async move {
            Ok(Json::from_value(&json!({
                "name": "shardcast-stonyx-example",
                "version": env!("CARGO_PKG_VERSION"),
            })))
        })
        .skip_auth()
        .on_request("scanGames", |_ctx, _data| async move {
            Ok(Json::from_value(GAMES))
        })
        .on_request("validateGame", |_ctx, data| async move {
            let game = data.parse::<Game>()?;
            Ok(Json::from_value(&GAMES.contains(&game.game.as_str())))
        })
        .on_request("sum", |_ctx, data| async move {
            let numbers = data.parse::<Vec<i64>>()?;
            let sum = numbers
                .iter()
                .try_fold(0i64, |sum, n| sum.checked_add(*n))
                .ok_or(AckError::new("invalid_data", "the sum overflows"))?;
            Ok(Json::from_value(&sum))
        })
        .on_request("announce", |ctx, data| async move {
            let msg = data
                .to_json()
                .ok_or(AckError::new("invalid_data", "announce needs data"))?;
            let _ = ctx.server().broadcast("announcement", &msg, None);
            Ok(Json::null())
        })
        .start();
    // Until SIGINT / SIGTERM.
    support::run("stonyx", started);
}
