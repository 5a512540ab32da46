//! The CPU's instruction sets that decide ONNX Runtime's kernels, reported by the real binary
//! in its start-up log, `GET /v1/models`, `t5serve_build_info` and `t5serve cpu`, checked against
//! the kernel's own list (`/proc/cpuinfo`) rather than the `cpuid` reading the server does.

mod common;

use std::collections::BTreeSet;

use serde_json::Value;
use t5serve::model::cpu::{CpuFeatures, int8_may_saturate};

/// The features of the first processor in /proc/cpuinfo, in the server's order and spelling.
/// "avx512bw" stands for MLAS's AVX-512 core (BW, DQ and VL); "amx_int8" for AMX-TILE and
/// AMX-INT8 (the kernel lists them only when it enables the tile state).
fn proc_cpuinfo_features() -> Vec<&'static str> {
    let text = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo (Linux)");
    let line = text.lines().find(|l| l.starts_with("flags")).expect("a flags line");
    let flags: BTreeSet<&str> = line.split_once(':').unwrap().1.split_whitespace().collect();
    let has = |all: &[&str]| all.iter().all(|f| flags.contains(f));
    [
        (has(&["avx2"]), "avx2"),
        (has(&["fma"]), "fma"),
        (has(&["avx512f"]), "avx512f"),
        (has(&["avx512bw", "avx512dq", "avx512vl"]), "avx512bw"),
        (has(&["avx512_vnni"]), "avx512_vnni"),
        (has(&["avx_vnni"]), "avx_vnni"),
        (has(&["amx_tile", "amx_int8"]), "amx_int8"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_features_are_reported_in_the_log_models_metrics_and_the_cpu_command() {
    let want = proc_cpuinfo_features();
    let cpu = CpuFeatures::from_names(&want);
    let kernel = cpu.int8_kernel();
    let want_report = serde_json::json!({
        "features": want, "int8_kernel": kernel.name(), "int8_kernel_saturates": kernel.saturates(),
    });

    // `t5serve cpu`
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_t5serve")).arg("cpu").output().unwrap();
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, want_report);

    // The server, on the bundled int8 model.
    let model = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/t5-numbers");
    let mut server = common::spawn_binary_on(&model, &[]);
    let client = reqwest::Client::new();
    server.wait_ready(&client).await;
    let models: Value = client.get(format!("{}/v1/models", server.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["cpu"], want_report);
    let quantization = &models["models"][0]["quantization"];
    let may_saturate = int8_may_saturate(kernel, Some(quantization));
    assert_eq!(models["models"][0]["int8_may_saturate"], may_saturate);

    let metrics = client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    let info = metrics.lines().find(|l| l.starts_with("t5serve_build_info{")).expect("t5serve_build_info");
    assert!(info.contains(&format!("cpu_features=\"{}\"", want.join(","))), "{info}");
    assert!(info.contains(&format!("int8_kernel=\"{}\"", kernel.name())), "{info}");

    let log = server.log_text();
    let loaded = log.lines().find(|l| l.contains("model loaded")).expect("the model loaded line");
    assert!(loaded.contains(&format!("cpu_features={}", want.join(","))), "{loaded}");
    assert!(loaded.contains(&format!("int8_kernel=\"{}\"", kernel.name())), "{loaded}");
    // The warning comes exactly when the kernel can saturate this model's products.
    assert_eq!(log.contains("with saturation"), may_saturate, "{log}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    std::fs::remove_file(&server.log).ok();
}
