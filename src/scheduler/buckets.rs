//! New inputs are encoded shortest first in length buckets, each bucket one padded batch whose
//! padding stays under `MAX_BUCKET_PADDING` (encoder work grows with the padded size of a batch),
//! and the buckets' outputs are joined into one batch.

use ndarray::Array2;

use crate::model::{Encoded, ModelError, Seq2SeqModel};

/// Longest share of padding a length bucket may have before the next, longer input starts a new
/// bucket (encoder work grows with the padded size of each batch).
pub const MAX_BUCKET_PADDING: f64 = 0.2;

/// Splits inputs sorted by length (shortest first) into consecutive buckets whose padding,
/// `sum(max - len) / (n * max)`, stays at most `max_padding`. Each bucket is encoded as one batch.
pub fn length_buckets(sorted_lens: &[usize], max_padding: f64) -> Vec<std::ops::Range<usize>> {
    let mut buckets = Vec::new();
    let mut start = 0;
    let mut real = 0usize;
    for (i, &len) in sorted_lens.iter().enumerate() {
        debug_assert!(i == 0 || sorted_lens[i - 1] <= len, "lengths must be sorted");
        let n = i + 1 - start;
        let padded = n * len;
        if i > start && padded > 0 && (padded - (real + len)) as f64 > max_padding * padded as f64 {
            buckets.push(start..i);
            start = i;
            real = 0;
        }
        real += len;
    }
    if start < sorted_lens.len() {
        buckets.push(start..sorted_lens.len());
    }
    buckets
}

/// Encodes inputs sorted by length in length buckets and joins the outputs into one batch
/// (right-padded to the longest input). Returns it with the padded token count of the buckets.
pub(super) fn encode_bucketed(model: &Seq2SeqModel, inputs: &[&[u32]]) -> Result<(Encoded, usize), ModelError> {
    let lens: Vec<usize> = inputs.iter().map(|r| r.len()).collect();
    let mut joined: Option<Encoded> = None;
    let mut padded = 0;
    for bucket in length_buckets(&lens, MAX_BUCKET_PADDING) {
        let rows = &inputs[bucket];
        let (ids, mask) = pad_batch(rows, model.dims.pad_token_id);
        padded += ids.len();
        let enc = model.encode(ids, mask)?;
        match &mut joined {
            None => joined = Some(enc),
            Some(all) => all.join(&enc),
        }
    }
    Ok((joined.expect("at least one input"), padded))
}

/// Right-pads the rows' ids into `[batch, max_len]` ids and mask.
pub fn pad_batch(rows: &[&[u32]], pad: u32) -> (Array2<i64>, Array2<i64>) {
    let len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut ids = Array2::from_elem((rows.len(), len), pad as i64);
    let mut mask = Array2::zeros((rows.len(), len));
    for (i, r) in rows.iter().enumerate() {
        for (j, &t) in r.iter().enumerate() {
            ids[[i, j]] = t as i64;
            mask[[i, j]] = 1;
        }
    }
    (ids, mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_batch_right_pads_and_masks() {
        let (ids, mask) = pad_batch(&[&[5, 6, 1], &[7, 1]], 0);
        assert_eq!(ids, ndarray::array![[5, 6, 1], [7, 1, 0]]);
        assert_eq!(mask, ndarray::array![[1, 1, 1], [1, 1, 0]]);
    }

    fn padded_and_real(lens: &[usize], buckets: &[std::ops::Range<usize>]) -> (usize, usize) {
        let padded = buckets.iter().map(|b| b.len() * lens[b.end - 1]).sum();
        (padded, buckets.iter().map(|b| lens[b.clone()].iter().sum::<usize>()).sum())
    }

    #[test]
    fn length_buckets_keep_padding_under_the_limit() {
        // Equal lengths: one bucket, no padding.
        assert_eq!(length_buckets(&[64; 32], 0.2), vec![0..32]);
        // 8 and 10 pad 2 of 20 tokens (10%): together. 3 and 10 would pad 7 of 20: apart.
        assert_eq!(length_buckets(&[8, 10], 0.2), vec![0..2]);
        assert_eq!(length_buckets(&[3, 10], 0.2), vec![0..1, 1..2]);
        assert_eq!(length_buckets(&[], 0.2), Vec::<std::ops::Range<usize>>::new());
        // Many mixed lengths: every bucket within the limit, and all rows covered in order.
        let mut lens: Vec<usize> = (0..200).map(|i| 1 + (i * 37 + 11) % 120).collect();
        lens.sort();
        let buckets = length_buckets(&lens, 0.2);
        assert_eq!(buckets.first().unwrap().start, 0);
        assert_eq!(buckets.last().unwrap().end, lens.len());
        for pair in buckets.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        for b in &buckets {
            let (padded, real) = padded_and_real(&lens, std::slice::from_ref(b));
            assert!((padded - real) as f64 <= 0.2 * padded as f64, "{b:?}: {real} of {padded}");
        }
        let (padded, real) = padded_and_real(&lens, &buckets);
        // One padded batch would be 200 x 120 tokens, about half padding.
        assert!(padded < 200 * 120 && (padded - real) as f64 <= 0.2 * padded as f64, "{real} of {padded}");
    }
}
