//! HTTP surface: the callback route, health, readiness and metrics. The only module that
//! sees actix-web request types.

pub mod callback;
pub mod error;
pub mod state;

pub use state::AppState;

use actix_web::{HttpResponse, web};

/// Registers every route on an actix `App`.
pub fn routes(callback_path: &str) -> impl FnOnce(&mut web::ServiceConfig) + '_ {
    move |cfg: &mut web::ServiceConfig| {
        cfg.route(callback_path, web::post().to(callback::callback));
        probe_routes(cfg);
    }
}

/// Registers `/healthz`, `/readyz` and `/metrics` only (Stream mode: no callback route).
pub fn probe_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// Liveness: the process answers.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: configuration loaded and an access token can be had (cached).
/// With a shared backend (Redis), `state` tells whether shared state is in use: a replica
/// running degraded on its own memory is still ready (it answers), and says so. The
/// memory backend's answer is unchanged.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let backend = state.pipeline.backend_status();
    let (mut body, ready) = match state.readiness().await {
        Ok(()) => (serde_json::json!({"status": "ready"}), true),
        Err(reason) => (
            serde_json::json!({"status": "not_ready", "reason": reason}),
            false,
        ),
    };
    if backend.backend != "memory" {
        body["state"] = serde_json::json!({
            "backend": backend.backend,
            "shared": if backend.up { "up" } else { "degraded" },
        });
    }
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text format.
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    crate::telemetry::prometheus();
    crate::telemetry::tracked_groups(state.pipeline.remembered().groups);
    crate::telemetry::callbacks_in_flight(state.callbacks_in_flight());
    let backend = state.pipeline.backend_status();
    if backend.backend != "memory" {
        crate::telemetry::state_backend_up(backend.up);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::telemetry::render_metrics())
}
