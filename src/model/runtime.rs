//! The process-wide ONNX Runtime: finding and loading the shared library, and the one
//! `Environment` that every session is built from. Session construction lives in `t5.rs`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use super::ModelError;

/// The ONNX Runtime release the project is built and tested against (PyPI `onnxruntime`).
pub const ORT_VERSION: &str = "1.31.1";
const FIX_HINT: &str = "run `scripts/setup_ort.sh` (it downloads the PyPI wheel onnxruntime==1.31.1 into .ort/), \
                        or point ORT_DYLIB_PATH / --ort-library at libonnxruntime.so.1.31.1";

/// The environment, and the global thread pool it was built with.
static ENVIRONMENT: OnceLock<(Environment, Option<GlobalPool>)> = OnceLock::new();

/// A process-wide intra-op thread pool that every session shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalPool {
    /// 0 = one per core.
    pub intra_threads: usize,
    pub spinning: bool,
}

/// Where to look for the library: an explicit path, else `ORT_DYLIB_PATH`, else `.ort/` in the
/// working directory (where `scripts/setup_ort.sh` puts it).
pub fn library_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    PathBuf::from(format!(".ort/libonnxruntime.so.{ORT_VERSION}"))
}

/// Loads ONNX Runtime once per process and returns the shared environment, with the global
/// thread pool `pool` (the first call decides; a later call that asks for another pool is an
/// error, since a process has one environment).
///
/// Without this check ort panics at the first API call; here a missing or wrong library is an
/// error that names the path tried and the command that fixes it.
pub fn environment(explicit: Option<&Path>, pool: Option<GlobalPool>) -> Result<&'static Environment, ModelError> {
    if let Some((env, built_with)) = ENVIRONMENT.get() {
        return match (pool, built_with) {
            (Some(want), Some(have)) if want != *have => Err(ModelError::Runtime(format!(
                "the process-wide ONNX Runtime thread pool already exists with {have:?}, not {want:?}"
            ))),
            (Some(want), None) => Err(ModelError::Runtime(format!(
                "ONNX Runtime was initialised without a global thread pool; cannot use {want:?}"
            ))),
            _ => Ok(env),
        };
    }
    // One thread creates it: two servers starting at once in one process (tests) would
    // otherwise both build one, and ONNX Runtime refuses the second.
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _creating = CREATING.lock().unwrap_or_else(|e| e.into_inner());
    if ENVIRONMENT.get().is_some() {
        return environment(explicit, pool);
    }
    let path = library_path(explicit);
    let path = std::path::absolute(&path).unwrap_or(path);
    if !path.is_file() {
        return Err(ModelError::Runtime(format!("ONNX Runtime library not found at {}: {FIX_HINT}", path.display())));
    }
    // Check the version ourselves first: ort accepts any newer release and reports an older one
    // only in a generic error.
    let version = library_version(&path).map_err(|e| {
        ModelError::Runtime(format!("cannot load ONNX Runtime from {}: {e}; {FIX_HINT}", path.display()))
    })?;
    let wanted_minor = ORT_VERSION.rsplit_once('.').map_or(ORT_VERSION, |(mm, _)| mm);
    if version != wanted_minor && !version.starts_with(&format!("{wanted_minor}.")) {
        return Err(ModelError::Runtime(format!(
            "ONNX Runtime at {} is version {version}, expected {ORT_VERSION}; {FIX_HINT}",
            path.display()
        )));
    }
    let builder = ort::init_from(&path).map_err(|e| {
        ModelError::Runtime(format!("cannot load ONNX Runtime from {}: {e}; {FIX_HINT}", path.display()))
    })?;
    let mut builder = builder.with_name("t5serve").with_telemetry(false);
    if let Some(p) = pool {
        let options = ort::environment::GlobalThreadPoolOptions::default()
            .with_intra_threads(p.intra_threads)
            .and_then(|o| o.with_spin_control(p.spinning))
            .and_then(|o| o.with_inter_threads(1))
            .map_err(|e| ModelError::Runtime(format!("cannot configure the global thread pool: {e}")))?;
        builder = builder.with_global_thread_pool(options);
    }
    let env =
        builder.build().map_err(|e| ModelError::Runtime(format!("cannot create the ONNX Runtime environment: {e}")))?;
    register_shared_arena(&env)?;
    tracing::info!(
        library = %path.display(),
        version = %version,
        "ONNX Runtime loaded"
    );
    Ok(&ENVIRONMENT.get_or_init(|| (env, pool)).0)
}

/// Padded input tokens of one encoder run beyond which ONNX Runtime's shared arena has grown past
/// what ordinary batches need (32 prompts of 256 tokens): the arena keeps its peak for good, so
/// after such a run the next idle moment of a decode lane gives the free part back
/// (`Seq2SeqModel::release_memory`).
pub const ARENA_BURST_TOKENS: usize = 2048;

static ARENA_BURSTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Records an encoder run of `tokens` padded input tokens.
pub fn note_encoder_tokens(tokens: usize) {
    if tokens > ARENA_BURST_TOKENS {
        ARENA_BURSTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Decode lanes (of every model) that have work. The arena is shared, and a region can only be
/// freed once no lane holds a tensor in it, so memory is given back when the last busy lane
/// goes idle.
static BUSY_LANES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// `ARENA_BURSTS` when memory was last given back.
static RELEASED_AT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A decode lane has work.
pub fn lane_busy() {
    BUSY_LANES.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
}

/// A decode lane has nothing left to do. Returns whether the caller should give memory back:
/// it was the last busy lane, and there was a large run since memory was last given back.
pub fn lane_idle() -> bool {
    use std::sync::atomic::Ordering;
    if BUSY_LANES.fetch_sub(1, Ordering::AcqRel) != 1 {
        return false;
    }
    let bursts = ARENA_BURSTS.load(Ordering::Acquire);
    RELEASED_AT.swap(bursts, Ordering::AcqRel) != bursts
}

/// Run options that make ONNX Runtime free the CPU arena's unused regions when the run ends.
pub fn shrink_arena_options() -> ort::Result<ort::session::RunOptions> {
    let mut options = ort::session::RunOptions::new()?;
    options.set("memory.enable_memory_arena_shrinkage", "cpu:0")?;
    Ok(options)
}

/// Returns the C heap's free pages to the system (what the arena and the caches freed).
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The process's one container of prepacked weights, given to every CPU session. ONNX Runtime's
/// CPU kernels copy their constant weights into the layout their matrix code reads (int8
/// MatMulInteger/DynamicQuantizeMatMul, fp32 MatMul/Gemm); the container keys each copy by the
/// operator and the weight's content, so the sessions of every lane and the solo set, and the two
/// decoder graphs, which hold the same matrices, share one copy instead of one each.
pub fn prepacked_weights() -> &'static ort::session::builder::PrepackedWeights {
    static WEIGHTS: OnceLock<ort::session::builder::PrepackedWeights> = OnceLock::new();
    WEIGHTS.get_or_init(ort::session::builder::PrepackedWeights::new)
}

/// Registers one CPU arena with the environment, for the sessions that opt in
/// (`session.use_env_allocators`): every CPU session then draws its tensors from it instead of
/// an arena of its own. With two decode lanes and the solo sessions there are a dozen sessions;
/// each arena grew on its own to the largest tensors it had seen, and resident memory kept
/// creeping up (2-8% over 10,000 requests, bench/memory.sh) where one lane's had stayed flat.
fn register_shared_arena(env: &Environment) -> Result<(), ModelError> {
    use ort::AsPointer;
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
    let info = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Arena, MemoryType::Default)
        .map_err(|e| ModelError::Runtime(format!("cannot describe the shared CPU arena: {e}")))?;
    let api = ort::api();
    // SAFETY: both pointers are live ONNX Runtime objects; a null arena config means the defaults.
    // A returned status is read and released here.
    unsafe {
        let status = (api.CreateAndRegisterAllocator)(env.ptr().cast_mut(), info.ptr(), std::ptr::null());
        if !status.0.is_null() {
            let message = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0)).to_string_lossy().into_owned();
            (api.ReleaseStatus)(status.0);
            return Err(ModelError::Runtime(format!("cannot register the shared CPU arena: {message}")));
        }
    }
    Ok(())
}

/// The version string of the library at `path` (`OrtGetApiBase()->GetVersionString()`).
fn library_version(path: &Path) -> Result<String, String> {
    // SAFETY: loading libonnxruntime runs its initialisers, which is what ort does next anyway;
    // the symbol has the C signature declared by onnxruntime_c_api.h (mirrored in ort-sys), and
    // the returned string is static and NUL-terminated per that header.
    unsafe {
        let lib = libloading::Library::new(path).map_err(|e| e.to_string())?;
        let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> = lib
            .get(b"OrtGetApiBase")
            .map_err(|_| "the library does not export OrtGetApiBase (is it ONNX Runtime?)".to_string())?;
        let base = get_base();
        if base.is_null() {
            return Err("OrtGetApiBase returned null".into());
        }
        let version = ((*base).GetVersionString)();
        if version.is_null() {
            return Err("GetVersionString returned null".into());
        }
        let version = std::ffi::CStr::from_ptr(version).to_string_lossy().into_owned();
        // ort opens the same library next; unloading it in between would only cost time.
        std::mem::forget(lib);
        Ok(version)
    }
}
