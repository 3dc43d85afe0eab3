//! The direct reply client over TLS, as it talks to `https://oapi.dingtalk.com` in
//! production: certificates are checked by the platform verifier (on Linux: the system
//! roots, or `SSL_CERT_FILE`). A separate test binary, so that pointing `SSL_CERT_FILE` at
//! the test CA touches no other test.
//!
//! `tests/fixtures/tls/`: `ca.pem` (a test CA, its key discarded), `server.pem`/`server.key`
//! (127.0.0.1, signed by that CA), `untrusted.pem`/`untrusted.key` (self-signed). Test-only
//! keys, valid until 2126.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dingbot::dingtalk::{ApiError, ReplyClientChoice, ReplyHttp};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// A one-connection HTTPS server on 127.0.0.1 presenting `cert`: answers one request with
/// a sessionWebhook's `{"errcode":0,"errmsg":"ok"}`. Returns the port and a handle giving
/// the request line, or the TLS error text if the handshake failed.
fn https_once(cert: &str, key: &str) -> (u16, std::thread::JoinHandle<Result<String, String>>) {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(fixture(cert))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture(key)).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            match tls.read(&mut buf) {
                Ok(0) => return Err("closed before a request".to_string()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 27\r\n\r\n{\"errcode\":0,\"errmsg\":\"ok\"}";
        tls.write_all(answer).map_err(|e| e.to_string())?;
        tls.flush().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&got).to_string();
        Ok(text.lines().next().unwrap_or_default().to_string())
    });
    (port, handle)
}

#[tokio::test]
async fn replies_go_over_verified_tls_and_never_to_an_untrusted_certificate() {
    // SAFETY: the only test in this binary, and it sets the variables before anything
    // reads them (the verifier loads the roots on first use).
    unsafe {
        std::env::set_var("SSL_CERT_FILE", fixture("ca.pem"));
        std::env::remove_var("SSL_CERT_DIR");
    }
    let client = ReplyHttp::new(
        ReplyClientChoice::Direct,
        Duration::from_secs(5),
        &reqwest::Client::new(),
    )
    .unwrap();
    assert_eq!(client.name(), "direct");
    let body = Bytes::from_static(br#"{"msgtype":"text","text":{"content":"hi"}}"#);

    // A certificate from a trusted CA for 127.0.0.1: the reply is delivered.
    let (port, server) = https_once("server.pem", "server.key");
    let hook = format!("https://127.0.0.1:{port}/robot/sendBySession?session=s1")
        .parse()
        .unwrap();
    let (status, answer) = client.post_json(&hook, &body).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(&answer[..], br#"{"errcode":0,"errmsg":"ok"}"#);
    assert_eq!(
        server.join().unwrap().unwrap(),
        "POST /robot/sendBySession?session=s1 HTTP/1.1"
    );

    // A self-signed certificate: the handshake fails, nothing is sent, and the failure is
    // one where the message surely did not arrive (so it may be retried).
    let (port, server) = https_once("untrusted.pem", "untrusted.key");
    let hook = format!("https://127.0.0.1:{port}/robot/sendBySession?session=s2")
        .parse()
        .unwrap();
    let err = client.post_json(&hook, &body).await.unwrap_err();
    let ApiError::Transport {
        timeout,
        connect,
        detail,
        ..
    } = err
    else {
        panic!("not a transport failure: {err:?}");
    };
    assert!(connect && !timeout, "{detail}");
    assert!(!detail.contains("session=s2"), "{detail}");
    let served = server.join().unwrap();
    assert!(
        served.is_err(),
        "the untrusted server got a request: {served:?}"
    );
}
