//! `GET /metrics`: Prometheus text exposition.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], {
        let stats = app.models.stats();
        let states = app.models.states();
        app.metrics.render(
            &stats.iter().map(|(id, s)| (id.as_str(), s.as_ref())).collect::<Vec<_>>(),
            &states.iter().map(|(id, s)| (id.as_str(), s.name())).collect::<Vec<_>>(),
        )
    })
}
