//! The production parts together against the real binary (issue 9): users come from JWTs,
//! the per-user cap refuses the next connection with 4003, the API reaches and disconnects a
//! user's connections, and SIGHUP rotates the JWT secret and the API key while connected
//! clients stay.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const OLD_SECRET: &str = "production-old-secret-0123456789abcdef";
const NEW_SECRET: &str = "production-new-secret-0123456789abcdef";

fn token(secret: &str, sub: &str) -> String {
    hs256_token(secret, sub, json!({}))
}

fn config(secret: &str, key: &str) -> String {
    format!(
        "log = \"info\"\napi_keys = [\"{key}\"]\n[auth]\nmode = \"required\"\njwt_secret = \"{secret}\"\n\
         [limits]\nmax_connections_per_user = 2\n"
    )
}

async fn connect(url: &str, token: &str) -> Ws {
    Ws::connect_bearer(url, token).await
}

async fn auth_ok(ws: &mut Ws, user: &str) {
    let v = ws.recv().await;
    assert_eq!(v["event"], "auth-ok", "{v}");
    assert_eq!(v["data"]["user"], user, "{v}");
}

async fn close_of(ws: &mut Ws) -> (u16, String) {
    ws.close_frame().await
}

fn bearer(key: &str) -> [(&'static str, String); 1] {
    [("Authorization", format!("Bearer {key}"))]
}

async fn api(server: &ServerProc, path: &str, key: &str, body: &str) -> (u16, Value) {
    let h = bearer(key);
    let headers: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, text) = http(server.ws, "POST", path, &headers, body).await;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_users_are_capped_reached_disconnected_and_keys_rotate_on_sighup() {
    let path =
        std::env::temp_dir().join(format!("shardcast-production-{}.toml", std::process::id()));
    std::fs::write(&path, config(OLD_SECRET, "old-api-key-0001")).unwrap();
    let path_s = path.to_str().unwrap().to_owned();
    let server = ServerProc::start_with(&["--config", &path_s, "--shards", "2"], |cmd| {
        cmd.env_remove("SHARDCAST_LOG");
    });
    let url = server.ws_url("/");

    // Two connections of alice (the cap), the third refused with 4003.
    let mut a = connect(&url, &token(OLD_SECRET, "alice")).await;
    auth_ok(&mut a, "alice").await;
    let mut b = connect(&url, &token(OLD_SECRET, "alice")).await;
    auth_ok(&mut b, "alice").await;
    let mut third = connect(&url, &token(OLD_SECRET, "alice")).await;
    let (code, reason) = close_of(&mut third).await;
    assert_eq!(code, 4003, "{reason}");
    assert!(reason.contains("too many connections"), "{reason}");

    // The API reaches both, wherever they are.
    let send = r#"{"user":"alice","event":"news","data":1}"#;
    let (status, v) = api(&server, "/api/send", "old-api-key-0001", send).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["delivered"], 2, "{v}");
    for ws in [&mut a, &mut b] {
        assert_eq!(ws.recv().await, json!({"event": "news", "data": 1}));
    }

    // Rotate the JWT secret and the API key; the clients stay connected.
    std::fs::write(&path, config(NEW_SECRET, "new-api-key-0002")).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) }, 0);
    let line = server.expect_output("configuration reloaded");
    assert!(
        !line.contains(NEW_SECRET),
        "secrets stay out of the log: {line}"
    );
    let (status, v) = api(&server, "/api/send", "old-api-key-0001", send).await;
    assert_eq!(status, 401, "the old API key is gone: {v}");
    let (status, v) = api(&server, "/api/send", "new-api-key-0002", send).await;
    assert_eq!(status, 202, "{v}");
    for ws in [&mut a, &mut b] {
        assert_eq!(ws.recv().await, json!({"event": "news", "data": 1}));
    }
    // A token signed with the old secret is refused now; one with the new secret is let in
    // (bob: alice is at her cap).
    let mut stale = connect(&url, &token(OLD_SECRET, "bob")).await;
    assert_eq!(close_of(&mut stale).await.0, 4003);
    let mut bob = connect(&url, &token(NEW_SECRET, "bob")).await;
    auth_ok(&mut bob, "bob").await;

    // Disconnect alice everywhere; her places are free again.
    let (status, v) = api(
        &server,
        "/api/disconnect",
        "new-api-key-0002",
        r#"{"user":"alice","code":4010,"reason":"bye"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["disconnected"], 2, "{v}");
    for ws in [&mut a, &mut b] {
        assert_eq!(close_of(ws).await, (4010, "bye".to_owned()));
    }
    drop((a, b));
    // Her places are released as her connections end: each try is answered (4003 while
    // they are still closing), the loop ends at the first welcome.
    within("alice is let back in", async {
        loop {
            let mut again = connect(&url, &token(NEW_SECRET, "alice")).await;
            let v = again.inner.next().await;
            match v {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(v["event"], "auth-ok", "{v}");
                    return;
                }
                Some(Ok(Message::Close(Some(f)))) if u16::from(f.code) == 4003 => continue,
                other => panic!("expected auth-ok or 4003, got {other:?}"),
            }
        }
    })
    .await;
    let _ = std::fs::remove_file(&path);
}
