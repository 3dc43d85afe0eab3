//! The HTTP client that POSTs replies to sessionWebhooks.
//!
//! Replies are the one outbound call made for every answered command, so they skip
//! reqwest's request pipeline: reqwest re-parses the URL twice per request (redirect policy
//! and response URL, even with redirects off) and adds its own
//! layers on top of the hyper client it wraps. [`ReplyHttp::Direct`] drives the same
//! `hyper-util` pooled client and `hyper-rustls` connector (rustls, platform certificate
//! verifier) itself: one keep-alive pool, `TCP_NODELAY`, a connect timeout, a total
//! timeout, no redirects, the answer capped at [`MAX_ANSWER_BYTES`].
//!
//! What the direct client does not do is use a proxy. With `dingtalk.reply_client = "auto"`
//! (the default) replies go through reqwest, which honours `HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY` and `NO_PROXY`, whenever one of the proxy variables is set; `"direct"` and
//! `"reqwest"` force one or the other.

use std::time::Duration;

use super::endpoint::Endpoint;
use super::error::ApiError;
use super::transport::{self, POOL_IDLE, connect_timeout};
use crate::config::ReplyClientChoice;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// A sessionWebhook answers `{"errcode":0,"errmsg":"ok"}`; anything far bigger is not one.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Environment variables that make reqwest send through a proxy.
pub const PROXY_VARS: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The reply client in use.
pub enum ReplyHttp {
    /// `hyper-util` client driven directly.
    Direct(DirectClient),
    /// The shared reqwest client.
    Reqwest(reqwest::Client),
}

impl std::fmt::Debug for ReplyHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The direct client and its settings.
pub struct DirectClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    user_agent: HeaderValue,
}

impl ReplyHttp {
    /// The client `choice` asks for; `auto` looks at the proxy variables. `timeout` bounds
    /// each POST from connect to the end of the answer, like reqwest's `timeout`.
    pub fn new(
        choice: ReplyClientChoice,
        timeout: Duration,
        shared: &reqwest::Client,
    ) -> Result<ReplyHttp, String> {
        let direct = match choice {
            ReplyClientChoice::Direct => true,
            ReplyClientChoice::Reqwest => false,
            ReplyClientChoice::Auto => proxy_variable().is_none(),
        };
        if !direct {
            return Ok(ReplyHttp::Reqwest(shared.clone()));
        }
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout(timeout)));
        // The scheme is checked by the webhook allow-list before a request gets here.
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_platform_verifier(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|e| format!("TLS setup for replies: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(https);
        Ok(ReplyHttp::Direct(DirectClient {
            client,
            timeout,
            user_agent: HeaderValue::from_static(transport::USER_AGENT),
        }))
    }

    /// `direct` or `reqwest`, for the start-up log.
    pub fn name(&self) -> &'static str {
        match self {
            ReplyHttp::Direct(_) => "direct",
            ReplyHttp::Reqwest(_) => "reqwest",
        }
    }

    /// POSTs `body` (JSON) to `uri` and reads the whole answer: `(status, body)`. A
    /// failure without an HTTP answer is [`ApiError::Transport`] (never with the URL: it is
    /// a bearer credential for the group); `connect` is set only when nothing was sent.
    pub async fn post_json(&self, uri: &Uri, body: &Bytes) -> Result<(u16, Bytes), ApiError> {
        match self {
            ReplyHttp::Direct(d) => d.post_json(uri, body).await,
            // Only with a proxy: reqwest parses the URL again, which it needs anyway.
            ReplyHttp::Reqwest(c) => {
                let req = c
                    .post(uri.to_string())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
                transport::send(Endpoint::SendBySession, req).await
            }
        }
    }
}

impl DirectClient {
    async fn post_json(&self, uri: &Uri, body: &Bytes) -> Result<(u16, Bytes), ApiError> {
        let failure = |timeout: bool, connect: bool, detail: String| ApiError::Transport {
            endpoint: Endpoint::SendBySession,
            timeout,
            connect,
            detail,
        };
        let request = hyper::Request::post(uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, self.user_agent.clone())
            .body(Full::new(body.clone()))
            .map_err(|e| failure(false, true, format!("building the request: {e}")))?;
        let exchange = async {
            let resp = self
                .client
                .request(request)
                .await
                .map_err(|e| failure(false, e.is_connect(), error_chain(&e)))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| failure(false, false, format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(failure(
                true,
                false,
                format!("no answer within {} ms", self.timeout.as_millis()),
            )),
        }
    }
}

/// The error and its sources, `: `-joined (hyper's top-level text alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The first proxy variable that is set and not empty.
pub fn proxy_variable() -> Option<&'static str> {
    PROXY_VARS
        .into_iter()
        .find(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;

    const SESSION: &str = "sessionSecret0123";

    fn direct(timeout_ms: u64) -> ReplyHttp {
        let shared = reqwest::Client::new();
        let client = ReplyHttp::new(
            ReplyClientChoice::Direct,
            Duration::from_millis(timeout_ms),
            &shared,
        )
        .unwrap();
        assert_eq!(client.name(), "direct");
        client
    }

    /// `(timeout, connect, detail)` of a transport failure; any other error fails the test.
    fn transport(err: ApiError) -> (bool, bool, String) {
        match err {
            ApiError::Transport {
                endpoint: Endpoint::SendBySession,
                timeout,
                connect,
                detail,
            } => (timeout, connect, detail),
            other => panic!("not a transport failure: {other:?}"),
        }
    }

    fn hook(port: u16) -> Uri {
        format!("http://127.0.0.1:{port}/robot/sendBySession?session={SESSION}")
            .parse()
            .unwrap()
    }

    /// A one-connection HTTP server on 127.0.0.1: reads one request (headers and a
    /// Content-Length body), then writes `answer` (or nothing, holding the connection
    /// for `hold`). Returns the port and a handle giving the request as received.
    fn one_shot(answer: Option<Vec<u8>>, hold: Duration) -> (u16, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = conn.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len || n == 0 {
                        break;
                    }
                }
            }
            match answer {
                Some(bytes) => conn.write_all(&bytes).unwrap(),
                None => std::thread::sleep(hold),
            }
            String::from_utf8_lossy(&got).to_string()
        });
        (port, handle)
    }

    #[tokio::test]
    async fn posts_json_with_our_headers_and_reads_the_answer() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 27\r\n\r\n{\"errcode\":0,\"errmsg\":\"ok\"}".to_vec();
        let (port, server) = one_shot(Some(ok), Duration::ZERO);
        let body = Bytes::from_static(br#"{"msgtype":"text","text":{"content":"hi"}}"#);
        let (status, answer) = direct(2000).post_json(&hook(port), &body).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(&answer[..], br#"{"errcode":0,"errmsg":"ok"}"#);
        let request = server.join().unwrap();
        let lower = request.to_ascii_lowercase();
        assert!(
            request.starts_with(&format!(
                "POST /robot/sendBySession?session={SESSION} HTTP/1.1\r\n"
            )),
            "{request}"
        );
        assert!(
            lower.contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n")),
            "{request}"
        );
        assert!(
            lower.contains("\r\ncontent-type: application/json\r\n"),
            "{request}"
        );
        assert!(
            lower.contains(&format!("\r\ncontent-length: {}\r\n", body.len())),
            "{request}"
        );
        assert!(lower.contains("\r\nuser-agent: dingbot/"), "{request}");
        assert!(
            request.ends_with(r#"{"msgtype":"text","text":{"content":"hi"}}"#),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure_without_the_session() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let body = Bytes::from_static(b"{}");
        let err = direct(2000)
            .post_json(&hook(port), &body)
            .await
            .unwrap_err();
        let (timeout, connect, detail) = transport(err);
        assert!(connect, "{detail}");
        assert!(!timeout, "{detail}");
        assert!(!detail.contains(SESSION), "{detail}");
    }

    #[tokio::test]
    async fn no_answer_in_time_is_a_timeout_not_a_connect_failure() {
        let (port, server) = one_shot(None, Duration::from_millis(800));
        let body = Bytes::from_static(b"{}");
        let err = direct(200).post_json(&hook(port), &body).await.unwrap_err();
        // Connected and sent: DingTalk may have taken the message, so no retry may follow.
        let (timeout, connect, detail) = transport(err);
        assert!(timeout, "{detail}");
        assert!(!connect, "{detail}");
        server.join().unwrap();
    }

    #[tokio::test]
    async fn an_answer_longer_than_one_read_is_read_whole() {
        // hyper reads 8 KiB at first; a proxy in front of DingTalk may add long headers.
        let filler = "x".repeat(20_000);
        let answer = format!(r#"{{"errcode":0,"errmsg":"ok","filler":"{filler}"}}"#);
        let head = format!(
            "HTTP/1.1 200 OK\r\nx-trace: {}\r\ncontent-length: {}\r\n\r\n",
            "t".repeat(10_000),
            answer.len()
        );
        let (port, server) = one_shot(
            Some([head, answer.clone()].concat().into_bytes()),
            Duration::ZERO,
        );
        let body = Bytes::from_static(b"{}");
        let (status, got) = direct(2000).post_json(&hook(port), &body).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(got, answer.as_bytes());
        server.join().unwrap();
    }

    #[tokio::test]
    async fn an_oversized_answer_is_a_failure_after_sending() {
        let size = MAX_ANSWER_BYTES + 1;
        let mut big = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n").into_bytes();
        big.extend(std::iter::repeat_n(b'x', size));
        let (port, server) = one_shot(Some(big), Duration::ZERO);
        let body = Bytes::from_static(b"{}");
        let err = direct(2000)
            .post_json(&hook(port), &body)
            .await
            .unwrap_err();
        let (timeout, connect, detail) = transport(err);
        assert!(!connect && !timeout, "{detail}");
        assert!(detail.contains("reading the answer"), "{detail}");
        server.join().unwrap();
    }

    #[test]
    fn reqwest_is_chosen_when_asked() {
        let shared = reqwest::Client::new();
        let client =
            ReplyHttp::new(ReplyClientChoice::Reqwest, Duration::from_secs(1), &shared).unwrap();
        assert_eq!(client.name(), "reqwest");
    }
}
