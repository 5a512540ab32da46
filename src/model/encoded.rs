//! The encoder's output of a batch: its hidden states and mask, joined, cut into rows and put
//! back together.

use ndarray::{Array2, Array3};

/// The encoder output of a batch. The split decoder graphs need the hidden states only for the
/// first step (the cross-attention K/V computed from them are cached); the merged graph needs
/// them at every step.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// `[batch, src_len, d_model]`, or `[batch, 0, d_model]` once dropped.
    pub hidden: Array3<f32>,
    /// `[batch, src_len]`, 1 for real tokens, 0 for padding.
    pub mask: Array2<i64>,
}

impl Encoded {
    pub fn batch(&self) -> usize {
        self.mask.nrows()
    }

    /// Frees the hidden states, keeping the mask (split decoder graphs, after the first step).
    pub fn drop_hidden(&mut self) {
        self.hidden = Array3::zeros((self.batch(), 0, self.hidden.shape()[2]));
    }

    fn has_hidden(&self) -> bool {
        self.hidden.shape()[1] > 0 || self.mask.ncols() == 0
    }

    /// Appends `other`'s rows, right-padding both to the longer input (mask 0 on padding). If
    /// either has dropped its hidden states, the joined one has none either.
    pub fn join(&mut self, other: &Encoded) {
        let keep_hidden = self.has_hidden() && other.has_hidden();
        let len = self.mask.ncols().max(other.mask.ncols());
        let pad_mask = |m: &Array2<i64>| {
            let mut out = Array2::zeros((m.nrows(), len));
            out.slice_mut(ndarray::s![.., ..m.ncols()]).assign(m);
            out
        };
        let pad_hidden = |h: &Array3<f32>| {
            let mut out = Array3::zeros((h.shape()[0], len, h.shape()[2]));
            out.slice_mut(ndarray::s![.., ..h.shape()[1], ..]).assign(h);
            out
        };
        self.mask =
            ndarray::concatenate(ndarray::Axis(0), &[pad_mask(&self.mask).view(), pad_mask(&other.mask).view()])
                .expect("same width")
                .as_standard_layout()
                .into_owned();
        if !keep_hidden {
            self.drop_hidden();
            return;
        }
        self.hidden = ndarray::concatenate(
            ndarray::Axis(0),
            &[pad_hidden(&self.hidden).view(), pad_hidden(&other.hidden).view()],
        )
        .expect("same width")
        .as_standard_layout()
        .into_owned();
    }

    /// Row `i`'s hidden states over its first `len` positions (`[len, d_model]`).
    pub fn row_hidden(&self, i: usize, len: usize) -> Box<[f32]> {
        self.hidden.slice(ndarray::s![i, ..len, ..]).iter().copied().collect()
    }

    /// A batch of rows' hidden states (`[len, d_model]` each), right-padded with zeros to the
    /// longest, the mask 0 on the padding; without `with_hidden`, the mask alone (as after
    /// `drop_hidden`).
    pub fn from_rows(rows: &[&[f32]], d: usize, with_hidden: bool) -> Self {
        let lens: Vec<usize> = rows.iter().map(|r| r.len() / d).collect();
        let longest = lens.iter().copied().max().unwrap_or(0);
        let mut mask = Array2::zeros((rows.len(), longest));
        for (i, &len) in lens.iter().enumerate() {
            mask.slice_mut(ndarray::s![i, ..len]).fill(1);
        }
        let mut hidden = Array3::zeros((rows.len(), if with_hidden { longest } else { 0 }, d));
        if with_hidden {
            for (i, (row, &len)) in rows.iter().zip(&lens).enumerate() {
                let src = ndarray::ArrayView2::from_shape((len, d), row).expect("whole positions");
                hidden.slice_mut(ndarray::s![i, ..len, ..]).assign(&src);
            }
        }
        Self { hidden, mask }
    }

    /// Keeps the given rows, in that order.
    pub fn select_rows(&self, rows: &[usize]) -> Self {
        Self { hidden: self.hidden.select(ndarray::Axis(0), rows), mask: self.mask.select(ndarray::Axis(0), rows) }
    }
}
