//! The thread plan, computed in one place from the configuration, the model (int8 or not) and
//! the machine's cores: how many decode lanes, the ONNX Runtime threads of each lane's sessions
//! (one global pool, or a pool per session split between prefill and decoder steps), the solo
//! sessions, and the tokio workers. The start-up log prints it.

use crate::config::{Config, ExecutionProvider, ThreadPool};
use crate::model::SessionSettings;
use crate::scheduler::SchedulerSettings;

/// The machine's cores (at least 1).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Tokio worker threads (HTTP, JSON, SSE): `http_threads`, or one per 4 cores, at least 1, so
/// that HTTP work does not take the cores ONNX Runtime's pool runs on.
pub fn http_threads(config: &Config, cores: usize) -> usize {
    if config.http_threads > 0 { config.http_threads } else { (cores / 4).max(1) }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ThreadPlan {
    /// Independent decode loops.
    pub lanes: usize,
    /// Each lane's sessions.
    pub sessions: SessionSettings,
    /// With several lanes and `solo_sessions`: one more set of sessions on every core, on the
    /// process-wide pool, which a lane uses while the other lanes are idle.
    pub solo: Option<SessionSettings>,
    pub http_threads: usize,
}

impl ThreadPlan {
    pub fn new(config: &Config, quantized: bool, cores: usize) -> Self {
        let lanes = lanes(config, quantized, cores);
        let base = SessionSettings {
            intra_threads: config.intra_op_threads,
            global_pool: config.ort_thread_pool == ThreadPool::Global,
            prefill_threads: config.prefill_thread.then_some(config.prefill_threads),
            spinning: config.intra_op_spinning,
            share_weights: config.share_weights,
            ort_library: config.ort_library.clone(),
            cuda_device: (config.execution_provider == ExecutionProvider::Cuda).then_some(config.device_id),
        };
        let sessions = if lanes > 1 {
            // Several lanes: each session gets its own pool of the lane's share of the cores, and
            // each lane prefills inline (the lanes, not a shared pool or prefill threads, spread
            // the work).
            let share = if config.intra_op_threads > 0 { config.intra_op_threads } else { (cores / lanes).max(1) };
            SessionSettings { intra_threads: share, global_pool: false, prefill_threads: None, ..base.clone() }
        } else {
            match (base.global_pool, base.prefill_threads) {
                // A pool per session and a prefill thread: the cores are split between the
                // prefill sessions (`prefill_threads`, 0 = half) and the step sessions
                // (`intra_op_threads`, 0 = the others).
                (false, Some(p)) => {
                    let prefill = if p > 0 { p } else { (cores / 2).max(1) };
                    let step =
                        if base.intra_threads > 0 { base.intra_threads } else { cores.saturating_sub(prefill).max(1) };
                    SessionSettings { intra_threads: step, prefill_threads: Some(prefill), ..base.clone() }
                }
                _ => base.clone(),
            }
        };
        // On the process-wide pool, with one spinning set of threads: with a pool per session,
        // each session's spinning threads would compete with the running one.
        let solo = (lanes > 1 && config.solo_sessions).then_some(SessionSettings {
            intra_threads: config.intra_op_threads,
            global_pool: true,
            prefill_threads: None,
            ..base
        });
        Self { lanes, sessions, solo, http_threads: http_threads(config, cores) }
    }

    /// The plan on this machine.
    pub fn for_host(config: &Config, quantized: bool) -> Self {
        Self::new(config, quantized, cores())
    }

    pub fn scheduler_settings(&self, config: &Config) -> SchedulerSettings {
        SchedulerSettings {
            max_batch_size: config.max_batch_size,
            max_batch_bytes: config.max_batch_memory_mb.saturating_mul(1 << 20),
            max_queue_delay: std::time::Duration::from_millis(config.max_queue_delay_ms),
            max_cohorts: config.max_cohorts,
            lanes: self.lanes,
            max_prefill_tokens: config.max_prefill_tokens,
            encoder_cache_bytes: config.encoder_cache_mb.saturating_mul(1 << 20),
        }
    }
}

/// Decode lanes to run: `decode_lanes`, or for 0 (auto) 2 for a quantized (int8) model on the
/// CPU with at least 2 cores, else 1. Measured on 2 cores (bench/run.sh, t5-small shape): int8 at
/// 32 clients gained 15-35% from 2 lanes, fp32 lost up to 30% at 8 clients.
fn lanes(config: &Config, quantized: bool, cores: usize) -> usize {
    if config.decode_lanes > 0 {
        return config.decode_lanes;
    }
    let cpu = config.execution_provider == ExecutionProvider::Cpu;
    if quantized && cpu && cores >= 2 && config.max_batch_size >= 2 { 2 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_lanes_split_the_cores_unless_threads_are_set() {
        let mut c = Config { decode_lanes: 3, max_batch_size: 2, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("decode_lanes = 3 is out of range 0..=2"));
        c.max_batch_size = 32;
        c.decode_lanes = 2;
        c.validate().unwrap();
        let plan = |c: &Config, q, cores| ThreadPlan::new(c, q, cores);
        assert_eq!((plan(&c, false, 8).lanes, plan(&c, true, 8).lanes), (2, 2), "set explicitly");
        let p = plan(&c, false, 8);
        assert_eq!((p.sessions.intra_threads, p.sessions.global_pool, p.sessions.prefill_threads), (4, false, None));
        assert_eq!(p.solo.as_ref().map(|s| (s.intra_threads, s.global_pool)), Some((0, true)), "solo: every core");
        c.intra_op_threads = 3;
        assert_eq!(plan(&c, false, 8).sessions.intra_threads, 3);
        assert_eq!(plan(&c, false, 8).scheduler_settings(&c).lanes, 2);
        c.solo_sessions = false;
        assert_eq!(plan(&c, false, 8).solo, None);
    }

    #[test]
    fn auto_decode_lanes_are_two_for_quantized_models_on_several_cores() {
        let mut c = Config::default();
        assert_eq!(c.decode_lanes, 0, "auto by default");
        let lanes = |c: &Config, q, cores| ThreadPlan::new(c, q, cores).lanes;
        assert_eq!((lanes(&c, true, 2), lanes(&c, true, 1)), (2, 1));
        assert_eq!(lanes(&c, false, 8), 1, "fp32 weights: one lane");
        c.execution_provider = ExecutionProvider::Cuda;
        assert_eq!(lanes(&c, true, 8), 1, "lanes are a CPU matter");
        c.execution_provider = ExecutionProvider::Cpu;
        c.max_batch_size = 1;
        assert_eq!(lanes(&c, true, 8), 1, "each lane needs a row");
    }

    #[test]
    fn one_lane_keeps_the_configured_pool_and_splits_cores_for_prefill() {
        let c = Config::default();
        let p = ThreadPlan::new(&c, false, 8);
        assert_eq!(p.sessions, SessionSettings { prefill_threads: Some(0), ..SessionSettings::default() });
        assert_eq!(p.solo, None);
        let c = Config { ort_thread_pool: ThreadPool::PerSession, ..Config::default() };
        let p = ThreadPlan::new(&c, false, 8);
        assert_eq!((p.sessions.prefill_threads, p.sessions.intra_threads), (Some(4), 4), "half and the rest");
        assert_eq!(p.sessions.split_threads(), Some((4, 4)));
        let c = Config { ort_thread_pool: ThreadPool::PerSession, prefill_threads: 3, ..Config::default() };
        assert_eq!(ThreadPlan::new(&c, false, 8).sessions.split_threads(), Some((3, 5)));
        let c = Config { ort_thread_pool: ThreadPool::PerSession, prefill_thread: false, ..Config::default() };
        assert_eq!(ThreadPlan::new(&c, false, 8).sessions.split_threads(), None);
    }

    #[test]
    fn every_session_set_follows_share_weights() {
        let sharing = |c: &Config| {
            let p = ThreadPlan::new(c, true, 2);
            (p.sessions.share_weights, p.solo.map(|s| s.share_weights))
        };
        assert_eq!(sharing(&Config::default()), (true, Some(true)), "shared by default");
        assert_eq!(sharing(&Config { share_weights: false, ..Config::default() }), (false, Some(false)));
    }

    #[test]
    fn http_threads_are_one_per_four_cores_unless_set() {
        let c = Config::default();
        assert_eq!((http_threads(&c, 1), http_threads(&c, 8), http_threads(&c, 64)), (1, 2, 16));
        assert_eq!(http_threads(&Config { http_threads: 3, ..c }, 64), 3);
    }
}
