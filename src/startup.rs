//! Builds the running service from [`Settings`]: shared state, the bound HTTP server and
//! its background tasks. Tests call [`Application::build`] with port 0.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bot::{Bot, BotOptions, GroupDirectory};
use crate::config::{BaseUrl, Settings};
use crate::dingtalk::client::http_client;
use crate::dingtalk::{DingTalkClient, ReplyHttp, RetryPolicy, Verifier, WebhookPolicy};
use crate::ratelimit::GroupLimiter;
use crate::render::Renderer;
use crate::seen::{KeyOnly, SeenSet};
use crate::store::BindingStore;

/// Upper bound on remembered msgIds and on remembered signature pairs (each).
const SEEN_CAPACITY: usize = 2_000_000;
/// How long the HTTP workers get to close their connections once every reply is out.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a failed readiness check is reused before trying DingTalk again.
const READINESS_RETRY: Duration = Duration::from_secs(10);

/// State shared by every request.
pub struct AppState {
    /// Checks callback signatures.
    pub verifier: Verifier,
    /// Where replies may go.
    pub webhooks: WebhookPolicy,
    /// msgIds already handled, for the signature window.
    pub dedupe: SeenSet<KeyOnly>,
    /// (timestamp, sign) → the message(s) it carried, for the signature window.
    pub replay: SeenSet,
    /// Per-group budget.
    pub limiter: Arc<GroupLimiter>,
    /// Decides replies.
    pub bot: Arc<Bot>,
    /// DingTalk API client (and, through `reply_http`, the reply client).
    pub client: Arc<DingTalkClient>,
    /// Reply tasks. Each runs on the HTTP worker that accepted its callback (no hand-off
    /// to another thread); shutdown waits for them before it stops the workers.
    pub tasks: TaskTracker,
    /// Callbacks in flight (body read to reply sent); see `server.max_in_flight`.
    pub in_flight: Arc<Semaphore>,
    /// `server.max_in_flight`: all permits of `in_flight`.
    pub max_in_flight: u32,
    /// `server.queue_wait_ms`.
    pub queue_wait: Duration,
    /// Set once shutdown begins: new callbacks are refused, accepted ones finish.
    pub draining: AtomicBool,
    /// `server.body_limit_bytes`.
    pub body_limit: usize,
    /// `bot.inline_mention`.
    pub inline_mention: bool,
    /// Last failed readiness check, reused for a while so probes do not hammer DingTalk.
    readiness_failure: std::sync::Mutex<Option<(Instant, String)>>,
    /// Source of request ids for logs.
    request_ids: AtomicU64,
}

impl AppState {
    /// Callbacks holding an in-flight slot: accepted, reply not yet out.
    pub fn callbacks_in_flight(&self) -> usize {
        (self.max_in_flight as usize).saturating_sub(self.in_flight.available_permits())
    }

    /// Whether a callback with this msgId was accepted within the window.
    pub fn handled_msg_id(&self, msg_id: &str) -> bool {
        self.dedupe
            .contains(self.dedupe.hash(msg_id), crate::http::callback::now_ms())
    }

    /// A new request id.
    pub fn next_request_id(&self) -> u64 {
        self.request_ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ok when an access token can be had; the reason otherwise.
    pub async fn readiness(&self) -> Result<(), String> {
        if let Some((at, reason)) = self
            .readiness_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && at.elapsed() < READINESS_RETRY
        {
            return Err(reason.clone());
        }
        match self.client.access_token().await {
            Ok(_) => {
                *self
                    .readiness_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                Ok(())
            }
            Err(e) => {
                let reason = format!("cannot get a DingTalk access token: {e}");
                *self
                    .readiness_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), reason.clone()));
                Err(reason)
            }
        }
    }
}

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
    /// Stops the eviction timer.
    background: tokio::task::JoinHandle<()>,
    /// Cancelled to shut down gracefully, as SIGTERM does.
    shutdown: CancellationToken,
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
        let dt = &settings.dingtalk;
        let timeout = Duration::from_millis(dt.request_timeout_ms);
        let http = http_client(timeout).map_err(|e| StartupError::Http(e.to_string()))?;
        let retry = RetryPolicy {
            deadline: timeout.mul_f64(1.6),
            ..RetryPolicy::default()
        };
        let reply_http =
            ReplyHttp::new(dt.reply_client, timeout, &http).map_err(StartupError::Http)?;
        match (
            reply_http.name(),
            crate::dingtalk::reply_http::proxy_variable(),
        ) {
            ("reqwest", Some(var)) => {
                tracing::info!(
                    proxy_variable = var,
                    "replies go through reqwest and its proxy settings"
                )
            }
            (name, _) => tracing::debug!(reply_client = name, "reply client"),
        }
        let client =
            Arc::new(DingTalkClient::from_settings(dt, http, retry).with_reply_http(reply_http));
        let renderer = Renderer::new(settings.bot.language, settings.bot.templates_dir.as_deref())?;
        let groups = Arc::new(GroupDirectory::new(&settings.groups));
        let store = Arc::new(BindingStore::open(&settings.storage.data_dir)?);
        let bot = Arc::new(Bot::new(
            client.clone(),
            renderer,
            groups.clone(),
            store,
            BotOptions::from_settings(settings),
        ));
        let window_ms =
            i64::try_from(dt.max_clock_skew_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let limiter = Arc::new(GroupLimiter::new(settings.rate_limit.per_group_per_minute));
        let state = web::Data::new(AppState {
            verifier: Verifier::new(&dt.app_secret, dt.max_clock_skew_secs),
            webhooks: WebhookPolicy::new(
                dt.oapi_base.url(),
                dt.extra_webhook_hosts.iter().map(BaseUrl::url),
                &dt.webhook_paths,
            ),
            // A (timestamp, sign) pair is only accepted within the clock window of its
            // timestamp, and DingTalk's redeliveries carry the same msgId within minutes:
            // remembering both for one window is enough.
            dedupe: SeenSet::keys_only(SEEN_CAPACITY, window_ms),
            replay: SeenSet::new(
                SEEN_CAPACITY,
                window_ms,
                dt.max_messages_per_signature.get(),
            ),
            limiter: limiter.clone(),
            bot,
            client: client.clone(),
            tasks: TaskTracker::new(),
            in_flight: Arc::new(Semaphore::new(settings.server.max_in_flight.get())),
            max_in_flight: u32::try_from(settings.server.max_in_flight.get()).unwrap_or(u32::MAX),
            queue_wait: Duration::from_millis(settings.server.queue_wait_ms),
            draining: AtomicBool::new(false),
            body_limit: settings.server.body_limit_bytes,
            inline_mention: settings.bot.inline_mention,
            readiness_failure: std::sync::Mutex::new(None),
            request_ids: AtomicU64::new(0),
        });
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: settings.server.listen.to_string(),
                source,
            })?
            .port();
        let callback_path = settings.server.callback_path.clone();
        let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .configure(crate::http::routes(&callback_path))
        })
        // Used only after the replies are drained (`run_until`), for what is left.
        .shutdown_timeout(WORKER_STOP_TIMEOUT.as_secs())
        // dingbot handles SIGTERM/SIGINT itself so that one grace period covers both the
        // open requests and the replies still being sent (see `run_until`).
        .disable_signals()
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: settings.server.listen.to_string(),
            source,
        })?;
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server.run();

        // Learn openConversationIds of [[groups]] without one; evict idle groups and
        // expired dedupe/replay entries.
        let sweep_state = state.clone();
        let background = tokio::spawn(async move {
            groups.resolve_pending(&client).await;
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                limiter.evict_idle();
                let now = crate::http::callback::now_ms();
                sweep_state.dedupe.sweep(now);
                sweep_state.replay.sweep(now);
                crate::telemetry::tracked_groups(limiter.tracked_groups());
                crate::telemetry::callbacks_in_flight(sweep_state.callbacks_in_flight());
                crate::telemetry::cached_groups(sweep_state.bot.cached_groups().await);
                crate::telemetry::remembered("dedupe", sweep_state.dedupe.len());
                crate::telemetry::remembered("replay", sweep_state.replay.len());
            }
        });
        tracing::info!(port, "dingbot listening");
        Ok(Application {
            port,
            server,
            state,
            grace,
            background,
            shutdown: CancellationToken::new(),
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to the actix server. Stopping it directly skips the reply drain; use
    /// [`Application::shutdown_trigger`] for the graceful path.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Cancelling this token shuts down exactly as SIGTERM does.
    pub fn shutdown_trigger(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Shared state.
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until SIGTERM/SIGINT (or [`Application::shutdown_trigger`]), then finishes
    /// open requests and replies within one grace period.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes or the trigger is cancelled. From that moment one
    /// grace period bounds everything:
    ///
    /// 1. no new connections are accepted and callbacks on open connections get 503;
    /// 2. the callbacks already accepted finish, replies included (they run on the HTTP
    ///    workers, which therefore stay up until now);
    /// 3. the workers stop, closing the connections.
    ///
    /// Whatever is still running at the deadline is abandoned and logged.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let trigger = self.shutdown.clone();
        let result = tokio::select! {
            joined = &mut server => {
                if !self.state.tasks.is_empty() {
                    tracing::warn!(
                        pending = self.state.tasks.len(),
                        "server stopped without draining; replies still pending are lost"
                    );
                }
                joined
            }
            () = async {
                tokio::select! {
                    () = shutdown => {}
                    () = trigger.cancelled() => {}
                }
            } => {
                let deadline = tokio::time::Instant::now() + self.grace;
                tracing::info!("shutdown requested: no longer accepting callbacks; finishing replies");
                handle.pause().await;
                self.state.draining.store(true, Ordering::SeqCst);
                // Every accepted callback holds an in-flight permit until its reply is out:
                // owning all of them means nothing is left to finish.
                let all = self.state.in_flight.acquire_many(self.state.max_in_flight);
                match tokio::time::timeout_at(deadline, all).await {
                    Ok(Ok(permits)) => permits.forget(),
                    Ok(Err(_)) => {}
                    Err(_) => tracing::warn!(
                        pending = self.state.tasks.len(),
                        "grace period over with replies still pending"
                    ),
                }
                // Waiters for a slot are refused at once from here on.
                self.state.in_flight.close();
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
        self.state.tasks.close();
        self.background.abort();
        tracing::info!("stopped");
        match result {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
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
