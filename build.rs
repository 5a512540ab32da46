//! Embeds the OpenAPI document: `openapi.yaml` as committed and its JSON form, so that the
//! binary serves exactly the spec it was built with (src/http/openapi.rs). An invalid document
//! fails the build.

fn main() {
    println!("cargo:rerun-if-changed=openapi.yaml");
    let yaml = std::fs::read_to_string("openapi.yaml").expect("openapi.yaml is readable");
    let spec: serde_json::Value = serde_yaml::from_str(&yaml).expect("openapi.yaml is valid YAML");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("openapi.json"), serde_json::to_string(&spec).expect("JSON")).expect("OUT_DIR is writable");
}
