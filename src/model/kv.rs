//! The key/value cache of a running batch: per decoder layer, the self-attention K/V (grow by
//! one position per step) and the cross-attention K/V (fixed after the first step), all
//! `[batch, heads, len, d_kv]` f32 tensors owned by ONNX Runtime and fed back without copying.

use ort::value::{DynValue, Tensor};

use super::ModelError;

pub struct DecoderState {
    /// Layer-major, key then value: `2 * layers` tensors `[batch, heads, dec_len, d_kv]`.
    pub(crate) self_kv: Vec<DynValue>,
    /// Layer-major, key then value: `2 * layers` tensors `[batch, heads, src_len, d_kv]`.
    pub(crate) cross_kv: Vec<DynValue>,
    batch: usize,
    dec_len: usize,
}

impl DecoderState {
    pub(crate) fn new(self_kv: Vec<DynValue>, cross_kv: Vec<DynValue>, batch: usize, dec_len: usize) -> Self {
        Self { self_kv, cross_kv, batch, dec_len }
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Positions in the self-attention cache (tokens fed to the decoder so far).
    pub fn decoder_len(&self) -> usize {
        self.dec_len
    }

    pub(crate) fn advance(&mut self, self_kv: Vec<DynValue>) {
        self.self_kv = self_kv;
        self.dec_len += 1;
    }

    /// Bytes held by the cache tensors.
    pub fn bytes(&self) -> usize {
        self.self_kv
            .iter()
            .chain(&self.cross_kv)
            .filter_map(|v| v.try_extract_tensor::<f32>().ok())
            .map(|(_, d)| std::mem::size_of_val(d))
            .sum()
    }

    /// Keeps the given rows of every cache tensor, in that order.
    pub(crate) fn select_rows(
        &mut self,
        rows: &[usize],
        gather: impl Fn(&DynValue, &[usize]) -> Result<DynValue, ModelError>,
    ) -> Result<(), ModelError> {
        if rows.len() == self.batch && rows.iter().enumerate().all(|(i, &r)| i == r) {
            return Ok(());
        }
        for v in self.self_kv.iter_mut().chain(self.cross_kv.iter_mut()) {
            *v = gather(v, rows)?;
        }
        self.batch = rows.len();
        Ok(())
    }
}

/// Copies the given rows (first axis) of an f32 tensor into a new tensor.
pub(crate) fn gather_rows(value: &DynValue, rows: &[usize]) -> Result<DynValue, ModelError> {
    let (shape, data) = value.try_extract_tensor::<f32>()?;
    let batch = shape.first().copied().unwrap_or(0) as usize;
    let row = data.len().checked_div(batch).unwrap_or(0);
    let mut out = Vec::with_capacity(rows.len() * row);
    for &r in rows {
        if r >= batch {
            return Err(ModelError::Output(format!("row {r} out of a batch of {batch}")));
        }
        out.extend_from_slice(&data[r * row..(r + 1) * row]);
    }
    let mut dims: Vec<i64> = shape.to_vec();
    dims[0] = rows.len() as i64;
    Ok(Tensor::<f32>::from_array((dims, out))?.into_dyn())
}
