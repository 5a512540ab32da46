//! The key/value cache of a running batch: per decoder layer, the self-attention K/V (grow by
//! one position per step) and the cross-attention K/V (fixed after the first step), all
//! `[batch, heads, len, d_kv]` f32 tensors fed back to ONNX Runtime without copying.
//!
//! Both are [`Rows`]: ONNX Runtime's output tensor, read in place, until the rows change.
//! Rows leaving are compacted in place. Rows joining are copied once: the cross-attention K/V
//! (the largest part: every input position of every layer) are appended to a buffer of our own
//! that keeps room for more rows; the self-attention K/V are rebuilt, left-padded, in buffers
//! that are reused at the next join once ONNX Runtime's next outputs have replaced them (a fresh
//! buffer each time cost a page fault per 4 KiB, more than the copy itself).

use ndarray::ArrayView4;
use ort::value::DynValue;

use super::ModelError;

pub struct DecoderState {
    /// Layer-major, key then value: `2 * layers` tensors `[batch, heads, dec_len, d_kv]`.
    self_kv: Vec<Rows>,
    /// Layer-major, key then value: `2 * layers` tensors `[batch, heads, src_len, d_kv]`.
    pub(crate) cross_kv: Vec<Rows>,
    batch: usize,
    dec_len: usize,
    /// Buffers of rebuilt self-attention caches that later outputs replaced, for the next rebuild.
    spare: Vec<Vec<f32>>,
}

/// A row-major f32 tensor `[rows, heads, len, d_kv]`: the first step's output, read in place
/// until its rows change, then a buffer of our own that keeps room for more rows.
pub(crate) struct Rows {
    data: Storage,
    dims: [usize; 4],
}

enum Storage {
    Ort(DynValue),
    /// Exactly the rows in use (its capacity may hold more).
    Own(Vec<f32>),
}

impl Rows {
    /// Takes an ONNX Runtime output as it is.
    pub(crate) fn from_value(value: DynValue) -> Result<Self, ModelError> {
        let (shape, _) = value.try_extract_tensor::<f32>()?;
        let dims: [usize; 4] = shape
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<Vec<_>>>()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| ModelError::Output(format!("K/V cache tensor of shape {shape:?}")))?;
        Ok(Self { data: Storage::Ort(value), dims })
    }

    /// The rows in use, contiguous and row-major.
    fn slice(&self) -> &[f32] {
        match &self.data {
            Storage::Own(v) => v,
            Storage::Ort(v) => {
                let (_, data) = v.try_extract_tensor::<f32>().expect("checked to be an f32 tensor in from_value");
                &data[..self.dims.iter().product()]
            }
        }
    }

    /// The rows in use, as ONNX Runtime reads them.
    pub(crate) fn view(&self) -> ArrayView4<'_, f32> {
        ArrayView4::from_shape(self.dims, self.slice()).expect("data holds exactly dims")
    }

    fn bytes(&self) -> usize {
        std::mem::size_of_val(self.slice())
    }

    /// Our own buffer, if it is one, for reuse.
    fn into_buffer(self) -> Option<Vec<f32>> {
        match self.data {
            Storage::Own(v) => Some(v),
            Storage::Ort(_) => None,
        }
    }

    fn row_len(&self) -> usize {
        self.dims[1] * self.dims[2] * self.dims[3]
    }

    /// Keeps the given rows, in that order (see [`keep_rows`]).
    fn retain(&mut self, rows: &[usize]) -> Result<(), ModelError> {
        let n = self.row_len();
        let used = self.dims.iter().product();
        let batch = self.dims[0];
        let data = match &mut self.data {
            Storage::Ort(v) => &mut v.try_extract_tensor_mut::<f32>()?.1[..used],
            Storage::Own(v) => v.as_mut_slice(),
        };
        // Compacted in place, an output tensor keeps its stale last rows; `dims` covers the rows in use.
        match keep_rows(data, batch, rows)? {
            Some(gathered) => self.data = Storage::Own(gathered),
            None => {
                if let Storage::Own(v) = &mut self.data {
                    v.truncate(rows.len() * n);
                }
            }
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
        if let Storage::Ort(_) = &self.data {
            let mut own = Vec::with_capacity(self.slice().len() + other.slice().len());
            own.extend_from_slice(self.slice());
            self.data = Storage::Own(own);
        }
        let Storage::Own(data) = &mut self.data else { unreachable!("made our own above") };
        if other.dims[2] == len {
            data.extend_from_slice(other.slice());
        } else {
            data.extend_from_slice(other.padded(len).slice());
        }
        self.dims[0] += other.dims[0];
    }

    /// A copy right-padded with zeros to `len` positions.
    fn padded(&self, len: usize) -> Rows {
        let [b, h, cur, d] = self.dims;
        let mut data = Vec::with_capacity(b * h * len * d);
        relayout(&mut data, self.slice(), cur * d, 0, 0, (len - cur) * d);
        Rows { data: Storage::Own(data), dims: [b, h, len, d] }
    }
}

/// Appends `src`, chunks of `chunk` floats (one `[len, d_kv]` block per row and head), to `out`,
/// each chunk with `front` zeros before it, its first `skip` floats left out, and `back` zeros
/// after it.
fn relayout(out: &mut Vec<f32>, src: &[f32], chunk: usize, front: usize, skip: usize, back: usize) {
    if chunk == 0 {
        return;
    }
    for c in src.chunks_exact(chunk) {
        out.resize(out.len() + front, 0.0);
        out.extend_from_slice(&c[skip..]);
        out.resize(out.len() + back, 0.0);
    }
}

/// One row's cache right after the first decoder step, in buffers of its own (the encoder
/// cache keeps these): per layer, key then value, the self-attention K/V (`[heads, 1, d_kv]`)
/// and the cross-attention K/V over the row's `len` real input positions (`[heads, len, d_kv]`).
#[derive(Debug)]
pub struct RowCache {
    self_kv: Vec<Box<[f32]>>,
    cross_kv: Vec<Box<[f32]>>,
    heads: usize,
    d_kv: usize,
    len: usize,
}

impl RowCache {
    pub fn bytes(&self) -> usize {
        self.self_kv.iter().chain(&self.cross_kv).map(|b| std::mem::size_of_val(&**b)).sum()
    }
}

impl DecoderState {
    /// Row `i`'s cache after the first step, its cross-attention K/V cut to the first `len`
    /// input positions (the rest is padding).
    pub fn cut_row(&self, i: usize, len: usize) -> RowCache {
        assert_eq!(self.dec_len, 1, "a row is cut right after the first step");
        let [_, heads, _, d_kv] = self.cross_kv[0].dims;
        let self_kv = self.self_kv.iter().map(|r| r.slice()[i * r.row_len()..(i + 1) * r.row_len()].into()).collect();
        let cross_kv = self
            .cross_kv
            .iter()
            .map(|r| {
                let (src, data) = (r.dims[2], r.slice());
                let mut out = Vec::with_capacity(heads * len * d_kv);
                for h in 0..heads {
                    let at = (i * heads + h) * src * d_kv;
                    out.extend_from_slice(&data[at..at + len * d_kv]);
                }
                out.into_boxed_slice()
            })
            .collect();
        RowCache { self_kv, cross_kv, heads, d_kv, len }
    }

    /// The state right after the first step of a batch of rows (in this order), each row's
    /// cross-attention K/V right-padded with zeros to the longest input (the encoder mask
    /// covers the padding).
    pub fn from_rows(rows: &[&RowCache]) -> Self {
        let first = rows.first().expect("at least one row");
        let (heads, d_kv) = (first.heads, first.d_kv);
        let longest = rows.iter().map(|r| r.len).max().unwrap_or(0);
        let self_kv = (0..first.self_kv.len())
            .map(|j| {
                let data: Vec<f32> = rows.iter().flat_map(|r| r.self_kv[j].iter().copied()).collect();
                Rows { data: Storage::Own(data), dims: [rows.len(), heads, 1, d_kv] }
            })
            .collect();
        let cross_kv = (0..first.cross_kv.len())
            .map(|j| {
                let mut data = Vec::with_capacity(rows.len() * heads * longest * d_kv);
                for r in rows {
                    relayout(&mut data, &r.cross_kv[j], r.len * d_kv, 0, 0, (longest - r.len) * d_kv);
                }
                Rows { data: Storage::Own(data), dims: [rows.len(), heads, longest, d_kv] }
            })
            .collect();
        Self { self_kv, cross_kv, batch: rows.len(), dec_len: 1, spare: Vec::new() }
    }
}

impl DecoderState {
    pub(crate) fn new(
        self_kv: Vec<DynValue>,
        cross_kv: Vec<Rows>,
        batch: usize,
        dec_len: usize,
    ) -> Result<Self, ModelError> {
        let self_kv = self_kv.into_iter().map(Rows::from_value).collect::<Result<_, _>>()?;
        Ok(Self { self_kv, cross_kv, batch, dec_len, spare: Vec::new() })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Positions in the self-attention cache (tokens fed to the decoder so far).
    pub fn decoder_len(&self) -> usize {
        self.dec_len
    }

    /// Takes a step's self-attention outputs as the cache.
    pub(crate) fn advance(&mut self, self_kv: Vec<DynValue>) -> Result<(), ModelError> {
        for (old, new) in self.self_kv.iter_mut().zip(self_kv) {
            let new = Rows::from_value(new)?;
            if new.dims[0] != self.batch {
                return Err(ModelError::Output(format!("self-attention K/V {:?} for {} rows", new.dims, self.batch)));
            }
            self.spare.extend(std::mem::replace(old, new).into_buffer());
        }
        self.dec_len += 1;
        Ok(())
    }

    /// The self-attention K/V of layer-major index `j`, as ONNX Runtime reads them.
    pub(crate) fn self_kv(&self, j: usize) -> ArrayView4<'_, f32> {
        self.self_kv[j].view()
    }

    /// Bytes of the cache tensors' rows in use.
    pub fn bytes(&self) -> usize {
        self.self_kv.iter().chain(&self.cross_kv).map(Rows::bytes).sum()
    }

    /// Keeps the given rows of every cache tensor, in that order (see [`keep_rows`]).
    pub(crate) fn select_rows(&mut self, rows: &[usize]) -> Result<(), ModelError> {
        if rows.len() == self.batch && rows.iter().enumerate().all(|(i, &r)| i == r) {
            return Ok(());
        }
        for r in self.self_kv.iter_mut().chain(self.cross_kv.iter_mut()) {
            r.retain(rows)?;
        }
        self.batch = rows.len();
        Ok(())
    }

    /// Rebuilds self-attention cache `j` as `[rows, heads, len, d_kv]` in a spare buffer, filled by
    /// `fill` (which appends exactly that many floats).
    fn rebuild(&mut self, j: usize, dims: [usize; 4], fill: impl FnOnce(&mut Vec<f32>, &[Rows])) {
        let mut buffer = self.spare.pop().unwrap_or_default();
        buffer.clear();
        buffer.reserve(dims.iter().product());
        fill(&mut buffer, &self.self_kv);
        debug_assert_eq!(buffer.len(), dims.iter().product::<usize>());
        let old = std::mem::replace(&mut self.self_kv[j], Rows { data: Storage::Own(buffer), dims });
        self.spare.extend(old.into_buffer());
    }
}

/// Keeps `rows` of the `batch` rows (first axis) in `data`, in that order. When that can be done
/// in place it is, and `None` is returned: the first `rows.len()` rows are the kept ones. That is
/// the case for increasing indices (rows leaving, the rest moved down) and for orders where each
/// kept row either stays where it is or comes from past the new end (rows leaving, the holes
/// filled from the tail: see [`fill_holes`]). Any other order (beam search reorders and repeats
/// parents) is gathered into a new buffer, returned.
fn keep_rows(data: &mut [f32], batch: usize, rows: &[usize]) -> Result<Option<Vec<f32>>, ModelError> {
    if let Some(&r) = rows.iter().find(|&&r| r >= batch) {
        return Err(ModelError::Output(format!("row {r} out of a batch of {batch}")));
    }
    let n = data.len().checked_div(batch).unwrap_or(0);
    let kept = rows.len();
    // Increasing: each source is at or after its destination and after every earlier one, so
    // copying front to back never reads a row already overwritten. Stay-or-tail: the rows
    // written to are never read (sources are themselves or past the new end).
    let increasing = rows.windows(2).all(|w| w[0] < w[1]);
    if increasing || rows.iter().enumerate().all(|(i, &r)| r == i || r >= kept) {
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

/// The order of a batch's rows after some leave, given the rows that stay (increasing), that
/// moves the fewest: a staying row below the new size keeps its place, and the places of the
/// rows that left are taken by staying rows from past the new size. Position `i` of the result
/// is the old row that becomes row `i`.
pub fn fill_holes(staying: &[usize]) -> Vec<usize> {
    let kept = staying.len();
    let mut tail = staying.iter().copied().filter(|&r| r >= kept);
    let mut stays = staying.iter().copied().filter(|&r| r < kept).peekable();
    (0..kept)
        .map(|i| {
            if stays.peek() == Some(&i) {
                stays.next();
                i
            } else {
                tail.next().expect("as many tail rows as holes")
            }
        })
        .collect()
}

impl DecoderState {
    /// Appends `other`'s rows: self-attention caches are left-padded to the longer decoder
    /// length (the caller masks the padding), cross-attention caches right-padded to the longer
    /// input (the encoder mask covers it); the cross-attention rows already here stay in place.
    pub fn join(&mut self, mut other: DecoderState) -> Result<(), ModelError> {
        let dec_len = self.dec_len.max(other.dec_len);
        self.spare.append(&mut other.spare);
        for j in 0..self.self_kv.len() {
            let [a, h, cur, d] = self.self_kv[j].dims;
            let theirs = &other.self_kv[j];
            let [b, _, their_len, _] = theirs.dims;
            // One copy per tensor: both sources are read in place, each `[len, d_kv]` block left-padded.
            self.rebuild(j, [a + b, h, dec_len, d], |out, mine| {
                relayout(out, mine[j].slice(), cur * d, (dec_len - cur) * d, 0, 0);
                relayout(out, theirs.slice(), their_len * d, (dec_len - their_len) * d, 0, 0);
            });
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
        if n > self.dec_len {
            return Err(ModelError::Output(format!("cannot drop {n} of {} positions", self.dec_len)));
        }
        for j in 0..self.self_kv.len() {
            let [b, h, len, d] = self.self_kv[j].dims;
            self.rebuild(j, [b, h, len - n, d], |out, mine| relayout(out, mine[j].slice(), len * d, 0, n * d, 0));
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
        Rows { data: super::Storage::Own(data), dims: [rows, 1, len, 1] }
    }

    #[test]
    fn rows_leaving_are_compacted_in_place_without_a_new_buffer() {
        let mut r = rows(4, 2);
        let before = r.slice().as_ptr();
        r.retain(&[1, 3]).unwrap();
        assert_eq!(r.slice(), vec![11.0, 12.0, 31.0, 32.0]);
        assert_eq!(r.dims, [2, 1, 2, 1]);
        assert_eq!(r.slice().as_ptr(), before, "same buffer");
        assert_eq!(r.view().shape(), &[2, 1, 2, 1]);
    }

    #[test]
    fn holes_are_filled_from_the_tail_in_place() {
        // Rows 0, 1, 3 and 4 of 7 leave: rows 5 and 6 take places 0 and 1, row 2 stays.
        let order = super::fill_holes(&[2, 5, 6]);
        assert_eq!(order, vec![5, 6, 2]);
        let mut r = rows(7, 2);
        let before = r.slice().as_ptr();
        r.retain(&order).unwrap();
        assert_eq!(r.slice(), vec![51.0, 52.0, 61.0, 62.0, 21.0, 22.0]);
        assert_eq!(r.slice().as_ptr(), before, "same buffer");
        // One hole: the last staying row moves into it.
        assert_eq!(super::fill_holes(&[0, 1, 3]), vec![0, 1, 3]);
        assert_eq!(super::fill_holes(&[0, 3, 4]), vec![0, 3, 4]);
        assert_eq!(super::fill_holes(&[]), Vec::<usize>::new());
    }

    #[test]
    fn reordered_and_repeated_rows_are_gathered() {
        // Beam search keeps parents in any order, some twice.
        let mut r = rows(3, 2);
        r.retain(&[2, 0, 0]).unwrap();
        assert_eq!(r.slice(), vec![21.0, 22.0, 1.0, 2.0, 1.0, 2.0]);
        assert_eq!(r.dims[0], 3);
        assert!(r.retain(&[3]).is_err(), "out of range");
    }

    #[test]
    fn joining_rows_are_appended_and_right_padded_to_the_longer_input() {
        let mut r = rows(2, 3);
        r.append(&rows(1, 2));
        assert_eq!(r.slice(), vec![1.0, 2.0, 3.0, 11.0, 12.0, 13.0, 1.0, 2.0, 0.0]);
        assert_eq!(r.dims, [3, 1, 3, 1]);
        // A longer input pads the rows already there.
        let mut r = rows(1, 2);
        r.append(&rows(2, 3));
        assert_eq!(r.slice(), vec![1.0, 2.0, 0.0, 1.0, 2.0, 3.0, 11.0, 12.0, 13.0]);
        assert_eq!(r.dims, [3, 1, 3, 1]);
    }
}
