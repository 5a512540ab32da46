//! Start-up failures of the real binary: each exits non-zero with a message that says what is
//! wrong and how to fix it, and none panics.

use std::process::Command;

fn serve(args: &[&str], ort: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_t5serve"));
    cmd.arg("serve").args(args).args(["--port", "0"]).current_dir(env!("CARGO_MANIFEST_DIR"));
    match ort {
        Some(p) => cmd.env("ORT_DYLIB_PATH", p),
        None => cmd.env_remove("ORT_DYLIB_PATH"),
    };
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    let out = cmd.output().expect("binary runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("panicked"), "no panic expected:\n{text}");
    (out.status.code().unwrap_or(-1), text)
}

const TINY: &str = "tests/data/tiny-t5";

#[test]
fn missing_onnx_runtime_names_the_path_and_the_fix() {
    let (code, text) = serve(&["--model", TINY], Some("/nonexistent/libonnxruntime.so.1.31.1"));
    assert_ne!(code, 0);
    assert!(text.contains("/nonexistent/libonnxruntime.so.1.31.1"), "{text}");
    assert!(text.contains("scripts/setup_ort.sh"), "{text}");
}

#[test]
fn a_library_that_is_not_onnx_runtime_is_refused() {
    // Any shared library without OrtGetApiBase: the ORT provider bridge that ships beside it.
    let lib = concat!(env!("CARGO_MANIFEST_DIR"), "/.ort/libonnxruntime_providers_shared.so");
    let (code, text) = serve(&["--model", TINY], Some(lib));
    assert_ne!(code, 0);
    assert!(text.contains("OrtGetApiBase"), "{text}");
    assert!(text.contains("scripts/setup_ort.sh"), "{text}");
}

#[test]
fn missing_model_directory_is_named() {
    let ort = concat!(env!("CARGO_MANIFEST_DIR"), "/.ort/libonnxruntime.so.1.31.1");
    let (code, text) = serve(&["--model", "/nonexistent-model"], Some(ort));
    assert_ne!(code, 0);
    assert!(text.contains("/nonexistent-model"), "{text}");
}

#[test]
fn incomplete_model_directory_names_the_missing_file() {
    let ort = concat!(env!("CARGO_MANIFEST_DIR"), "/.ort/libonnxruntime.so.1.31.1");
    let dir = std::env::temp_dir().join(format!("t5serve-incomplete-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(format!("{}/{TINY}/encoder_model.onnx", env!("CARGO_MANIFEST_DIR")), dir.join("encoder_model.onnx"))
        .unwrap();
    let (code, text) = serve(&["--model", dir.to_str().unwrap()], Some(ort));
    std::fs::remove_dir_all(&dir).ok();
    assert_ne!(code, 0);
    assert!(text.contains("tokenizer.json is missing"), "{text}");
}

#[test]
fn invalid_configuration_names_the_key() {
    let (code, text) = serve(&["--model", TINY, "--default-max-new-tokens", "0"], None);
    assert_eq!(code, 2);
    assert!(text.contains("default_max_new_tokens"), "{text}");
}

#[test]
fn cuda_without_a_gpu_library_fails_loudly_instead_of_falling_back_to_the_cpu() {
    // The PyPI `onnxruntime` wheel is CPU-only: registering CUDA must stop start-up.
    let ort = concat!(env!("CARGO_MANIFEST_DIR"), "/.ort/libonnxruntime.so.1.31.1");
    let (code, text) = serve(&["--model", TINY, "--execution-provider", "cuda", "--device-id", "0"], Some(ort));
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("CUDA execution provider cannot be registered on device 0"), "{text}");
    assert!(text.contains("setup_ort.sh gpu"), "{text}");
    assert!(!text.contains("model loaded"), "{text}");
}

/// `t5serve serve --help` names every configuration key: a flag for each, translate_pairs in the text.
#[test]
fn help_lists_every_configuration_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_t5serve")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let source = include_str!("../src/config/mod.rs");
    let start = source.find("pub struct Config {").unwrap();
    let body = &source[start..start + source[start..].find("\n}\n").unwrap()];
    let keys: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("    pub ")?.split(':').next()).collect();
    assert!(keys.len() > 25, "{keys:?}");
    for key in keys {
        let flag = format!("--{}", key.replace('_', "-"));
        assert!(help.contains(&flag) || help.contains(key), "{key} is not in --help:\n{help}");
        if help.contains(&flag) {
            assert!(help.contains(&format!("T5SERVE_{}", key.to_uppercase())), "{key} has no env var in --help");
        }
    }
}
