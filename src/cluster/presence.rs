//! Presence across nodes: who is in which room, and how many connections a user has, on every
//! live node, kept in Redis so any node can answer for all of them (README "Cluster").
//!
//! Keys (`P` = `cluster.prefix`, `N` = a node id), each a single-key command, so they spread
//! over a Redis Cluster like the channels:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:nodes` | sorted set | node id → the time (ms since the epoch) its entries stop counting |
//! | `P:members:N:{room}` | hash | client id → user id (`""` without one) |
//! | `P:rooms:N` | hash | room → members on N |
//! | `P:users:N` | hash | user id → connections on N |
//!
//! A node refreshes its `P:nodes` score and its keys' expiry every `presence_ttl_ms / 3`.
//! Readers count only nodes whose score is in the future, so a node that crashed (or lost
//! Redis) drops out of every answer within `presence_ttl_ms`; its keys expire by themselves
//! soon after (2 × the TTL). A clean shutdown deletes them at once. After Redis restarts (and
//! loses everything) a node writes its whole state again on reconnect.
//!
//! Writes are mirrored from the bridge's own copy of the node's state (this file's
//! [`Presence`]), queued per change and sent as one pipeline per bridge turn.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface};
use fred::types::Value;

use super::Answer;
use crate::hub::id::ClientId;

/// One pending write.
enum Op {
    Member {
        room: Arc<str>,
        client: ClientId,
        user: Option<Arc<str>>,
    },
    Gone {
        room: Arc<str>,
        client: ClientId,
    },
    RoomCount(Arc<str>, usize),
    UserCount(Arc<str>, usize),
}

/// The node's presence, mirrored into Redis.
pub(crate) struct Presence {
    prefix: String,
    node: String,
    ttl: Duration,
    /// room → client → user.
    rooms: HashMap<Arc<str>, HashMap<ClientId, Option<Arc<str>>>>,
    /// user → connections on this node.
    users: HashMap<Arc<str>, usize>,
    pending: Vec<Op>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Presence {
    /// Presence of `node` under `prefix`, entries counting for `ttl` after each refresh.
    pub(crate) fn new(prefix: &str, node: &str, ttl: Duration) -> Presence {
        Presence {
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            ttl,
            rooms: HashMap::new(),
            users: HashMap::new(),
            pending: Vec::new(),
        }
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    fn members_key(&self, node: &str, room: &str) -> String {
        format!("{}:members:{node}:{room}", self.prefix)
    }
    fn rooms_key(&self, node: &str) -> String {
        format!("{}:rooms:{node}", self.prefix)
    }
    fn users_key(&self, node: &str) -> String {
        format!("{}:users:{node}", self.prefix)
    }
    fn key_ttl_ms(&self) -> i64 {
        2 * self.ttl.as_millis() as i64
    }

    /// How often to refresh.
    pub(crate) fn refresh_every(&self) -> Duration {
        self.ttl / 3
    }

    /// A client joined or left a room.
    pub(crate) fn member(
        &mut self,
        room: Arc<str>,
        client: ClientId,
        user: Option<Arc<str>>,
        add: bool,
    ) {
        let members = self.rooms.entry(room.clone()).or_default();
        if add {
            if members.insert(client, user.clone()).is_none() {
                let n = members.len();
                self.pending.push(Op::Member {
                    room: room.clone(),
                    client,
                    user,
                });
                self.pending.push(Op::RoomCount(room, n));
            }
        } else if members.remove(&client).is_some() {
            let n = members.len();
            if n == 0 {
                self.rooms.remove(&room);
            }
            self.pending.push(Op::Gone {
                room: room.clone(),
                client,
            });
            self.pending.push(Op::RoomCount(room, n));
        } else if members.is_empty() {
            self.rooms.remove(&room);
        }
    }

    /// A connection of `user` came (`add`) or went on this node.
    pub(crate) fn user(&mut self, user: Arc<str>, add: bool) {
        let n = {
            let n = self.users.entry(user.clone()).or_insert(0);
            if add {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
            }
            *n
        };
        if n == 0 {
            self.users.remove(&user);
        }
        self.pending.push(Op::UserCount(user, n));
    }

    /// Sends the queued writes in one pipeline, beside the bridge's loop (so a Redis slow to
    /// take writes never holds up joins or deliveries): per member an HSET / HDEL, per room
    /// and user only its last count of the batch, and an expiry only on a key this node just
    /// created (the refresh every TTL/3 keeps the others). Pipelines are spawned in order and
    /// reach Redis in order. A failed one is repaired by the rewrite after the reconnection
    /// that follows.
    pub(crate) fn flush(&mut self, redis: &Client) {
        if self.pending.is_empty() {
            return;
        }
        let ops = std::mem::take(&mut self.pending);
        // The last count of each room and user in this batch, and whether the key was new.
        let mut room_counts: HashMap<Arc<str>, (usize, bool)> = HashMap::new();
        let mut user_counts: HashMap<Arc<str>, (usize, bool)> = HashMap::new();
        let mut w = Vec::with_capacity(ops.len());
        let ttl = self.key_ttl_ms();
        for op in ops {
            match op {
                Op::Member { room, client, user } => w.push(Write::HSet(
                    self.members_key(&self.node, &room),
                    client.to_string(),
                    user.as_deref().unwrap_or("").to_owned(),
                )),
                Op::Gone { room, client } => w.push(Write::HDel(
                    self.members_key(&self.node, &room),
                    client.to_string(),
                )),
                Op::RoomCount(room, n) => {
                    let e = room_counts.entry(room).or_insert((n, false));
                    e.0 = n;
                    e.1 |= n == 1;
                }
                Op::UserCount(user, n) => {
                    let e = user_counts.entry(user).or_insert((n, false));
                    e.0 = n;
                    e.1 |= n == 1;
                }
            }
        }
        let rooms_key = self.rooms_key(&self.node);
        for (room, (n, new)) in room_counts {
            w.push(count_write(&rooms_key, &room, n));
            if new {
                w.push(Write::PExpire(self.members_key(&self.node, &room), ttl));
                w.push(Write::PExpire(rooms_key.clone(), ttl));
            }
        }
        let users_key = self.users_key(&self.node);
        for (user, (n, new)) in user_counts {
            w.push(count_write(&users_key, &user, n));
            if new {
                w.push(Write::PExpire(users_key.clone(), ttl));
            }
        }
        send(redis, w);
    }

    /// Says the node is alive for another TTL and keeps its keys from expiring (beside the
    /// loop, like [`Presence::flush`]).
    pub(crate) fn refresh(&mut self, redis: &Client) {
        self.flush(redis);
        let ttl = self.key_ttl_ms();
        let mut w = vec![
            Write::ZAdd(
                self.nodes_key(),
                self.node.clone(),
                (now_ms() + self.ttl.as_millis() as u64) as f64,
            ),
            // Entries of nodes gone for a while.
            Write::ZRemBelow(self.nodes_key(), now_ms() as f64 - 60_000.0),
            Write::PExpire(self.rooms_key(&self.node), ttl),
            Write::PExpire(self.users_key(&self.node), ttl),
        ];
        for room in self.rooms.keys() {
            w.push(Write::PExpire(self.members_key(&self.node, room), ttl));
        }
        send(redis, w);
    }

    /// Writes the whole state again (after connecting, when Redis may have lost it).
    pub(crate) fn rewrite(&mut self, redis: &Client) {
        self.pending.clear();
        let mut w = vec![
            Write::Del(self.rooms_key(&self.node)),
            Write::Del(self.users_key(&self.node)),
        ];
        for (room, members) in &self.rooms {
            w.push(Write::Del(self.members_key(&self.node, room)));
            for (client, user) in members {
                self.pending.push(Op::Member {
                    room: room.clone(),
                    client: *client,
                    user: user.clone(),
                });
            }
            self.pending
                .push(Op::RoomCount(room.clone(), members.len()));
        }
        for (user, n) in &self.users {
            self.pending.push(Op::UserCount(user.clone(), *n));
        }
        send(redis, w);
        self.refresh(redis);
    }

    /// Removes this node's entries (clean shutdown).
    pub(crate) async fn remove(&mut self, redis: &Client) -> Result<(), fred::error::Error> {
        let mut keys = vec![self.rooms_key(&self.node), self.users_key(&self.node)];
        keys.extend(self.rooms.keys().map(|r| self.members_key(&self.node, r)));
        let _: () = redis.del(keys).await?;
        let _: () = redis.zrem(self.nodes_key(), self.node.as_str()).await?;
        Ok(())
    }

    /// Whether this node id is already counted live (another node with the same id, or this
    /// node restarted within the TTL): asked once, at the first connection.
    pub(crate) async fn id_in_use(&self, redis: &Client) -> bool {
        let score: Result<Option<f64>, _> =
            redis.zscore(self.nodes_key(), self.node.as_str()).await;
        matches!(score, Ok(Some(until)) if until > now_ms() as f64)
    }

    /// What a reader needs, to answer beside the loop.
    pub(crate) fn reader(&self) -> Reader {
        Reader {
            prefix: self.prefix.clone(),
            node: self.node.clone(),
        }
    }
}

/// One write of presence.
enum Write {
    HSet(String, String, String),
    HDel(String, String),
    PExpire(String, i64),
    Del(String),
    ZAdd(String, String, f64),
    ZRemBelow(String, f64),
}

fn count_write(key: &str, field: &str, n: usize) -> Write {
    if n == 0 {
        Write::HDel(key.to_owned(), field.to_owned())
    } else {
        Write::HSet(key.to_owned(), field.to_owned(), n.to_string())
    }
}

/// Sends `writes` in one pipeline from a task of its own.
fn send(redis: &Client, writes: Vec<Write>) {
    if writes.is_empty() {
        return;
    }
    let p = redis.pipeline();
    tokio::spawn(async move {
        let queued: Result<(), fred::error::Error> = async {
            for w in writes {
                match w {
                    Write::HSet(k, f, v) => p.hset::<(), _, _>(k, (f, v)).await?,
                    Write::HDel(k, f) => p.hdel::<(), _, _>(k, f).await?,
                    Write::PExpire(k, ms) => p.pexpire::<(), _>(k, ms, None).await?,
                    Write::Del(k) => p.del::<(), _>(k).await?,
                    Write::ZAdd(k, m, score) => {
                        p.zadd::<(), _, _>(k, None, None, false, false, (score, m))
                            .await?
                    }
                    Write::ZRemBelow(k, max) => {
                        p.zremrangebyscore::<(), _, _, _>(k, f64::NEG_INFINITY, max)
                            .await?
                    }
                }
            }
            let _: Vec<Value> = p.all().await?;
            Ok(())
        }
        .await;
        if let Err(e) = queued {
            tracing::debug!(error = %e, "cluster: presence write failed");
        }
    });
}

/// Answers presence questions about the other live nodes (from a task beside the loop).
pub(crate) struct Reader {
    prefix: String,
    node: String,
}

impl Reader {
    fn key(&self, kind: &str, node: &str) -> String {
        format!("{}:{kind}:{node}", self.prefix)
    }

    /// The other live nodes.
    async fn others(&self, redis: &Client) -> Result<Vec<String>, fred::error::Error> {
        let live: Vec<String> = redis
            .zrangebyscore(
                format!("{}:nodes", self.prefix),
                now_ms() as f64,
                f64::INFINITY,
                false,
                None,
            )
            .await?;
        Ok(live.into_iter().filter(|n| *n != self.node).collect())
    }

    /// Answers a question about the other live nodes.
    pub(crate) async fn answer(
        &self,
        redis: &Client,
        query: &super::Query,
    ) -> Result<Answer, fred::error::Error> {
        let others = self.others(redis).await?;
        match query {
            super::Query::Rooms => {
                let mut rooms: HashMap<String, usize> = HashMap::new();
                for node in &others {
                    let counts: HashMap<String, i64> =
                        redis.hgetall(self.key("rooms", node)).await?;
                    for (room, n) in counts {
                        *rooms.entry(room).or_insert(0) += n.max(0) as usize;
                    }
                }
                Ok(Answer::Rooms(rooms.into_iter().collect()))
            }
            super::Query::Members(room) => {
                let mut out = Vec::new();
                for node in &others {
                    let members: HashMap<String, String> = redis
                        .hgetall(format!("{}:members:{node}:{room}", self.prefix))
                        .await?;
                    out.extend(members);
                }
                out.sort();
                Ok(Answer::Members(out))
            }
            super::Query::UserConnections(user) => {
                let mut total = 0usize;
                for node in &others {
                    let n: Option<i64> = redis.hget(self.key("users", node), &**user).await?;
                    total += n.unwrap_or(0).max(0) as usize;
                }
                Ok(Answer::Count(total))
            }
        }
    }
}
