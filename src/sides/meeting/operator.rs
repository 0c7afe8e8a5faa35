//! Operator HTTP routes for PTT dial-ins (business-gateway envelope `{code, message, ...}`):
//!
//! - `GET /meeting/links` → `{"code":0,"message":"OK","links":[{"dial_in":9001,"room":600,"up_ms":65000}]}`
//!   (`up_ms`: how long the link has been up; null while it is coming up)
//! - `POST /meeting/links/{dial_in}/hangup` → `{"code":0,"message":"OK"}`, or 404 with
//!   `{"code":404,"message":"9001 is not linked"}`. The caller gets `cancel {reason:"hangup"}`,
//!   the room sees the channel leave, hub events `link.down` and `call.ended` say `hangup`.
//!
//! PTT users hang up from the channel with the text command
//! [`HANGUP_COMMAND`](crate::bridge::HANGUP_COMMAND).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::Switchboard;

/// `GET /meeting/links`.
pub async fn links(State(sb): State<Arc<Switchboard>>) -> impl IntoResponse {
    let h = sb.health();
    Json(json!({ "code": 0, "message": "OK", "links": h["links"] }))
}

/// `POST /meeting/links/{dial_in}/hangup`.
pub async fn hang_up(
    State(sb): State<Arc<Switchboard>>,
    Path(dial_in): Path<String>,
) -> impl IntoResponse {
    let Ok(id) = dial_in.parse::<i64>() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "code": 400, "message": format!("{dial_in:?} is not a user id") })),
        );
    };
    if sb.hang_up(id) {
        (StatusCode::OK, Json(json!({ "code": 0, "message": "OK" })))
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({ "code": 404, "message": format!("{id} is not linked") })),
        )
    }
}
