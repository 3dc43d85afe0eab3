//! A fake DingTalk server for `dingbot demo`, integration tests and benchmarks.
//!
//! It owns everything needed to exercise dingbot without a real tenant: an
//! in-memory org ([`Org`]: app credentials, groups, users), an actix-web server on
//! 127.0.0.1 that answers the oapi and api.dingtalk.com endpoints dingbot uses in
//! DingTalk's exact JSON shapes, a sink recording every message sent to the
//! session webhook or through the robot send APIs, sessions that can be ended (their
//! webhook then answers 300001), the robot send permission (`qyapi_robot_sendmsg`) that
//! can be taken away, per-endpoint call counters, and injectable faults
//! ([`Fault`]: error codes, HTTP errors, HTML, truncated or garbage bodies, delays).
//!
//! The same base URL ([`Sandbox::base_url`]) serves as both the oapi and the
//! api.dingtalk.com base. Scripts talking to a sandbox in another process use the
//! `/_sandbox/*` admin endpoints (see `admin.rs`).
//!
//! This module is never used on production paths: nothing outside `demo`, the
//! `sandbox` CLI command, tests and benchmarks may depend on it, and it must not
//! depend on dingbot's own DingTalk client (it is the other side of the wire).

mod admin;
mod api;
mod faults;
mod gateway;
mod org;
mod state;

#[cfg(test)]
mod tests;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use tokio::sync::watch;

pub use faults::{Endpoint, Fault, NO_PERMISSION_ERRCODE, UnknownEndpoint};
pub use gateway::{Ack, ConnectionInfo, Gateway, bot_frame, robot_payload};
pub use org::{Access, Group, Org, User};
pub use state::{MESSAGE_CAPACITY, SentMessage};

use state::State;

/// Largest request body the sandbox accepts (bigger bodies get HTTP 413 and are not counted).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// A running fake DingTalk server.
///
/// Cloning is cheap and every clone controls the same server. The server stops when
/// [`Sandbox::stop`] is called or the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: web::Data<State>,
    gateway: web::Data<gateway::GatewayState>,
    addr: SocketAddr,
    handle: ServerHandle,
    /// Becomes `true` when the server future has finished.
    finished: watch::Receiver<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The stop command is sent when `stop` is called; the returned future only
        // waits for completion, which a destructor cannot do.
        let _completion = self.handle.stop(false);
    }
}

impl Sandbox {
    /// Starts a sandbox on `127.0.0.1` with an OS-chosen port and one worker thread.
    ///
    /// Must be called inside a tokio runtime; the server is spawned onto it.
    pub async fn start(org: Org) -> std::io::Result<Sandbox> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        Sandbox::start_with_workers(org, listener, 1).await
    }

    /// Starts a sandbox on an already bound listener (for `dingbot sandbox --listen`),
    /// with up to two worker threads.
    pub async fn start_on(org: Org, listener: TcpListener) -> std::io::Result<Sandbox> {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get().min(2))
            .unwrap_or(1);
        Sandbox::start_with_workers(org, listener, workers).await
    }

    /// Starts a sandbox on `listener` with `workers` actix worker threads.
    pub async fn start_with_workers(
        org: Org,
        listener: TcpListener,
        workers: usize,
    ) -> std::io::Result<Sandbox> {
        let addr = listener.local_addr()?;
        let gateway = web::Data::new(gateway::GatewayState::new(&org.app_key, &org.app_secret));
        gateway.set_base_url(format!("http://{addr}"));
        let state = web::Data::new(State::new(org));
        let app_state = state.clone();
        let app_gateway = gateway.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(app_gateway.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY))
                // Before the admin scope, which would otherwise take /_sandbox/stream/*.
                .configure(gateway::configure)
                .configure(api::configure)
                .configure(admin::configure)
                .default_service(web::to(api::not_found))
        })
        .workers(workers.max(1))
        // Longer than dingbot's pool idle timeout, like a real server's keep-alive.
        .keep_alive(std::time::Duration::from_secs(75))
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        let (done_tx, finished) = watch::channel(false);
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::warn!(error = %e, "sandbox server failed");
            }
            let _ = done_tx.send(true);
        });
        tracing::info!(%addr, "sandbox listening");
        Ok(Sandbox {
            inner: Arc::new(Inner {
                state,
                gateway,
                addr,
                handle,
                finished,
            }),
        })
    }

    /// The Stream gateway (protocol doc §7) on this sandbox's port.
    pub fn gateway(&self) -> Gateway {
        Gateway {
            state: self.inner.gateway.clone(),
        }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`; use it as both the oapi and the api.dingtalk.com base.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The session webhook URL for `session`, as DingTalk would put in `sessionWebhook`.
    pub fn webhook_url(&self, session: &str) -> String {
        let encoded: String = url::form_urlencoded::byte_serialize(session.as_bytes()).collect();
        format!("{}/robot/sendBySession?session={encoded}", self.base_url())
    }

    /// Every message received on `sendBySession` and the robot send APIs (at most
    /// [`MESSAGE_CAPACITY`], oldest first).
    pub fn messages(&self) -> Vec<SentMessage> {
        self.inner.state.messages(None)
    }

    /// The messages received for one session, oldest first.
    pub fn messages_for(&self, session: &str) -> Vec<SentMessage> {
        self.inner.state.messages(Some(session))
    }

    /// How many messages were received since start or the last [`Sandbox::reset`],
    /// including ones no longer kept.
    pub fn message_count(&self) -> u64 {
        self.inner.state.message_total()
    }

    /// Waits until at least `n` messages have been received (counting since start or
    /// the last reset) or `timeout` passes, then returns [`Sandbox::messages`].
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<SentMessage> {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let state = &self.inner.state;
        state
            .wait_until(timeout, || state.message_total() >= n)
            .await;
        self.messages()
    }

    /// Waits until `session` has at least `n` kept messages or `timeout` passes, then
    /// returns [`Sandbox::messages_for`] `session`.
    pub async fn wait_for_session_messages(
        &self,
        session: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<SentMessage> {
        let state = &self.inner.state;
        state
            .wait_until(timeout, || state.messages(Some(session)).len() >= n)
            .await;
        state.messages(Some(session))
    }

    /// How many requests `ep` received, faulted ones included.
    pub fn calls(&self, ep: Endpoint) -> u64 {
        self.inner.state.calls(ep)
    }

    /// Makes the next `times` requests to `ep` answer with `fault`, after any faults
    /// already queued for `ep`. `u32::MAX` keeps the fault until [`Sandbox::clear_faults`].
    pub fn inject(&self, ep: Endpoint, fault: Fault, times: u32) {
        self.inner.state.faults.inject(ep, fault, times);
    }

    /// Ends `session`: its webhook answers `300001 session 不存在` from now on, as
    /// DingTalk's does once a session expired.
    pub fn end_session(&self, session: &str) {
        self.inner.state.end_session(session);
    }

    /// Takes the `qyapi_robot_sendmsg` permission from the app (`false`) or gives it back:
    /// without it the robot send APIs answer HTTP 403 naming the permission.
    pub fn set_robot_send_permission(&self, granted: bool) {
        self.inner.state.set_robot_send_denied(!granted);
    }

    /// Puts `userid` under flow control: `oToMessages/batchSend` lists it in
    /// `flowControlledStaffIdList` and sends it nothing.
    pub fn flow_control(&self, userid: &str) {
        self.inner.state.flow_control(userid);
    }

    /// The messages received through one API (e.g. `Endpoint::RobotGroupSend`), oldest
    /// first.
    pub fn messages_via(&self, via: Endpoint) -> Vec<SentMessage> {
        self.messages()
            .into_iter()
            .filter(|m| m.via == via)
            .collect()
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.inner.state.faults.clear();
    }

    /// Invalidates the current token; using it now yields 40014 / HTTP 401, and the
    /// next `/gettoken` issues a new one.
    pub fn revoke_tokens(&self) {
        self.inner.state.revoke_tokens();
    }

    /// The token `/gettoken` would currently renew, if one is valid.
    pub fn current_token(&self) -> Option<String> {
        self.inner.state.current_token()
    }

    /// Forgets all recorded messages and zeroes all counters (faults and tokens stay).
    pub fn reset(&self) {
        self.inner.state.reset();
    }

    /// A copy of the group with this openConversationId.
    pub fn group(&self, open_conversation_id: &str) -> Option<Group> {
        self.inner.state.group(open_conversation_id)
    }

    /// Adds a group or replaces the one with the same openConversationId.
    pub fn put_group(&self, group: Group) {
        self.inner.state.put_group(group);
    }

    /// Changes a group in place (e.g. rename it, change its access); returns `false`
    /// if there is no such group.
    pub fn update_group(&self, open_conversation_id: &str, f: impl FnOnce(&mut Group)) -> bool {
        let Some(mut group) = self.inner.state.group(open_conversation_id) else {
            return false;
        };
        f(&mut group);
        if group.open_conversation_id != open_conversation_id {
            self.inner.state.remove_group(open_conversation_id);
        }
        self.inner.state.put_group(group);
        true
    }

    /// Asks the server to stop (not gracefully); returns immediately.
    pub fn stop(&self) {
        let _completion = self.inner.handle.stop(false);
    }

    /// Stops the server and waits until it has shut down.
    pub async fn shutdown(&self) {
        self.inner.handle.stop(false).await;
        self.stopped().await;
    }

    /// Resolves once the server has stopped (after [`Sandbox::stop`] or a failure).
    pub async fn stopped(&self) {
        let mut finished = self.inner.finished.clone();
        // An error means the server task is gone, which also means it stopped.
        let _ = finished.wait_for(|done| *done).await;
    }
}
