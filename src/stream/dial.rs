//! Opening a connection: `connections/open` for a ticket, then the WebSocket handshake
//! (rustls with the platform's roots for `wss`; `ws` only to loopback, as checked by
//! [`Ticket::new`](crate::dingtalk::stream::Ticket::new)).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::config::Settings;
use crate::dingtalk::stream::{self as wire, OpenError};

/// An open Stream connection.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connection attempt running on its own (after `disconnect`).
pub(super) type Pending = Pin<Box<dyn Future<Output = Result<Socket, ConnectError>> + Send>>;

/// Why no connection could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `connections/open` gave no ticket.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The WebSocket handshake failed.
    #[error("WebSocket handshake with {endpoint} failed: {reason}")]
    Handshake {
        /// The endpoint, without the ticket.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// Opening took longer than `dingtalk.request_timeout_ms`.
    #[error("opening the Stream connection timed out after {0} ms")]
    Timeout(u128),
}

/// What it takes to open connections. Holds the app secret (for `connections/open` only).
pub struct Dialer {
    http: reqwest::Client,
    api_base: String,
    app_key: String,
    app_secret: SecretString,
    tls: Arc<rustls::ClientConfig>,
    ws: WebSocketConfig,
    timeout: Duration,
    last_endpoint: Mutex<Option<String>>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("api_base", &self.api_base)
            .field("app_key", &self.app_key)
            .finish_non_exhaustive()
    }
}

impl Dialer {
    /// A dialer for `settings`, using the shared API client `http` for `connections/open`.
    pub fn new(settings: &Settings, http: reqwest::Client) -> Result<Dialer, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup for Stream mode: {e}"))?;
        let tls = rustls_platform_verifier::BuilderVerifierExt::with_platform_verifier(tls)
            .map_err(|e| format!("TLS setup for Stream mode: {e}"))?
            .with_no_client_auth();
        let max = settings.stream.max_frame_bytes;
        let dt = &settings.dingtalk;
        Ok(Dialer {
            http,
            api_base: dt.api_base.as_str().to_string(),
            app_key: dt.app_key.clone(),
            app_secret: dt.app_secret.clone(),
            tls: Arc::new(tls),
            ws: WebSocketConfig::default()
                .max_message_size(Some(max))
                .max_frame_size(Some(max)),
            timeout: Duration::from_millis(dt.request_timeout_ms),
            last_endpoint: Mutex::new(None),
        })
    }

    /// The endpoint of the last connection opened (no ticket).
    pub fn last_endpoint(&self) -> Option<String> {
        self.last_endpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks for a ticket and connects, each step bounded by `dingtalk.request_timeout_ms`.
    pub async fn dial(&self) -> Result<Socket, ConnectError> {
        let timeout = |_| ConnectError::Timeout(self.timeout.as_millis());
        let open = wire::open(&self.http, &self.api_base, &self.app_key, &self.app_secret);
        let ticket = tokio::time::timeout(self.timeout, open)
            .await
            .map_err(timeout)??;
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            ticket.url().as_str(),
            Some(self.ws),
            true,
            Some(Connector::Rustls(self.tls.clone())),
        );
        let (ws, _response) = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(timeout)?
            .map_err(|e| ConnectError::Handshake {
                endpoint: ticket.endpoint().to_string(),
                reason: describe(&e),
            })?;
        *self.last_endpoint.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(ticket.endpoint().to_string());
        Ok(ws)
    }

    /// [`Dialer::dial`] as a future of its own.
    pub(super) fn dial_owned(self: Arc<Self>) -> Pending {
        Box::pin(async move { self.dial().await })
    }
}

/// A WebSocket error in words that never include the URL (it holds the ticket).
pub(super) fn describe(e: &WsError) -> String {
    match e {
        WsError::Http(response) => format!("HTTP {}", response.status().as_u16()),
        WsError::Io(io) => io.to_string(),
        WsError::Tls(tls) => format!("TLS: {tls}"),
        WsError::Url(_) => "bad endpoint URL".into(),
        WsError::Capacity(c) => c.to_string(),
        WsError::Protocol(p) => format!("protocol: {p}"),
        WsError::ConnectionClosed | WsError::AlreadyClosed => "connection closed".into(),
        _ => "WebSocket error".into(),
    }
}
