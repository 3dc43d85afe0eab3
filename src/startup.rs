//! Builds the running service from [`Settings`]: the pipeline and its parts, the HTTP
//! door, and the background upkeep; and owns the one shutdown path. Tests call
//! [`Application::build`] with port 0.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use tokio_util::sync::CancellationToken;

use crate::bot::{Bot, BotOptions, GroupDirectory};
use crate::config::{BaseUrl, ReplyFallback, Settings, StateBackend};
use crate::dingtalk::sender::RobotApi;
use crate::dingtalk::transport::http_client;
use crate::dingtalk::{
    DingTalkClient, ReplyHttp, ReplySender, RetryPolicy, Verifier, WebhookPolicy,
};
use crate::http::AppState;
use crate::pipeline::{
    AdmissionState, MemoryAdmission, MemoryOptions, Parts, Pipeline, RedisAdmission, RedisOptions,
    Restored, STATE_FILE,
};
use crate::render::Renderer;
use crate::state::Redis;
use crate::state::cache::SharedGroups;
use crate::store::BindingStore;
use crate::stream::{Dialer, StreamDoor, StreamStatus};

/// How long an HTTP client has to close its side once dingbot closed the connection.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the HTTP workers get to close their connections once every reply is out.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(1);
/// How often admission state is swept and the gauges refreshed.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(30);
/// How often the metrics' histogram samples are folded into buckets. The exporter holds
/// each sample until then (8 bytes and more per API call and reply), so without this a
/// robot nobody scrapes grows by that much per reply, without bound.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// A failure to start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A template override does not compile.
    #[error(transparent)]
    Template(#[from] crate::render::TemplateError),
    /// The data dir is unusable or `bindings.json` is corrupt.
    #[error(transparent)]
    Storage(#[from] crate::store::StoreError),
    /// The admission state file cannot be written.
    #[error("storage.data_dir: {path} cannot be written ({source})")]
    State {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP client cannot be built (TLS roots).
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    /// The shared state backend cannot be set up (a bad `state.redis_url`).
    #[error(transparent)]
    SharedState(#[from] crate::state::StateError),
}

/// The running service.
pub struct Application {
    /// The bound port (useful with port 0).
    port: u16,
    /// The actix server future.
    server: Server,
    /// Shared state (tests inspect it).
    state: web::Data<AppState>,
    /// Grace period for replies after the server stops.
    grace: Duration,
    /// The upkeep loop.
    background: tokio::task::JoinHandle<()>,
    /// Cancelled to shut down gracefully, as SIGTERM does.
    shutdown: CancellationToken,
    /// The Stream door, when `dingtalk.mode` holds one.
    stream: Option<StreamTask>,
}

/// The running Stream door.
struct StreamTask {
    /// Its connection loop.
    task: tokio::task::JoinHandle<()>,
    /// Cancelled at shutdown: stop reading, close the socket.
    stop: CancellationToken,
    /// Its state.
    status: Arc<StreamStatus>,
}

/// The DingTalk side: the API client and the reply sender, sharing one pooled reqwest
/// client (the sender uses it when a proxy is configured, and for the robot send APIs of
/// `reply.fallback = "robot_api"`, with tokens from the client's cache).
fn dingtalk(settings: &Settings) -> Result<(Arc<DingTalkClient>, Arc<ReplySender>), StartupError> {
    let dt = &settings.dingtalk;
    let timeout = Duration::from_millis(dt.request_timeout_ms);
    let http = http_client(timeout).map_err(|e| StartupError::Http(e.to_string()))?;
    let retry = RetryPolicy {
        deadline: timeout.mul_f64(1.6),
        ..RetryPolicy::default()
    };
    let reply_http = ReplyHttp::new(dt.reply_client, timeout, &http).map_err(StartupError::Http)?;
    match (
        reply_http.name(),
        crate::dingtalk::reply_http::proxy_variable(),
    ) {
        ("reqwest", Some(var)) => tracing::info!(
            proxy_variable = var,
            "replies go through reqwest and its proxy settings"
        ),
        (name, _) => tracing::debug!(reply_client = name, "reply client"),
    }
    let sender = ReplySender::new(reply_http, dt.max_parallel_requests.get(), retry);
    let client = Arc::new(DingTalkClient::from_settings(dt, http.clone(), retry));
    let sender = match settings.reply.fallback {
        ReplyFallback::RobotApi => sender.with_fallback(RobotApi::new(
            http,
            dt.api_base.as_str(),
            client.clone(),
            settings.reply.robot_code.clone(),
            &dt.app_key,
        )),
        ReplyFallback::None => sender,
    };
    Ok((client, Arc::new(sender)))
}

/// Where replies may go: `oapi_base` and the configured extra origins, on the configured
/// paths.
fn webhook_policy(settings: &Settings) -> WebhookPolicy {
    let dt = &settings.dingtalk;
    WebhookPolicy::new(
        dt.oapi_base.url(),
        dt.extra_webhook_hosts.iter().map(BaseUrl::url),
        &dt.webhook_paths,
    )
}

/// In-memory admission state for `settings`, with the records the previous process saved
/// in `storage.data_dir` (see [`MemoryAdmission::restore`]).
fn memory_admission(settings: &Settings) -> Result<MemoryAdmission, StartupError> {
    let dt = &settings.dingtalk;
    let start = crate::clock::now_ms();
    let path = settings.storage.data_dir.join(STATE_FILE);
    let mut admission = MemoryAdmission::new(
        MemoryOptions {
            window_ms: i64::try_from(dt.max_clock_skew_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            messages_per_millisecond: dt.max_messages_per_signature.get(),
            dedupe_capacity: dt.dedupe_capacity,
            dedupe_ttl_ms: i64::try_from(dt.dedupe_ttl_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            per_group_per_minute: settings.rate_limit.per_group_per_minute,
            state_file: Some(path.clone()),
        },
        start,
    );
    let restored = admission
        .restore(start)
        .map_err(|source| StartupError::State {
            path: path.display().to_string(),
            source,
        })?;
    let (ring_bytes, dedupe_bytes) = admission.footprint();
    match restored {
        Restored::FirstStart => tracing::info!(
            ring_bytes,
            dedupe_bytes,
            "no saved replay record: first start on this data dir"
        ),
        Restored::Clean { saved_at_ms } => tracing::info!(
            ring_bytes,
            dedupe_bytes,
            saved_at_ms,
            "replay and dedupe records of the previous run loaded"
        ),
        Restored::Unclean { reason } => tracing::warn!(
            reason = %reason,
            refused_before_ms = start,
            "replay record of the previous run lost: callbacks signed before this start are refused until they leave the clock window"
        ),
    }
    Ok(admission)
}

/// The settings of the Redis backend's local fallback: like the memory backend's, but not
/// kept across restarts (Redis holds the shared record).
fn fallback_options(settings: &Settings) -> MemoryOptions {
    let dt = &settings.dingtalk;
    MemoryOptions {
        window_ms: i64::try_from(dt.max_clock_skew_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        messages_per_millisecond: dt.max_messages_per_signature.get(),
        dedupe_capacity: dt.dedupe_capacity,
        dedupe_ttl_ms: i64::try_from(dt.dedupe_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        per_group_per_minute: settings.rate_limit.per_group_per_minute,
        state_file: None,
    }
}

/// The Redis backend's parts: admission, and the bot sharing cache and bindings.
struct SharedParts {
    admission: Arc<RedisAdmission>,
    groups: Arc<SharedGroups>,
}

/// With `state.backend = "redis"`: admission on Redis and the bot's shared cache and
/// bindings, all on one connection. A Redis that is down now is not an error: the first
/// callbacks run degraded.
fn redis_parts(settings: &Settings) -> Result<SharedParts, StartupError> {
    let redis = Redis::connect(&settings.state)?;
    tracing::info!(server = redis.server(), prefix = %settings.state.key_prefix, "shared state in Redis");
    Ok(SharedParts {
        groups: Arc::new(SharedGroups::new(redis.clone())),
        admission: Arc::new(RedisAdmission::new(
            redis,
            RedisOptions {
                memory: fallback_options(settings),
            },
        )),
    })
}

/// Copies `bindings.json` into Redis (an entry already there wins) and learns every
/// binding Redis holds; retried every few seconds until Redis answers once.
async fn share_bindings(
    shared: Arc<SharedGroups>,
    store: Arc<BindingStore>,
    groups: Arc<GroupDirectory>,
    configured: Vec<String>,
) {
    let local = store.all();
    loop {
        if shared.is_up()
            && let Some(imported) = shared.bindings().import(&local).await
            && let Some(all) = shared.bindings().all().await
        {
            if imported > 0 {
                tracing::info!(imported, file = %store.path().display(), "bindings imported into Redis");
            }
            for (cid, binding) in &all {
                if !configured.contains(cid) {
                    groups.bind(cid, &binding.chatid);
                }
            }
            tracing::debug!(bindings = all.len(), "bindings read from Redis");
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

impl Application {
    /// Binds `server.listen` and builds everything.
    pub async fn build(settings: &Settings) -> Result<Application, StartupError> {
        let addr = settings.server.listen;
        let listener = TcpListener::bind(addr).map_err(|source| StartupError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        Self::build_with_listener(settings, listener).await
    }

    /// Builds on an already bound listener.
    pub async fn build_with_listener(
        settings: &Settings,
        listener: TcpListener,
    ) -> Result<Application, StartupError> {
        let (client, sender) = dingtalk(settings)?;
        let renderer = Renderer::new(settings.bot.language, settings.bot.templates_dir.as_deref())?;
        let groups = Arc::new(GroupDirectory::new(&settings.groups));
        let store = Arc::new(BindingStore::open(&settings.storage.data_dir)?);
        let mut bot = Bot::new(
            client.clone(),
            renderer,
            groups.clone(),
            store.clone(),
            BotOptions::from_settings(settings),
        );
        let configured: Vec<String> = (settings.groups.iter())
            .filter_map(|g| g.open_conversation_id.clone())
            .collect();
        let shared = match settings.state.backend {
            StateBackend::Memory => None,
            StateBackend::Redis => Some(redis_parts(settings)?),
        };
        let admission: Arc<dyn AdmissionState> = match &shared {
            None => Arc::new(memory_admission(settings)?),
            Some(parts) => {
                let options = BotOptions::from_settings(settings);
                bot = bot.with_shared(
                    parts.groups.clone(),
                    options.info_ttl,
                    options.info_max_groups,
                    configured.clone(),
                );
                parts.admission.clone()
            }
        };
        let bot = Arc::new(bot);
        let pipeline = Arc::new(Pipeline::new(Parts {
            admission,
            webhooks: webhook_policy(settings),
            bot,
            sender,
            max_in_flight: settings.server.max_in_flight.get(),
            queue_wait: Duration::from_millis(settings.server.queue_wait_ms),
        }));
        let dt = &settings.dingtalk;
        let mut state = AppState::new(
            Verifier::new(&dt.app_secret, dt.max_clock_skew_secs),
            pipeline.clone(),
            client.clone(),
            settings.server.body_limit_bytes,
            Duration::from_millis(settings.server.read_timeout_ms),
        );
        // The second door: spawned on this runtime, which lives until the drain is done.
        let stream = if dt.mode.holds_stream() {
            let dialer =
                Dialer::new(settings, client.http().clone()).map_err(StartupError::Http)?;
            let door = StreamDoor::new(pipeline.clone(), dialer, &settings.stream);
            let status = door.status();
            let check = status.clone();
            state = state.with_readiness_check(Arc::new(move || check.readiness()));
            let stop = CancellationToken::new();
            let task = tokio::spawn(door.run(stop.clone()));
            Some(StreamTask { task, stop, status })
        } else {
            None
        };
        let state = web::Data::new(state);
        let (port, server) = http_server(settings, listener, state.clone())?;

        // Learn openConversationIds of [[groups]] without one; then keep admission state,
        // the gauges and the metrics' histograms up to date.
        // With Redis: the health watch and the bindings' import run beside them.
        let background = tokio::spawn(async move {
            let upkeep = async {
                groups.resolve_pending(&client).await;
                let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
                loop {
                    tick.tick().await;
                    pipeline.maintain().await;
                }
            };
            let metrics = async {
                let mut tick = tokio::time::interval(METRICS_UPKEEP_EVERY);
                loop {
                    tick.tick().await;
                    crate::telemetry::upkeep();
                }
            };
            let upkeep = async { tokio::join!(upkeep, metrics) };
            match shared {
                None => {
                    upkeep.await;
                }
                Some(parts) => {
                    let import = share_bindings(parts.groups, store, groups.clone(), configured);
                    tokio::join!(upkeep, parts.admission.watch(), import);
                }
            }
        });
        tracing::info!(port, "dingbot listening");
        Ok(Application {
            port,
            server,
            state,
            grace: Duration::from_secs(settings.server.shutdown_grace_secs),
            background,
            shutdown: CancellationToken::new(),
            stream,
        })
    }

    /// The Stream connection's state (when `dingtalk.mode` is `stream` or `both`).
    pub fn stream_status(&self) -> Option<Arc<StreamStatus>> {
        self.stream.as_ref().map(|s| s.status.clone())
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancelling this token shuts down exactly as SIGTERM does.
    pub fn shutdown_trigger(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Shared state.
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until SIGTERM/SIGINT or [`Application::shutdown_trigger`], then finishes
    /// open requests and replies within one grace period. The only way dingbot stops:
    ///
    /// 1. no new connections are accepted and callbacks on open connections get 503;
    /// 2. the callbacks already accepted finish, replies included (they run on the HTTP
    ///    workers, which therefore stay up until now);
    /// 3. the workers stop, closing the connections.
    ///
    /// Whatever is still running at the deadline is abandoned and logged.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let trigger = self.shutdown.clone();
        let pipeline = self.state.pipeline.clone();
        let mut stream = self.stream;
        let result = tokio::select! {
            joined = &mut server => {
                if let Some(stream) = &stream {
                    stream.stop.cancel();
                }
                if pipeline.pending_replies() > 0 {
                    tracing::warn!(
                        pending = pipeline.pending_replies(),
                        "server stopped without draining; replies still pending are lost"
                    );
                }
                joined
            }
            () = async {
                tokio::select! {
                    () = shutdown_signal() => {}
                    () = trigger.cancelled() => {}
                }
            } => {
                let deadline = tokio::time::Instant::now() + self.grace;
                tracing::info!("shutdown requested: no longer accepting callbacks; finishing replies");
                // Callbacks not yet admitted are refused from here on (503 over HTTP). The
                // Stream door finishes the frames it has received and closes its socket;
                // it is awaited before the drain takes every slot: a frame is acked before
                // it is admitted and DingTalk does not redeliver a robot message, so the
                // door's messages still get slots (`Pipeline::slot_for_taken`). What the
                // door admitted holds slots, so the drain below covers it too.
                if let Some(stream) = &stream {
                    stream.stop.cancel();
                }
                handle.pause().await;
                pipeline.refuse_new();
                if let Some(stream) = &mut stream
                    && tokio::time::timeout_at(deadline, &mut stream.task).await.is_err()
                {
                    tracing::warn!("the Stream connection did not close within the grace period");
                }
                if !pipeline.drain(deadline).await {
                    tracing::warn!(
                        pending = pipeline.pending_replies(),
                        "grace period over with replies still pending"
                    );
                }
                // What is left are idle keep-alive connections and quick requests (probes,
                // refusals): a short graceful stop if the deadline allows, else a hard one.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left >= WORKER_STOP_TIMEOUT {
                    tokio::spawn(handle.stop(true));
                    match tokio::time::timeout_at(deadline, &mut server).await {
                        Ok(joined) => joined,
                        Err(_) => {
                            handle.stop(false).await;
                            server.await
                        }
                    }
                } else {
                    handle.stop(false).await;
                    server.await
                }
            }
        };
        pipeline.close();
        if let Some(stream) = stream {
            stream.task.abort();
        }
        self.background.abort();
        // Nothing is admitted any more: keep the replay and dedupe records for the next
        // start.
        pipeline.persist().await;
        tracing::info!("stopped");
        match result {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// The actix server of the HTTP door on `listener`, and its port.
fn http_server(
    settings: &Settings,
    listener: TcpListener,
    state: web::Data<AppState>,
) -> Result<(u16, Server), StartupError> {
    let bind_error = |source| StartupError::Bind {
        addr: settings.server.listen.to_string(),
        source,
    };
    let port = listener.local_addr().map_err(bind_error)?.port();
    let callback_path = settings.server.callback_path.clone();
    let serves_http = settings.dingtalk.mode.serves_http();
    let mut server = HttpServer::new(move || {
        let app = App::new().app_data(state.clone());
        if serves_http {
            app.configure(crate::http::routes(&callback_path))
        } else {
            app.configure(crate::http::probe_routes)
        }
    })
    // Used only after the replies are drained, for what is left.
    .shutdown_timeout(WORKER_STOP_TIMEOUT.as_secs())
    // A request head must arrive within the read timeout (the body's deadline is the
    // callback handler's); a closed connection is not held open waiting for the client.
    .client_request_timeout(Duration::from_millis(settings.server.read_timeout_ms))
    .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
    // dingbot handles SIGTERM/SIGINT itself so that one grace period covers both the
    // open requests and the replies still being sent (see `run_until_stopped`).
    .disable_signals()
    .listen(listener)
    .map_err(bind_error)?;
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    Ok((port, server.run()))
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
