//! One shard's registry of clients and rooms, and the cross-shard fan-out.
//!
//! [`Hub`] is plain shard-local data (no locks, no atomics of its own): the connections this
//! shard accepted (a slab indexed by the slot in their [`ClientId`]), its view of the rooms
//! ([`rooms::Rooms`]), its counters, and its handle on the mesh. Every messaging operation
//! lands here — to one client, to a room, to everyone — and is split into a local delivery
//! (queue the shared frame on each local socket) plus one [`ShardMsg`] per other shard that
//! needs it. Messages are data: the enum below is everything shards say to each other.
//!
//! Layering: `hub/` knows connections only as [`client::Client`] (a queue, flags, rooms);
//! sockets, codecs and the read loop are `conn/`'s; what a client event *means* is `app/`'s.

pub(crate) mod client;
pub(crate) mod id;
pub(crate) mod memory;
pub(crate) mod outgoing;
pub(crate) mod outq;
pub(crate) mod rooms;
pub(crate) mod users;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardcast_shards::timer::Timers;
use shardcast_shards::{MeshError, ShardMesh};

use crate::cluster::{Cluster, Control, Target};
use crate::config::Config;
use crate::live::LiveConfig;
use crate::protocol::ws::codec::Compressor;
use crate::protocol::ws::deflate::Deflater;
use crate::stats::{Counters, MemoryGauges, Snapshot, Transport};

use crate::dialect::{Dialects, MAX_DIALECTS};
use client::{Client, CloseCause, Phase};
use id::ClientId;
use memory::{Budget, ShardLimits};
use outgoing::{Body, Compressors, DialectForm, Outgoing};
use outq::{OutQueue, FRAME_COST};
use rooms::{Interest, Join, Leave, Rooms};
use users::{UserCounts, UserIndex, UserRefusal, MAX_USER_ID};

/// Everything one shard says to another.
#[derive(Debug)]
pub(crate) enum ShardMsg {
    /// A room gained its first / lost its last member on the sending shard.
    Interest(Interest),
    /// Acknowledges an [`Interest::Add`].
    InterestAck {
        /// Room.
        room: Arc<str>,
        /// The announcement's epoch.
        epoch: u64,
    },
    /// Deliver to the local members of `room`.
    Room {
        /// Room.
        room: Arc<str>,
        /// The message.
        msg: Arc<Outgoing>,
        /// A client not to deliver to (the sender).
        exclude: Option<ClientId>,
    },
    /// Deliver to every local client.
    All {
        /// The message.
        msg: Arc<Outgoing>,
        /// A client not to deliver to.
        exclude: Option<ClientId>,
    },
    /// Deliver to one local client.
    Direct {
        /// Recipient.
        to: ClientId,
        /// The message.
        msg: Arc<Outgoing>,
        /// The sending client, told with a `server:error` if `to` is gone.
        from: Option<ClientId>,
    },
    /// Deliver to the local connections of a user.
    User {
        /// The user id.
        user: Arc<str>,
        /// The message.
        msg: Arc<Outgoing>,
        /// A client not to deliver to (the sender).
        exclude: Option<ClientId>,
    },
    /// A direct message from `from` found no client `to`.
    DirectFailed {
        /// The sender to tell.
        from: ClientId,
        /// The missing recipient.
        to: ClientId,
    },
    /// Deliver to the local clients of the raw `/broadcast` bench endpoint.
    RawBroadcast {
        /// The frame.
        msg: Arc<Outgoing>,
        /// The sender.
        exclude: Option<ClientId>,
    },
    /// A message from another node (through the cluster bridge) for local recipients.
    Cluster {
        /// Whom.
        target: crate::cluster::Target,
        /// The message, decoded once per node.
        msg: Arc<Outgoing>,
        /// Clients not to deliver to.
        exclude: Arc<[ClientId]>,
    },
    /// A question for every shard; answer with [`ShardMsg::Reply`] to `from`.
    Query {
        /// Asking shard.
        from: u16,
        /// Correlates the reply.
        id: u64,
        /// What is asked.
        query: Query,
    },
    /// One shard's answer.
    Reply {
        /// From [`ShardMsg::Query`].
        id: u64,
        /// The answer.
        reply: Reply,
    },
}

impl ShardMsg {
    /// Memory this message holds while it waits: the message itself plus the payload it
    /// carries (charged in full even when shared, to err on the safe side).
    fn cost(&self) -> usize {
        let payload = match self {
            ShardMsg::Room { msg, .. }
            | ShardMsg::All { msg, .. }
            | ShardMsg::Direct { msg, .. }
            | ShardMsg::User { msg, .. }
            | ShardMsg::Cluster { msg, .. }
            | ShardMsg::RawBroadcast { msg, .. } => msg.payload_len(),
            ShardMsg::Interest(_)
            | ShardMsg::InterestAck { .. }
            | ShardMsg::DirectFailed { .. }
            | ShardMsg::Query { .. }
            | ShardMsg::Reply { .. } => 0,
        };
        std::mem::size_of::<ShardMsg>() + payload
    }
}

/// Questions answered by every shard.
#[derive(Debug, Clone)]
pub(crate) enum Query {
    /// Counters.
    Stats,
    /// Rooms with local members and their local member counts.
    Rooms,
    /// Local members of a room.
    Members(Arc<str>),
    /// Deliver to a local client, answering whether it is connected (the HTTP API's send,
    /// which answers 404 for a gone client).
    Deliver {
        /// Recipient.
        to: ClientId,
        /// The message.
        msg: Arc<Outgoing>,
    },
    /// Deliver to the local connections of a user, answering how many got it (the HTTP
    /// API's send to a user, which answers 404 when none did).
    DeliverUser {
        /// The user id.
        user: Arc<str>,
        /// The message.
        msg: Arc<Outgoing>,
    },
    /// Close a local client, or every local connection of a user (the HTTP API's
    /// disconnect), answering how many were closed.
    Disconnect {
        /// Whom.
        target: DisconnectTarget,
        /// WebSocket close code.
        code: u16,
        /// Close reason (TCP: the ERROR frame's text).
        reason: Arc<str>,
    },
}

/// Whom [`Query::Disconnect`] closes.
#[derive(Debug, Clone)]
pub(crate) enum DisconnectTarget {
    /// One client.
    Client(ClientId),
    /// Every connection of a user.
    User(Arc<str>),
}

/// One shard's answer to a [`Query`].
#[derive(Debug)]
pub(crate) enum Reply {
    /// Counters.
    Stats(Box<Snapshot>),
    /// `(room, local members)`.
    Rooms(Vec<(String, usize)>),
    /// Member ids, each with its user id if it has one.
    Members(Vec<(ClientId, Option<Box<str>>)>),
    /// Whether the recipient of a [`Query::Deliver`] was connected (and got the message).
    Delivered(bool),
    /// How many local connections a [`Query::DeliverUser`] reached.
    DeliveredTo(usize),
    /// How many local connections a [`Query::Disconnect`] closed.
    Disconnected(usize),
    /// The cluster bridge's answer about the other nodes.
    Cluster(crate::cluster::Answer),
}

/// Why a join was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinRefusal {
    /// The client is in `max_rooms_per_client` rooms.
    ClientRoomLimit,
    /// The process has `max_rooms` rooms and this one would be new.
    RoomLimit,
}

impl JoinRefusal {
    /// Counter label.
    pub fn label(self) -> &'static str {
        match self {
            JoinRefusal::ClientRoomLimit => "join_client_room_limit",
            JoinRefusal::RoomLimit => "join_room_limit",
        }
    }
}

#[derive(Default)]
struct Gather {
    missing: usize,
    replies: Vec<Reply>,
    waker: Option<Waker>,
}

/// Messages that found the target inbox full, kept in order until it drains.
#[derive(Default)]
struct Overflow {
    queues: Vec<VecDeque<ShardMsg>>,
    /// Sum of the queued messages' [`ShardMsg::cost`].
    bytes: usize,
    /// The [`Hub::drain_overflow`] task, parked while the overflow is empty.
    flusher: Option<Waker>,
}

/// One shard's clients, rooms and counters.
pub(crate) struct Hub {
    shard: u16,
    shards: u16,
    /// The process's live configuration (swapped by a reload) ...
    live: Arc<LiveConfig>,
    /// ... this shard's own copy of it (its own `Arc`: clones stay on this core) ...
    config: RefCell<Arc<Config>>,
    /// ... and the generation of `live` that copy was taken at.
    config_generation: Cell<u64>,
    /// This shard's counters.
    pub counters: Counters,
    clients: RefCell<Vec<Option<Rc<Client>>>>,
    free: RefCell<Vec<u32>>,
    rooms: RefCell<Rooms>,
    raw_broadcast: RefCell<Vec<u32>>,
    /// Messages queued for local clients by fan-out so far (room publishes, broadcasts,
    /// sends to a user, raw broadcasts): `conn/open.rs` serves a connection whose input fans
    /// out ahead of the ones that only write.
    fanned: Cell<u64>,
    mesh: ShardMesh<ShardMsg>,
    overflow: RefCell<Overflow>,
    /// Slots of connections that stopped reading while the mesh overflow was above half its
    /// bound (each once: `Client::waits_for_mesh`).
    mesh_waiters: RefCell<Vec<u32>>,
    /// This shard's limits; a reload changes the per-client ones (`max_queued`,
    /// `slow_consumer_ms`), the budgets stay as sized at start.
    limits: Cell<ShardLimits>,
    /// Frames queued to this shard's clients (their [`OutQueue::cost`]).
    output: Budget,
    /// Partly received input held by this shard's connections.
    input: Budget,
    compressors: RefCell<Compressors>,
    timers: Timers<ClientId>,
    started: Instant,
    /// `started` on `CLOCK_MONOTONIC` (the clock `Instant` reads), in nanoseconds: the
    /// origin of [`Hub::coarse_now_ms`].
    started_ns: u64,
    gathers: RefCell<ahash::HashMap<u64, Gather>>,
    next_gather: Cell<u64>,
    /// Open clients in the whole process (shared by every shard's hub; one relaxed add per
    /// connect and disconnect), for `limits.max_connections`.
    process_clients: Arc<std::sync::atomic::AtomicUsize>,
    /// This shard's connections by user (`users.rs`).
    users: RefCell<UserIndex>,
    /// Connections per user in the whole process (shared by every shard's hub), for
    /// `limits.max_connections_per_user`.
    user_counts: Arc<UserCounts>,
    /// The link to other nodes, when a cluster is configured (`cluster/`).
    cluster: Option<Arc<Cluster>>,
    /// The node tag this process's client ids carry (`id.rs`).
    node_tag: u16,
    /// The dialects clients may speak (`dialect/`), shared by every shard's hub.
    dialects: Arc<Dialects>,
}

impl Hub {
    /// A hub for `shard` of `shards`.
    pub(crate) fn new(
        shard: u16,
        shards: u16,
        live: Arc<LiveConfig>,
        mesh: ShardMesh<ShardMsg>,
        timers: Timers<ClientId>,
        process_clients: Arc<std::sync::atomic::AtomicUsize>,
        limits: ShardLimits,
    ) -> Hub {
        let (generation, shared) = live.load();
        let config = Arc::new(Config::clone(&shared));
        let threshold = config.compression.threshold;
        Hub {
            shard,
            shards,
            rooms: RefCell::new(Rooms::new(shard, shards, config.limits.max_rooms)),
            live,
            config: RefCell::new(config),
            config_generation: Cell::new(generation),
            counters: Counters::default(),
            clients: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            raw_broadcast: RefCell::new(Vec::new()),
            fanned: Cell::new(0),
            mesh,
            overflow: RefCell::new(Overflow::default()),
            mesh_waiters: RefCell::new(Vec::new()),
            limits: Cell::new(limits),
            output: Budget::new(limits.output),
            input: Budget::new(limits.input),
            compressors: RefCell::new(Compressors {
                full: Compressor::new(Deflater::new(true, 15), threshold),
                narrow: Compressor::new(Deflater::new(true, 9), threshold),
            }),
            timers,
            started: Instant::now(),
            started_ns: monotonic_ns(libc::CLOCK_MONOTONIC),
            gathers: RefCell::new(ahash::HashMap::default()),
            next_gather: Cell::new(1),
            process_clients,
            users: RefCell::new(UserIndex::default()),
            user_counts: Arc::default(),
            cluster: None,
            node_tag: 0,
            dialects: Arc::default(),
        }
    }

    /// Shares the server's dialects (one registry per process).
    pub(crate) fn with_dialects(mut self, dialects: Arc<Dialects>) -> Hub {
        self.dialects = dialects;
        self
    }

    /// The dialects clients may speak.
    pub(crate) fn dialects(&self) -> &Arc<Dialects> {
        &self.dialects
    }

    /// Gives the hub the process's node tag and, in a cluster, the link to the other nodes
    /// (one per process, shared by every shard's hub).
    pub(crate) fn with_cluster(mut self, tag: u16, cluster: Option<Arc<Cluster>>) -> Hub {
        self.node_tag = tag;
        if cluster.is_some() {
            self.rooms.get_mut().enable_cluster();
        }
        self.cluster = cluster;
        self
    }

    /// The link to other nodes, if any.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Whether `id` is a client of another node.
    pub(crate) fn is_remote(&self, id: ClientId) -> bool {
        id.node() != self.node_tag
    }

    /// Shares `counts` (one per process, given to every shard's hub) for the per-user cap.
    pub(crate) fn with_user_counts(mut self, counts: Arc<UserCounts>) -> Hub {
        self.user_counts = counts;
        self
    }

    /// This shard's index.
    pub(crate) fn shard(&self) -> u16 {
        self.shard
    }
    /// How many shards the process runs.
    pub(crate) fn shards(&self) -> u16 {
        self.shards
    }
    /// The configuration in effect now (a reload swaps it; see `live.rs`). Read settings at
    /// use time through this; per-connection state may keep what it read at connection start.
    #[inline]
    pub(crate) fn config(&self) -> Arc<Config> {
        self.sync_config();
        self.config.borrow().clone()
    }

    /// Takes a reloaded configuration if there is one (one atomic load when there is not).
    /// Checks that read settings the hub keeps in its own fields call this first.
    #[inline]
    fn sync_config(&self) {
        if self.live.generation() != self.config_generation.get() {
            self.refresh_config();
        }
    }

    /// Takes this shard's copy of a reloaded configuration (the slow path, once per reload).
    #[cold]
    fn refresh_config(&self) {
        let (generation, shared) = self.live.load();
        // A deep copy: this shard's `Arc` counts are touched by this core alone.
        let config = Arc::new(Config::clone(&shared));
        self.rooms
            .borrow_mut()
            .set_max_rooms(config.limits.max_rooms);
        self.limits.set(ShardLimits {
            max_queued: config.limits.max_queued_bytes,
            slow_consumer_ms: config.timeouts.slow_consumer_ms,
            ..self.limits.get()
        });
        *self.config.borrow_mut() = config;
        self.config_generation.set(generation);
    }

    /// Records that `client` is `user` (from authentication or an embedder's middleware):
    /// the single entry that keeps the shard's user index and the process-wide count per
    /// user in step. Refused when the user already holds `limits.max_connections_per_user`
    /// connections in the process (read now, so a reload applies to the next connection), or
    /// when the id is empty or too long; the caller closes the connection (4003 / ERROR).
    /// Giving a client the user it has is a no-op; another user replaces it.
    pub(crate) fn set_user(&self, client: &Client, user: Rc<str>) -> Result<(), UserRefusal> {
        if user.is_empty() || user.len() > MAX_USER_ID {
            self.counters.refuse(UserRefusal::InvalidUserId.label());
            return Err(UserRefusal::InvalidUserId);
        }
        // A handler may still hold a context of a connection that is gone: its slot may
        // belong to another client by now, so it must not enter the index.
        if client.phase() == Phase::Closing || self.client(client.id).is_none() {
            return Err(UserRefusal::NotConnected);
        }
        let old = client.user();
        if old.as_deref() == Some(&*user) {
            return Ok(());
        }
        let cap = self.config().limits.max_connections_per_user;
        if let Err(e) = self.user_counts.acquire(&user, cap) {
            self.counters.refuse(e.label());
            return Err(e);
        }
        if let Some(old) = old {
            self.release_user(client, &old);
        }
        self.users.borrow_mut().insert(&user, client.slot());
        if let Some(c) = &self.cluster {
            c.control(Control::User {
                user: Arc::from(&*user),
                shard: self.shard,
                add: true,
            });
        }
        client.set_user_field(Some(user));
        Ok(())
    }

    /// Connections of `user` in this process.
    pub(crate) fn user_connections(&self, user: &str) -> usize {
        self.user_counts.count(user)
    }

    /// Takes `user` off `client` in the index and the process-wide count.
    fn release_user(&self, client: &Client, user: &str) {
        self.users.borrow_mut().remove(user, client.slot());
        self.user_counts.release(user);
        if let Some(c) = &self.cluster {
            c.control(Control::User {
                user: Arc::from(user),
                shard: self.shard,
                add: false,
            });
        }
        client.set_user_field(None);
    }

    /// The shard's timers (keyed by client id).
    pub(crate) fn timers(&self) -> &Timers<ClientId> {
        &self.timers
    }

    /// The shard clock: milliseconds since the shard started (also its uptime).
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The shard clock read from the kernel's tick (`CLOCK_MONOTONIC_COARSE`): up to a tick
    /// (1–10 ms) behind [`Hub::now_ms`], never ahead of it, and a few nanoseconds to read
    /// where the precise clock costs tens in a VM. For what is read at every service and
    /// compared in seconds (when a client's bytes last arrived).
    pub(crate) fn coarse_now_ms(&self) -> u64 {
        monotonic_ns(libc::CLOCK_MONOTONIC_COARSE).saturating_sub(self.started_ns) / 1_000_000
    }

    /// Whether the process holds `limits.max_connections` clients (resolved at start-up, so
    /// never 0): a new one is refused.
    pub(crate) fn at_capacity(&self) -> bool {
        self.process_clients
            .load(std::sync::atomic::Ordering::Relaxed)
            >= self.config().limits.max_connections
    }

    // -----------------------------------------------------------------------------------
    // Registry
    // -----------------------------------------------------------------------------------

    /// Registers a freshly accepted socket (phase `Handshake`).
    pub(crate) fn register(&self, peer: std::net::SocketAddr, transport: Transport) -> Rc<Client> {
        let mut clients = self.clients.borrow_mut();
        let slot = match self.free.borrow_mut().pop() {
            Some(s) => s,
            None => {
                clients.push(None);
                (clients.len() - 1) as u32
            }
        };
        let id = ClientId::new(self.node_tag, self.shard, slot, id::random_bytes());
        let client = Rc::new(Client::new(id, peer, transport, self.now_ms()));
        clients[slot as usize] = Some(client.clone());
        client
    }

    /// Marks a registered socket as an open client (WebSocket upgraded / TCP connected).
    pub(crate) fn open(&self, client: &Client) {
        if client.phase() == Phase::Handshake {
            client.set_phase(Phase::Open);
            self.process_clients
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.counters.opened(client.transport());
            tracing::debug!(
                client = %client.id,
                peer = %client.peer(),
                transport = ?client.transport(),
                shard = self.shard,
                "connection opened"
            );
        }
    }

    /// Removes a connection: leaves its rooms (telling other shards), frees its slot.
    pub(crate) fn unregister(&self, client: &Client) {
        let was_open = client.phase() == Phase::Open || client.phase() == Phase::Closing;
        let opened = self.clients.borrow()[client.slot() as usize]
            .as_ref()
            .is_some_and(|c| c.id == client.id);
        if !opened {
            return;
        }
        if let Some(user) = client.user() {
            self.release_user(client, &user);
        }
        if was_open {
            self.process_clients
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            self.counters.closed(client.transport());
        }
        client.set_phase(Phase::Closing);
        let rooms: Vec<Rc<str>> = client.take_rooms();
        let mut announce = Vec::new();
        {
            let mut reg = self.rooms.borrow_mut();
            for room in &rooms {
                reg.leave(room, client.slot(), &mut announce);
                self.presence(client, room, false);
            }
        }
        self.announce(announce);
        self.raw_broadcast
            .borrow_mut()
            .retain(|s| *s != client.slot());
        // The socket is gone: everything queued goes, a partly written frame included, and
        // leaves the output budget with it.
        self.with_queue(client, |q| *q = OutQueue::default());
        self.set_input_held(client, 0);
        self.clients.borrow_mut()[client.slot() as usize] = None;
        self.free.borrow_mut().push(client.slot());
    }

    /// The local client with this id, if it is still connected.
    pub(crate) fn client(&self, id: ClientId) -> Option<Rc<Client>> {
        let loc = id.location();
        if loc.shard != self.shard || id.node() != self.node_tag {
            return None;
        }
        let clients = self.clients.borrow();
        let c = clients.get(loc.slot as usize)?.as_ref()?;
        (c.id == id).then(|| c.clone())
    }

    fn by_slot(&self, slot: u32) -> Option<Rc<Client>> {
        self.clients.borrow().get(slot as usize)?.clone()
    }

    /// Adds a client of the raw `/broadcast` endpoint.
    pub(crate) fn join_raw_broadcast(&self, client: &Client) {
        self.raw_broadcast.borrow_mut().push(client.slot());
    }

    // -----------------------------------------------------------------------------------
    // Delivery
    // -----------------------------------------------------------------------------------

    /// Queues a data frame on an open client and wakes its task. Returns false if the client
    /// does not take messages (not open, or disconnected now to keep the shard within its
    /// output budget: see `memory.rs`).
    pub(crate) fn send_frame(&self, client: &Client, frame: Bytes) -> bool {
        self.send_frames(client, frame, 1)
    }

    /// Like [`Hub::send_frame`], for `messages` frames written back to back into one buffer
    /// (the `/echo` endpoint's answers to one batch of input): one queued frame, counted as
    /// that many messages sent.
    pub(crate) fn send_frames(&self, client: &Client, frame: Bytes, messages: u64) -> bool {
        if !client.is_open() {
            return false;
        }
        if self.output.would_exceed(frame.len() + FRAME_COST) {
            self.relieve_output(frame.len() + FRAME_COST);
            if !client.is_open() {
                return false;
            }
        }
        self.with_queue(client, |q| q.push(frame));
        client.wake();
        Counters::add(&self.counters.messages_sent, messages);
        true
    }

    /// Queues a text message (a dialect's direct answer) on an open client, framed in its
    /// compression form.
    pub(crate) fn send_text(&self, client: &Client, text: &[u8]) -> bool {
        let frame = {
            let mut c = self.compressors.borrow_mut();
            Outgoing::text_frame_in(text, client.ws_form(), &mut c)
        };
        self.send_frame(client, frame)
    }

    /// Queues a frame whatever the phase (HTTP responses, handshake answers, close and
    /// heartbeat frames): one per request or state change, so never refused; counted in the
    /// output budget like the rest.
    pub(crate) fn queue_control(&self, client: &Client, frame: Bytes) {
        self.with_queue(client, |q| q.push(frame));
        client.wake();
    }

    /// Drops what is queued for `client` that has not started to go out.
    pub(crate) fn discard_queue(&self, client: &Client) {
        self.with_queue(client, OutQueue::clear);
    }

    /// Runs `f` on the client's queue and brings the output budget up to date.
    fn with_queue<R>(&self, client: &Client, f: impl FnOnce(&mut OutQueue) -> R) -> R {
        let mut q = client.out().borrow_mut();
        let before = q.cost();
        let r = f(&mut q);
        self.output.adjust(before, q.cost());
        r
    }

    /// One non-blocking `sendmsg` of everything queued for `client` on `fd`. `WouldBlock`
    /// when the socket is full; then the slow-consumer rule is applied to what is left.
    pub(crate) fn write_queue(
        &self,
        client: &Client,
        fd: std::os::fd::RawFd,
    ) -> std::io::Result<usize> {
        let r = self.with_queue(client, |q| q.write_to(fd));
        match &r {
            Ok(n) => {
                Counters::add(&self.counters.bytes_sent, *n as u64);
                Counters::add(&self.counters.writes, 1);
                if client.queue_is_empty() {
                    client.caught_up();
                    client.set_write_blocked(false);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                client.set_write_blocked(true);
                self.note_backlog(client);
            }
            Err(_) => {}
        }
        r
    }

    // --- TLS (issue 9, item 1) ---

    /// TLS: moves up to `max` bytes of `client`'s queued frames into `w` (the TLS session's
    /// plaintext writer, which encrypts them). Returns the bytes moved.
    pub(crate) fn queue_into(
        &self,
        client: &Client,
        w: &mut dyn std::io::Write,
        max: usize,
    ) -> usize {
        self.with_queue(client, |q| q.write_into(w, max))
    }

    /// TLS: the socket took `n` bytes of records.
    pub(crate) fn tls_sent(&self, client: &Client, n: usize) {
        Counters::add(&self.counters.bytes_sent, n as u64);
        Counters::add(&self.counters.writes, 1);
        if client.queue_is_empty() {
            client.caught_up();
            client.set_write_blocked(false);
        }
    }

    /// TLS: the socket is full; the slow-consumer rule applies to what is left queued.
    pub(crate) fn tls_blocked(&self, client: &Client) {
        client.set_write_blocked(true);
        self.note_backlog(client);
    }

    /// The socket would not take everything: is the client behind, and for how long?
    fn note_backlog(&self, client: &Client) {
        self.sync_config();
        if client.queued_cost() <= self.limits.get().max_queued {
            client.caught_up();
            return;
        }
        let now = self.now_ms();
        let allowed = self.limits.get().slow_consumer_ms;
        match client.behind_for(now) {
            None if allowed > 0 => client.fell_behind(now),
            // 0 = as soon as it is behind.
            behind if behind.unwrap_or(0) >= allowed => {
                self.cut_off(client, CloseCause::SlowConsumer);
            }
            _ => {}
        }
    }

    /// The output budget would overflow by `extra`: disconnects open clients until the shard
    /// is under 90 % of its share (or none is left to cut): first those whose socket is full
    /// (not keeping up), largest queue first, then the largest queues. A reader that keeps up
    /// may hold a large queue for a moment (a burst queued within one loop turn) but its
    /// socket takes what it is given, so it goes last.
    #[cold]
    fn relieve_output(&self, extra: usize) {
        while self.output.used() + extra > self.output.relief_target() {
            let victim = self
                .clients
                .borrow()
                .iter()
                .flatten()
                .filter(|c| c.is_open() && !c.queue_is_empty())
                .max_by_key(|c| (c.write_blocked(), c.queued_cost()))
                .cloned();
            let Some(victim) = victim else { break };
            tracing::warn!(
                client = %victim.id,
                queued = victim.queued_cost(),
                budget = self.output.limit(),
                "output budget full: disconnecting the client with the largest queue"
            );
            self.cut_off(&victim, CloseCause::OutputBudget);
        }
    }

    /// Whether a connection should stop reading: its own queue is above the read-pause mark
    /// (its replies would pile up; its task is woken when the socket drains), or the shard's
    /// mesh overflow is congested (the client is woken once it has drained).
    pub(crate) fn should_pause_reading(&self, client: &Client) -> bool {
        self.sync_config();
        if client.queued_cost() > self.limits.get().read_pause() {
            return true;
        }
        if self.mesh_congested() {
            if !client.set_waits_for_mesh(true) {
                self.mesh_waiters.borrow_mut().push(client.slot());
            }
            return true;
        }
        false
    }

    /// Reports how many partly received bytes `client` holds now. When the shard's input
    /// budget is exceeded, the connections holding the most are closed until it is under
    /// 90 % (see `memory.rs`).
    pub(crate) fn set_input_held(&self, client: &Client, held: usize) {
        // Kept in 32 bits (a connection's input is bounded far below 4 GiB by the message
        // limits); the budget counts what is kept, so it stays consistent.
        let held = u32::try_from(held).unwrap_or(u32::MAX);
        let before = client.input_held().replace(held);
        let (before, held) = (before as usize, held as usize);
        self.input.adjust(before, held);
        if held > before && self.input.would_exceed(0) {
            self.relieve_input();
        }
    }

    #[cold]
    fn relieve_input(&self) {
        while self.input.used() > self.input.relief_target() {
            let victim = self
                .clients
                .borrow()
                .iter()
                .flatten()
                .filter(|c| c.close_requested().is_none())
                .max_by_key(|c| c.input_held().get())
                .filter(|c| c.input_held().get() > 0)
                .cloned();
            let Some(victim) = victim else { break };
            tracing::warn!(
                client = %victim.id,
                held = victim.input_held().get(),
                budget = self.input.limit(),
                "input budget full: closing the connection holding the most"
            );
            // Its task drops the buffers when it acts on the close; stop counting them now
            // so one cut is enough.
            self.set_input_held(&victim, 0);
            self.cut_off(&victim, CloseCause::InputBudget);
        }
    }

    /// Bytes used and the limit of the output and input budgets, for the metrics.
    pub(crate) fn memory_gauges(&self) -> MemoryGauges {
        MemoryGauges {
            output_used: self.output.used() as u64,
            output_limit: self.output.limit() as u64,
            input_used: self.input.used() as u64,
            input_limit: self.input.limit() as u64,
            mesh_overflow: self.overflow.borrow().bytes as u64,
        }
    }

    /// Stops queueing to `client` and asks its task to close with `cause`.
    pub(crate) fn cut_off(&self, client: &Client, cause: CloseCause) {
        if client.phase() == Phase::Open {
            client.set_phase(Phase::Closing);
            self.discard_queue(client);
            self.counters.disconnect(cause.label());
        }
        client.request_close(cause);
    }

    /// Sends `msg` to one local client, in the form its transport takes.
    pub(crate) fn send_to(&self, client: &Client, msg: &Outgoing) -> bool {
        match self.form_for(client, msg) {
            Some(frame) => self.send_frame(client, frame),
            None => false,
        }
    }

    /// Queues a control message (heartbeat, close, CONNECT) whatever the client's phase.
    pub(crate) fn send_control(&self, client: &Client, msg: &Outgoing) {
        if let Some(frame) = self.form_for(client, msg) {
            self.queue_control(client, frame);
        }
    }

    /// Queues a pong; a few wait at most, the newest replaced beyond that (RFC 6455 §5.5.3,
    /// `outq.rs`).
    pub(crate) fn send_pong(&self, client: &Client, pong: &Outgoing) {
        if let Some(frame) = self.form_for(client, pong) {
            self.with_queue(client, |q| q.push_pong(frame));
            client.wake();
        }
    }

    /// `msg` in the wire form `client` takes (its transport, dialect and compression), or
    /// `None` if it gets nothing (counted when its transport or dialect cannot carry it).
    fn form_for(&self, client: &Client, msg: &Outgoing) -> Option<Bytes> {
        let frame = match client.transport() {
            Transport::Ws if !client.dialect().is_stelar() => {
                if let Some(f) = self.transformed(client, msg) {
                    return Some(f);
                }
                let mut c = self.compressors.borrow_mut();
                match msg.for_dialect(&self.dialects, client.dialect(), client.ws_form(), &mut c) {
                    DialectForm::Frame(f) => return Some(f),
                    DialectForm::Silent => return None,
                    DialectForm::Unsendable => {
                        self.counters.drop_message("not_sendable_in_dialect");
                        return None;
                    }
                }
            }
            Transport::Ws => {
                let mut c = self.compressors.borrow_mut();
                msg.ws(client.ws_form(), &mut c).cloned()
            }
            Transport::Tcp => msg.tcp().cloned(),
        };
        if frame.is_none() {
            self.counters.drop_message(match client.transport() {
                Transport::Ws => "not_sendable_on_ws",
                Transport::Tcp => "not_sendable_on_tcp",
            });
        }
        frame
    }

    /// The embedder's transform of an event for one client of a dialect
    /// (`Builder::transform`), built for that client alone; `None` when there is no transform,
    /// the message is not an event, or the transform keeps it.
    fn transformed(&self, client: &Client, msg: &Outgoing) -> Option<Bytes> {
        let transform = self.dialects.transform.as_ref()?;
        let crate::dialect::Outbound::Event { event, data, room } = msg.outbound()? else {
            return None;
        };
        let user = client.user();
        let view = crate::dialect::Transforming {
            client: client.id,
            user: user.as_deref(),
            dialect: self.dialects.name(client.dialect()),
            event,
            data,
            room,
        };
        let (event, data) = transform(&view)?;
        let one = Outgoing::new_in(
            Body::Event {
                event: event.into(),
                data: Some(data.into_bytes()),
            },
            msg.room().cloned(),
        );
        let mut c = self.compressors.borrow_mut();
        match one.for_dialect(&self.dialects, client.dialect(), client.ws_form(), &mut c) {
            DialectForm::Frame(f) => Some(f),
            DialectForm::Silent | DialectForm::Unsendable => None,
        }
    }

    /// Delivers to local clients by slot. `remote` says the message came from another
    /// shard, so frames are first copied into this shard's memory.
    fn deliver(
        &self,
        slots: impl Iterator<Item = u32>,
        msg: &Outgoing,
        exclude: Option<ClientId>,
        remote: bool,
    ) -> usize {
        // Frames in the forms actually needed, built on first need: stelar's plain, deflate,
        // narrow and tcp, then each other dialect's three WebSocket forms.
        let mut forms: [Option<Option<Bytes>>; 4 + 3 * (MAX_DIALECTS - 1)] =
            std::array::from_fn(|_| None);
        let transform = self.dialects.transform.is_some();
        let mut delivered = 0;
        let clients = self.clients.borrow();
        for slot in slots {
            let Some(Some(client)) = clients.get(slot as usize) else {
                continue;
            };
            if !client.is_open() || Some(client.id) == exclude || !client.receives_pushes() {
                continue;
            }
            let dialect = client.dialect();
            let i = match (client.transport(), client.ws_form()) {
                (Transport::Tcp, _) => 3,
                (Transport::Ws, form) if dialect.is_stelar() => form as usize,
                (Transport::Ws, form) => 4 + 3 * (dialect.0 as usize - 1) + form as usize,
            };
            if transform && !dialect.is_stelar() {
                if let Some(f) = self.transformed(client, msg) {
                    if self.send_frame(client, f) {
                        delivered += 1;
                    }
                    continue;
                }
            }
            let frame = forms[i].get_or_insert_with(|| {
                let f = if i == 3 {
                    msg.tcp().cloned()
                } else if i < 3 {
                    let mut c = self.compressors.borrow_mut();
                    msg.ws(client.ws_form(), &mut c).cloned()
                } else {
                    let mut c = self.compressors.borrow_mut();
                    match msg.for_dialect(&self.dialects, dialect, client.ws_form(), &mut c) {
                        DialectForm::Frame(f) => Some(f),
                        DialectForm::Silent => Some(Bytes::new()),
                        DialectForm::Unsendable => None,
                    }
                };
                if remote {
                    f.map(|f| if f.is_empty() { f } else { Outgoing::local(&f) })
                } else {
                    f
                }
            });
            match frame {
                // A dialect with no such message: nothing to send.
                Some(f) if f.is_empty() => {}
                Some(f) => {
                    if self.send_frame(client, f.clone()) {
                        delivered += 1;
                    }
                }
                None if i < 4 => self.counters.drop_message("not_sendable_on_tcp"),
                None => self.counters.drop_message("not_sendable_in_dialect"),
            }
        }
        self.fanned.set(self.fanned.get() + delivered as u64);
        delivered
    }

    /// Messages queued for local clients by fan-out on this shard so far.
    pub(crate) fn fanned_out(&self) -> u64 {
        self.fanned.get()
    }

    /// Bytes queued for this shard's clients (the output budget in use).
    pub(crate) fn output_queued(&self) -> usize {
        self.output.used()
    }

    /// Publishes to a room: local members now, other shards with members by message.
    pub(crate) fn publish(
        &self,
        room: &str,
        msg: Arc<Outgoing>,
        exclude: Option<ClientId>,
    ) -> usize {
        // Delivery touches clients and compressors, never rooms, so the borrow can stay.
        let rooms = self.rooms.borrow();
        let (members, remote) = rooms.route(room);
        let delivered = self.deliver(members.iter().copied(), &msg, exclude, false);
        drop(rooms);
        // The room's shared name, made once for the bridge and the other shards.
        let mut name: Option<Arc<str>> = None;
        if let Some(c) = &self.cluster {
            c.forward(&msg, || {
                Target::Room(name.get_or_insert_with(|| Arc::from(room)).clone())
            });
        }
        if !remote.is_empty() {
            let room: Arc<str> = name.unwrap_or_else(|| Arc::from(room));
            for shard in remote.iter() {
                self.send_mesh(
                    shard,
                    ShardMsg::Room {
                        room: room.clone(),
                        msg: msg.clone(),
                        exclude,
                    },
                );
            }
        }
        delivered
    }

    /// Sends to every client of the process.
    pub(crate) fn broadcast(&self, msg: Arc<Outgoing>, exclude: Option<ClientId>) -> usize {
        let delivered = self.deliver_all(&msg, exclude, false);
        if let Some(c) = &self.cluster {
            c.forward(&msg, || Target::All);
        }
        for shard in 0..self.shards {
            if shard != self.shard {
                self.send_mesh(
                    shard,
                    ShardMsg::All {
                        msg: msg.clone(),
                        exclude,
                    },
                );
            }
        }
        delivered
    }

    fn deliver_all(&self, msg: &Outgoing, exclude: Option<ClientId>, remote: bool) -> usize {
        let n = self.clients.borrow().len() as u32;
        self.deliver(0..n, msg, exclude, remote)
    }

    /// Sends to the raw `/broadcast` bench endpoint's clients on every shard.
    pub(crate) fn raw_broadcast(&self, msg: Arc<Outgoing>, exclude: Option<ClientId>) {
        self.deliver_raw(&msg, exclude, false);
        for shard in 0..self.shards {
            if shard != self.shard {
                self.send_mesh(
                    shard,
                    ShardMsg::RawBroadcast {
                        msg: msg.clone(),
                        exclude,
                    },
                );
            }
        }
    }

    fn deliver_raw(&self, msg: &Outgoing, exclude: Option<ClientId>, remote: bool) {
        let Some(plain) = msg.ws_plain() else { return };
        let slots: Vec<u32> = self.raw_broadcast.borrow().clone();
        let mut frame: Option<Bytes> = None;
        let mut delivered = 0;
        for slot in slots {
            let Some(client) = self.by_slot(slot) else {
                continue;
            };
            if Some(client.id) == exclude || !client.is_open() {
                continue;
            }
            let f = frame.get_or_insert_with(|| {
                if remote {
                    Outgoing::local(plain)
                } else {
                    plain.clone()
                }
            });
            if self.send_frame(&client, f.clone()) {
                delivered += 1;
            }
        }
        self.fanned.set(self.fanned.get() + delivered);
    }

    /// Sends to one client anywhere in the process. When the recipient is gone, `from` (if
    /// given) is told with a `server:error` event, whichever shard found out. Returns false
    /// when that is known at once (a local recipient, or an id no shard can own).
    pub(crate) fn direct(&self, to: ClientId, msg: Arc<Outgoing>, from: Option<ClientId>) -> bool {
        let shard = to.location().shard;
        if self.is_remote(to) {
            // Another node's client (or no node's): the bridge sends it to that node, which
            // drops it, counted, if the client is gone.
            return match &self.cluster {
                Some(c) => {
                    c.forward(&msg, || Target::Client(to));
                    true
                }
                None => {
                    self.direct_failed(from, to);
                    false
                }
            };
        }
        if shard == self.shard {
            match self.client(to) {
                Some(c) if c.takes_direct() => self.send_to(&c, &msg),
                _ => {
                    self.direct_failed(from, to);
                    false
                }
            }
        } else if shard < self.shards {
            self.send_mesh(shard, ShardMsg::Direct { to, msg, from });
            true
        } else {
            self.direct_failed(from, to);
            false
        }
    }

    fn direct_failed(&self, from: Option<ClientId>, to: ClientId) {
        self.counters.drop_message("direct_unknown_client");
        let Some(from) = from else { return };
        if from.location().shard == self.shard {
            if let Some(c) = self.client(from) {
                let text = to.to_string();
                let err = Outgoing::server_error(
                    "unknown_client",
                    "no client with this id is connected",
                    Some("direct"),
                    Some(("to", &text)),
                );
                self.send_to(&c, &err);
            }
        } else {
            self.send_mesh(from.location().shard, ShardMsg::DirectFailed { from, to });
        }
    }

    /// Sends to every connection of `user` in the process: its local connections now, every
    /// other shard by one message carrying the same encoded message (like a room publish;
    /// which shards hold the user is known only to them). Returns local deliveries.
    pub(crate) fn to_user(
        &self,
        user: &str,
        msg: Arc<Outgoing>,
        exclude: Option<ClientId>,
    ) -> usize {
        let delivered = self.deliver_user(user, &msg, exclude, false);
        let mut name: Option<Arc<str>> = None;
        if let Some(c) = &self.cluster {
            c.forward(&msg, || {
                Target::User(name.get_or_insert_with(|| Arc::from(user)).clone())
            });
        }
        if self.shards > 1 {
            let user: Arc<str> = name.unwrap_or_else(|| Arc::from(user));
            for shard in 0..self.shards {
                if shard != self.shard {
                    self.send_mesh(
                        shard,
                        ShardMsg::User {
                            user: user.clone(),
                            msg: msg.clone(),
                            exclude,
                        },
                    );
                }
            }
        }
        delivered
    }

    /// Delivers a message from another node to its local recipients, but `exclude`.
    fn deliver_from_cluster(&self, target: &Target, msg: &Outgoing, exclude: &[ClientId]) {
        let keep = |slot: &u32| {
            exclude.is_empty()
                || self
                    .by_slot(*slot)
                    .is_some_and(|c| !exclude.contains(&c.id))
        };
        match target {
            Target::Room(room) => {
                let slots: Vec<u32> = self.rooms.borrow().members(room).to_vec();
                self.deliver(slots.into_iter().filter(keep), msg, None, true);
            }
            Target::All => {
                let n = self.clients.borrow().len() as u32;
                self.deliver((0..n).filter(keep), msg, None, true);
            }
            Target::User(user) => {
                let slots = self.users.borrow().slots(user).to_vec();
                self.deliver(slots.into_iter().filter(keep), msg, None, true);
            }
            Target::Client(to) => match self.client(*to) {
                Some(c) if c.takes_direct() && !exclude.contains(to) => {
                    self.send_to(&c, msg);
                }
                _ => self.counters.drop_message("direct_unknown_client"),
            },
        }
    }

    /// Delivers to the local connections of `user`.
    fn deliver_user(
        &self,
        user: &str,
        msg: &Outgoing,
        exclude: Option<ClientId>,
        remote: bool,
    ) -> usize {
        let slots = self.users.borrow().slots(user).to_vec();
        self.deliver(slots.into_iter(), msg, exclude, remote)
    }

    // -----------------------------------------------------------------------------------
    // Rooms
    // -----------------------------------------------------------------------------------

    /// Joins `client` to `room`. On success the confirmation (`joined-room`) is sent now, or
    /// once every other shard has acknowledged the room (see `rooms.rs`).
    /// `Ok(true)` when the client was not a member before.
    pub(crate) fn join(&self, client: &Rc<Client>, room: &str) -> Result<bool, JoinRefusal> {
        let member = client.in_room(room);
        if !member && client.with_rooms(<[_]>::len) >= self.config().limits.max_rooms_per_client {
            return Err(JoinRefusal::ClientRoomLimit);
        }
        let mut announce = Vec::new();
        let outcome = self
            .rooms
            .borrow_mut()
            .join(room, client.slot(), &mut announce);
        match outcome {
            Join::TooManyRooms => return Err(JoinRefusal::RoomLimit),
            Join::Confirmed => self.confirm(client, "joined-room", room),
            Join::Pending => {}
        }
        if !member {
            client.rooms_mut().push(Rc::from(room));
            self.presence(client, room, true);
        }
        self.announce(announce);
        Ok(!member)
    }

    /// Removes `client` from `room` and confirms (`left-room`), member or not, as stelar does.
    /// Returns whether it was a member.
    pub(crate) fn leave(&self, client: &Rc<Client>, room: &str) -> bool {
        let mut announce = Vec::new();
        let outcome = self
            .rooms
            .borrow_mut()
            .leave(room, client.slot(), &mut announce);
        let was_member = matches!(outcome, Leave::Left { .. });
        if let Leave::Left { was_pending } = outcome {
            if was_pending {
                self.confirm(client, "joined-room", room);
            }
            client.rooms_mut().retain(|r| &**r != room);
            self.presence(client, room, false);
        }
        self.confirm(client, "left-room", room);
        self.announce(announce);
        was_member
    }

    /// `joined-room` / `left-room` with the room name, in the client's wire form
    /// (PROTOCOL.md §6: a JSON string on WebSocket and in a TCP JSON frame).
    fn confirm(&self, client: &Client, event: &str, room: &str) {
        self.send_to(
            client,
            &Outgoing::room_confirmation(event == "joined-room", room),
        );
    }

    /// Rooms this shard knows of (process-wide view).
    pub(crate) fn room_count(&self) -> usize {
        self.rooms.borrow().len()
    }

    /// Tells the cluster bridge that `client` joined or left `room` (presence).
    fn presence(&self, client: &Client, room: &str, add: bool) {
        if let Some(c) = &self.cluster {
            c.control(Control::Member {
                room: Arc::from(room),
                client: client.id,
                user: client.user().map(|u| Arc::from(&*u)),
                add,
            });
        }
    }

    fn announce(&self, announce: Vec<Interest>) {
        for interest in announce {
            if let Some(c) = &self.cluster {
                c.control(match &interest {
                    Interest::Add { room, shard, epoch } => Control::Room {
                        room: room.clone(),
                        shard: *shard,
                        epoch: Some(*epoch),
                    },
                    Interest::Remove { room, shard } => Control::Room {
                        room: room.clone(),
                        shard: *shard,
                        epoch: None,
                    },
                });
            }
            for shard in 0..self.shards {
                if shard != self.shard {
                    self.send_mesh(shard, ShardMsg::Interest(interest.clone()));
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Mesh
    // -----------------------------------------------------------------------------------

    /// Sends to another shard, keeping per-destination order. A full inbox is backpressure:
    /// the message waits in this shard's overflow (bounded in bytes, `memory.mesh_overflow`)
    /// and [`Hub::drain_overflow`] retries; while the overflow is above half its bound the
    /// shard's connections stop reading ([`Hub::should_pause_reading`]). At the bound the
    /// message is dropped and counted.
    pub(crate) fn send_mesh(self: &Hub, to: u16, msg: ShardMsg) {
        Counters::add(&self.counters.mesh_sent, 1);
        let mut of = self.overflow.borrow_mut();
        let to_i = to as usize;
        if of.queues.len() <= to_i {
            of.queues.resize_with(to_i + 1, VecDeque::new);
        }
        let msg = if of.queues[to_i].is_empty() {
            match self.mesh.send(to_i, msg) {
                Ok(()) => return,
                Err(MeshError::Full(msg)) => msg,
                Err(MeshError::Stopped(_)) | Err(MeshError::NoSuchShard(_)) => {
                    drop(of);
                    self.counters.drop_message("mesh_stopped");
                    return;
                }
            }
        } else {
            msg
        };
        let cost = msg.cost();
        if of.bytes + cost > self.limits.get().mesh_overflow {
            drop(of);
            self.counters.drop_message("mesh_overflow");
            return;
        }
        of.queues[to_i].push_back(msg);
        of.bytes += cost;
        if let Some(w) = of.flusher.take() {
            w.wake();
        }
    }

    /// Whether the overflow is above half its bound (connections stop reading).
    fn mesh_congested(&self) -> bool {
        self.overflow.borrow().bytes > self.limits.get().mesh_overflow / 2
    }

    /// Retries held-back messages whenever there are some; runs for the shard's life.
    pub(crate) async fn drain_overflow(self: Rc<Self>) {
        loop {
            std::future::poll_fn(|cx| {
                let mut of = self.overflow.borrow_mut();
                if of.bytes > 0 {
                    Poll::Ready(())
                } else {
                    of.flusher = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            while !self.flush_overflow() {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    /// Retries held-back messages once. Returns true when none are left.
    fn flush_overflow(&self) -> bool {
        let mut of = self.overflow.borrow_mut();
        for to in 0..of.queues.len() {
            while let Some(msg) = of.queues[to].pop_front() {
                let cost = msg.cost();
                match self.mesh.send(to, msg) {
                    Ok(()) => of.bytes -= cost,
                    Err(MeshError::Full(msg)) => {
                        of.queues[to].push_front(msg);
                        break;
                    }
                    Err(_) => {
                        of.bytes -= cost;
                        self.counters.drop_message("mesh_stopped");
                    }
                }
            }
        }
        let congested = of.bytes > self.limits.get().mesh_overflow / 2;
        let done = of.bytes == 0;
        drop(of);
        if !congested {
            let waiters = std::mem::take(&mut *self.mesh_waiters.borrow_mut());
            for slot in waiters {
                if let Some(c) = self.by_slot(slot) {
                    c.set_waits_for_mesh(false);
                    c.wake();
                }
            }
        }
        done
    }

    /// Handles one message from another shard.
    pub(crate) fn handle_mesh(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Interest(i) => {
                let ack = self.rooms.borrow_mut().handle_interest(&i);
                if let Some((to, room, epoch)) = ack {
                    self.send_mesh(to, ShardMsg::InterestAck { room, epoch });
                }
            }
            ShardMsg::InterestAck { room, epoch } => {
                let released = self.rooms.borrow_mut().handle_ack(&room, epoch);
                for slot in released {
                    if let Some(c) = self.by_slot(slot) {
                        self.confirm(&c, "joined-room", &room);
                    }
                }
            }
            ShardMsg::Room { room, msg, exclude } => {
                let rooms = self.rooms.borrow();
                self.deliver(rooms.members(&room).iter().copied(), &msg, exclude, true);
            }
            ShardMsg::All { msg, exclude } => {
                self.deliver_all(&msg, exclude, true);
            }
            ShardMsg::Direct { to, msg, from } => match self.client(to) {
                Some(c) if c.takes_direct() => {
                    self.send_to(&c, &msg);
                }
                _ => self.direct_failed(from, to),
            },
            ShardMsg::User { user, msg, exclude } => {
                self.deliver_user(&user, &msg, exclude, true);
            }
            ShardMsg::DirectFailed { from, to } => self.direct_failed(Some(from), to),
            ShardMsg::Cluster {
                target,
                msg,
                exclude,
            } => self.deliver_from_cluster(&target, &msg, &exclude),
            ShardMsg::RawBroadcast { msg, exclude } => self.deliver_raw(&msg, exclude, true),
            ShardMsg::Query { from, id, query } => {
                let reply = self.answer(&query);
                self.send_mesh(from, ShardMsg::Reply { id, reply });
            }
            ShardMsg::Reply { id, reply } => {
                let mut gathers = self.gathers.borrow_mut();
                if let Some(g) = gathers.get_mut(&id) {
                    g.replies.push(reply);
                    g.missing = g.missing.saturating_sub(1);
                    if g.missing == 0 {
                        if let Some(w) = g.waker.take() {
                            w.wake();
                        }
                    }
                }
            }
        }
    }

    /// Asks every local open client to close with `cause`.
    pub(crate) fn close_all(&self, cause: CloseCause) {
        let clients: Vec<Rc<Client>> = self.clients.borrow().iter().flatten().cloned().collect();
        for c in clients {
            c.request_close(cause);
        }
    }

    /// This shard's answer to `query`.
    pub(crate) fn answer(&self, query: &Query) -> Reply {
        match query {
            Query::Stats => {
                let mut s = self.counters.snapshot();
                s.rooms = self.room_count() as u64;
                s.users = self.user_counts.users() as u64;
                s.memory = self.memory_gauges();
                s.queued_by_shard = vec![(self.shard, self.output.used() as u64)];
                s.reloads = self.live.reloads();
                s.cluster = self.cluster.as_ref().map(|c| c.stats.snapshot());
                Reply::Stats(Box::new(s))
            }
            Query::Rooms => Reply::Rooms(
                self.rooms
                    .borrow()
                    .local_rooms()
                    .map(|(r, n)| (r.to_owned(), n))
                    .collect(),
            ),
            Query::Members(room) => Reply::Members(
                self.rooms
                    .borrow()
                    .members(room)
                    .iter()
                    .filter_map(|s| self.by_slot(*s))
                    .filter(|c| c.is_open())
                    .map(|c| (c.id, c.user().map(|u| Box::from(&*u))))
                    .collect(),
            ),
            Query::DeliverUser { user, msg } => {
                Reply::DeliveredTo(self.deliver_user(user, msg, None, true))
            }
            Query::Disconnect {
                target,
                code,
                reason,
            } => {
                let victims: Vec<Rc<Client>> = match target {
                    DisconnectTarget::Client(id) => self.client(*id).into_iter().collect(),
                    DisconnectTarget::User(user) => {
                        let slots = self.users.borrow().slots(user).to_vec();
                        slots.into_iter().filter_map(|s| self.by_slot(s)).collect()
                    }
                };
                let mut n = 0;
                for c in victims {
                    if c.is_open() {
                        c.set_close_reason(reason);
                        self.cut_off(&c, CloseCause::Disconnected { code: *code });
                        n += 1;
                    }
                }
                Reply::Disconnected(n)
            }
            Query::Deliver { to, msg } => Reply::Delivered(match self.client(*to) {
                Some(c) if c.is_open() => self.send_to(&c, msg),
                _ => {
                    self.counters.drop_message("direct_unknown_client");
                    false
                }
            }),
        }
    }

    /// Asks every shard (this one included) and resolves with all answers.
    pub(crate) fn gather(self: &Rc<Self>, query: Query) -> GatherFuture {
        self.ask(0..self.shards, query)
    }

    /// Asks `shards` (this one answers at once) and resolves with their answers.
    pub(crate) fn ask(
        self: &Rc<Self>,
        shards: impl Iterator<Item = u16> + Clone,
        query: Query,
    ) -> GatherFuture {
        let id = self.next_gather.get();
        self.next_gather.set(id + 1);
        let mut replies = Vec::new();
        let mut missing = 0;
        for shard in shards.clone() {
            if shard == self.shard {
                replies.push(self.answer(&query));
            } else if shard < self.shards {
                missing += 1;
            }
        }
        self.gathers.borrow_mut().insert(
            id,
            Gather {
                missing,
                replies,
                waker: None,
            },
        );
        for shard in shards {
            if shard != self.shard && shard < self.shards {
                self.send_mesh(
                    shard,
                    ShardMsg::Query {
                        from: self.shard,
                        id,
                        query: query.clone(),
                    },
                );
            }
        }
        GatherFuture {
            hub: self.clone(),
            id,
            deadline: glommio::timer::Timer::new(Duration::from_secs(5)),
        }
    }

    /// Asks the cluster bridge about the other nodes (presence in Redis). `None` without a
    /// cluster; `Answer::Unavailable` when Redis could not answer in time.
    pub(crate) async fn ask_cluster(
        self: &Rc<Self>,
        query: crate::cluster::Query,
    ) -> Option<crate::cluster::Answer> {
        let cluster = self.cluster.clone()?;
        let id = self.next_gather.get();
        self.next_gather.set(id + 1);
        self.gathers.borrow_mut().insert(
            id,
            Gather {
                missing: 1,
                replies: Vec::new(),
                waker: None,
            },
        );
        cluster.control(Control::Query {
            shard: self.shard,
            id,
            query,
        });
        let replies = GatherFuture {
            hub: self.clone(),
            id,
            deadline: glommio::timer::Timer::new(Duration::from_secs(5)),
        }
        .await;
        Some(match replies.into_iter().next() {
            Some(Reply::Cluster(a)) => a,
            _ => crate::cluster::Answer::Unavailable,
        })
    }

    /// Members of `room` on every shard and, in a cluster, on every live node: (client id,
    /// user id), sorted; `partial` when the other nodes could not be asked.
    pub(crate) async fn room_members(self: &Rc<Self>, room: &str) -> Members {
        let mut members: Vec<(String, Option<String>)> = Vec::new();
        for r in self.gather(Query::Members(room.into())).await {
            if let Reply::Members(ids) = r {
                members.extend(
                    ids.into_iter()
                        .map(|(id, user)| (id.to_string(), user.map(String::from))),
                );
            }
        }
        let mut partial = false;
        match self
            .ask_cluster(crate::cluster::Query::Members(room.into()))
            .await
        {
            Some(crate::cluster::Answer::Members(remote)) => members.extend(
                remote
                    .into_iter()
                    .map(|(id, user)| (id, (!user.is_empty()).then_some(user))),
            ),
            Some(_) => partial = true,
            None => {}
        }
        members.sort();
        members.dedup_by(|a, b| a.0 == b.0);
        Members { members, partial }
    }

    /// Rooms with their member counts on every shard and, in a cluster, every live node.
    pub(crate) async fn room_counts(
        self: &Rc<Self>,
    ) -> (std::collections::BTreeMap<String, usize>, bool) {
        let mut rooms = std::collections::BTreeMap::new();
        for r in self.gather(Query::Rooms).await {
            if let Reply::Rooms(list) = r {
                for (name, n) in list {
                    *rooms.entry(name).or_insert(0) += n;
                }
            }
        }
        let mut partial = false;
        match self.ask_cluster(crate::cluster::Query::Rooms).await {
            Some(crate::cluster::Answer::Rooms(remote)) => {
                for (name, n) in remote {
                    *rooms.entry(name).or_insert(0) += n;
                }
            }
            Some(_) => partial = true,
            None => {}
        }
        (rooms, partial)
    }

    /// Counters of every shard, summed.
    pub(crate) async fn stats(self: &Rc<Self>) -> Snapshot {
        let replies = self.gather(Query::Stats).await;
        let mut total = Snapshot {
            shards: 0,
            ..Snapshot::default()
        };
        for r in replies {
            if let Reply::Stats(s) = r {
                total.merge(&s);
            }
        }
        total
    }
}

/// A room's members everywhere ([`Hub::room_members`]).
pub(crate) struct Members {
    /// (client id, user id), sorted by id.
    pub(crate) members: Vec<(String, Option<String>)>,
    /// Other nodes could not be asked (Redis away): these are this node's only.
    pub(crate) partial: bool,
}

/// Resolves with every shard's reply (or what arrived within 5 s).
pub(crate) struct GatherFuture {
    hub: Rc<Hub>,
    id: u64,
    deadline: glommio::timer::Timer,
}

impl Future for GatherFuture {
    type Output = Vec<Reply>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Vec<Reply>> {
        let done = {
            let mut gathers = self.hub.gathers.borrow_mut();
            match gathers.get_mut(&self.id) {
                Some(g) if g.missing == 0 => true,
                Some(g) => {
                    g.waker = Some(cx.waker().clone());
                    false
                }
                None => true,
            }
        };
        if !done && Pin::new(&mut self.deadline).poll(cx).is_pending() {
            return Poll::Pending;
        }
        let g = self.hub.gathers.borrow_mut().remove(&self.id);
        Poll::Ready(g.map(|g| g.replies).unwrap_or_default())
    }
}

impl Drop for GatherFuture {
    fn drop(&mut self) {
        self.hub.gathers.borrow_mut().remove(&self.id);
    }
}

/// `clock`'s reading in nanoseconds.
fn monotonic_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; the monotonic clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardcast_shards::{Runtime, Shard};
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    #[test]
    fn the_mesh_overflow_is_bounded_in_bytes_and_pauses_reading() {
        // Shard 1 holds its inbox and never drains it: shard 0's messages fill the inbox
        // (64 messages), then the overflow (1 MiB), then are dropped and counted.
        let (done_tx, done_rx) = mpsc::channel::<Result<(), String>>();
        let done_tx = std::sync::Mutex::new(done_tx);
        let runtime = Runtime::builder()
            .messages::<ShardMsg>()
            .shards(2)
            .pin(false)
            .inbox_capacity(64)
            .start(move |shard: Shard<ShardMsg>| {
                let done = done_tx.lock().unwrap().clone();
                async move {
                    let inbox = shard.take_inbox();
                    if shard.id() == 1 {
                        shard.shutdown().await;
                        drop(inbox);
                        return;
                    }
                    let (timers, _expirations) = shard.timers::<ClientId>();
                    let limits = ShardLimits {
                        output: usize::MAX,
                        input: usize::MAX,
                        mesh_overflow: 1 << 20,
                        max_queued: usize::MAX,
                        slow_consumer_ms: 0,
                    };
                    let hub = Hub::new(
                        0,
                        2,
                        Arc::new(LiveConfig::new(Config::default(), 1024)),
                        shard.mesh().clone(),
                        timers,
                        Arc::new(AtomicUsize::new(0)),
                        limits,
                    );
                    let client = hub.register(([127, 0, 0, 1], 1).into(), Transport::Ws);
                    hub.open(&client);
                    let msg = Outgoing::event("e", Some(Bytes::from(vec![b'1'; 1000])));
                    let per_msg = ShardMsg::All {
                        msg: msg.clone(),
                        exclude: None,
                    }
                    .cost();
                    let mut paused_at = None;
                    for i in 0..64 + 2 * (1 << 20) / per_msg {
                        if paused_at.is_none() && hub.should_pause_reading(&client) {
                            paused_at = Some(i);
                        }
                        hub.send_mesh(
                            1,
                            ShardMsg::All {
                                msg: msg.clone(),
                                exclude: None,
                            },
                        );
                    }
                    let held = hub.memory_gauges().mesh_overflow;
                    let dropped = hub
                        .counters
                        .snapshot()
                        .dropped
                        .get("mesh_overflow")
                        .copied();
                    let result = if held > 1 << 20 || held + per_msg as u64 <= 1 << 20 {
                        Err(format!("overflow holds {held} bytes"))
                    } else if dropped.unwrap_or(0) == 0 {
                        Err("nothing was dropped at the bound".to_owned())
                    } else if !paused_at.is_some_and(|i| {
                        // Reading pauses once the overflow passes half its bound.
                        let half = 64 + (1 << 19) / per_msg;
                        (half..=half + 1).contains(&i)
                    }) {
                        Err(format!("reading paused at message {paused_at:?}"))
                    } else {
                        Ok(())
                    };
                    let _ = done.send(result);
                    shard.shutdown().await;
                }
            })
            .expect("start");
        let result = done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("shard 0 reports");
        runtime.shutdown_handle().trigger();
        runtime.join().expect("shards end");
        result.unwrap();
    }
}
