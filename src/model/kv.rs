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

fn to_value(array: ndarray::ArrayD<f32>) -> Result<DynValue, ModelError> {
    // ORT needs row-major data; concatenation and slicing may leave another layout.
    let array = if array.is_standard_layout() { array } else { array.as_standard_layout().into_owned() };
    Ok(Tensor::<f32>::from_array(array)?.into_dyn())
}

impl DecoderState {
    /// Appends `other`'s rows: self-attention caches are left-padded to the longer decoder
    /// length (the caller masks the padding), cross-attention caches right-padded to the longer
    /// input (the encoder mask covers it).
    pub fn join(&mut self, other: DecoderState) -> Result<(), ModelError> {
        let dec_len = self.dec_len.max(other.dec_len);
        // One copy per tensor: both sources are read in place into the joined tensor.
        let join = |a: &DynValue, b: &DynValue, left: bool| -> Result<DynValue, ModelError> {
            let (a, b) = (a.try_extract_array::<f32>()?, b.try_extract_array::<f32>()?);
            let (sa, sb) = (a.shape(), b.shape());
            let len = sa[2].max(sb[2]);
            let mut out = ndarray::Array4::<f32>::zeros((sa[0] + sb[0], sa[1], len, sa[3]));
            for (src, rows) in [(&a, 0..sa[0]), (&b, sa[0]..sa[0] + sb[0])] {
                let cur = src.shape()[2];
                let start = if left { len - cur } else { 0 };
                out.slice_mut(ndarray::s![rows, .., start..start + cur, ..]).assign(
                    &src.view().into_dimensionality::<ndarray::Ix4>().map_err(|e| ModelError::Output(e.to_string()))?,
                );
            }
            Ok(Tensor::<f32>::from_array(out)?.into_dyn())
        };
        for (mine, theirs) in self.self_kv.iter_mut().zip(&other.self_kv) {
            *mine = join(mine, theirs, true)?;
        }
        for (mine, theirs) in self.cross_kv.iter_mut().zip(&other.cross_kv) {
            *mine = join(mine, theirs, false)?;
        }
        self.batch += other.batch;
        self.dec_len = dec_len;
        Ok(())
    }

    /// Drops the first `n` self-attention positions (padding no row attends to any more).
    pub fn trim_front(&mut self, n: usize) -> Result<(), ModelError> {
        if n == 0 {
            return Ok(());
        }
        for v in self.self_kv.iter_mut() {
            let a = v.try_extract_array::<f32>()?;
            let len = a.shape()[2];
            *v = to_value(a.slice_axis(ndarray::Axis(2), ndarray::Slice::from(n..len)).to_owned())?;
        }
        self.dec_len -= n;
        Ok(())
    }
}
