//! [`Context`]: one client, as a handler sees it, and every messaging action.
//!
//! The `ctx.*` sends exclude the client itself where stelar's do (`ctx.broadcast`,
//! `ctx.to(room)`); [`Context::server`] gives the server-wide forms that include everyone,
//! with exclusion as an explicit parameter (PROTOCOL.md §6, §10 Q7).

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::{App, Json};
use crate::hub::client::{Client, CloseCause, RequestInfo};
use crate::hub::id::ClientId;
use crate::hub::outgoing::Outgoing;
use crate::hub::users::UserRefusal;
use crate::hub::{Hub, JoinRefusal};
use crate::protocol::stelar::names;
use crate::stats::Transport;

/// Why a send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The event name breaks PROTOCOL.md §2.4 (stelar clients could not receive it).
    #[error("invalid event name (1-256 of A-Z a-z 0-9 - . / :, not a reserved name)")]
    InvalidEventName,
    /// The client is gone or closing.
    #[error("client is not connected")]
    NotConnected,
}

/// One client, and everything a handler can do. Cheap to clone; lives on the client's shard.
#[derive(Clone)]
pub struct Context {
    pub(crate) hub: Rc<Hub>,
    pub(crate) client: Rc<Client>,
    // Settings are read from the hub's live configuration; the app stays for what is not
    // configuration (handlers, hooks).
    #[allow(dead_code)]
    pub(crate) app: Arc<App>,
}

fn check_name(event: &str) -> Result<(), SendError> {
    names::validate_outbound_event(event).map_err(|_| SendError::InvalidEventName)
}

impl Context {
    pub(crate) fn new(hub: Rc<Hub>, client: Rc<Client>, app: Arc<App>) -> Context {
        Context { hub, client, app }
    }

    /// The client's id (36-character UUID form when printed).
    pub fn id(&self) -> ClientId {
        self.client.id
    }

    /// WebSocket or TCP.
    pub fn transport(&self) -> Transport {
        self.client.transport()
    }

    /// The dialect the client speaks (`stelar`, `stellarstack`, `ignis`, `stonyx`, or an
    /// embedder's; README "Dialects").
    pub fn dialect(&self) -> String {
        self.hub.dialects().name(self.client.dialect()).to_owned()
    }

    /// The peer's address (for IPv6 with its scope; the flow label is not kept).
    pub fn peer(&self) -> std::net::SocketAddr {
        self.client.peer()
    }

    /// Whether the client is still connected and taking messages.
    pub fn is_connected(&self) -> bool {
        self.client.is_open()
    }

    /// Rooms the client is in.
    pub fn rooms(&self) -> Vec<String> {
        self.client
            .with_rooms(|rooms| rooms.iter().map(|r| r.to_string()).collect())
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Option<String> {
        self.client.meta(key)
    }

    /// Sets a metadata value.
    pub fn set_meta(&self, key: &str, value: impl Into<String>) {
        self.client.set_meta(key, value.into());
    }

    /// The user this connection belongs to, once authentication (or [`Context::set_user`])
    /// gave it one.
    pub fn user(&self) -> Option<String> {
        self.client.user().map(|u| u.to_string())
    }

    /// Attaches this connection to `user` (an embedder's own authentication, from a
    /// middleware): it then receives what is sent to the user ([`Context::to_user`], the
    /// relay's `direct` with `user`, `POST /api/send` with `user`) and counts against
    /// `limits.max_connections_per_user`. Refused when the user is at that cap
    /// ([`UserRefusal::TooManyConnections`]) or the id is not 1-256 bytes; a middleware then
    /// refuses the client, e.g. with `Reject { code: refusal.close_code(), reason:
    /// refusal.to_string() }` (4003 "too many connections for this user").
    pub fn set_user(&self, user: &str) -> Result<(), UserRefusal> {
        self.hub.set_user(&self.client, Rc::from(user))
    }

    /// Messages to every connection of `user`, on every shard, excluding this client.
    pub fn to_user(&self, user: &str) -> UserTarget<'_> {
        UserTarget {
            hub: &self.hub,
            user: user.to_owned(),
            exclude: Some(self.client.id),
        }
    }

    /// The WebSocket upgrade request (path, query, headers); `None` for TCP clients.
    pub fn request(&self) -> Option<Rc<RequestInfo>> {
        self.client.request()
    }

    /// A header of the upgrade request (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<Vec<u8>> {
        let req = self.client.request()?;
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// A query parameter of the upgrade request, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let req = self.client.request()?;
        let q = req.query.as_deref()?;
        crate::protocol::http::QueryPairs::new(q)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The configuration in effect now: the one the server started with, or the latest that
    /// a reload (SIGHUP, `Running::reload`) swapped in.
    pub fn config(&self) -> std::sync::Arc<crate::config::Config> {
        self.hub.config()
    }

    /// Sends `event` with JSON `data` to this client.
    pub fn emit(&self, event: &str, data: &Json) -> Result<(), SendError> {
        check_name(event)?;
        self.send(Outgoing::event(event, Some(data.0.clone())))
    }

    /// Sends `event` with a serializable value.
    pub fn emit_value<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<(), SendError> {
        self.emit(event, &Json::from_value(data))
    }

    /// Sends a binary message to this client.
    pub fn emit_binary(&self, event: &str, payload: Bytes) -> Result<(), SendError> {
        check_name(event)?;
        self.send(Outgoing::binary(event, payload))
    }

    fn send(&self, msg: Arc<Outgoing>) -> Result<(), SendError> {
        if self.hub.send_to(&self.client, &msg) {
            Ok(())
        } else {
            Err(SendError::NotConnected)
        }
    }

    /// Joins a room (the join hook may veto). The client is sent `joined-room` once the
    /// room is known to every shard.
    pub fn join(&self, room: &str) -> Result<(), JoinRefusal> {
        self.hub.join(&self.client, room).map(|_| ())
    }

    /// Leaves a room; the client is sent `left-room`.
    pub fn leave(&self, room: &str) {
        let _ = self.hub.leave(&self.client, room);
    }

    /// Messages to a room, excluding this client.
    pub fn to(&self, room: &str) -> RoomTarget<'_> {
        RoomTarget {
            hub: &self.hub,
            room: room.to_owned(),
            exclude: Some(self.client.id),
        }
    }

    /// Sends to every client but this one.
    pub fn broadcast(&self, event: &str, data: &Json) -> Result<usize, SendError> {
        check_name(event)?;
        Ok(self.hub.broadcast(
            Outgoing::event(event, Some(data.0.clone())),
            Some(self.client.id),
        ))
    }

    /// Sends to the client `id`, wherever it is connected.
    pub fn to_id(&self, id: ClientId, event: &str, data: &Json) -> Result<(), SendError> {
        check_name(event)?;
        self.hub
            .direct(id, Outgoing::event(event, Some(data.0.clone())), None);
        Ok(())
    }

    /// Server-wide sends that include this client unless excluded explicitly.
    pub fn server(&self) -> Emit<'_> {
        Emit { hub: &self.hub }
    }

    /// Closes this client with a WebSocket close code and reason (TCP: ERROR frame).
    pub fn disconnect(&self, code: u16, reason: &'static str) {
        if self.client.close_requested().is_none() {
            self.client.set_close_reason(reason);
        }
        self.hub.cut_off(&self.client, CloseCause::Kicked { code });
    }
}

/// Messages to one room.
pub struct RoomTarget<'a> {
    hub: &'a Hub,
    room: String,
    exclude: Option<ClientId>,
}

impl RoomTarget<'_> {
    /// Also deliver to the sender.
    pub fn including_sender(mut self) -> Self {
        self.exclude = None;
        self
    }

    /// Sends `event` with JSON data to the room's members. Returns local deliveries.
    pub fn emit(&self, event: &str, data: &Json) -> Result<usize, SendError> {
        check_name(event)?;
        Ok(self.hub.publish(
            &self.room,
            Outgoing::event_in(Arc::from(&*self.room), event, Some(data.0.clone())),
            self.exclude,
        ))
    }

    /// Sends a binary message to the room's members.
    pub fn emit_binary(&self, event: &str, payload: Bytes) -> Result<usize, SendError> {
        check_name(event)?;
        Ok(self.hub.publish(
            &self.room,
            Outgoing::binary_in(Arc::from(&*self.room), event, payload),
            self.exclude,
        ))
    }
}

/// Messages to every connection of one user.
pub struct UserTarget<'a> {
    hub: &'a Hub,
    user: String,
    exclude: Option<ClientId>,
}

impl UserTarget<'_> {
    /// Also deliver to the sender (when it is one of the user's connections).
    pub fn including_sender(mut self) -> Self {
        self.exclude = None;
        self
    }

    /// Sends `event` with JSON data to the user's connections. Returns local deliveries
    /// (connections on other shards get it by message).
    pub fn emit(&self, event: &str, data: &Json) -> Result<usize, SendError> {
        check_name(event)?;
        Ok(self.hub.to_user(
            &self.user,
            Outgoing::event(event, Some(data.0.clone())),
            self.exclude,
        ))
    }

    /// Sends a binary message to the user's connections.
    pub fn emit_binary(&self, event: &str, payload: Bytes) -> Result<usize, SendError> {
        check_name(event)?;
        Ok(self
            .hub
            .to_user(&self.user, Outgoing::binary(event, payload), self.exclude))
    }
}

/// Server-wide sends.
pub struct Emit<'a> {
    hub: &'a Hub,
}

impl Emit<'_> {
    /// To every client, optionally excluding one.
    pub fn broadcast(
        &self,
        event: &str,
        data: &Json,
        exclude: Option<ClientId>,
    ) -> Result<usize, SendError> {
        check_name(event)?;
        Ok(self
            .hub
            .broadcast(Outgoing::event(event, Some(data.0.clone())), exclude))
    }

    /// A binary message to every client (stelar's `broadcastBinary` includes the sender).
    pub fn broadcast_binary(
        &self,
        event: &str,
        payload: Bytes,
        exclude: Option<ClientId>,
    ) -> Result<usize, SendError> {
        check_name(event)?;
        Ok(self
            .hub
            .broadcast(Outgoing::binary(event, payload), exclude))
    }

    /// To a room's members, optionally excluding one.
    pub fn to(&self, room: &str) -> RoomTarget<'_> {
        RoomTarget {
            hub: self.hub,
            room: room.to_owned(),
            exclude: None,
        }
    }

    /// To every connection of a user, wherever they are.
    pub fn to_user(&self, user: &str) -> UserTarget<'_> {
        UserTarget {
            hub: self.hub,
            user: user.to_owned(),
            exclude: None,
        }
    }

    /// To one client anywhere.
    pub fn to_id(&self, id: ClientId, event: &str, data: &Json) -> Result<(), SendError> {
        check_name(event)?;
        self.hub
            .direct(id, Outgoing::event(event, Some(data.0.clone())), None);
        Ok(())
    }
}
