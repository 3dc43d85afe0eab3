//! The baseline dingbot is measured against (`SCENARIOS=bare bench/run.sh`): the least a
//! DingTalk robot can do per callback, written the obvious way. One actix-web handler
//! verifies the signature, parses the body, POSTs a fixed text reply to the sessionWebhook
//! through one pooled reqwest client, waits for it, and only then answers 200.
//!
//! No dedupe, replay defence, rate limit, group lookup, template, metrics or logging, and
//! no allow-list for the webhook host: not for production, only for the benchmark.
//!
//! ```sh
//! cargo run --release --example bare_handler -- 127.0.0.1:8081 <app_secret>
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use dingbot::dingtalk::Verifier;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Incoming<'a> {
    #[serde(borrow)]
    session_webhook: std::borrow::Cow<'a, str>,
}

struct Bare {
    verifier: Verifier,
    http: reqwest::Client,
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a [u8]> {
    req.headers().get(name).map(|v| v.as_bytes())
}

async fn callback(req: HttpRequest, body: web::Bytes, bare: web::Data<Bare>) -> HttpResponse {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    if bare
        .verifier
        .verify(header(&req, "timestamp"), header(&req, "sign"), now)
        .is_err()
    {
        return HttpResponse::Unauthorized().finish();
    }
    let Ok(incoming) = serde_json::from_slice::<Incoming>(&body) else {
        return HttpResponse::BadRequest().finish();
    };
    let reply = r#"{"msgtype":"text","text":{"content":"pong"}}"#;
    let sent = bare
        .http
        .post(incoming.session_webhook.as_ref())
        .header("content-type", "application/json")
        .body(reply)
        .send()
        .await;
    match sent {
        Ok(resp) if resp.status().is_success() => {
            let _ = resp.bytes().await;
            HttpResponse::Ok()
                .content_type("application/json")
                .body("{}")
        }
        _ => HttpResponse::BadGateway().finish(),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(secret)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_handler <listen addr> <app secret>");
        std::process::exit(2);
    };
    let secret = SecretString::from(secret);
    let http = reqwest::Client::builder()
        .build()
        .map_err(std::io::Error::other)?;
    let bare = web::Data::new(Bare {
        verifier: Verifier::new(&secret, 3600),
        http,
    });
    HttpServer::new(move || {
        App::new()
            .app_data(bare.clone())
            .route("/dingtalk/callback", web::post().to(callback))
            .route("/healthz", web::get().to(HttpResponse::Ok))
            .route("/readyz", web::get().to(HttpResponse::Ok))
    })
    .workers(1)
    .bind(listen)?
    .run()
    .await
}
