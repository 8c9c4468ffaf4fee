//! Hooks for the criterion benches in `bench/` (cargo feature `bench-internals`). Not an API:
//! nothing here is stable, and the server never enables the feature.
//!
//! The fan-out bench measures `Hub::publish` on one shard with thousands of registered
//! connections and no sockets. The hub and its clients are crate-private, so the bench drives
//! them through [`FanoutBench`], which exposes exactly the operations it times.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use shardcast_shards::{Runtime, Shard};

use crate::config::Config;
use crate::hub::client::Client;
use crate::hub::id::ClientId;
use crate::hub::memory::ShardLimits;
use crate::hub::outgoing::{Outgoing, WsForm};
use crate::hub::{Hub, ShardMsg};
use crate::stats::Transport;

/// Which wire forms the members of a bench room take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Every member a plain WebSocket client.
    Ws,
    /// Every member a WebSocket client with permessage-deflate.
    WsDeflate,
    /// Every member a stelar TCP client.
    Tcp,
    /// A third of each.
    Mixed,
}

/// A message to publish, encoded lazily (once per wire form) like a real publish.
pub struct Message(Arc<Outgoing>);

impl Message {
    /// An event with JSON `data`.
    pub fn event(event: &str, data: Bytes) -> Message {
        Message(Outgoing::event(event, Some(data)))
    }
}

/// One shard's hub with socket-less members.
pub struct FanoutBench {
    hub: Rc<Hub>,
    members: Vec<Rc<Client>>,
}

impl FanoutBench {
    /// Registers `n` open clients taking `mix` and joins them to `room`.
    pub fn add_members(&mut self, room: &str, n: usize, mix: Mix) {
        let peer: SocketAddr = ([127, 0, 0, 1], 1).into();
        for i in 0..n {
            let (transport, form) = match (mix, i % 3) {
                (Mix::Ws, _) | (Mix::Mixed, 0) => (Transport::Ws, WsForm::Plain),
                (Mix::WsDeflate, _) | (Mix::Mixed, 1) => (Transport::Ws, WsForm::Deflate),
                (Mix::Tcp, _) | (Mix::Mixed, _) => (Transport::Tcp, WsForm::Plain),
            };
            let c = self.hub.register(peer, transport);
            c.set_ws_form(form);
            self.hub.open(&c);
            if self.hub.join(&c, room).is_err() {
                panic!("bench join refused");
            }
            self.members.push(c);
        }
        self.clear_queues();
    }

    /// Publishes to `room` (encode once, queue on every member). Returns local deliveries.
    pub fn publish(&self, room: &str, msg: Message) -> usize {
        self.hub.publish(room, msg.0, None)
    }

    /// The naive peer: a fresh message (so a fresh encoding) for every member.
    pub fn send_each(&self, event: &str, data: &Bytes) {
        for c in &self.members {
            let msg = Outgoing::event(event, Some(data.clone()));
            self.hub.send_to(c, &msg);
        }
    }

    /// Empties every member's write queue (what the sockets would have done).
    pub fn clear_queues(&self) {
        for c in &self.members {
            self.hub.discard_queue(c);
        }
    }

    /// Unregisters every member.
    pub fn remove_members(&mut self) {
        for c in self.members.drain(..) {
            self.hub.unregister(&c);
        }
    }
}

/// Starts a one-shard runtime with no listeners and runs `f` on the shard with a fresh hub
/// (default configuration). Returns when `f` has returned.
pub fn on_one_shard(f: impl Fn(FanoutBench) + Send + Sync + 'static) {
    let f = Arc::new(f);
    let done = Arc::new(Mutex::new(false));
    let flag = done.clone();
    let runtime = Runtime::builder()
        .messages::<ShardMsg>()
        .shards(1)
        .start(move |shard: Shard<ShardMsg>| {
            let flag = flag.clone();
            let f = f.clone();
            async move {
                let (timers, _expirations) = shard.timers::<ClientId>();
                let hub = Rc::new(Hub::new(
                    0,
                    1,
                    Arc::new(crate::live::LiveConfig::new(Config::default(), 1024)),
                    shard.mesh().clone(),
                    timers,
                    Arc::new(AtomicUsize::new(0)),
                    ShardLimits {
                        output: usize::MAX,
                        input: usize::MAX,
                        mesh_overflow: usize::MAX,
                        max_queued: usize::MAX,
                        slow_consumer_ms: 0,
                    },
                ));
                f(FanoutBench {
                    hub,
                    members: Vec::new(),
                });
                *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
            }
        })
        .expect("start a one-shard runtime");
    runtime.join().expect("the bench shard ended cleanly");
    assert!(
        *done.lock().unwrap_or_else(|p| p.into_inner()),
        "the bench ran"
    );
}
