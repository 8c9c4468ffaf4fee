//! The bridge thread: the node's one link to Redis (see `mod.rs` for the design).
//!
//! One thread, one current-thread tokio runtime, two fred clients: `sub` holds the
//! subscriptions (sharded channels, plus ignis' classic channels and patterns when
//! configured), `redis` publishes and keeps presence. One loop owns all state and waits on:
//! the shards' [`Control`] messages, the queue of messages to publish, what Redis delivers, and
//! a tick that checks the connections and refreshes presence. Nothing here blocks a shard; the
//! bridge itself may wait (briefly) for a full shard inbox, which slows its reading from Redis
//! — Redis then buffers, up to its `client-output-buffer-limit` for pub/sub, and cuts the
//! subscriber off beyond it (counted as a reconnect; what was lost then is not counted here).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::config::{Config as FredConfig, ReconnectPolicy};
use fred::types::{Builder as FredBuilder, Message, Value};
use shardcast_shards::MeshSender;
use tokio::sync::broadcast::error::RecvError;

use super::envelope::{self, Channel, Channels};
use super::presence::Presence;
use super::{Answer, Cluster, Control, Lost, Outbound, Receivers, Target};
use crate::config;
use crate::hub::id::ClientId;
use crate::hub::outgoing::Outgoing;
use crate::hub::rooms::ShardSet;
use crate::hub::{Reply, ShardMsg};

/// How long the bridge waits for a full shard inbox before dropping (and counting) a message.
const INBOX_WAIT: Duration = Duration::from_millis(100);
/// How often the connections are checked.
const TICK: Duration = Duration::from_millis(100);
/// Longest wait for a presence answer before the API answers for this node only.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Most messages published in one pipeline.
const BATCH: usize = 512;
/// Most pipelines awaiting Redis' replies at once.
const PIPELINES: usize = 8;

/// The running bridge.
pub(crate) struct Bridge {
    thread: Option<JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Bridge {
    /// Starts the bridge thread.
    pub(crate) fn start(
        cluster: Arc<Cluster>,
        receivers: Receivers,
        cfg: &config::Cluster,
        mesh: MeshSender<ShardMsg>,
        shards: u16,
    ) -> std::io::Result<Bridge> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let cfg = cfg.clone();
        let thread = std::thread::Builder::new()
            .name("shardcast-redis".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cluster: cannot start the Redis bridge");
                        return;
                    }
                };
                rt.block_on(async move {
                    match State::new(cluster, &cfg, mesh, shards) {
                        Ok(state) => state.run(receivers, stop_rx).await,
                        Err(e) => tracing::error!(error = %e, "cluster: bad Redis settings"),
                    }
                });
            })?;
        Ok(Bridge {
            thread: Some(thread),
            stop: Some(stop_tx),
        })
    }

    /// Stops the bridge: this node's presence is removed (when Redis is reachable within a
    /// second), the connections closed, the thread joined.
    pub(crate) fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Default)]
struct RoomState {
    shards: ShardSet,
    subscribed: bool,
    /// Joins waiting for the subscription: (shard, epoch).
    waiters: Vec<(u16, u64)>,
}

#[derive(Default)]
struct UserState {
    /// Connections per shard.
    per_shard: HashMap<u16, u32>,
}

impl UserState {
    fn shards(&self) -> ShardSet {
        let mut set = ShardSet::default();
        for (s, n) in &self.per_shard {
            if *n > 0 {
                set.insert(*s);
            }
        }
        set
    }
}

struct State {
    cluster: Arc<Cluster>,
    channels: Channels,
    ignis: bool,
    mesh: MeshSender<ShardMsg>,
    shards: u16,
    sub: Client,
    redis: Client,
    connected: bool,
    ever_connected: bool,
    reconnect_max_ms: u64,
    rooms: HashMap<Arc<str>, RoomState>,
    users: HashMap<Arc<str>, UserState>,
    /// Subscription changes decided this turn, sent together.
    subscribe: HashSet<String>,
    unsubscribe: HashSet<String>,
    /// Classic (ignis) channels to change this turn.
    subscribe_classic: HashSet<String>,
    unsubscribe_classic: HashSet<String>,
    presence: Presence,
    /// Permits for pipelines in flight.
    pipelines: Arc<tokio::sync::Semaphore>,
}

fn client(url: &str, cfg: &config::Cluster, buffer: usize) -> Result<Client, fred::error::Error> {
    let mut fc = FredConfig::from_url(url)?;
    // Redis down at start-up is not an error: keep trying, as after a loss.
    fc.fail_fast = false;
    let policy = ReconnectPolicy::new_exponential(0, 100, cfg.reconnect_max_ms as u32, 2);
    let mut b = FredBuilder::from_config(fc);
    b.with_connection_config(|c| {
        c.connection_timeout = Duration::from_secs(2);
        c.internal_command_timeout = Duration::from_secs(2);
        // Commands are only sent while connected; this bounds what fred may hold meanwhile.
        c.max_command_buffer_len = 100_000;
        c.max_command_attempts = 1;
    })
    .with_performance_config(|p| {
        p.default_command_timeout = Duration::from_secs(5);
        p.broadcast_channel_capacity = buffer;
    })
    .set_policy(policy);
    b.build()
}

impl State {
    fn new(
        cluster: Arc<Cluster>,
        cfg: &config::Cluster,
        mesh: MeshSender<ShardMsg>,
        shards: u16,
    ) -> Result<State, fred::error::Error> {
        let url = cfg.redis.clone().unwrap_or_default();
        let presence = Presence::new(
            &cfg.prefix,
            cluster.node_id(),
            Duration::from_millis(cfg.presence_ttl_ms),
        );
        Ok(State {
            channels: Channels::new(&cfg.prefix),
            ignis: cfg.compat.as_deref() == Some("ignis"),
            mesh,
            shards,
            // What Redis sends waits here until the loop takes it: 16 Ki messages.
            sub: client(&url, cfg, 16 * 1024)?,
            redis: client(&url, cfg, 64)?,
            connected: false,
            ever_connected: false,
            reconnect_max_ms: cfg.reconnect_max_ms,
            rooms: HashMap::new(),
            users: HashMap::new(),
            subscribe: HashSet::new(),
            unsubscribe: HashSet::new(),
            subscribe_classic: HashSet::new(),
            unsubscribe_classic: HashSet::new(),
            presence,
            pipelines: Arc::new(tokio::sync::Semaphore::new(PIPELINES)),
            cluster,
        })
    }

    async fn run(mut self, mut rx: Receivers, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let mut messages = self.sub.message_rx();
        // A connection that drops and comes back between two ticks is seen here.
        let mut sub_back = self.sub.reconnect_rx();
        let mut pub_back = self.redis.reconnect_rx();
        let started = tokio::time::Instant::now();
        let mut told_down = false;
        let _sub_task = self.sub.connect();
        let _pub_task = self.redis.connect();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval(self.presence.refresh_every());
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch: Vec<Outbound> = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                c = rx.control.recv() => {
                    let Some(c) = c else { break };
                    self.on_control(c).await;
                    while let Ok(c) = rx.control.try_recv() {
                        self.on_control(c).await;
                    }
                    self.apply_subscriptions().await;
                    self.flush_presence();
                }
                n = rx.out.recv_many(&mut batch, BATCH) => {
                    if n == 0 { break }
                    self.publish(&mut batch).await;
                }
                m = messages.recv() => match m {
                    Ok(m) => self.on_message(m),
                    Err(RecvError::Lagged(n)) => {
                        self.cluster.stats.drop(Lost::Lagged, n);
                        tracing::warn!(lost = n, "cluster: fell behind reading from Redis");
                    }
                    Err(RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    self.check_connection().await;
                    if !self.ever_connected && !told_down && started.elapsed() > Duration::from_secs(2) {
                        told_down = true;
                        tracing::warn!(
                            "cluster: Redis is not reachable; serving this node's clients and \
                             retrying (every {} ms at most)", self.reconnect_max_ms
                        );
                    }
                }
                r = sub_back.recv() => if r.is_ok() { self.resync().await },
                // Redis may have restarted and lost presence: write it again.
                r = pub_back.recv() => if r.is_ok() && self.connected {
                    self.presence.rewrite(&self.redis);
                },
                _ = refresh.tick() => {
                    if self.connected {
                        self.presence.refresh(&self.redis);
                    }
                }
            }
        }
        self.cluster.stats.connected.store(false, Relaxed);
        if self.connected {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.presence.remove(&self.redis))
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.sub.quit().await;
            let _ = self.redis.quit().await;
        })
        .await;
    }

    /// The subscribing connection came back: its subscriptions are gone, even if the tick
    /// never saw it down. Subscribe (and write presence) again.
    async fn resync(&mut self) {
        if self.connected {
            self.mark_down();
        }
        self.check_connection().await;
    }

    fn mark_down(&mut self) {
        self.connected = false;
        self.cluster.stats.connected.store(false, Relaxed);
        self.cluster.stats.subscriptions.store(0, Relaxed);
        for st in self.rooms.values_mut() {
            st.subscribed = false;
        }
    }

    /// Notices a connection gained or lost. On (re)connection every subscription is made
    /// again and presence written again (a restarted Redis has lost both).
    async fn check_connection(&mut self) {
        let up = self.sub.is_connected() && self.redis.is_connected();
        if up == self.connected {
            return;
        }
        if !up {
            self.mark_down();
            tracing::warn!(
                "cluster: lost Redis; local delivery goes on, messages for other nodes are \
                 dropped (counted) until it is back"
            );
            return;
        }
        // Subscribe to everything wanted, in one command per kind.
        let mut sharded = vec![
            self.channels.broadcast().to_owned(),
            self.channels.node(self.cluster.tag()),
        ];
        let mut classic = Vec::new();
        for room in self.rooms.keys() {
            sharded.push(self.channels.room(room));
            if self.ignis {
                classic.push(format!("{}{room}", envelope::IGNIS_ROOM));
            }
        }
        sharded.extend(self.users.keys().map(|u| self.channels.user(u)));
        let mut result = self.sub.ssubscribe(sharded.clone()).await;
        if result.is_ok() && self.ignis {
            classic.push(envelope::IGNIS_BROADCAST.to_owned());
            result = self.sub.subscribe(classic.clone()).await;
            if result.is_ok() {
                result = self
                    .sub
                    .psubscribe(vec![
                        envelope::IGNIS_CLIENT_PATTERN,
                        envelope::IGNIS_USER_PATTERN,
                    ])
                    .await;
            }
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "cluster: subscribing after connecting failed; retrying");
            return;
        }
        if !self.ever_connected && self.presence.id_in_use(&self.redis).await {
            tracing::warn!(
                node = self.cluster.node_id(),
                "cluster: this node id is already live in Redis: another node uses it (give every \
                 node its own --node-id: nodes with one id ignore each other's messages), or \
                 this node restarted within cluster.presence_ttl_ms"
            );
        }
        self.presence.rewrite(&self.redis);
        self.connected = true;
        let subs = sharded.len() + classic.len() + if self.ignis { 2 } else { 0 };
        self.cluster.stats.subscriptions.store(subs as u64, Relaxed);
        let mut waiters = Vec::new();
        for (room, st) in self.rooms.iter_mut() {
            st.subscribed = true;
            for (shard, epoch) in st.waiters.drain(..) {
                waiters.push((room.clone(), shard, epoch));
            }
        }
        for (room, shard, epoch) in waiters {
            self.ack(room, shard, epoch);
        }
        self.cluster.stats.connected.store(true, Relaxed);
        if self.ever_connected {
            self.cluster.stats.reconnects.fetch_add(1, Relaxed);
            tracing::info!("cluster: Redis is back; subscriptions and presence restored");
        } else {
            tracing::info!(node = self.cluster.node_id(), "cluster: connected to Redis");
        }
        self.ever_connected = true;
    }

    fn ack(&self, room: Arc<str>, shard: u16, epoch: u64) {
        self.to_shard(shard, ShardMsg::InterestAck { room, epoch });
    }

    fn to_shard(&self, shard: u16, msg: ShardMsg) -> bool {
        match self.mesh.send_timeout(shard as usize, msg, INBOX_WAIT) {
            Ok(()) => true,
            Err(_) => {
                self.cluster.stats.drop(Lost::InboxFull, 1);
                false
            }
        }
    }

    async fn on_control(&mut self, c: Control) {
        match c {
            Control::Room {
                room,
                shard,
                epoch: Some(epoch),
            } => {
                let st = self.rooms.entry(room.clone()).or_default();
                st.shards.insert(shard);
                if st.subscribed || !self.connected {
                    self.ack(room, shard, epoch);
                } else {
                    st.waiters.push((shard, epoch));
                    let ch = self.channels.room(&room);
                    self.unsubscribe.remove(&ch);
                    self.subscribe.insert(ch);
                    if self.ignis {
                        let ch = format!("{}{room}", envelope::IGNIS_ROOM);
                        self.unsubscribe_classic.remove(&ch);
                        self.subscribe_classic.insert(ch);
                    }
                }
            }
            Control::Room {
                room,
                shard,
                epoch: None,
            } => {
                let Some(st) = self.rooms.get_mut(&room) else {
                    return;
                };
                st.shards.remove(shard);
                if !st.shards.is_empty() {
                    return;
                }
                let st = self.rooms.remove(&room).unwrap_or_default();
                for (shard, epoch) in st.waiters {
                    self.ack(room.clone(), shard, epoch);
                }
                let ch = self.channels.room(&room);
                self.subscribe.remove(&ch);
                self.unsubscribe.insert(ch);
                if self.ignis {
                    let ch = format!("{}{room}", envelope::IGNIS_ROOM);
                    self.subscribe_classic.remove(&ch);
                    self.unsubscribe_classic.insert(ch);
                }
            }
            Control::User { user, shard, add } => {
                self.presence.user(user.clone(), add);
                let st = self.users.entry(user.clone()).or_default();
                let before = st.per_shard.values().sum::<u32>();
                let n = st.per_shard.entry(shard).or_insert(0);
                if add {
                    *n += 1;
                } else {
                    *n = n.saturating_sub(1);
                }
                if *n == 0 {
                    st.per_shard.remove(&shard);
                }
                let after = st.per_shard.values().sum::<u32>();
                let ch = self.channels.user(&user);
                if before == 0 && after > 0 {
                    self.unsubscribe.remove(&ch);
                    self.subscribe.insert(ch);
                } else if after == 0 {
                    self.users.remove(&user);
                    self.subscribe.remove(&ch);
                    self.unsubscribe.insert(ch);
                }
            }
            Control::Member {
                room,
                client,
                user,
                add,
            } => self.presence.member(room, client, user, add),
            Control::Query { shard, id, query } => {
                if !self.connected {
                    self.to_shard(
                        shard,
                        ShardMsg::Reply {
                            id,
                            reply: Reply::Cluster(Answer::Unavailable),
                        },
                    );
                    return;
                }
                // Answered beside the loop: a slow Redis delays this answer only.
                let reader = self.presence.reader();
                let redis = self.redis.clone();
                let mesh = self.mesh.clone();
                let cluster = self.cluster.clone();
                tokio::spawn(async move {
                    let answer =
                        match tokio::time::timeout(QUERY_TIMEOUT, reader.answer(&redis, &query))
                            .await
                        {
                            Ok(Ok(a)) => a,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "cluster: presence query failed");
                                Answer::Unavailable
                            }
                            Err(_) => Answer::Unavailable,
                        };
                    let reply = ShardMsg::Reply {
                        id,
                        reply: Reply::Cluster(answer),
                    };
                    // A plain thread may wait for a full inbox (the mesh's rule).
                    if mesh
                        .send_timeout(shard as usize, reply, INBOX_WAIT)
                        .is_err()
                    {
                        cluster.stats.drop(Lost::InboxFull, 1);
                    }
                });
            }
        }
    }

    /// Sends this turn's subscription changes (while connected; otherwise the next connection
    /// subscribes to everything wanted) and confirms the joins that waited for them.
    async fn apply_subscriptions(&mut self) {
        let sub = std::mem::take(&mut self.subscribe);
        let unsub = std::mem::take(&mut self.unsubscribe);
        let sub_c = std::mem::take(&mut self.subscribe_classic);
        let unsub_c = std::mem::take(&mut self.unsubscribe_classic);
        if !self.connected {
            return;
        }
        let list = |set: &HashSet<String>| set.iter().cloned().collect::<Vec<_>>();
        let mut ok = true;
        if !unsub.is_empty() {
            ok &= self.sub.sunsubscribe(list(&unsub)).await.is_ok();
        }
        if !unsub_c.is_empty() {
            ok &= self.sub.unsubscribe(list(&unsub_c)).await.is_ok();
        }
        if !sub.is_empty() {
            ok &= self.sub.ssubscribe(list(&sub)).await.is_ok();
        }
        if !sub_c.is_empty() {
            ok &= self.sub.subscribe(list(&sub_c)).await.is_ok();
        }
        if !ok {
            tracing::warn!("cluster: a subscription change failed; it is made again on reconnect");
        }
        let delta = (sub.len() + sub_c.len()) as i64 - (unsub.len() + unsub_c.len()) as i64;
        let subs = self.cluster.stats.subscriptions.load(Relaxed) as i64 + delta;
        self.cluster
            .stats
            .subscriptions
            .store(subs.max(0) as u64, Relaxed);
        // Confirm the joins whose channel is now subscribed (also when it failed: the join
        // works locally and the channel comes back with the reconnection).
        let mut waiters = Vec::new();
        for (room, st) in self.rooms.iter_mut() {
            if !st.waiters.is_empty() && sub.contains(&self.channels.room(room)) {
                st.subscribed = ok;
                for (shard, epoch) in st.waiters.drain(..) {
                    waiters.push((room.clone(), shard, epoch));
                }
            }
        }
        for (room, shard, epoch) in waiters {
            self.ack(room, shard, epoch);
        }
    }

    fn flush_presence(&mut self) {
        if self.connected {
            self.presence.flush(&self.redis);
        }
    }

    /// Publishes a batch in one pipeline.
    async fn publish(&mut self, batch: &mut Vec<Outbound>) {
        let stats = &self.cluster.stats;
        for item in batch.iter() {
            self.cluster.taken(item);
        }
        if !self.connected {
            stats.drop(Lost::RedisUnavailable, batch.len() as u64);
            batch.clear();
            return;
        }
        let p = self.redis.pipeline();
        let mut n = 0u64;
        for item in batch.drain(..) {
            let (channel, to) = match &item.target {
                Target::Room(room) => (self.channels.room(room), None),
                Target::All => (self.channels.broadcast().to_owned(), None),
                Target::Client(id) => (self.channels.node(id.node()), Some(*id)),
                Target::User(user) => (self.channels.user(user), None),
            };
            let Some(envelope) =
                envelope::encode(self.cluster.node_id(), to.as_ref(), item.msg.body())
            else {
                continue;
            };
            let queued: Result<(), _> = p.spublish(channel, Value::Bytes(envelope)).await;
            if queued.is_ok() {
                n += 1;
            } else {
                stats.drop(Lost::PublishFailed, 1);
            }
        }
        if n == 0 {
            return;
        }
        // The replies are awaited beside the loop (at most PIPELINES at once), so reading what
        // Redis delivers goes on meanwhile. Tasks first run in the order they were spawned, so
        // the pipelines reach Redis in order.
        let Ok(permit) = self.pipelines.clone().acquire_owned().await else {
            return;
        };
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            let failed = p
                .try_all::<Value>()
                .await
                .into_iter()
                .filter(Result::is_err)
                .count() as u64;
            cluster.stats.published.fetch_add(n - failed, Relaxed);
            if failed > 0 {
                cluster.stats.drop(Lost::PublishFailed, failed);
            }
            drop(permit);
        });
    }

    /// Hands what Redis delivered to the shards that need it.
    fn on_message(&mut self, m: Message) {
        let Some(channel) = self.channels.parse(&m.channel, self.ignis) else {
            return;
        };
        let payload: Bytes = match m.value {
            Value::Bytes(b) => b,
            Value::String(s) => s.into_inner(),
            _ => {
                self.cluster.stats.drop(Lost::BadEnvelope, 1);
                return;
            }
        };
        let env = match envelope::decode(&payload) {
            Ok(env) => env,
            Err(e) => {
                self.cluster.stats.drop(Lost::BadEnvelope, 1);
                tracing::debug!(channel = %m.channel, error = ?e, "cluster: bad envelope");
                return;
            }
        };
        if env.node.as_deref() == Some(self.cluster.node_id()) {
            // Published here, and delivered here already.
            return;
        }
        let exclude: Arc<[ClientId]> = env.exclude.into();
        let room = match &channel {
            Channel::Room(room) => Some(Arc::from(*room)),
            _ => None,
        };
        let msg = Outgoing::new_in(env.body, room);
        let (target, shards) = match channel {
            Channel::Room(room) => {
                let Some(st) = self.rooms.get(room) else {
                    return;
                };
                (Target::Room(Arc::from(room)), st.shards)
            }
            Channel::Broadcast => {
                let mut all = ShardSet::default();
                for s in 0..self.shards {
                    all.insert(s);
                }
                (Target::All, all)
            }
            Channel::User(user) => {
                let Some(st) = self.users.get(user) else {
                    return;
                };
                (Target::User(Arc::from(user)), st.shards())
            }
            Channel::Node(tag) => match env.to {
                Some(to) if tag == self.cluster.tag() => self.owner(to),
                _ => {
                    self.cluster.stats.drop(Lost::BadEnvelope, 1);
                    return;
                }
            },
            Channel::Client(text) => match ClientId::parse(text.as_bytes()) {
                Some(to) if to.node() == self.cluster.tag() => self.owner(to),
                // ignis asks every server; the client is another node's (or nobody's).
                _ => return,
            },
        };
        self.cluster.stats.received.fetch_add(1, Relaxed);
        for shard in shards.iter() {
            self.to_shard(
                shard,
                ShardMsg::Cluster {
                    target: target.clone(),
                    msg: msg.clone(),
                    exclude: exclude.clone(),
                },
            );
        }
    }

    fn owner(&self, to: ClientId) -> (Target, ShardSet) {
        let mut set = ShardSet::default();
        let shard = to.location().shard;
        if shard < self.shards {
            set.insert(shard);
        }
        (Target::Client(to), set)
    }
}
