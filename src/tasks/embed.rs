//! Sentence embeddings from the encoder: its last hidden states pooled over the real tokens of
//! a row, then L2-normalized, as set per model (`t5serve.json`, `"embedding"`). Pure functions
//! over plain slices; the scheduler runs the encoder.

use serde::Deserialize;

/// How a row's hidden states become one vector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The mean over the real tokens (sentence-T5, GTR).
    #[default]
    Mean,
    /// The element-wise maximum over the real tokens.
    Max,
    /// The first token's state.
    First,
}

/// A model's embedding settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedSettings {
    pub pooling: Pooling,
    /// Scale each vector to unit L2 norm.
    pub normalize: bool,
}

impl Default for EmbedSettings {
    fn default() -> Self {
        Self { pooling: Pooling::Mean, normalize: true }
    }
}

/// Pools one row: `hidden` holds `mask.len()` positions of `d` floats each; positions whose
/// mask is 0 (padding) are left out. A row with no real token gives zeros.
pub fn pool(hidden: &[f32], mask: &[i64], d: usize, settings: EmbedSettings) -> Vec<f32> {
    let real = || mask.iter().enumerate().filter(|&(_, &m)| m != 0).map(|(i, _)| &hidden[i * d..(i + 1) * d]);
    let mut out = vec![0f32; d];
    match settings.pooling {
        Pooling::Mean => {
            // Summed in f64: the result does not depend on how long the padded batch was.
            let mut sum = vec![0f64; d];
            let mut n = 0usize;
            for row in real() {
                n += 1;
                for (s, &v) in sum.iter_mut().zip(row) {
                    *s += v as f64;
                }
            }
            if n > 0 {
                for (o, s) in out.iter_mut().zip(sum) {
                    *o = (s / n as f64) as f32;
                }
            }
        }
        Pooling::Max => {
            let mut any = false;
            for row in real() {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = if any { o.max(v) } else { v };
                }
                any = true;
            }
        }
        Pooling::First => {
            if let Some(row) = real().next() {
                out.copy_from_slice(row);
            }
        }
    }
    if settings.normalize {
        normalize(&mut out);
    }
    out
}

/// Scales `v` to unit L2 norm (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x = (*x as f64 / norm) as f32;
        }
    }
}

/// How many values of a `d_model`-long vector to keep: all, or the first `asked` (1..=d_model).
pub fn dimensions(asked: Option<i64>, d_model: usize) -> Result<usize, String> {
    match asked {
        None => Ok(d_model),
        Some(k) if k >= 1 && k as u64 <= d_model as u64 => Ok(k as usize),
        Some(k) => Err(format!("dimensions must be between 1 and {d_model} (d_model), got {k}")),
    }
}

/// OpenAI's and TEI's `dimensions`: the first `k` values, renormalized when the model normalizes.
pub fn shorten(mut v: Vec<f32>, k: usize, renormalize: bool) -> Vec<f32> {
    if k < v.len() {
        v.truncate(k);
        if renormalize {
            normalize(&mut v);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEAN: EmbedSettings = EmbedSettings { pooling: Pooling::Mean, normalize: false };

    #[test]
    fn mean_pooling_leaves_padding_out() {
        // Two real positions and one padded position (whose values must not count).
        let hidden = [1.0, 2.0, 3.0, 6.0, 100.0, 100.0];
        assert_eq!(pool(&hidden, &[1, 1, 0], 2, MEAN), vec![2.0, 4.0]);
        let max = EmbedSettings { pooling: Pooling::Max, ..MEAN };
        assert_eq!(pool(&hidden, &[1, 1, 0], 2, max), vec![3.0, 6.0]);
        let first = EmbedSettings { pooling: Pooling::First, ..MEAN };
        assert_eq!(pool(&hidden, &[1, 1, 0], 2, first), vec![1.0, 2.0]);
    }

    #[test]
    fn normalized_vectors_have_unit_norm_and_shorten_renormalizes() {
        let v = pool(&[3.0, 4.0], &[1], 2, EmbedSettings::default());
        assert_eq!(v, vec![0.6, 0.8]);
        assert_eq!(shorten(vec![0.6, 0.8], 1, true), vec![1.0]);
        assert_eq!(shorten(vec![0.6, 0.8], 1, false), vec![0.6]);
        assert_eq!(shorten(vec![0.6, 0.8], 5, true), vec![0.6, 0.8]);
        assert_eq!(pool(&[0.0, 0.0], &[0], 2, EmbedSettings::default()), vec![0.0, 0.0]);
    }
}
