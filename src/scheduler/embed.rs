//! Embedding rows: the encoder alone, over the rows in length buckets like any prefill (or its
//! output from the encoder cache), and each row's hidden states pooled over its real tokens. No
//! decoder step.

use crate::model::{ModelError, Seq2SeqModel};
use crate::tasks::embed;

use super::buckets::encode_bucketed;
use super::encoder_cache::{EncoderCache, encoder_outputs};
use super::{Event, RowError, RowRequest};

/// Embeds the rows and sends each one `Event::Embedding`; on a model error every row gets an
/// error event. Returns the encoder's (real, padded) input tokens.
pub fn embed_rows(
    model: &Seq2SeqModel,
    rows: Vec<RowRequest>,
    cache: Option<&EncoderCache>,
) -> Result<(usize, usize), ModelError> {
    let mut rows: Vec<RowRequest> = rows.into_iter().filter(|r| !r.events.is_closed()).collect();
    if rows.is_empty() {
        return Ok((0, 0));
    }
    rows.sort_by_key(|r| r.input_ids.len());
    let inputs: Vec<&[u32]> = rows.iter().map(|r| r.input_ids.as_slice()).collect();
    let d = model.dims.d_model;
    let send = |row: &RowRequest, hidden: &[f32], mask: &[i64]| {
        let v = embed::pool(hidden, mask, d, row.embed.unwrap_or_default());
        let _ = row.events.send(Event::Embedding { vector: v, input_tokens: row.input_ids.len() });
    };
    let result = match cache {
        // Each row's own positions, all real.
        Some(cache) => encoder_outputs(model, cache, &inputs).map(|(hidden, encoded)| {
            for (row, h) in rows.iter().zip(hidden) {
                send(row, &h, &vec![1; row.input_ids.len()]);
            }
            encoded
        }),
        None => encode_bucketed(model, &inputs).map(|(enc, padded)| {
            let len = enc.hidden.shape()[1];
            let hidden = enc.hidden.as_standard_layout();
            let hidden = hidden.as_slice().expect("standard layout");
            for (i, row) in rows.iter().enumerate() {
                send(row, &hidden[i * len * d..(i + 1) * len * d], &enc.mask.row(i).to_vec());
            }
            (inputs.iter().map(|r| r.len()).sum(), padded)
        }),
    };
    if let Err(e) = &result {
        tracing::error!(error = %e, rows = rows.len(), "embedding failed");
        for row in &rows {
            let _ = row.events.send(Event::Error(RowError::Internal(e.to_string())));
        }
    }
    result
}
