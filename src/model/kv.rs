//! The key/value cache of a running batch: per decoder layer, the self-attention K/V (grow by
//! one position per step) and the cross-attention K/V (fixed after the first step), all
//! `[batch, heads, len, d_kv]` f32 tensors fed back to ONNX Runtime without copying.
//!
//! The self-attention K/V are the tensors ONNX Runtime returned from the last step. The
//! cross-attention K/V, the largest part (every input position of every layer), live in
//! [`Rows`] buffers of our own, so that rows joining or leaving cost a copy of those rows only:
//! joining rows are appended, and the rows that stay are moved down in place when others leave.

use ndarray::ArrayView4;
use ort::value::{DynValue, Tensor};

use super::ModelError;

pub struct DecoderState {
    /// Layer-major, key then value: `2 * layers` tensors `[rows, heads, dec_len, d_kv]`, of
    /// which the first `batch` rows are in use (rows that left were compacted away in place).
    self_kv: Vec<DynValue>,
    /// Layer-major, key then value: `2 * layers` buffers `[batch, heads, src_len, d_kv]`.
    pub(crate) cross_kv: Vec<Rows>,
    batch: usize,
    dec_len: usize,
}

/// A row-major f32 tensor `[rows, heads, len, d_kv]` whose buffer keeps room for more rows.
pub(crate) struct Rows {
    data: Vec<f32>,
    dims: [usize; 4],
}

impl Rows {
    /// Copies an ONNX Runtime output into a buffer of our own.
    pub(crate) fn from_value(value: &DynValue) -> Result<Self, ModelError> {
        let (shape, data) = value.try_extract_tensor::<f32>()?;
        let dims: [usize; 4] = shape
            .iter()
            .map(|&d| d as usize)
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|_| ModelError::Output(format!("cross-attention K/V of shape {shape:?}")))?;
        Ok(Self { data: data.to_vec(), dims })
    }

    /// The rows in use, as ONNX Runtime reads them (contiguous, row-major).
    pub(crate) fn view(&self) -> ArrayView4<'_, f32> {
        ArrayView4::from_shape(self.dims, &self.data).expect("data holds exactly dims")
    }

    fn row_len(&self) -> usize {
        self.dims[1] * self.dims[2] * self.dims[3]
    }

    /// Keeps the given rows, in that order (see [`keep_rows`]).
    fn retain(&mut self, rows: &[usize]) -> Result<(), ModelError> {
        match keep_rows(&mut self.data, self.dims[0], rows)? {
            Some(gathered) => self.data = gathered,
            None => self.data.truncate(rows.len() * self.row_len()),
        }
        self.dims[0] = rows.len();
        Ok(())
    }

    /// Appends `other`'s rows. Both are right-padded with zeros to the longer length (axis 2);
    /// when that is ours, only `other`'s rows are copied.
    fn append(&mut self, other: &Rows) {
        let len = self.dims[2].max(other.dims[2]);
        if self.dims[2] < len {
            *self = self.padded(len);
        }
        if other.dims[2] == len {
            self.data.extend_from_slice(&other.data);
        } else {
            self.data.extend_from_slice(&other.padded(len).data);
        }
        self.dims[0] += other.dims[0];
    }

    /// A copy right-padded with zeros to `len` positions.
    fn padded(&self, len: usize) -> Rows {
        let [b, h, cur, d] = self.dims;
        let mut data = vec![0f32; b * h * len * d];
        for (i, chunk) in self.data.chunks_exact(cur * d).enumerate() {
            data[i * len * d..i * len * d + cur * d].copy_from_slice(chunk);
        }
        Rows { data, dims: [b, h, len, d] }
    }
}

impl DecoderState {
    pub(crate) fn new(self_kv: Vec<DynValue>, cross_kv: Vec<Rows>, batch: usize, dec_len: usize) -> Self {
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

    /// The self-attention K/V of layer-major index `j` (rows in use only), as ONNX Runtime reads them.
    pub(crate) fn self_kv(&self, j: usize) -> Result<ArrayView4<'_, f32>, ModelError> {
        let (shape, data) = self.self_kv[j].try_extract_tensor::<f32>()?;
        let dims = [self.batch, shape[1] as usize, shape[2] as usize, shape[3] as usize];
        let n = dims.iter().product();
        let data = data.get(..n).ok_or_else(|| ModelError::Output(format!("self-attention K/V {shape:?}")))?;
        Ok(ArrayView4::from_shape(dims, data).expect("sliced to dims"))
    }

    /// Bytes of the cache tensors' rows in use.
    pub fn bytes(&self) -> usize {
        let own: usize = (0..self.self_kv.len()).filter_map(|j| self.self_kv(j).ok()).map(|v| v.len() * 4).sum();
        own + self.cross_kv.iter().map(|r| std::mem::size_of_val(r.data.as_slice())).sum::<usize>()
    }

    /// Keeps the given rows of every cache tensor, in that order (see [`keep_rows`]).
    pub(crate) fn select_rows(&mut self, rows: &[usize]) -> Result<(), ModelError> {
        if rows.len() == self.batch && rows.iter().enumerate().all(|(i, &r)| i == r) {
            return Ok(());
        }
        for v in self.self_kv.iter_mut() {
            let (shape, data) = v.try_extract_tensor_mut::<f32>()?;
            let mut dims = shape.to_vec();
            // Compacted in place, the tensor keeps its stale last rows: `self_kv(j)` views the rows in use.
            if let Some(gathered) = keep_rows(data, dims[0] as usize, rows)? {
                dims[0] = rows.len() as i64;
                *v = Tensor::<f32>::from_array((dims, gathered))?.into_dyn();
            }
        }
        for r in self.cross_kv.iter_mut() {
            r.retain(rows)?;
        }
        self.batch = rows.len();
        Ok(())
    }
}

/// Keeps `rows` of the `batch` rows (first axis) in `data`, in that order. Increasing indices
/// (rows leaving) are moved to the front in place and `None` is returned: the first
/// `rows.len()` rows are the kept ones. Any other order (beam search reorders and repeats
/// parents) is gathered into a new buffer, returned.
fn keep_rows(data: &mut [f32], batch: usize, rows: &[usize]) -> Result<Option<Vec<f32>>, ModelError> {
    if let Some(&r) = rows.iter().find(|&&r| r >= batch) {
        return Err(ModelError::Output(format!("row {r} out of a batch of {batch}")));
    }
    let n = data.len().checked_div(batch).unwrap_or(0);
    if rows.windows(2).all(|w| w[0] < w[1]) {
        for (to, &from) in rows.iter().enumerate() {
            if to != from {
                data.copy_within(from * n..(from + 1) * n, to * n);
            }
        }
        Ok(None)
    } else {
        Ok(Some(rows.iter().flat_map(|&r| &data[r * n..(r + 1) * n]).copied().collect()))
    }
}

fn to_value(array: ndarray::ArrayD<f32>) -> Result<DynValue, ModelError> {
    // ORT needs row-major data; concatenation and slicing may leave another layout.
    let array = if array.is_standard_layout() { array } else { array.as_standard_layout().into_owned() };
    Ok(Tensor::<f32>::from_array(array)?.into_dyn())
}

impl DecoderState {
    /// Appends `other`'s rows: self-attention caches are left-padded to the longer decoder
    /// length (the caller masks the padding), cross-attention caches right-padded to the longer
    /// input (the encoder mask covers it); the cross-attention rows already here stay in place.
    pub fn join(&mut self, other: DecoderState) -> Result<(), ModelError> {
        let dec_len = self.dec_len.max(other.dec_len);
        // One copy per tensor: both sources are read in place into the joined tensor.
        let join = |a: ArrayView4<'_, f32>, b: ArrayView4<'_, f32>| -> Result<DynValue, ModelError> {
            let (sa, sb) = (a.shape(), b.shape());
            let len = sa[2].max(sb[2]);
            let mut out = ndarray::Array4::<f32>::zeros((sa[0] + sb[0], sa[1], len, sa[3]));
            for (src, rows) in [(&a, 0..sa[0]), (&b, sa[0]..sa[0] + sb[0])] {
                let cur = src.shape()[2];
                out.slice_mut(ndarray::s![rows, .., len - cur.., ..]).assign(src);
            }
            Ok(Tensor::<f32>::from_array(out)?.into_dyn())
        };
        for j in 0..self.self_kv.len() {
            self.self_kv[j] = join(self.self_kv(j)?, other.self_kv(j)?)?;
        }
        for (mine, theirs) in self.cross_kv.iter_mut().zip(&other.cross_kv) {
            mine.append(theirs);
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
        for j in 0..self.self_kv.len() {
            let a = self.self_kv(j)?;
            let len = a.shape()[2];
            self.self_kv[j] =
                to_value(a.slice_axis(ndarray::Axis(2), ndarray::Slice::from(n..len)).to_owned().into_dyn())?;
        }
        self.dec_len -= n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Rows;

    /// `rows` rows of `[1 head, len, 1]`; row r position p holds `10 * r + p + 1` (0 is padding).
    fn rows(rows: usize, len: usize) -> Rows {
        let data = (0..rows).flat_map(|r| (0..len).map(move |p| (10 * r + p + 1) as f32)).collect();
        Rows { data, dims: [rows, 1, len, 1] }
    }

    #[test]
    fn rows_leaving_are_compacted_in_place_without_a_new_buffer() {
        let mut r = rows(4, 2);
        let before = r.data.as_ptr();
        r.retain(&[1, 3]).unwrap();
        assert_eq!(r.data, vec![11.0, 12.0, 31.0, 32.0]);
        assert_eq!(r.dims, [2, 1, 2, 1]);
        assert_eq!(r.data.as_ptr(), before, "same buffer");
        assert_eq!(r.view().shape(), &[2, 1, 2, 1]);
    }

    #[test]
    fn reordered_and_repeated_rows_are_gathered() {
        // Beam search keeps parents in any order, some twice.
        let mut r = rows(3, 2);
        r.retain(&[2, 0, 0]).unwrap();
        assert_eq!(r.data, vec![21.0, 22.0, 1.0, 2.0, 1.0, 2.0]);
        assert_eq!(r.dims[0], 3);
        assert!(r.retain(&[3]).is_err(), "out of range");
    }

    #[test]
    fn joining_rows_are_appended_and_right_padded_to_the_longer_input() {
        let mut r = rows(2, 3);
        r.append(&rows(1, 2));
        assert_eq!(r.data, vec![1.0, 2.0, 3.0, 11.0, 12.0, 13.0, 1.0, 2.0, 0.0]);
        assert_eq!(r.dims, [3, 1, 3, 1]);
        // A longer input pads the rows already there.
        let mut r = rows(1, 2);
        r.append(&rows(2, 3));
        assert_eq!(r.data, vec![1.0, 2.0, 0.0, 1.0, 2.0, 3.0, 11.0, 12.0, 13.0]);
        assert_eq!(r.dims, [3, 1, 3, 1]);
    }
}
