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
pub(crate) mod outgoing;
pub(crate) mod rooms;

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

use crate::config::Config;
use crate::protocol::stelar::{OutFrame, TextEnvelope};
use crate::protocol::ws::codec::{server_frame, Compressor};
use crate::protocol::ws::deflate::Deflater;
use crate::protocol::ws::frame::OpCode;
use crate::stats::{Counters, Snapshot, Transport};

use client::{Client, CloseCause, Phase};
use id::ClientId;
use outgoing::{Compressors, Outgoing, WsForm};
use rooms::{Interest, Join, Leave, Rooms};

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

/// Questions answered by every shard.
#[derive(Debug, Clone)]
pub(crate) enum Query {
    /// Counters.
    Stats,
    /// Rooms with local members and their local member counts.
    Rooms,
    /// Local members of a room.
    Members(Arc<str>),
}

/// One shard's answer to a [`Query`].
#[derive(Debug)]
pub(crate) enum Reply {
    /// Counters.
    Stats(Snapshot),
    /// `(room, local members)`.
    Rooms(Vec<(String, usize)>),
    /// Member ids.
    Members(Vec<ClientId>),
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
    total: usize,
    flushing: bool,
}

/// Most messages held back for full inboxes before new ones are dropped (and counted).
const MAX_OVERFLOW: usize = 1 << 20;

/// One shard's clients, rooms and counters.
pub(crate) struct Hub {
    shard: u16,
    shards: u16,
    config: Arc<Config>,
    /// This shard's counters.
    pub counters: Counters,
    clients: RefCell<Vec<Option<Rc<Client>>>>,
    free: RefCell<Vec<u32>>,
    rooms: RefCell<Rooms>,
    raw_broadcast: RefCell<Vec<u32>>,
    mesh: ShardMesh<ShardMsg>,
    overflow: RefCell<Overflow>,
    compressors: RefCell<Compressors>,
    timers: Timers<ClientId>,
    started: Instant,
    clock: Cell<u64>,
    gathers: RefCell<ahash::HashMap<u64, Gather>>,
    next_gather: Cell<u64>,
    /// Open clients in the whole process (shared by every shard's hub; one relaxed add per
    /// connect and disconnect), for `limits.max_connections`.
    process_clients: Arc<std::sync::atomic::AtomicUsize>,
}

impl Hub {
    /// A hub for `shard` of `shards`.
    pub(crate) fn new(
        shard: u16,
        shards: u16,
        config: Arc<Config>,
        mesh: ShardMesh<ShardMsg>,
        timers: Timers<ClientId>,
        process_clients: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Hub {
        let threshold = config.compression.threshold;
        Hub {
            shard,
            shards,
            rooms: RefCell::new(Rooms::new(shard, shards, config.limits.max_rooms)),
            config,
            counters: Counters::default(),
            clients: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            raw_broadcast: RefCell::new(Vec::new()),
            mesh,
            overflow: RefCell::new(Overflow::default()),
            compressors: RefCell::new(Compressors {
                full: Compressor::new(Deflater::new(true, 15), threshold),
                narrow: Compressor::new(Deflater::new(true, 9), threshold),
            }),
            timers,
            started: Instant::now(),
            clock: Cell::new(0),
            gathers: RefCell::new(ahash::HashMap::default()),
            next_gather: Cell::new(1),
            process_clients,
        }
    }

    /// This shard's index.
    pub(crate) fn shard(&self) -> u16 {
        self.shard
    }
    /// The configuration.
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }
    /// The shard's timers (keyed by client id).
    pub(crate) fn timers(&self) -> &Timers<ClientId> {
        &self.timers
    }

    /// Coarse shard time in ms since start, refreshed by [`Hub::tick_clock`].
    pub(crate) fn now(&self) -> u64 {
        self.clock.get()
    }

    /// Refreshes the coarse clock.
    pub(crate) fn tick_clock(&self) -> u64 {
        let now = self.started.elapsed().as_millis() as u64;
        self.clock.set(now);
        now
    }

    /// Milliseconds since the shard started.
    pub(crate) fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Open clients in the whole process.
    pub(crate) fn process_clients(&self) -> usize {
        self.process_clients
            .load(std::sync::atomic::Ordering::Relaxed)
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
        let id = ClientId::new(self.shard, slot, id::random_bytes());
        let client = Rc::new(Client::new(id, slot, peer, transport, self.tick_clock()));
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
        }
    }

    /// Removes a connection: leaves its rooms (telling other shards), frees its slot.
    pub(crate) fn unregister(&self, client: &Client) {
        let was_open = client.phase() == Phase::Open || client.phase() == Phase::Closing;
        let opened = self.clients.borrow()[client.slot as usize]
            .as_ref()
            .is_some_and(|c| c.id == client.id);
        if !opened {
            return;
        }
        if was_open {
            self.process_clients
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            self.counters.closed(client.transport());
        }
        client.set_phase(Phase::Closing);
        let rooms: Vec<Rc<str>> = std::mem::take(&mut *client.rooms_mut());
        let mut announce = Vec::new();
        {
            let mut reg = self.rooms.borrow_mut();
            for room in &rooms {
                reg.leave(room, client.slot, &mut announce);
            }
        }
        self.announce(announce);
        self.raw_broadcast
            .borrow_mut()
            .retain(|s| *s != client.slot);
        client.out().borrow_mut().clear();
        self.clients.borrow_mut()[client.slot as usize] = None;
        self.free.borrow_mut().push(client.slot);
    }

    /// The local client with this id, if it is still connected.
    pub(crate) fn client(&self, id: ClientId) -> Option<Rc<Client>> {
        let loc = id.location();
        if loc.shard != self.shard {
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
        self.raw_broadcast.borrow_mut().push(client.slot);
    }

    // -----------------------------------------------------------------------------------
    // Delivery
    // -----------------------------------------------------------------------------------

    /// Queues `frame` on `client`, applying the slow-consumer limit: a client that already has
    /// more than `limits.max_queued_bytes` waiting is cut off (so one message larger than the
    /// limit still goes to a client that keeps up). Returns false if the client does not take
    /// messages (not open, or just cut off).
    pub(crate) fn send_frame(&self, client: &Client, frame: Bytes) -> bool {
        if !client.is_open() {
            return false;
        }
        if client.out().borrow().bytes() > self.config.limits.max_queued_bytes {
            self.cut_off(client, CloseCause::SlowConsumer);
            return false;
        }
        client.queue(frame);
        Counters::add(&self.counters.messages_sent, 1);
        true
    }

    /// Drops everything queued for `client` (benches: what the socket would have taken).
    #[cfg(feature = "bench-internals")]
    pub(crate) fn discard_queue(&self, client: &Client) {
        client.out().borrow_mut().clear();
    }

    /// Stops queueing to `client` and asks its task to close with `cause`.
    pub(crate) fn cut_off(&self, client: &Client, cause: CloseCause) {
        if client.phase() == Phase::Open {
            client.set_phase(Phase::Closing);
            client.out().borrow_mut().clear();
            self.counters.disconnect(cause.label());
        }
        client.request_close(cause);
    }

    /// Sends `msg` to one local client, in the form its transport takes.
    pub(crate) fn send_to(&self, client: &Client, msg: &Outgoing) -> bool {
        let frame = match client.transport() {
            Transport::Ws => {
                let mut c = self.compressors.borrow_mut();
                msg.ws(client.ws_form(), &mut c).clone()
            }
            Transport::Tcp => match msg.tcp() {
                Some(f) => f.clone(),
                None => {
                    self.counters.drop_message("not_sendable_on_tcp");
                    return false;
                }
            },
        };
        self.send_frame(client, frame)
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
        // Frames in the forms actually needed, built on first need: plain, deflate, narrow, tcp.
        let mut forms: [Option<Option<Bytes>>; 4] = [None, None, None, None];
        let mut delivered = 0;
        let clients = self.clients.borrow();
        for slot in slots {
            let Some(Some(client)) = clients.get(slot as usize) else {
                continue;
            };
            if !client.is_open() || Some(client.id) == exclude || !client.is_stelar() {
                continue;
            }
            let i = match (client.transport(), client.ws_form()) {
                (Transport::Ws, WsForm::Plain) => 0,
                (Transport::Ws, WsForm::Deflate) => 1,
                (Transport::Ws, WsForm::DeflateNarrow) => 2,
                (Transport::Tcp, _) => 3,
            };
            let frame = forms[i].get_or_insert_with(|| {
                let f = if i == 3 {
                    msg.tcp().cloned()
                } else {
                    let mut c = self.compressors.borrow_mut();
                    Some(msg.ws(client.ws_form(), &mut c).clone())
                };
                if remote {
                    f.map(|f| Outgoing::local(&f))
                } else {
                    f
                }
            });
            match frame {
                Some(f) => {
                    if self.send_frame(client, f.clone()) {
                        delivered += 1;
                    }
                }
                None => self.counters.drop_message("not_sendable_on_tcp"),
            }
        }
        delivered
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
        if !remote.is_empty() {
            let room: Arc<str> = Arc::from(room);
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
        let slots: Vec<u32> = self.raw_broadcast.borrow().clone();
        let mut frame: Option<Bytes> = None;
        for slot in slots {
            let Some(client) = self.by_slot(slot) else {
                continue;
            };
            if Some(client.id) == exclude || !client.is_open() {
                continue;
            }
            let f = frame.get_or_insert_with(|| {
                let f = msg.ws_plain().clone();
                if remote {
                    Outgoing::local(&f)
                } else {
                    f
                }
            });
            self.send_frame(&client, f.clone());
        }
    }

    /// Sends to one client anywhere in the process. When the recipient is gone, `from` (if
    /// given) is told with a `server:error` event, whichever shard found out. Returns false
    /// when that is known at once (a local recipient, or an id no shard can own).
    pub(crate) fn direct(&self, to: ClientId, msg: Arc<Outgoing>, from: Option<ClientId>) -> bool {
        let shard = to.location().shard;
        if shard == self.shard {
            match self.client(to) {
                Some(c) if c.is_open() => self.send_to(&c, &msg),
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
                let err = Outgoing::server_error_with(
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

    // -----------------------------------------------------------------------------------
    // Rooms
    // -----------------------------------------------------------------------------------

    /// Joins `client` to `room`. On success the confirmation (`joined-room`) is sent now, or
    /// once every other shard has acknowledged the room (see `rooms.rs`).
    pub(crate) fn join(&self, client: &Rc<Client>, room: &str) -> Result<(), JoinRefusal> {
        let member = client.rooms().iter().any(|r| &**r == room);
        if !member && client.rooms().len() >= self.config.limits.max_rooms_per_client {
            return Err(JoinRefusal::ClientRoomLimit);
        }
        let mut announce = Vec::new();
        let outcome = self
            .rooms
            .borrow_mut()
            .join(room, client.slot, &mut announce);
        match outcome {
            Join::TooManyRooms => return Err(JoinRefusal::RoomLimit),
            Join::Confirmed => self.confirm(client, "joined-room", room),
            Join::Pending => {}
        }
        if !member {
            client.rooms_mut().push(Rc::from(room));
        }
        self.announce(announce);
        Ok(())
    }

    /// Removes `client` from `room` and confirms (`left-room`), member or not, as stelar does.
    pub(crate) fn leave(&self, client: &Rc<Client>, room: &str) {
        let mut announce = Vec::new();
        let outcome = self
            .rooms
            .borrow_mut()
            .leave(room, client.slot, &mut announce);
        if let Leave::Left { was_pending } = outcome {
            if was_pending {
                self.confirm(client, "joined-room", room);
            }
            client.rooms_mut().retain(|r| &**r != room);
        }
        self.confirm(client, "left-room", room);
        self.announce(announce);
    }

    /// `joined-room` / `left-room` with the room name, in the client's wire form
    /// (PROTOCOL.md §6: a JSON string on WebSocket and in a TCP JSON frame).
    fn confirm(&self, client: &Client, event: &str, room: &str) {
        let frame = match client.transport() {
            Transport::Ws => {
                let mut quoted = bytes::BytesMut::with_capacity(room.len() + 2);
                crate::protocol::stelar::json::write_quoted(&mut quoted, room);
                let env = TextEnvelope::event(event, Some(&quoted)).encode();
                server_frame(OpCode::Text, &env)
            }
            Transport::Tcp => match (OutFrame::JsonString { event, value: room }).encode() {
                Ok(f) => f,
                Err(_) => return,
            },
        };
        self.send_frame(client, frame);
    }

    /// Rooms this shard knows of (process-wide view).
    pub(crate) fn room_count(&self) -> usize {
        self.rooms.borrow().len()
    }

    fn announce(&self, announce: Vec<Interest>) {
        for interest in announce {
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
    /// the message waits in this shard's overflow queue (bounded) and a task retries.
    pub(crate) fn send_mesh(self: &Hub, to: u16, msg: ShardMsg) {
        Counters::add(&self.counters.mesh_sent, 1);
        let mut of = self.overflow.borrow_mut();
        let to_i = to as usize;
        if of.queues.len() <= to_i {
            of.queues.resize_with(to_i + 1, VecDeque::new);
        }
        if !of.queues[to_i].is_empty() {
            if of.total >= MAX_OVERFLOW {
                drop(of);
                self.counters.drop_message("mesh_overflow");
                return;
            }
            of.queues[to_i].push_back(msg);
            of.total += 1;
            return;
        }
        match self.mesh.send(to_i, msg) {
            Ok(()) => {}
            Err(MeshError::Full(msg)) => {
                of.queues[to_i].push_back(msg);
                of.total += 1;
            }
            Err(MeshError::Stopped(_)) | Err(MeshError::NoSuchShard(_)) => {
                drop(of);
                self.counters.drop_message("mesh_stopped");
            }
        }
    }

    /// Whether messages wait for a full inbox and no task is flushing them yet; marks the
    /// flush as started.
    pub(crate) fn overflow_needs_flush(&self) -> bool {
        let mut of = self.overflow.borrow_mut();
        if of.total > 0 && !of.flushing {
            of.flushing = true;
            true
        } else {
            false
        }
    }

    /// Retries held-back messages. Returns true when none are left.
    pub(crate) fn flush_overflow(&self) -> bool {
        let mut of = self.overflow.borrow_mut();
        for to in 0..of.queues.len() {
            while let Some(msg) = of.queues[to].pop_front() {
                match self.mesh.send(to, msg) {
                    Ok(()) => of.total -= 1,
                    Err(MeshError::Full(msg)) => {
                        of.queues[to].push_front(msg);
                        break;
                    }
                    Err(_) => {
                        of.total -= 1;
                        self.counters.drop_message("mesh_stopped");
                    }
                }
            }
        }
        let done = of.total == 0;
        if done {
            of.flushing = false;
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
                Some(c) if c.is_open() => {
                    self.send_to(&c, &msg);
                }
                _ => self.direct_failed(from, to),
            },
            ShardMsg::DirectFailed { from, to } => self.direct_failed(Some(from), to),
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
                Reply::Stats(s)
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
                    .map(|c| c.id)
                    .collect(),
            ),
        }
    }

    /// Asks every shard (this one included) and resolves with all answers.
    pub(crate) fn gather(self: &Rc<Self>, query: Query) -> GatherFuture {
        let id = self.next_gather.get();
        self.next_gather.set(id + 1);
        let local = self.answer(&query);
        let others = self.shards as usize - 1;
        self.gathers.borrow_mut().insert(
            id,
            Gather {
                missing: others,
                replies: vec![local],
                waker: None,
            },
        );
        for shard in 0..self.shards {
            if shard != self.shard {
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
