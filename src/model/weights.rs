//! One copy of each constant weight for all the CPU sessions of the process.
//!
//! Every session keeps its own copy of its graph's initializers; with two decode lanes and the
//! solo set the bundled model held three copies of the same 49 MB. ONNX Runtime takes
//! initializers from the caller instead (`AddInitializer`, kept alive by the session) and then
//! shares their prepacked forms too (runtime::prepacked_weights). So the large initializers of a
//! graph are read here, once per distinct content: the sessions of every lane get the same
//! values, and so do the graphs that hold the same matrix (the first-step and cached-step
//! decoders, and the embedding wherever it is repeated). Values are held weakly: a model that
//! is unloaded gives its weights back when its last session goes.
//!
//! Measured with onnxruntime on the bundled int8 graphs: the optimized graph, the outputs (bit
//! for bit) and the step time are the same as with the session's own copies.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use ort::value::{DynValue, Tensor};

use super::ModelError;

/// Smaller initializers (scales, zero points, shapes) stay with each session.
const MIN_SHARED_BYTES: usize = 4096;

// The fields of onnx.proto this reads (ModelProto.graph, GraphProto.initializer, TensorProto);
// prost skips every other field.
#[derive(Clone, PartialEq, prost::Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
    /// 1 = EXTERNAL: the data lives in another file, which the session reads itself.
    #[prost(int32, tag = "14")]
    data_location: i32,
}

/// Content key: element type, shape and two independent 64-bit hashes of the bytes.
type Key = (i32, Vec<i64>, u64, u64);

static VALUES: Mutex<Option<HashMap<Key, Weak<DynValue>>>> = Mutex::new(None);

/// The large initializers of the graph at `path`, by name, as values shared with every other
/// session that holds the same content.
pub fn shared_initializers(path: &Path) -> Result<Vec<(String, Arc<DynValue>)>, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::Files(format!("cannot read {}: {e}", path.display())))?;
    let model = <ModelProto as prost::Message>::decode(bytes.as_slice())
        .map_err(|e| ModelError::Files(format!("{} is not an ONNX model: {e}", path.display())))?;
    drop(bytes);
    let mut values = VALUES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let values = values.get_or_insert_with(HashMap::new);
    values.retain(|_, v| v.strong_count() > 0);
    let mut shared = Vec::new();
    for t in model.graph.map(|g| g.initializer).unwrap_or_default() {
        if t.raw_data.len() < MIN_SHARED_BYTES || t.data_location == 1 {
            continue;
        }
        let key = key(&t);
        if let Some(value) = values.get(&key).and_then(Weak::upgrade) {
            shared.push((t.name, value));
            continue;
        }
        let Some(value) = tensor(&t)? else { continue };
        let value = Arc::new(value);
        values.insert(key, Arc::downgrade(&value));
        shared.push((t.name, value));
    }
    Ok(shared)
}

fn key(t: &TensorProto) -> Key {
    let hash = |seed: u64| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        seed.hash(&mut h);
        t.raw_data.hash(&mut h);
        h.finish()
    };
    (t.data_type, t.dims.clone(), hash(0x9e37_79b9_7f4a_7c15), hash(0xc2b2_ae3d_27d4_eb4f))
}

/// The initializer as a tensor value; `None` for an element type left to the session.
fn tensor(t: &TensorProto) -> Result<Option<DynValue>, ModelError> {
    let shape: Vec<usize> = t.dims.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
    let bad = |e: ort::Error| ModelError::Files(format!("initializer {}: {e}", t.name));
    let raw = &t.raw_data;
    // ONNX stores raw data little-endian.
    let value = match t.data_type {
        1 => Tensor::from_array((shape, le_words(raw, f32::from_le_bytes))).map_err(bad)?.into_dyn(),
        2 => Tensor::from_array((shape, raw.clone())).map_err(bad)?.into_dyn(),
        3 => Tensor::from_array((shape, raw.iter().map(|&b| b as i8).collect::<Vec<_>>())).map_err(bad)?.into_dyn(),
        6 => Tensor::from_array((shape, le_words(raw, i32::from_le_bytes))).map_err(bad)?.into_dyn(),
        7 => Tensor::from_array((shape, le_words(raw, i64::from_le_bytes))).map_err(bad)?.into_dyn(),
        _ => return Ok(None),
    };
    Ok(Some(value))
}

fn le_words<T, const N: usize>(raw: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N).map(|c| from(c.try_into().expect("chunks of N bytes"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-t5").join(name)
    }

    fn ptrs(v: &[(String, Arc<DynValue>)]) -> Vec<(String, usize)> {
        v.iter().map(|(n, v)| (n.clone(), Arc::as_ptr(v) as usize)).collect()
    }

    #[test]
    fn every_session_of_a_graph_gets_the_same_values_and_the_decoders_share_their_common_ones() {
        crate::model::runtime::environment(None, None).unwrap();
        let first = shared_initializers(&tiny("decoder_model.onnx")).unwrap();
        let again = shared_initializers(&tiny("decoder_model.onnx")).unwrap();
        assert!(!first.is_empty());
        assert_eq!(ptrs(&first), ptrs(&again), "a second session of the graph gets the same values");
        // The cached-step decoder holds the same matrices (optimum exports them from one model).
        let with_past = shared_initializers(&tiny("decoder_with_past_model.onnx")).unwrap();
        let common = ptrs(&with_past).iter().filter(|(_, p)| ptrs(&first).iter().any(|(_, q)| q == p)).count();
        assert!(common * 2 >= with_past.len(), "{common} of {} values shared with decoder_model", with_past.len());
    }

    #[test]
    fn values_hold_the_initializers_bytes_and_shapes() {
        crate::model::runtime::environment(None, None).unwrap();
        let path = tiny("encoder_model.onnx");
        let model = <ModelProto as prost::Message>::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
        let by_name: HashMap<String, TensorProto> =
            model.graph.unwrap().initializer.into_iter().map(|t| (t.name.clone(), t)).collect();
        for (name, value) in shared_initializers(&path).unwrap() {
            let t = &by_name[&name];
            assert_eq!(t.data_type, 1, "the tiny fp32 model's large initializers are float");
            let (shape, data) = value.try_extract_tensor::<f32>().unwrap();
            assert_eq!(shape.iter().copied().collect::<Vec<_>>(), t.dims, "{name}");
            let want: Vec<f32> =
                t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            assert_eq!(data, want.as_slice(), "{name}");
        }
    }
}
