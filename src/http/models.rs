//! `GET /v1/models`: what is served, its limits, the execution provider and the version, in
//! t5serve's fields and in OpenAI's list shape (`object`, `data`) beside them.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;

pub async fn models(State(app): State<AppState>) -> Json<Value> {
    let d = &app.info.dims;
    let l = &app.limits;
    Json(json!({
        // OpenAI's list shape, which the official client reads (`client.models.list()`).
        "object": "list",
        "data": [{"id": d.name, "object": "model", "created": app.info.loaded_at, "owned_by": "t5serve"}],
        "version": env!("CARGO_PKG_VERSION"),
        "execution_provider": app.info.execution_provider,
        "device_id": app.info.cuda_device,
        "cpu": crate::model::cpu::host().report(),
        "models": [{
            "id": d.name,
            "model_type": d.model_type,
            "decoder": app.info.layout,
            "joins_running_batch": app.info.can_join,
            "weights": app.info.weights(),
            "quantization": app.info.quantization,
            "int8_may_saturate": app.info.int8_may_saturate(),
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
                "classify_labels": app.tasks.classify_labels,
                "classify_template": app.tasks.classify_template,
                "translate_pairs": app.tasks.translate_pairs.iter().map(|p| json!({"source": p.source, "target": p.target})).collect::<Vec<_>>(),
            },
        }],
    }))
}
