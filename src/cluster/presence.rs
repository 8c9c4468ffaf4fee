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

    /// Sends the queued writes in one pipeline: per member an HSET / HDEL, per room and user
    /// only its last count of the batch, and an expiry only on a key this node just created
    /// (the refresh every TTL/3 keeps the others). On failure they are kept only as the
    /// mirror: the next [`Presence::rewrite`] (after a reconnect) writes everything again.
    pub(crate) async fn flush(&mut self, redis: &Client) -> Result<(), fred::error::Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.pending);
        // The last count of each room and user in this batch, and whether the key was new.
        let mut room_counts: HashMap<Arc<str>, (usize, bool)> = HashMap::new();
        let mut user_counts: HashMap<Arc<str>, (usize, bool)> = HashMap::new();
        let p = redis.pipeline();
        let ttl = self.key_ttl_ms();
        for op in ops {
            match op {
                Op::Member { room, client, user } => {
                    let key = self.members_key(&self.node, &room);
                    let value = user.as_deref().unwrap_or("").to_owned();
                    let _: () = p.hset(&key, (client.to_string(), value)).await?;
                }
                Op::Gone { room, client } => {
                    let key = self.members_key(&self.node, &room);
                    let _: () = p.hdel(&key, client.to_string()).await?;
                }
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
            if n == 0 {
                let _: () = p.hdel(&rooms_key, &*room).await?;
            } else {
                let _: () = p.hset(&rooms_key, (&*room, n as i64)).await?;
            }
            if new {
                let _: () = p
                    .pexpire(self.members_key(&self.node, &room), ttl, None)
                    .await?;
                let _: () = p.pexpire(&rooms_key, ttl, None).await?;
            }
        }
        let users_key = self.users_key(&self.node);
        for (user, (n, new)) in user_counts {
            if n == 0 {
                let _: () = p.hdel(&users_key, &*user).await?;
            } else {
                let _: () = p.hset(&users_key, (&*user, n as i64)).await?;
            }
            if new {
                let _: () = p.pexpire(&users_key, ttl, None).await?;
            }
        }
        let _: Vec<Value> = p.all().await?;
        Ok(())
    }

    /// Says the node is alive for another TTL and keeps its keys from expiring.
    pub(crate) async fn refresh(&mut self, redis: &Client) -> Result<(), fred::error::Error> {
        self.flush(redis).await?;
        let p = redis.pipeline();
        let ttl = self.key_ttl_ms();
        let until = (now_ms() + self.ttl.as_millis() as u64) as f64;
        let _: () = p
            .zadd(
                self.nodes_key(),
                None,
                None,
                false,
                false,
                (until, self.node.as_str()),
            )
            .await?;
        // Entries of nodes gone for a while.
        let _: () = p
            .zremrangebyscore(
                self.nodes_key(),
                f64::NEG_INFINITY,
                now_ms() as f64 - 60_000.0,
            )
            .await?;
        let _: () = p.pexpire(self.rooms_key(&self.node), ttl, None).await?;
        let _: () = p.pexpire(self.users_key(&self.node), ttl, None).await?;
        for room in self.rooms.keys() {
            let _: () = p
                .pexpire(self.members_key(&self.node, room), ttl, None)
                .await?;
        }
        let _: Vec<Value> = p.all().await?;
        Ok(())
    }

    /// Writes the whole state again (after connecting, when Redis may have lost it).
    pub(crate) async fn rewrite(&mut self, redis: &Client) -> Result<(), fred::error::Error> {
        self.pending.clear();
        let _: () = redis
            .del(vec![self.rooms_key(&self.node), self.users_key(&self.node)])
            .await?;
        for (room, members) in &self.rooms {
            let _: () = redis.del(self.members_key(&self.node, room)).await?;
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
        self.refresh(redis).await
    }

    /// Removes this node's entries (clean shutdown).
    pub(crate) async fn remove(&mut self, redis: &Client) -> Result<(), fred::error::Error> {
        let mut keys = vec![self.rooms_key(&self.node), self.users_key(&self.node)];
        keys.extend(self.rooms.keys().map(|r| self.members_key(&self.node, r)));
        let _: () = redis.del(keys).await?;
        let _: () = redis.zrem(self.nodes_key(), self.node.as_str()).await?;
        Ok(())
    }

    /// The other live nodes.
    async fn others(&self, redis: &Client) -> Result<Vec<String>, fred::error::Error> {
        let live: Vec<String> = redis
            .zrangebyscore(
                self.nodes_key(),
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
                    let counts: HashMap<String, i64> = redis.hgetall(self.rooms_key(node)).await?;
                    for (room, n) in counts {
                        *rooms.entry(room).or_insert(0) += n.max(0) as usize;
                    }
                }
                Ok(Answer::Rooms(rooms.into_iter().collect()))
            }
            super::Query::Members(room) => {
                let mut out = Vec::new();
                for node in &others {
                    let members: HashMap<String, String> =
                        redis.hgetall(self.members_key(node, room)).await?;
                    out.extend(members);
                }
                out.sort();
                Ok(Answer::Members(out))
            }
            super::Query::UserConnections(user) => {
                let mut total = 0usize;
                for node in &others {
                    let n: Option<i64> = redis.hget(self.users_key(node), &**user).await?;
                    total += n.unwrap_or(0).max(0) as usize;
                }
                Ok(Answer::Count(total))
            }
        }
    }
}
