//! `/__sim/*` on every listener: what the [`crate::Sim`] handle offers, over
//! HTTP, for an operator running `botbox sim` in another process. Loopback
//! only and unauthenticated, like the simulators themselves.
//!
//! | route | does |
//! |---|---|
//! | `GET /__sim/state` | counters, pending faults, simulated time |
//! | `GET /__sim/deliveries`, `/__sim/requests`, `/__sim/violations` | this provider's records |
//! | `POST /__sim/fault` `{"fault": {"kind": "server_error", "status": 503}, "endpoint": "…"?, "count": 1}` | inject; `{"kind": "error_answer", "code": "20007", "status"?, "description"?}` answers the provider's own error code |
//! | `DELETE /__sim/fault` | clear this provider's faults |
//! | `POST /__sim/advance` `{"ms": 1800000}` | jump the simulated clock |
//! | `GET /__sim/meetings`, `POST /__sim/meetings` `{"id","name","running"}` | BigBlueButton meetings (routed by `crate::bbb`) |

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::Shared;
use crate::clock::unix_ms;
use crate::fault::Fault;
use crate::record::{Outcome, SimProvider, SimRequest, escape_for_log};
use crate::server::json;

#[derive(Deserialize)]
struct FaultRequest {
    fault: Fault,
    endpoint: Option<String>,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
struct Advance {
    ms: u64,
}

pub(crate) fn router(provider: SimProvider) -> Router<Arc<Shared>> {
    let r: Router<Arc<Shared>> = Router::new()
        .route(
            "/__sim/state",
            get(move |State(s): State<Arc<Shared>>| async move {
                let stats = s.records.stats(provider);
                json(
                    StatusCode::OK,
                    &json!({
                        "provider": provider,
                        "stats": stats,
                        "pending_faults": s.faults.pending(provider),
                        "sim_time_ms": u64::try_from(s.clock.now().as_millis()).unwrap_or(u64::MAX),
                        "time_scale": s.clock.scale(),
                    }),
                )
            }),
        )
        .route(
            "/__sim/deliveries",
            get(move |State(s): State<Arc<Shared>>| async move {
                let d: Vec<_> = s
                    .records
                    .deliveries()
                    .into_iter()
                    .filter(|d| d.provider == provider)
                    .collect();
                json(StatusCode::OK, &json!(d))
            }),
        )
        .route(
            "/__sim/requests",
            get(move |State(s): State<Arc<Shared>>| async move {
                let r: Vec<_> = s
                    .records
                    .requests()
                    .into_iter()
                    .filter(|r| r.provider == provider)
                    .collect();
                json(StatusCode::OK, &json!(r))
            }),
        )
        .route(
            "/__sim/violations",
            get(move |State(s): State<Arc<Shared>>| async move {
                let v: Vec<_> = s
                    .records
                    .violations()
                    .into_iter()
                    .filter(|v| v.provider == provider)
                    .collect();
                json(StatusCode::OK, &json!(v))
            }),
        )
        .route("/__sim/fault", fault_routes(provider))
        .route(
            "/__sim/advance",
            axum::routing::post(
                |State(s): State<Arc<Shared>>, Json(a): Json<Advance>| async move {
                    s.clock.advance(Duration::from_millis(a.ms));
                    json(
                        StatusCode::OK,
                        &json!({"sim_time_ms": u64::try_from(s.clock.now().as_millis()).unwrap_or(u64::MAX)}),
                    )
                },
            ),
        );
    r
}

fn fault_routes(provider: SimProvider) -> MethodRouter<Arc<Shared>> {
    axum::routing::post(
        move |State(s): State<Arc<Shared>>, Json(f): Json<FaultRequest>| async move {
            s.faults.inject(provider, f.endpoint, f.fault, f.count);
            json(
                StatusCode::OK,
                &json!({"pending_faults": s.faults.pending(provider)}),
            )
        },
    )
    .delete(move |State(s): State<Arc<Shared>>| async move {
        s.faults.clear(Some(provider));
        json(StatusCode::OK, &json!({"pending_faults": 0}))
    })
}

/// Unknown paths are recorded too: a client calling a wrong URL is exactly
/// what the simulator is for.
pub(crate) async fn not_found(
    provider: SimProvider,
    State(s): State<Arc<Shared>>,
    req: Request,
) -> Response {
    let path = req.uri().path().to_owned();
    tracing::debug!(
        target: "botbox_sim",
        "{:<8} no such route: {} {}",
        provider.as_str(),
        req.method(),
        escape_for_log(&path, 120)
    );
    let path = (crate::kind::kind(provider).unrouted_path)(path);
    s.records.request(SimRequest {
        seq: 0,
        provider,
        endpoint: String::new(),
        method: req.method().to_string(),
        path,
        outcome: Outcome::Rejected {
            status: 404,
            code: "not_found".to_owned(),
        },
        fault: None,
        at: s.clock.now(),
        unix_ms: unix_ms(),
    });
    json(
        StatusCode::NOT_FOUND,
        &json!({"error": "not_found", "error_description": "no such endpoint in botbox-sim"}),
    )
}
