//! `/_sandbox/*`: control and inspection over HTTP, for scripts that run the sandbox
//! as a separate process (benchmarks, manual demos).
//!
//! - `GET /_sandbox/messages[?session=…]` → `[{"session","via","to","body"}, …]` (`via`:
//!   `send_by_session`, `robot_group_send` or `robot_oto_send`)
//! - `GET /_sandbox/stats` → `{"<endpoint name>": calls, …, "messages": total}`
//! - `POST /_sandbox/faults` `{"endpoint":"chat_get","fault":{…},"times":3}` where the
//!   fault is one of `{"errcode":-1,"errmsg":"系统繁忙"[,"sub_code":"…"]}`,
//!   `{"status":500}`, `{"html":true}`, `{"truncated":true}`, `{"garbage":true}`,
//!   `{"delay_ms":10000}`; `times` defaults to 1, `"times":"always"` or
//!   `4294967295` keeps it until cleared
//! - `DELETE /_sandbox/faults` clears all faults
//! - `POST /_sandbox/reset` clears messages and counters

use std::time::Duration;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::faults::{Endpoint, Fault};
use super::state::State;

#[derive(Debug, Deserialize)]
struct FaultRequest {
    endpoint: String,
    fault: FaultSpec,
    #[serde(default)]
    times: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    errcode: Option<i64>,
    errmsg: Option<String>,
    sub_code: Option<String>,
    status: Option<u16>,
    #[serde(default)]
    html: bool,
    #[serde(default)]
    truncated: bool,
    #[serde(default)]
    garbage: bool,
    delay_ms: Option<u64>,
}

impl FaultSpec {
    fn into_fault(self) -> Result<Fault, String> {
        let mut faults = Vec::new();
        if let Some(errcode) = self.errcode {
            faults.push(Fault::ErrCode {
                errcode,
                errmsg: self.errmsg.unwrap_or_else(|| "系统繁忙".to_owned()),
                sub_code: self.sub_code,
            });
        }
        if let Some(status) = self.status {
            faults.push(Fault::HttpStatus(status));
        }
        if self.html {
            faults.push(Fault::Html);
        }
        if self.truncated {
            faults.push(Fault::Truncated);
        }
        if self.garbage {
            faults.push(Fault::Garbage);
        }
        if let Some(ms) = self.delay_ms {
            faults.push(Fault::Delay(Duration::from_millis(ms)));
        }
        match faults.len() {
            1 => faults.pop().ok_or_else(|| "no fault given".to_owned()),
            0 => Err(
                "fault must contain one of errcode, status, html, truncated, garbage, delay_ms"
                    .to_owned(),
            ),
            _ => Err("fault must describe exactly one fault".to_owned()),
        }
    }
}

fn parse_times(times: Option<Value>) -> Result<u32, String> {
    match times {
        None | Some(Value::Null) => Ok(1),
        Some(Value::String(s)) if s == "always" => Ok(u32::MAX),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("times must be 0..={}", u32::MAX)),
        Some(other) => Err(format!("invalid times: {other}")),
    }
}

fn bad_request(message: impl Into<String>) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": message.into() }))
}

async fn messages(state: web::Data<State>, req: HttpRequest) -> HttpResponse {
    let session = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "session")
        .map(|(_, v)| v.into_owned());
    let list: Vec<Value> = state
        .messages(session.as_deref())
        .into_iter()
        .map(|m| json!({ "session": m.session, "via": m.via.name(), "to": m.to, "body": m.body }))
        .collect();
    HttpResponse::Ok().json(list)
}

async fn stats(state: web::Data<State>) -> HttpResponse {
    let mut map = Map::new();
    for ep in Endpoint::ALL {
        map.insert(ep.name().to_owned(), json!(state.calls(ep)));
    }
    map.insert("messages".to_owned(), json!(state.message_total()));
    HttpResponse::Ok().json(Value::Object(map))
}

async fn add_fault(state: web::Data<State>, body: Bytes) -> HttpResponse {
    let request: FaultRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid fault request: {e}")),
    };
    let endpoint: Endpoint = match request.endpoint.parse() {
        Ok(ep) => ep,
        Err(e) => return bad_request(format!("{e}")),
    };
    let times = match parse_times(request.times) {
        Ok(t) => t,
        Err(e) => return bad_request(e),
    };
    let fault = match request.fault.into_fault() {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    tracing::info!(%endpoint, ?fault, times, "sandbox: fault injected");
    state.faults.inject(endpoint, fault, times);
    HttpResponse::Ok().json(json!({ "ok": true }))
}

async fn clear_faults(state: web::Data<State>) -> HttpResponse {
    state.faults.clear();
    HttpResponse::Ok().json(json!({ "ok": true }))
}

async fn reset(state: web::Data<State>) -> HttpResponse {
    state.reset();
    HttpResponse::Ok().json(json!({ "ok": true }))
}

/// Registers the `/_sandbox` routes.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/_sandbox")
            .route("/messages", web::get().to(messages))
            .route("/stats", web::get().to(stats))
            .route("/faults", web::post().to(add_fault))
            .route("/faults", web::delete().to(clear_faults))
            .route("/reset", web::post().to(reset)),
    );
}
