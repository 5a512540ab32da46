//! `GET /v1/models`: what is served, each model's limits, the execution provider and the
//! version, in t5serve's fields and in OpenAI's list shape (`object`, `data`) beside them.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::served::{Served, State as ModelState};

pub async fn models(State(app): State<AppState>) -> Json<Value> {
    let all = app.models.all();
    let default = app.models.default_model();
    let info = &default.info;
    Json(json!({
        // OpenAI's list shape, which the official client reads (`client.models.list()`).
        "object": "list",
        "data": all.iter().map(|m| json!({"id": m.id, "object": "model", "created": m.info.loaded_at, "owned_by": "t5serve"})).collect::<Vec<_>>(),
        "default": default.id,
        "version": env!("CARGO_PKG_VERSION"),
        "execution_provider": info.execution_provider,
        "device_id": info.cuda_device,
        "cpu": crate::model::cpu::host().report(),
        "models": all
            .iter()
            .map(|m| describe(m))
            .chain(app.models.states().into_iter().filter_map(|(id, s)| match s {
                ModelState::Ready(_) => None,
                ModelState::Failed(why) => Some(json!({"id": id, "state": "failed", "reason": why})),
                other => Some(json!({"id": id, "state": other.name()})),
            }))
            .collect::<Vec<_>>(),
    }))
}

/// One model's entry in t5serve's fields.
pub fn describe(m: &Served) -> Value {
    let (d, l, info) = (&m.info.dims, &m.limits, &m.info);
    json!({
        "id": m.id,
        "state": "ready",
        "model_type": d.model_type,
        "decoder": info.layout,
        "joins_running_batch": info.can_join,
        "weights": info.weights(),
        "quantization": info.quantization,
        "int8_may_saturate": info.int8_may_saturate(),
        "dimensions": {
            "d_model": d.d_model, "d_kv": d.d_kv, "num_heads": d.num_heads,
            "num_layers": d.num_layers, "num_decoder_layers": d.num_decoder_layers, "vocab_size": d.vocab_size,
        },
        "limits": {
            "max_input_tokens": l.max_input_tokens, "max_new_tokens": l.max_new_tokens_limit,
            "max_client_batch_size": l.max_client_batch_size, "max_num_beams": l.max_num_beams,
            "max_stop_sequences": l.max_stop_sequences, "max_labels": l.max_labels,
        },
        "tasks": {
            "classify_labels": m.tasks.classify_labels,
            "classify_template": m.tasks.classify_template,
            "translate_pairs": m.tasks.translate_pairs.iter().map(|p| json!({"source": p.source, "target": p.target})).collect::<Vec<_>>(),
        },
    })
}
