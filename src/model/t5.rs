//! The T5 encoder and decoder graphs behind one synchronous API: encode a padded batch once,
//! run the first decoder step (which yields the cross-attention K/V), then feed one token per
//! row per step while the self-attention cache grows. Works with the split optimum pair and
//! with the merged decoder. Each session sits behind its own lock, so that a lane's prefill
//! thread (encoder, first step) and decode thread (cached steps) can run at the same time.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Mutex;

use ndarray::{Array2, Array3};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue, SessionOutputs};
use ort::value::{DynValue, Tensor, TensorRef};

pub use super::encoded::Encoded;
use super::files::{DecoderLayout, ModelDims};
use super::kv::{DecoderState, Rows};
use super::{ModelError, runtime};

/// How ONNX Runtime sessions are built (`plan::ThreadPlan` computes them from the config).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    /// Intra-op threads (of the global pool, or of each session); 0 lets ONNX Runtime pick (one per core).
    pub intra_threads: usize,
    /// Run every session on one process-wide intra-op pool instead of a pool per session: one
    /// thread per core serves all sessions (the prefill and decode threads' runs share it),
    /// without idle pools or competing spinners.
    pub global_pool: bool,
    /// `Some(n)`: prefill runs on its own thread, overlapped with decoding. With the global pool
    /// both threads run on it; without, each session gets its own pool: `n` threads for the
    /// encoder and first decoder step, `intra_threads` for cached steps.
    pub prefill_threads: Option<usize>,
    /// Busy-wait in intra-op threads between ops. On by default with the global pool (one set of
    /// spinning threads); with a pool per session, three sessions' spinners compete for the cores.
    pub spinning: bool,
    /// One copy of each large weight and of its prepacked form for every CPU session that holds
    /// it (model::weights, runtime::prepacked_weights), instead of one per session.
    pub share_weights: bool,
    /// Explicit path of libonnxruntime; `None` uses ORT_DYLIB_PATH or `.ort/`.
    pub ort_library: Option<std::path::PathBuf>,
    /// `Some(device)` runs the graphs on that CUDA device, or fails to load; `None` is the CPU.
    pub cuda_device: Option<u32>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            intra_threads: 0,
            global_pool: true,
            prefill_threads: Some(0),
            spinning: true,
            share_weights: true,
            ort_library: None,
            cuda_device: None,
        }
    }
}

impl SessionSettings {
    /// The process-wide pool these settings ask for, if any.
    pub fn pool(&self) -> Option<runtime::GlobalPool> {
        self.global_pool.then_some(runtime::GlobalPool { intra_threads: self.intra_threads, spinning: self.spinning })
    }

    /// Threads of the (prefill, step) session pools when prefill has its own thread and the
    /// sessions have their own pools.
    pub fn split_threads(&self) -> Option<(usize, usize)> {
        if self.global_pool {
            return None;
        }
        self.prefill_threads.map(|prefill| (prefill, self.intra_threads))
    }

    /// A session's own pool size (0 = ONNX Runtime's default), or `None` for the global pool.
    fn threads_for(&self, role: Role) -> Option<usize> {
        match (self.split_threads(), role) {
            (Some((prefill, _)), Role::Prefill) => Some(prefill),
            (Some((_, step)), Role::Step) => Some(step),
            (None, _) if self.global_pool => None,
            (None, _) => Some(self.intra_threads),
        }
    }

    /// ONNX Runtime's name of the provider the sessions run on.
    pub fn provider_name(&self) -> &'static str {
        if self.cuda_device.is_some() { "CUDAExecutionProvider" } else { "CPUExecutionProvider" }
    }
}

enum Decoder {
    Split { first: Mutex<Session>, with_past: Mutex<Session> },
    Merged(Mutex<Session>),
}

/// Where cached steps with a decoder self-attention mask run.
enum MaskedStep {
    /// No masked graph: rows cannot join a running batch.
    Absent,
    /// `decoder_with_past_masked.onnx` beside the plain cached-step graph.
    Own(Mutex<Session>),
    /// The split decoder's cached-step graph is the masked one: every step passes a mask.
    WithPast,
}

/// What a session is used for, which decides its threads when prefill has its own thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The encoder and the first decoder step of new rows.
    Prefill,
    /// Cached decoder steps.
    Step,
}

/// Last-position logits of a decoder run, one row of `vocab` floats per batch row: the output
/// tensor itself, read in place (copying it out cost ~2% of the CPU at batch 16).
pub struct Logits {
    /// `[rows, positions, vocab]`.
    value: LogitStorage,
    rows: usize,
    positions: usize,
    vocab: usize,
}

enum LogitStorage {
    Ort(DynValue),
    /// Rows put together from cached first steps.
    Own(Vec<f32>),
}

impl Logits {
    fn new(value: DynValue) -> Result<Self, ModelError> {
        let (shape, _) = value.try_extract_tensor::<f32>()?;
        let [b, t, v] = shape[..] else {
            return Err(ModelError::Output(format!("decoder logits shape {shape:?}")));
        };
        if b < 0 || t < 1 || v < 1 {
            return Err(ModelError::Output(format!("decoder logits shape {shape:?}")));
        }
        Ok(Self { rows: b as usize, positions: t as usize, vocab: v as usize, value: LogitStorage::Ort(value) })
    }

    /// Logits of `vocab` floats per row, one position each.
    pub fn from_rows(data: Vec<f32>, vocab: usize) -> Self {
        assert!(vocab > 0 && data.len().is_multiple_of(vocab), "whole rows of {vocab} logits");
        Self { rows: data.len() / vocab, positions: 1, vocab, value: LogitStorage::Own(data) }
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row `i`'s logits at the last position.
    pub fn row(&self, i: usize) -> &[f32] {
        assert!(i < self.rows, "logits row {i} of {}", self.rows);
        let data = match &self.value {
            LogitStorage::Ort(v) => v.try_extract_tensor::<f32>().expect("checked to be an f32 tensor in new").1,
            LogitStorage::Own(v) => v.as_slice(),
        };
        let start = (i * self.positions + self.positions - 1) * self.vocab;
        &data[start..start + self.vocab]
    }
}

impl std::fmt::Debug for Logits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logits").field("rows", &self.rows).field("vocab", &self.vocab).finish_non_exhaustive()
    }
}

type Inputs<'v> = Vec<(Cow<'static, str>, SessionInputValue<'v>)>;

/// The cache's input and output names, made once per model so that a step does not format them.
/// Index `2 * layer + k`, k = 0 for the key and 1 for the value.
struct CacheNames {
    past_self: Vec<&'static str>,
    past_cross: Vec<&'static str>,
    present_self: Vec<&'static str>,
    present_cross: Vec<&'static str>,
}

impl CacheNames {
    fn new(layers: usize) -> Self {
        // Leaked once per loaded model (a few dozen short strings): ort takes input names as
        // `Cow<'static, str>`, and borrowing them saves two dozen allocations per step.
        let make = |prefix: &str, side: &str| -> Vec<&'static str> {
            (0..layers)
                .flat_map(|i| ["key", "value"].map(|kind| &*format!("{prefix}.{i}.{side}.{kind}").leak()))
                .collect()
        };
        Self {
            past_self: make("past_key_values", "decoder"),
            past_cross: make("past_key_values", "encoder"),
            present_self: make("present", "decoder"),
            present_cross: make("present", "encoder"),
        }
    }
}

pub struct Seq2SeqModel {
    pub dims: ModelDims,
    pub tokenizer: std::sync::Arc<super::TextTokenizer>,
    // Each session behind its own lock: the prefill thread (encoder, first step) and the decode
    // thread (cached steps) run different sessions at the same time.
    encoder: Mutex<Session>,
    decoder: Decoder,
    /// `decoder_with_past_masked.onnx`: lets rows of different decoder lengths share a batch.
    masked: MaskedStep,
    names: CacheNames,
}

/// Locks a session; a panic elsewhere while holding it leaves the session itself intact.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn build_session(path: &Path, settings: &SessionSettings, role: Role) -> ort::Result<Session> {
    let env = runtime::environment(settings.ort_library.as_deref(), settings.pool())
        .map_err(|e| ort::Error::new(e.to_string()))?;
    let mut builder = Session::builder(env)?.with_optimization_level(GraphOptimizationLevel::All)?;
    if settings.cuda_device.is_none() {
        // One arena for all sessions (see runtime::register_shared_arena).
        builder = builder.with_env_allocators()?;
    }
    if settings.cuda_device.is_none() && settings.share_weights {
        // One copy of each prepacked weight (runtime::prepacked_weights), and of the large
        // weights, for every session that holds them (model::weights).
        builder = builder.with_prepacked_weights(runtime::prepacked_weights())?;
        for (name, value) in super::weights::shared_initializers(path).map_err(|e| ort::Error::new(e.to_string()))? {
            builder = builder.with_initializer(name, value)?;
        }
    }
    if let Some(threads) = settings.threads_for(role) {
        builder = builder
            .with_independent_thread_pool()?
            .with_intra_op_spinning(settings.spinning)?
            .with_inter_op_spinning(false)?;
        if threads > 0 {
            builder = builder.with_intra_threads(threads)?;
        }
    }
    if let Some(device) = settings.cuda_device {
        // Registered explicitly and required: ONNX Runtime would otherwise fall back to the CPU
        // with only a log line, and a GPU deployment would run many times slower unnoticed.
        let device = i32::try_from(device).map_err(|_| ort::Error::new("device_id is too large"))?;
        let cuda = ort::ep::CUDA::default().with_device_id(device).build().error_on_failure();
        builder = builder.with_execution_providers([cuda]).map_err(|e| {
            ort::Error::new(format!(
                "the CUDA execution provider cannot be registered on device {device}: {e} \
                 (it needs the onnxruntime-gpu library, `scripts/setup_ort.sh gpu`, with CUDA 13 and cuDNN 9)"
            ))
        })?;
    }
    builder.commit_from_file(path)
}

fn session(path: &Path, settings: &SessionSettings, role: Role) -> Result<Mutex<Session>, ModelError> {
    build_session(path, settings, role)
        .map(Mutex::new)
        .map_err(|e| ModelError::Session(format!("cannot load {}: {e}", path.display())))
}

fn input_names(s: &Session) -> Vec<String> {
    s.inputs().iter().map(|i| i.name().to_string()).collect()
}

impl Seq2SeqModel {
    /// Reads a model directory and builds its sessions (tests and tools; the server reads the
    /// directory once and opens it in every lane).
    pub fn load(dir: &Path, settings: &SessionSettings) -> Result<Self, ModelError> {
        // Load the library first, so a missing one is reported as such and not as a bad model.
        runtime::environment(settings.ort_library.as_deref(), settings.pool())?;
        Self::open(&super::ModelDir::read(dir)?, settings)
    }

    /// Builds the sessions of a model directory already read.
    pub fn open(dir: &super::ModelDir, settings: &SessionSettings) -> Result<Self, ModelError> {
        runtime::environment(settings.ort_library.as_deref(), settings.pool())?;
        let files = &dir.files;
        let encoder = session(&files.encoder, settings, Role::Prefill)?;
        let decoder = match &files.decoder {
            DecoderLayout::Split { first, with_past } => Decoder::Split {
                first: session(first, settings, Role::Prefill)?,
                with_past: session(with_past, settings, Role::Step)?,
            },
            // One graph for both; the two threads take turns.
            DecoderLayout::Merged(path) => Decoder::Merged(session(path, settings, Role::Step)?),
        };
        let masked = match (&files.masked, &decoder) {
            (Some(_), Decoder::Split { .. }) if files.masked_only() => MaskedStep::WithPast,
            (Some(path), Decoder::Split { .. }) => MaskedStep::Own(session(path, settings, Role::Step)?),
            _ => MaskedStep::Absent,
        };
        let dims = dir.dims.clone();
        let names = CacheNames::new(dims.num_decoder_layers);
        let model = Self { dims, tokenizer: dir.tokenizer.clone(), encoder, decoder, masked, names };
        model.check_graphs()?;
        Ok(model)
    }

    /// Fails early, with the graph named, when a file is not a T5 seq2seq export with past.
    fn check_graphs(&self) -> Result<(), ModelError> {
        let want = |s: &Mutex<Session>, graph: &str, names: &[&str]| -> Result<(), ModelError> {
            let have = input_names(&lock(s));
            for n in names {
                if !have.iter().any(|h| h == n) {
                    return Err(ModelError::Files(format!(
                        "{graph} has no input `{n}` (inputs: {}); export with scripts/export_model.py",
                        have.join(", ")
                    )));
                }
            }
            Ok(())
        };
        want(&self.encoder, "encoder_model.onnx", &["input_ids", "attention_mask"])?;
        let past = "past_key_values.0.decoder.key";
        match &self.decoder {
            Decoder::Split { first, with_past } => {
                want(first, "decoder_model.onnx", &["input_ids", "encoder_hidden_states", "encoder_attention_mask"])?;
                match self.masked {
                    MaskedStep::WithPast => want(
                        with_past,
                        "decoder_with_past_masked.onnx",
                        &["input_ids", "encoder_attention_mask", "decoder_attention_mask", past],
                    )?,
                    _ => {
                        want(with_past, "decoder_with_past_model.onnx", &["input_ids", "encoder_attention_mask", past])?
                    }
                }
            }
            Decoder::Merged(s) => want(
                s,
                "decoder_model_merged.onnx",
                &["input_ids", "encoder_hidden_states", "encoder_attention_mask", past, "use_cache_branch"],
            )?,
        }
        Ok(())
    }

    /// Whether later decoder steps read the encoder's hidden states (the merged graph does;
    /// the split graphs read the cached cross-attention K/V instead).
    pub fn steps_need_encoder_output(&self) -> bool {
        matches!(self.decoder, Decoder::Merged(_))
    }

    /// Whether cached steps without padding have a graph that skips the mask (the plain
    /// `decoder_with_past_model.onnx`); a masked-only model passes a mask every step.
    pub fn has_unmasked_step(&self) -> bool {
        !matches!(self.masked, MaskedStep::WithPast)
    }

    /// Whether new rows can join a running batch (the model has the masked decoder graph).
    pub fn can_join(&self) -> bool {
        !matches!(self.masked, MaskedStep::Absent)
    }

    /// Runs the encoder over a right-padded batch.
    pub fn encode(&self, input_ids: Array2<i64>, mask: Array2<i64>) -> Result<Encoded, ModelError> {
        let (batch, len) = input_ids.dim();
        runtime::note_encoder_tokens(batch * len);
        let d = self.dims.d_model;
        let hidden = {
            let inputs: Inputs<'_> = vec![
                ("input_ids".into(), TensorRef::from_array_view(input_ids.view())?.into()),
                ("attention_mask".into(), TensorRef::from_array_view(mask.view())?.into()),
            ];
            let mut encoder = lock(&self.encoder);
            let out = encoder.run(inputs)?;
            let (shape, data) = out
                .get("last_hidden_state")
                .ok_or_else(|| ModelError::Output("encoder output last_hidden_state".into()))?
                .try_extract_tensor::<f32>()?;
            if shape[..] != [batch as i64, len as i64, d as i64] {
                return Err(ModelError::Output(format!("encoder output shape {shape:?}")));
            }
            Array3::from_shape_vec((batch, len, d), data.to_vec()).expect("shape checked above")
        };
        Ok(Encoded { hidden, mask })
    }

    /// Gives memory back: a one-token encoder run asks ONNX Runtime to free the shared arena's
    /// unused regions, and the C heap returns its free pages. Called when the last busy decode
    /// lane goes idle after a burst of large inputs (`runtime::lane_idle`).
    pub fn release_memory(&self) -> Result<(), ModelError> {
        let one = Array2::from_elem((1, 1), i64::from(self.dims.eos_token_id));
        let mask = Array2::<i64>::ones((1, 1));
        let inputs: Inputs<'_> = vec![
            ("input_ids".into(), TensorRef::from_array_view(one.view())?.into()),
            ("attention_mask".into(), TensorRef::from_array_view(mask.view())?.into()),
        ];
        let options = runtime::shrink_arena_options()?;
        lock(&self.encoder).run_with_options(inputs, &options)?;
        runtime::trim_heap();
        Ok(())
    }

    /// The first decoder step: one token per row (normally the decoder start token). Returns
    /// the logits and a cache holding the self K/V (length 1) and the cross K/V.
    pub fn decode_first(&self, tokens: &[i64], enc: &Encoded) -> Result<(Logits, DecoderState), ModelError> {
        let layers = self.dims.num_decoder_layers;
        let ids = Array2::from_shape_vec((tokens.len(), 1), tokens.to_vec()).expect("one token per row");
        let (logits, kv) = match &self.decoder {
            Decoder::Split { first, .. } => {
                let inputs: Inputs<'_> = vec![
                    ("input_ids".into(), TensorRef::from_array_view(ids.view())?.into()),
                    ("encoder_hidden_states".into(), TensorRef::from_array_view(enc.hidden.view())?.into()),
                    ("encoder_attention_mask".into(), TensorRef::from_array_view(enc.mask.view())?.into()),
                ];
                let mut first = lock(first);
                let mut out = first.run(inputs)?;
                let logits = take_logits(&mut out)?;
                (logits, take_presents(&mut out, &self.names, true)?)
            }
            Decoder::Merged(s) => {
                let (b, src) = enc.mask.dim();
                let (h, dk) = (self.dims.num_heads, self.dims.d_kv);
                // The no-cache branch ignores the past inputs, but they must be present.
                let dummy_self = Tensor::<f32>::from_array(([b, h, 1, dk], vec![0f32; b * h * dk]))?;
                let dummy_cross = Tensor::<f32>::from_array(([b, h, src, dk], vec![0f32; b * h * src * dk]))?;
                let mut inputs: Inputs<'_> = vec![
                    ("input_ids".into(), TensorRef::from_array_view(ids.view())?.into()),
                    ("encoder_hidden_states".into(), TensorRef::from_array_view(enc.hidden.view())?.into()),
                    ("encoder_attention_mask".into(), TensorRef::from_array_view(enc.mask.view())?.into()),
                    ("use_cache_branch".into(), Tensor::<bool>::from_array(([1usize], vec![false]))?.into()),
                ];
                for j in 0..2 * layers {
                    inputs.push((self.names.past_self[j].into(), (&dummy_self).into()));
                    inputs.push((self.names.past_cross[j].into(), (&dummy_cross).into()));
                }
                let mut s = lock(s);
                let mut out = s.run(inputs)?;
                let logits = take_logits(&mut out)?;
                (logits, take_presents(&mut out, &self.names, true)?)
            }
        };
        let (self_kv, cross_kv) = kv;
        let cross_kv = cross_kv
            .expect("first step returns cross K/V")
            .into_iter()
            .map(Rows::from_value)
            .collect::<Result<_, _>>()?;
        let state = DecoderState::new(self_kv, cross_kv, tokens.len(), 1)?;
        Ok((logits, state))
    }

    /// One cached decoder step: one new token per row; the self-attention cache grows by one.
    pub fn decode_next(&self, tokens: &[i64], enc: &Encoded, state: &mut DecoderState) -> Result<Logits, ModelError> {
        self.step(tokens, enc, state, None)
    }

    /// A cached step with a decoder self-attention mask `[rows, past_len + 1]` (0 = padding),
    /// for batches whose rows joined at different steps. Needs the masked graph.
    pub fn decode_next_masked(
        &self,
        tokens: &[i64],
        enc: &Encoded,
        state: &mut DecoderState,
        mask: &Array2<i64>,
    ) -> Result<Logits, ModelError> {
        self.step(tokens, enc, state, Some(mask))
    }

    fn step(
        &self,
        tokens: &[i64],
        enc: &Encoded,
        state: &mut DecoderState,
        mask: Option<&Array2<i64>>,
    ) -> Result<Logits, ModelError> {
        let layers = self.dims.num_decoder_layers;
        if tokens.len() != state.batch() || enc.batch() != state.batch() {
            return Err(ModelError::Output(format!(
                "batch mismatch: {} tokens, {} encoder rows, {} cache rows",
                tokens.len(),
                enc.batch(),
                state.batch()
            )));
        }
        let ids = Array2::from_shape_vec((tokens.len(), 1), tokens.to_vec()).expect("one token per row");
        // A masked-only model attends to every position of a batch without padding.
        let ones;
        let mask = match (mask, &self.masked) {
            (None, MaskedStep::WithPast) => {
                ones = Array2::ones((tokens.len(), state.decoder_len() + 1));
                Some(&ones)
            }
            (mask, _) => mask,
        };
        if let Some(m) = mask
            && m.dim() != (tokens.len(), state.decoder_len() + 1)
        {
            return Err(ModelError::Output(format!("decoder mask {:?} for {} rows", m.dim(), tokens.len())));
        }
        let (logits, self_kv) = {
            let mut inputs: Inputs<'_> = vec![
                ("input_ids".into(), TensorRef::from_array_view(ids.view())?.into()),
                ("encoder_attention_mask".into(), TensorRef::from_array_view(enc.mask.view())?.into()),
            ];
            if let Some(m) = mask {
                inputs.push(("decoder_attention_mask".into(), TensorRef::from_array_view(m.view())?.into()));
            }
            for j in 0..2 * layers {
                inputs.push((self.names.past_self[j].into(), TensorRef::from_array_view(state.self_kv(j))?.into()));
                inputs.push((
                    self.names.past_cross[j].into(),
                    TensorRef::from_array_view(state.cross_kv[j].view())?.into(),
                ));
            }
            let session = match (&self.decoder, &self.masked, mask) {
                (_, MaskedStep::Own(masked), Some(_)) => masked,
                (Decoder::Split { with_past, .. }, MaskedStep::WithPast, Some(_)) => with_past,
                (_, _, Some(_)) => return Err(ModelError::Output("no masked decoder graph loaded".into())),
                (Decoder::Split { with_past, .. }, _, None) => with_past,
                (Decoder::Merged(s), _, None) => {
                    inputs
                        .push(("encoder_hidden_states".into(), TensorRef::from_array_view(enc.hidden.view())?.into()));
                    inputs
                        .push(("use_cache_branch".into(), Tensor::<bool>::from_array(([1usize], vec![true]))?.into()));
                    s
                }
            };
            let mut session = lock(session);
            let mut out = session.run(inputs)?;
            // In the merged graph's cache branch the encoder presents are dummies: keep ours.
            let logits = take_logits(&mut out)?;
            (logits, take_presents(&mut out, &self.names, false)?.0)
        };
        state.advance(self_kv)?;
        Ok(logits)
    }

    /// Runs the decoder over a whole prefix without any cache and returns the logits of every
    /// position, `[batch, prefix_len, vocab]`. Slow (quadratic); the reference the cache is tested against.
    pub fn decode_uncached(&self, prefix: &Array2<i64>, enc: &Encoded) -> Result<Array3<f32>, ModelError> {
        let layers = self.dims.num_decoder_layers;
        let (b, t) = prefix.dim();
        let v = self.dims.vocab_size;
        let (h, dk, src) = (self.dims.num_heads, self.dims.d_kv, enc.mask.ncols());
        let mut inputs: Inputs<'_> = vec![
            ("input_ids".into(), TensorRef::from_array_view(prefix.view())?.into()),
            ("encoder_hidden_states".into(), TensorRef::from_array_view(enc.hidden.view())?.into()),
            ("encoder_attention_mask".into(), TensorRef::from_array_view(enc.mask.view())?.into()),
        ];
        let (Decoder::Split { first: session, .. } | Decoder::Merged(session)) = &self.decoder;
        if let Decoder::Merged(_) = &self.decoder {
            inputs.push(("use_cache_branch".into(), Tensor::<bool>::from_array(([1usize], vec![false]))?.into()));
            for j in 0..2 * layers {
                let d = Tensor::<f32>::from_array(([b, h, 1, dk], vec![0f32; b * h * dk]))?;
                let c = Tensor::<f32>::from_array(([b, h, src, dk], vec![0f32; b * h * src * dk]))?;
                inputs.push((self.names.past_self[j].into(), d.into()));
                inputs.push((self.names.past_cross[j].into(), c.into()));
            }
        }
        let mut session = lock(session);
        let out = session.run(inputs)?;
        let (shape, data) = out
            .get("logits")
            .ok_or_else(|| ModelError::Output("decoder output logits".into()))?
            .try_extract_tensor::<f32>()?;
        if shape[..] != [b as i64, t as i64, v as i64] {
            return Err(ModelError::Output(format!("decoder logits shape {shape:?}")));
        }
        Ok(Array3::from_shape_vec((b, t, v), data.to_vec()).expect("shape checked above"))
    }

    /// Keeps the given rows of a running batch (finished or cancelled rows leave).
    pub fn retain_rows(&self, rows: &[usize], enc: &mut Encoded, state: &mut DecoderState) -> Result<(), ModelError> {
        *enc = enc.select_rows(rows);
        state.select_rows(rows)
    }
}

/// Takes the logits out of a decoder run's outputs.
fn take_logits(out: &mut SessionOutputs<'_>) -> Result<Logits, ModelError> {
    Logits::new(out.remove("logits").ok_or_else(|| ModelError::Output("decoder output logits".into()))?)
}

type Presents = (Vec<DynValue>, Option<Vec<DynValue>>);

/// Takes `present.{i}.decoder.{key,value}` (and, on a first step, the encoder ones) out of the outputs,
/// ordered layer by layer, key before value.
fn take_presents(out: &mut SessionOutputs<'_>, names: &CacheNames, with_cross: bool) -> Result<Presents, ModelError> {
    let mut take = |name: &str| out.remove(name).ok_or_else(|| ModelError::Output(format!("decoder output {name}")));
    let n = names.present_self.len();
    let mut self_kv = Vec::with_capacity(n);
    let mut cross_kv = Vec::with_capacity(if with_cross { n } else { 0 });
    for j in 0..n {
        self_kv.push(take(names.present_self[j])?);
        if with_cross {
            cross_kv.push(take(names.present_cross[j])?);
        }
    }
    Ok((self_kv, with_cross.then_some(cross_kv)))
}
