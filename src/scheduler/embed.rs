//! Embedding rows: the encoder alone, over the rows in length buckets like any prefill, and each
//! row's hidden states pooled over its real tokens. No decoder step, no cache.

use crate::model::{ModelError, Seq2SeqModel};
use crate::tasks::embed;

use super::batch::encode_bucketed;
use super::{Event, RowError, RowRequest};

/// Embeds the rows and sends each one `Event::Embedding`; on a model error every row gets an
/// error event. Returns the encoder's (real, padded) input tokens.
pub fn embed_rows(model: &Seq2SeqModel, rows: Vec<RowRequest>) -> Result<(usize, usize), ModelError> {
    let mut rows: Vec<RowRequest> = rows.into_iter().filter(|r| !r.events.is_closed()).collect();
    if rows.is_empty() {
        return Ok((0, 0));
    }
    rows.sort_by_key(|r| r.input_ids.len());
    let inputs: Vec<&[u32]> = rows.iter().map(|r| r.input_ids.as_slice()).collect();
    match encode_bucketed(model, &inputs) {
        Ok((enc, padded)) => {
            let (len, d) = (enc.hidden.shape()[1], enc.hidden.shape()[2]);
            let hidden = enc.hidden.as_standard_layout();
            let hidden = hidden.as_slice().expect("standard layout");
            for (i, row) in rows.iter().enumerate() {
                let settings = row.embed.unwrap_or_default();
                let mask = enc.mask.row(i).to_vec();
                let v = embed::pool(&hidden[i * len * d..(i + 1) * len * d], &mask, d, settings);
                let _ = row.events.send(Event::Embedding { vector: v, input_tokens: row.input_ids.len() });
            }
            Ok((inputs.iter().map(|r| r.len()).sum(), padded))
        }
        Err(e) => {
            tracing::error!(error = %e, rows = rows.len(), "embedding failed");
            for row in &rows {
                let _ = row.events.send(Event::Error(RowError::Internal(e.to_string())));
            }
            Err(e)
        }
    }
}
