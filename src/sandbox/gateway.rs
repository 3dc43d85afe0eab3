//! The fake Stream gateway (protocol doc §7), on the sandbox's own port:
//!
//! - `POST /v1.0/gateway/connections/open` checks the app's credentials and the
//!   subscription and answers `{"endpoint":"ws://127.0.0.1:PORT/gateway/connect","ticket"}`
//!   (tickets are single-use and expire after 90 s), or 401 `authFailed`;
//! - `GET /gateway/connect?ticket=…` is the WebSocket.
//!
//! Through [`Gateway`] (and `/_sandbox/stream/*` for scripts) a test pushes robot messages
//! and raw frames, sends `SYSTEM` pings and `disconnect`, drops the socket without a close
//! frame, makes the gateway go silent (no frames, no pongs), refuses `connections/open` or
//! tickets, and reads every answer the client wrote back. A load mode pushes unique
//! messages as fast as the client ACKs them.
//!
//! Pushes go to the newest open connection, as DingTalk picks one of an app's connections.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use actix_ws::Message;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

/// The robot-message topic.
const BOT_TOPIC: &str = "/v1.0/im/bot/messages/get";
/// How long a ticket may wait for its connection.
const TICKET_TTL: Duration = Duration::from_secs(90);
/// Answers kept for inspection; older ones are dropped but counted.
const ACK_CAPACITY: usize = 100_000;
/// After `disconnect` the gateway closes the connection itself after this long, as
/// DingTalk does after 10 s.
const DISCONNECT_CLOSE: Duration = Duration::from_secs(10);
/// Largest frame the gateway reads from a client.
const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// What a connection's task is told to do.
#[derive(Debug)]
enum Command {
    /// Send this text frame.
    Text(String),
    /// Close with a close frame.
    Close,
    /// Drop the TCP connection without a close frame.
    Drop,
}

/// One connection, open or closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// 1, 2, … in opening order.
    pub id: u64,
    /// Event sequence number of the opening.
    pub opened_seq: u64,
    /// Event sequence number of the closing, once closed.
    pub closed_seq: Option<u64>,
}

/// An answer a client wrote back.
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    /// The connection it came on.
    pub connection: u64,
    /// `headers.messageId`.
    pub message_id: String,
    /// `code`.
    pub code: i64,
    /// `data` (a JSON string in the protocol).
    pub data: String,
    /// The whole answer.
    pub body: Value,
}

#[derive(Debug)]
struct Connection {
    info: ConnectionInfo,
    tx: mpsc::UnboundedSender<Command>,
}

/// A load run: `count` unique messages, at most `window` waiting for their ACK.
#[derive(Debug, Clone, Default)]
struct Load {
    count: u64,
    groups: u64,
    window: u64,
    text: String,
    pushed: u64,
    acked: u64,
    started: Option<Instant>,
    finished: Option<Instant>,
    run: u64,
}

#[derive(Debug, Default)]
struct Inner {
    tickets: HashMap<String, Instant>,
    refuse_open: bool,
    refuse_tickets: bool,
    silent: bool,
    connections: Vec<Connection>,
    acks: VecDeque<Ack>,
    ack_total: u64,
    seq: u64,
    last_open: Option<Value>,
    load: Load,
}

/// The gateway's state, shared by its handlers and every [`Gateway`] handle.
#[derive(Debug)]
pub(crate) struct GatewayState {
    app_key: String,
    app_secret: String,
    inner: Mutex<Inner>,
    changed: Notify,
    open_calls: AtomicU64,
    message_ids: AtomicU64,
    /// `http://127.0.0.1:PORT`, for the endpoint and the webhooks of load messages.
    base_url: Mutex<String>,
}

impl GatewayState {
    pub(crate) fn new(app_key: &str, app_secret: &str) -> GatewayState {
        GatewayState {
            app_key: app_key.to_string(),
            app_secret: app_secret.to_string(),
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
            open_calls: AtomicU64::new(0),
            message_ids: AtomicU64::new(0),
            base_url: Mutex::new(String::new()),
        }
    }

    pub(crate) fn set_base_url(&self, url: String) {
        *self.base_url.lock().unwrap_or_else(|e| e.into_inner()) = url;
    }

    fn base_url(&self) -> String {
        self.base_url
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads (or changes without waking anyone).
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Changes, then wakes [`Gateway::wait_until`].
    fn change<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let out = self.with(f);
        self.changed.notify_waiters();
        out
    }

    fn next_message_id(&self) -> String {
        let n = self.message_ids.fetch_add(1, Ordering::Relaxed) + 1;
        format!("sbx_{n:08}_{:x}", std::process::id())
    }

    /// Sends `text` on the newest open connection; false if none is open.
    fn send(&self, command: Command) -> bool {
        self.with(|s| {
            s.connections
                .iter()
                .rev()
                .find(|c| c.info.closed_seq.is_none())
                .is_some_and(|c| c.tx.send(command).is_ok())
        })
    }

    fn record_answer(&self, connection: u64, text: &str) {
        let Ok(body) = serde_json::from_str::<Value>(text) else {
            tracing::warn!(connection, "sandbox gateway: client wrote a non-JSON frame");
            return;
        };
        let ack = Ack {
            connection,
            message_id: body
                .pointer("/headers/messageId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            code: body.get("code").and_then(Value::as_i64).unwrap_or(0),
            data: body
                .get("data")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            body,
        };
        let next = self.change(|s| {
            s.ack_total += 1;
            if s.acks.len() >= ACK_CAPACITY {
                s.acks.pop_front();
            }
            s.acks.push_back(ack);
            let load = &mut s.load;
            if load.started.is_none() || load.finished.is_some() {
                return None;
            }
            load.acked += 1;
            if load.acked >= load.count {
                load.finished = Some(Instant::now());
            }
            (load.pushed < load.count).then(|| {
                load.pushed += 1;
                (load.pushed, load.groups, load.text.clone(), load.run)
            })
        });
        if let Some((i, groups, text, run)) = next {
            let frame = self.load_frame(i, groups, &text, run);
            self.send(Command::Text(frame));
        }
    }

    /// The `i`-th message of a load run: unique msgId, group `cidGen{i % groups}==`, its own
    /// webhook session. Written with `format!` (not through `serde_json::Value`): the
    /// gateway has to keep ahead of the client it loads.
    fn load_frame(&self, i: u64, groups: u64, text: &str, run: u64) -> String {
        let group = i % groups.max(1);
        let hook = webhook(&self.base_url(), &format!("load-{run}-{i}"));
        let now = now_ms();
        let expires = now + 5_400_000;
        let content = serde_json::to_string(&format!(" {text}")).unwrap_or_default();
        let data = format!(
            r#"{{"conversationId":"cidGen{group}==","atUsers":[{{"dingtalkId":"$:LWCP_v1:$robot"}}],"chatbotUserId":"$:LWCP_v1:$robot","msgId":"msgLoad{run}x{i}","senderNick":"小钉","isAdmin":false,"senderStaffId":"16650000698","sessionWebhookExpiredTime":{expires},"createAt":{now},"conversationType":"2","senderId":"$:LWCP_v1:$sender","conversationTitle":"load","isInAtList":true,"sessionWebhook":"{hook}","text":{{"content":{content}}},"msgtype":"text"}}"#
        );
        let data = serde_json::to_string(&data).unwrap_or_default();
        let id = self.next_message_id();
        format!(
            r#"{{"specVersion":"1.0","type":"CALLBACK","headers":{{"appId":"sandbox","connectionId":"sandbox","contentType":"application/json","messageId":"{id}","time":"{now}","topic":"{BOT_TOPIC}"}},"data":{data}}}"#
        )
    }
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
    )
    .unwrap_or(0)
}

/// `{base}/robot/sendBySession?session=…`.
fn webhook(base: &str, session: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(session.as_bytes()).collect();
    format!("{base}/robot/sendBySession?session={encoded}")
}

/// A group text message from user `16650000698` as DingTalk's robot payload (§1): what the
/// gateway pushes over Stream and what `demo::SignedCallback` signs and POSTs.
pub fn robot_payload(cid: &str, title: &str, text: &str, msg_id: &str, webhook: &str) -> Value {
    let now = now_ms();
    json!({
        "conversationId": cid,
        "atUsers": [{"dingtalkId": "$:LWCP_v1:$robot"}],
        "chatbotUserId": "$:LWCP_v1:$robot",
        "msgId": msg_id,
        "senderNick": "小钉",
        "isAdmin": false,
        "senderStaffId": "16650000698",
        "sessionWebhookExpiredTime": now + 5_400_000,
        // DingTalk's field table types it String (its examples use a number, as the
        // fixtures in tests/fixtures do): both shapes reach dingbot.
        "createAt": now.to_string(),
        "conversationType": "2",
        "senderId": "$:LWCP_v1:$sender",
        "conversationTitle": title,
        "isInAtList": true,
        "sessionWebhook": webhook,
        "text": {"content": format!(" {text}")},
        "msgtype": "text",
    })
}

fn frame(kind: &str, topic: &str, message_id: &str, data: &str) -> String {
    json!({
        "specVersion": "1.0",
        "type": kind,
        "headers": {
            "appId": "sandbox",
            "connectionId": "sandbox",
            "contentType": "application/json",
            "messageId": message_id,
            "time": "0",
            "topic": topic,
        },
        "data": data,
    })
    .to_string()
}

/// A `CALLBACK` frame on the robot topic.
pub fn bot_frame(message_id: &str, data: &str) -> String {
    frame("CALLBACK", BOT_TOPIC, message_id, data)
}

/// A control handle on the gateway of a running [`super::Sandbox`].
#[derive(Debug, Clone)]
pub struct Gateway {
    pub(crate) state: web::Data<GatewayState>,
}

impl Gateway {
    /// Pushes a robot message (the JSON payload) under a fresh frame `messageId`, which
    /// is returned; `None` when no connection is open.
    pub fn push_payload(&self, payload: &Value) -> Option<String> {
        let id = self.state.next_message_id();
        self.push_bot(&id, &payload.to_string()).then_some(id)
    }

    /// Pushes a `CALLBACK` frame with this `messageId` and `data` text.
    pub fn push_bot(&self, message_id: &str, data: &str) -> bool {
        self.push_raw(bot_frame(message_id, data))
    }

    /// Pushes a frame of any `type` and `topic`; returns its `messageId`.
    pub fn push_frame(&self, kind: &str, topic: &str, data: &str) -> Option<String> {
        let id = self.state.next_message_id();
        self.push_raw(frame(kind, topic, &id, data)).then_some(id)
    }

    /// Pushes any text as a frame.
    pub fn push_raw(&self, text: String) -> bool {
        self.state.send(Command::Text(text))
    }

    /// Sends a `SYSTEM ping` with `{"opaque": opaque}`; returns its `messageId`.
    pub fn ping(&self, opaque: &str) -> Option<String> {
        let data = json!({ "opaque": opaque }).to_string();
        self.push_frame("SYSTEM", "ping", &data)
    }

    /// Sends `SYSTEM disconnect` on the newest connection, and closes it 10 s later if the
    /// client has not.
    pub fn disconnect(&self) -> bool {
        let target = self.state.with(|s| {
            s.connections
                .iter()
                .rev()
                .find(|c| c.info.closed_seq.is_none())
                .map(|c| c.tx.clone())
        });
        let Some(tx) = target else { return false };
        let data = json!({"reason": "connection is expired"}).to_string();
        let id = self.state.next_message_id();
        let sent = tx
            .send(Command::Text(frame("SYSTEM", "disconnect", &id, &data)))
            .is_ok();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(DISCONNECT_CLOSE).await;
                let _ = tx.send(Command::Close);
            });
        }
        sent
    }

    /// Drops the newest connection's TCP stream without a close frame.
    pub fn drop_connection(&self) -> bool {
        self.state.send(Command::Drop)
    }

    /// Closes the newest connection with a close frame.
    pub fn close_connection(&self) -> bool {
        self.state.send(Command::Close)
    }

    /// While on, the gateway sends nothing: no frames, no pongs.
    pub fn set_silent(&self, on: bool) {
        self.state.change(|s| s.silent = on);
    }

    /// While on, `connections/open` answers 401 `authFailed`.
    pub fn refuse_open(&self, on: bool) {
        self.state.change(|s| s.refuse_open = on);
    }

    /// While on, the WebSocket handshake is refused (401) whatever the ticket.
    pub fn refuse_tickets(&self, on: bool) {
        self.state.change(|s| s.refuse_tickets = on);
    }

    /// How many `connections/open` requests arrived.
    pub fn open_calls(&self) -> u64 {
        self.state.open_calls.load(Ordering::Relaxed)
    }

    /// The last `connections/open` body, its `clientSecret` replaced by `"***"`.
    pub fn last_open_request(&self) -> Option<Value> {
        self.state.with(|s| s.last_open.clone())
    }

    /// Every connection so far, oldest first.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.state
            .with(|s| s.connections.iter().map(|c| c.info.clone()).collect())
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.state.with(|s| {
            s.connections
                .iter()
                .filter(|c| c.info.closed_seq.is_none())
                .count()
        })
    }

    /// Every answer kept (at most 100,000), oldest first.
    pub fn acks(&self) -> Vec<Ack> {
        self.state.with(|s| s.acks.iter().cloned().collect())
    }

    /// Answers received in all.
    pub fn ack_total(&self) -> u64 {
        self.state.with(|s| s.ack_total)
    }

    /// The answers to `message_id`.
    pub fn acks_for(&self, message_id: &str) -> Vec<Ack> {
        self.state.with(|s| {
            s.acks
                .iter()
                .filter(|a| a.message_id == message_id)
                .cloned()
                .collect()
        })
    }

    /// Waits until `done` holds or `timeout` passes; returns whether it holds.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Gateway) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.state.changed.notified();
            if done(self) {
                return true;
            }
            // Also wakes now and then: some conditions depend on time only.
            let wake = (tokio::time::Instant::now() + Duration::from_millis(50)).min(deadline);
            if tokio::time::timeout_at(wake, changed).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return done(self);
            }
        }
    }

    /// Waits until `n` connections have been opened in all.
    pub async fn wait_for_connections(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |g| g.connections().len() >= n)
            .await
    }

    /// Starts a load run: `count` messages "@robot `text`" with unique msgIds over groups
    /// `cidGen0==`…, `window` of them pushed at once and one more after every answer.
    /// Returns false if no connection is open.
    pub fn start_load(&self, count: u64, groups: u64, window: u64, text: &str) -> bool {
        let first = self.state.change(|s| {
            let run = s.load.run + 1;
            s.load = Load {
                count,
                groups: groups.max(1),
                window: window.max(1),
                text: text.to_string(),
                pushed: 0,
                acked: 0,
                started: Some(Instant::now()),
                finished: (count == 0).then(Instant::now),
                run,
            };
            let first = s.load.window.min(count);
            s.load.pushed = first;
            (first, run)
        });
        let (first, run) = first;
        (1..=first).all(|i| {
            let frame = self.state.load_frame(i, groups, text, run);
            self.state.send(Command::Text(frame))
        })
    }

    /// `(pushed, acked, seconds from start to the last ACK or now)` of the load run.
    pub fn load_progress(&self) -> (u64, u64, f64) {
        self.state.with(|s| {
            let l = &s.load;
            let secs = match (l.started, l.finished) {
                (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
                (Some(a), None) => a.elapsed().as_secs_f64(),
                _ => 0.0,
            };
            (l.pushed, l.acked, secs)
        })
    }
}

// ---- HTTP and WebSocket handlers ------------------------------------------------

#[derive(Debug, Deserialize)]
struct OpenBody {
    #[serde(rename = "clientId")]
    client_id: Option<String>,
    #[serde(rename = "clientSecret")]
    client_secret: Option<String>,
    #[serde(default)]
    subscriptions: Vec<SubscriptionBody>,
}

#[derive(Debug, Deserialize)]
struct SubscriptionBody {
    #[serde(rename = "type")]
    kind: String,
    topic: String,
}

fn auth_failed() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({"code": "authFailed", "message": "鉴权失败"}))
}

async fn open(req: HttpRequest, body: Bytes, gw: web::Data<GatewayState>) -> HttpResponse {
    gw.open_calls.fetch_add(1, Ordering::Relaxed);
    let json_accepted = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if !json_accepted {
        // The real endpoint may answer XML without it; the sandbox makes the mistake visible.
        return HttpResponse::NotAcceptable().body("<error>Accept: application/json</error>");
    }
    let Ok(request) = serde_json::from_slice::<OpenBody>(&body) else {
        return HttpResponse::BadRequest()
            .json(json!({"code": "invalidParameter", "message": "body is not JSON"}));
    };
    let mut shown: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(secret) = shown.get_mut("clientSecret") {
        *secret = json!("***");
    }
    let refused = gw.change(|s| {
        s.last_open = Some(shown);
        s.refuse_open
    });
    if refused
        || request.client_id.as_deref() != Some(gw.app_key.as_str())
        || request.client_secret.as_deref() != Some(gw.app_secret.as_str())
    {
        return auth_failed();
    }
    if !request
        .subscriptions
        .iter()
        .any(|s| s.kind == "CALLBACK" && s.topic == BOT_TOPIC)
    {
        return HttpResponse::BadRequest().json(
            json!({"code": "invalidParameter", "message": "no subscription to the robot topic"}),
        );
    }
    let ticket = uuid::Uuid::new_v4().to_string();
    gw.with(|s| {
        s.tickets.retain(|_, at| at.elapsed() < TICKET_TTL);
        s.tickets.insert(ticket.clone(), Instant::now());
    });
    let endpoint = format!(
        "{}/gateway/connect",
        gw.base_url().replacen("http://", "ws://", 1)
    );
    HttpResponse::Ok().json(json!({"endpoint": endpoint, "ticket": ticket}))
}

async fn connect(
    req: HttpRequest,
    body: web::Payload,
    gw: web::Data<GatewayState>,
) -> HttpResponse {
    let ticket = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "ticket")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let valid = gw.with(|s| {
        let known = s
            .tickets
            .remove(&ticket)
            .is_some_and(|at| at.elapsed() < TICKET_TTL);
        known && !s.refuse_tickets
    });
    if !valid {
        return auth_failed();
    }
    let (response, session, stream) = match actix_ws::handle(&req, body) {
        Ok(parts) => parts,
        Err(e) => return e.error_response(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let id = gw.change(|s| {
        s.seq += 1;
        let id = s.connections.len() as u64 + 1;
        s.connections.push(Connection {
            info: ConnectionInfo {
                id,
                opened_seq: s.seq,
                closed_seq: None,
            },
            tx,
        });
        id
    });
    tracing::debug!(id, "sandbox gateway: connection open");
    actix_web::rt::spawn(serve(gw.into_inner(), id, session, stream, rx));
    response
}

/// One connection: commands out, answers in.
async fn serve(
    gw: std::sync::Arc<GatewayState>,
    id: u64,
    mut session: actix_ws::Session,
    stream: actix_ws::MessageStream,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let mut stream = stream.max_frame_size(MAX_CLIENT_FRAME);
    loop {
        tokio::select! {
            command = rx.recv() => match command {
                Some(Command::Text(text)) => {
                    if gw.with(|s| s.silent) {
                        continue;
                    }
                    if session.text(text).await.is_err() {
                        break;
                    }
                }
                Some(Command::Close) => {
                    let _ = session.close(None).await;
                    break;
                }
                Some(Command::Drop) | None => break,
            },
            message = stream.recv() => match message {
                Some(Ok(Message::Text(text))) => gw.record_answer(id, &text),
                Some(Ok(Message::Ping(payload))) => {
                    if !gw.with(|s| s.silent) && session.pong(&payload).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    let _ = session.close(None).await;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    gw.change(|s| {
        s.seq += 1;
        let seq = s.seq;
        if let Some(c) = s.connections.iter_mut().find(|c| c.info.id == id) {
            c.info.closed_seq = Some(seq);
        }
    });
    tracing::debug!(id, "sandbox gateway: connection closed");
}

// ---- /_sandbox/stream/* ------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct PushBody {
    /// A whole robot payload; or build one from the fields below.
    payload: Option<Value>,
    #[serde(default = "default_group")]
    group: String,
    #[serde(default = "default_text")]
    text: String,
    #[serde(rename = "msgId")]
    msg_id: Option<String>,
    session: Option<String>,
    title: Option<String>,
}

fn default_group() -> String {
    "cidBound0001==".into()
}

fn default_text() -> String {
    "/info".into()
}

async fn admin_push(body: Bytes, gw: web::Data<GatewayState>) -> HttpResponse {
    let request: PushBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return HttpResponse::BadRequest().json(json!({"error": e.to_string()})),
    };
    let handle = Gateway { state: gw.clone() };
    let n = gw.message_ids.load(Ordering::Relaxed);
    let session = request.session.unwrap_or_else(|| format!("stream-{n}"));
    let payload = request.payload.unwrap_or_else(|| {
        robot_payload(
            &request.group,
            request.title.as_deref().unwrap_or("测试群"),
            &request.text,
            &request.msg_id.unwrap_or_else(|| format!("msgStream{n}")),
            &webhook(&gw.base_url(), &session),
        )
    });
    match handle.push_payload(&payload) {
        Some(message_id) => {
            HttpResponse::Ok().json(json!({"messageId": message_id, "session": session}))
        }
        None => HttpResponse::Conflict().json(json!({"error": "no Stream connection is open"})),
    }
}

async fn admin_action(
    path: web::Path<String>,
    body: Bytes,
    gw: web::Data<GatewayState>,
) -> HttpResponse {
    let g = Gateway { state: gw };
    let flag = || {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("on").and_then(Value::as_bool))
            .unwrap_or(true)
    };
    let ok = match path.as_str() {
        "ping" => g.ping("sandbox").is_some(),
        "disconnect" => g.disconnect(),
        "drop" => g.drop_connection(),
        "close" => g.close_connection(),
        "silent" => {
            g.set_silent(flag());
            true
        }
        "refuse_open" => {
            g.refuse_open(flag());
            true
        }
        "refuse_tickets" => {
            g.refuse_tickets(flag());
            true
        }
        "load" => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let num = |k: &str, d: u64| v.get(k).and_then(Value::as_u64).unwrap_or(d);
            let text = v.get("text").and_then(Value::as_str).unwrap_or("/info");
            g.start_load(
                num("count", 1000),
                num("groups", 100),
                num("window", 64),
                text,
            )
        }
        other => {
            return HttpResponse::NotFound()
                .json(json!({"error": format!("unknown action {other}")}));
        }
    };
    if ok {
        HttpResponse::Ok().json(json!({"ok": true}))
    } else {
        HttpResponse::Conflict().json(json!({"error": "no Stream connection is open"}))
    }
}

async fn admin_stats(gw: web::Data<GatewayState>) -> HttpResponse {
    let g = Gateway { state: gw };
    let (pushed, acked, secs) = g.load_progress();
    HttpResponse::Ok().json(json!({
        "open_calls": g.open_calls(),
        "connections_total": g.connections().len(),
        "connections_open": g.open_connections(),
        "acks": g.ack_total(),
        "load": {"pushed": pushed, "acked": acked, "seconds": secs},
    }))
}

async fn admin_acks(req: HttpRequest, gw: web::Data<GatewayState>) -> HttpResponse {
    let wanted = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "message_id")
        .map(|(_, v)| v.into_owned());
    let g = Gateway { state: gw };
    let acks = match wanted {
        Some(id) => g.acks_for(&id),
        None => g.acks(),
    };
    HttpResponse::Ok().json(acks.into_iter().map(|a| a.body).collect::<Vec<_>>())
}

/// Registers the gateway's routes and `/_sandbox/stream/*`.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1.0/gateway/connections/open", web::post().to(open))
        .route("/gateway/connect", web::get().to(connect))
        .route("/_sandbox/stream/push", web::post().to(admin_push))
        .route("/_sandbox/stream/stats", web::get().to(admin_stats))
        .route("/_sandbox/stream/acks", web::get().to(admin_acks))
        .route("/_sandbox/stream/{action}", web::post().to(admin_action));
}
