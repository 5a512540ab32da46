//! The served models as the config names them: `--model [ID=]DIR` (repeated), a string or list
//! in the file, or `[[models]]` tables that also set per-model keys (`Config::for_model`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, FromFlag, PER_MODEL_KEYS};

/// A served model, as the config names it: `[ID=]DIR`, the id defaulting to the directory's
/// name; in the file also a `[[models]]` table with `id`, `path` and the keys it sets for this
/// model alone (those declared `#[scope(model)]`, `PER_MODEL_KEYS`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelSpec {
    pub id: Option<String>,
    pub path: PathBuf,
    /// This model's own values of per-model keys.
    pub overrides: toml::Table,
}

impl ModelSpec {
    /// Whether `id` may name a model: a letter or digit, then letters, digits, `.`, `_`, `-`
    /// (so never `.` or `..`: a repository's model is its folder of that name).
    pub fn valid_id(id: &str) -> bool {
        id.starts_with(|c: char| c.is_ascii_alphanumeric())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    }

    /// The id requests use: the given one, else the directory's name.
    pub fn id(&self) -> String {
        self.id.clone().unwrap_or_else(|| {
            self.path.file_name().map_or_else(|| self.path.display().to_string(), |n| n.to_string_lossy().into_owned())
        })
    }
}

impl std::str::FromStr for ModelSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((id, path)) if ModelSpec::valid_id(id) => {
                Ok(Self { id: Some(id.into()), path: path.into(), ..Self::default() })
            }
            _ => Ok(Self { path: s.into(), ..Self::default() }),
        }
    }
}

impl std::fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{id}={}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// The served models, the first being the default: in the file one string, a list of them, or
/// `[[models]]` tables; as a flag `--model` given once or several times (or comma-separated in
/// `T5SERVE_MODEL`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelList(pub Vec<ModelSpec>);

impl From<PathBuf> for ModelList {
    fn from(path: PathBuf) -> Self {
        Self(vec![ModelSpec { path, ..ModelSpec::default() }])
    }
}

/// A `[[models]]` table.
#[derive(Serialize, Deserialize)]
struct ModelTable {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    path: PathBuf,
    #[serde(flatten)]
    overrides: toml::Table,
}

impl FromFlag<Vec<ModelSpec>> for ModelList {
    fn from_flag(f: Vec<ModelSpec>) -> Self {
        Self(f)
    }
}

impl Serialize for ModelList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.iter().any(|m| !m.overrides.is_empty()) {
            let tables = self.0.iter().map(|m| ModelTable {
                id: m.id.clone(),
                path: m.path.clone(),
                overrides: m.overrides.clone(),
            });
            return s.collect_seq(tables);
        }
        let texts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        match texts.as_slice() {
            [one] => s.serialize_str(one),
            _ => texts.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ModelList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let spec = |(i, v): (usize, toml::Value)| match v {
            toml::Value::String(t) => t.parse().map_err(D::Error::custom),
            toml::Value::Table(t) => {
                let t: ModelTable = t.try_into().map_err(|e| D::Error::custom(format!("models[{i}]: {e}")))?;
                Ok(ModelSpec { id: t.id, path: t.path, overrides: t.overrides })
            }
            other => Err(D::Error::custom(format!(
                "models[{i}]: expected a directory (\"[ID=]DIR\") or a table with path, not {}",
                other.type_str()
            ))),
        };
        let entries = match toml::Value::deserialize(d)? {
            toml::Value::Array(list) => list,
            one => vec![one],
        };
        entries.into_iter().enumerate().map(spec).collect::<Result<_, _>>().map(Self)
    }
}

impl Config {
    /// The config model `spec` is served with: this one with the keys its `[[models]]` table
    /// sets (only `PER_MODEL_KEYS`), validated.
    pub fn for_model(&self, spec: &ModelSpec) -> Result<Config, ConfigError> {
        let id = spec.id();
        let fail = |e: String| ConfigError(format!("model {id:?}: {e}"));
        let mut table = toml::Table::try_from(self).map_err(|e| fail(e.to_string()))?;
        for (key, value) in &spec.overrides {
            if !PER_MODEL_KEYS.contains(&key.as_str()) {
                return Err(fail(format!(
                    "{key} cannot be set for one model; a [[models]] table may set id, path, {}",
                    PER_MODEL_KEYS.join(", ")
                )));
            }
            table.insert(key.clone(), value.clone());
        }
        let mut config: Config = table.try_into().map_err(|e: toml::de::Error| fail(e.message().to_string()))?;
        config.model = ModelList(vec![ModelSpec { overrides: toml::Table::new(), ..spec.clone() }]);
        config.validate().map_err(|e| fail(e.0))?;
        Ok(config)
    }
}
