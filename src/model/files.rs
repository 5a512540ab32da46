//! Model directory discovery: which files of optimum's `text2text-generation-with-past` layout
//! are present, and the model's dimensions from `config.json` / `generation_config.json`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ModelError;

/// Which decoder graphs the directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecoderLayout {
    /// `decoder_model.onnx` (first step) + `decoder_with_past_model.onnx` (later steps). A
    /// directory with `decoder_with_past_masked.onnx` and no `decoder_with_past_model.onnx` has the
    /// masked graph here: it serves every later step (with an all-ones mask when no row joined late).
    Split { first: PathBuf, with_past: PathBuf },
    /// `decoder_model_merged.onnx`, with the `use_cache_branch` switch.
    Merged(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub encoder: PathBuf,
    pub decoder: DecoderLayout,
    /// `decoder_with_past_masked.onnx` (scripts/export_model.py --masked), if present.
    pub masked: Option<PathBuf>,
    pub tokenizer: PathBuf,
}

/// The dimensions the server needs, read from the exported `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDims {
    pub name: String,
    pub model_type: String,
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub num_heads: usize,
    pub num_layers: usize,
    pub num_decoder_layers: usize,
    pub decoder_start_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default, rename = "_name_or_path")]
    name_or_path: Option<String>,
    vocab_size: usize,
    d_model: usize,
    d_kv: usize,
    num_heads: usize,
    num_layers: usize,
    #[serde(default)]
    num_decoder_layers: Option<usize>,
    #[serde(default)]
    decoder_start_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<EosIds>,
    #[serde(default)]
    pad_token_id: Option<u32>,
}

#[derive(Deserialize, Default)]
struct RawGenerationConfig {
    #[serde(default)]
    decoder_start_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<EosIds>,
    #[serde(default)]
    pad_token_id: Option<u32>,
}

/// `eos_token_id` is an int or a list of ints in Hugging Face configs.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum EosIds {
    One(u32),
    Many(Vec<u32>),
}

impl EosIds {
    fn first(&self) -> Option<u32> {
        match self {
            EosIds::One(id) => Some(*id),
            EosIds::Many(ids) => ids.first().copied(),
        }
    }
}

fn required(dir: &Path, name: &str) -> Result<PathBuf, ModelError> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(ModelError::Files(format!(
            "{} is missing in model directory {} (export one with scripts/export_model.py)",
            name,
            dir.display()
        )))
    }
}

/// Task defaults a model directory may carry in `t5serve.json`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelTasks {
    pub classify: ClassifyDefaults,
    pub translate: TranslateDefaults,
    /// How `/v1/embeddings` pools and normalizes the encoder's states.
    pub embedding: crate::tasks::embed::EmbedSettings,
    /// A Jinja template that turns chat messages into the encoder's input.
    pub chat_template: Option<String>,
    /// How `/rerank` and `/v1/rerank` pair a query with a document, and the two words compared.
    pub rerank: crate::tasks::rerank::RerankSettings,
    /// The prompt of `/v1/extract` and the grammar of the model's answer.
    pub extract: crate::tasks::extract::ExtractSettings,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifyDefaults {
    pub labels: Vec<String>,
    pub template: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranslateDefaults {
    pub pairs: Vec<crate::tasks::translate::LanguagePair>,
}

impl ModelFiles {
    /// Whether new rows can join a running batch: the split decoder pair with the masked graph.
    pub fn can_join(&self) -> bool {
        self.masked.is_some() && matches!(self.decoder, DecoderLayout::Split { .. })
    }

    /// Whether the masked graph is the only cached-step graph (no `decoder_with_past_model.onnx`).
    pub fn masked_only(&self) -> bool {
        matches!(&self.decoder, DecoderLayout::Split { with_past, .. } if Some(with_past) == self.masked.as_ref())
    }

    pub fn layout_name(&self) -> &'static str {
        match self.decoder {
            DecoderLayout::Split { .. } => "split",
            DecoderLayout::Merged(_) => "merged",
        }
    }

    /// The graph and tokenizer files in use, by file name (for logs).
    pub fn names(&self) -> Vec<String> {
        let mut paths = vec![&self.encoder];
        match &self.decoder {
            DecoderLayout::Split { first, with_past } => paths.extend([first, with_past]),
            DecoderLayout::Merged(path) => paths.push(path),
        }
        paths.extend(self.masked.as_ref().filter(|_| !self.masked_only()));
        paths.push(&self.tokenizer);
        paths.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect()
    }

    /// The quantization settings the export recorded (`quantization.json`, written by
    /// scripts/quantize_model.py and `export_model.py --quantize`); `None` for a float model.
    pub fn quantization(&self) -> Result<Option<serde_json::Value>, ModelError> {
        let p = self.dir.join("quantization.json");
        if !p.is_file() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(&p).map_err(|e| ModelError::Files(format!("cannot read {}: {e}", p.display())))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Files(format!("invalid {}: {e}", p.display())))?;
        if !value.is_object() {
            return Err(ModelError::Files(format!("invalid {}: expected a JSON object", p.display())));
        }
        Ok(Some(value))
    }

    /// `t5serve.json` of the model directory, if it has one.
    pub fn tasks(&self) -> Result<ModelTasks, ModelError> {
        let p = self.dir.join("t5serve.json");
        if !p.is_file() {
            return Ok(ModelTasks::default());
        }
        let text =
            std::fs::read_to_string(&p).map_err(|e| ModelError::Files(format!("cannot read {}: {e}", p.display())))?;
        serde_json::from_str(&text).map_err(|e| ModelError::Files(format!("invalid {}: {e}", p.display())))
    }

    pub fn discover(dir: &Path) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::Files(format!("model directory {} does not exist", dir.display())));
        }
        let encoder = required(dir, "encoder_model.onnx")?;
        let tokenizer = required(dir, "tokenizer.json")?;
        required(dir, "config.json")?;
        let first = dir.join("decoder_model.onnx");
        let with_past = dir.join("decoder_with_past_model.onnx");
        let merged = dir.join("decoder_model_merged.onnx");
        let masked = Some(dir.join("decoder_with_past_masked.onnx")).filter(|p| p.is_file());
        // The split pair is preferred: no `If` node per step, and it is what int8 quantization produces.
        let decoder = if first.is_file() && with_past.is_file() {
            DecoderLayout::Split { first, with_past }
        } else if let (true, Some(masked)) = (first.is_file(), &masked) {
            DecoderLayout::Split { first, with_past: masked.clone() }
        } else if merged.is_file() {
            DecoderLayout::Merged(merged)
        } else {
            return Err(ModelError::Files(format!(
                "no decoder in {}: expected decoder_model.onnx + decoder_with_past_model.onnx (or \
                 decoder_with_past_masked.onnx), or decoder_model_merged.onnx",
                dir.display()
            )));
        };
        Ok(Self { dir: dir.to_path_buf(), encoder, decoder, masked, tokenizer })
    }

    pub fn dims(&self) -> Result<ModelDims, ModelError> {
        let read = |name: &str| -> Result<Option<String>, ModelError> {
            let p = self.dir.join(name);
            if !p.is_file() {
                return Ok(None);
            }
            std::fs::read_to_string(&p)
                .map(Some)
                .map_err(|e| ModelError::Files(format!("cannot read {}: {e}", p.display())))
        };
        let raw = read("config.json")?.unwrap_or_default();
        let cfg: RawConfig = serde_json::from_str(&raw)
            .map_err(|e| ModelError::Files(format!("invalid config.json in {}: {e}", self.dir.display())))?;
        let generation: RawGenerationConfig = match read("generation_config.json")? {
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                ModelError::Files(format!("invalid generation_config.json in {}: {e}", self.dir.display()))
            })?,
            None => RawGenerationConfig::default(),
        };
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .or(cfg.name_or_path)
            .unwrap_or_else(|| "model".into());
        Ok(ModelDims {
            name,
            model_type: cfg.model_type.unwrap_or_else(|| "t5".into()),
            vocab_size: cfg.vocab_size,
            d_model: cfg.d_model,
            d_kv: cfg.d_kv,
            num_heads: cfg.num_heads,
            num_layers: cfg.num_layers,
            num_decoder_layers: cfg.num_decoder_layers.unwrap_or(cfg.num_layers),
            // T5 starts decoding from the pad token and ends at id 1 unless the config says otherwise.
            decoder_start_token_id: generation.decoder_start_token_id.or(cfg.decoder_start_token_id).unwrap_or(0),
            eos_token_id: generation
                .eos_token_id
                .as_ref()
                .and_then(EosIds::first)
                .or(cfg.eos_token_id.as_ref().and_then(EosIds::first))
                .unwrap_or(1),
            pad_token_id: generation.pad_token_id.or(cfg.pad_token_id).unwrap_or(0),
        })
    }
}
