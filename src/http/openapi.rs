//! `GET /openapi.yaml` and `GET /openapi.json`: the committed OpenAPI document, embedded at
//! build time (build.rs converts it to JSON), so that the binary and its spec cannot disagree.

use axum::http::header;
use axum::response::IntoResponse;

const YAML: &str = include_str!("../../openapi.yaml");
const JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

pub async fn yaml() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], YAML)
}

pub async fn json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], JSON)
}
