//! The processor's instruction sets that decide which CPU kernels ONNX Runtime runs, and what
//! follows for int8 models. Nothing here loads or runs anything: it reads `cpuid` once.
//!
//! Why it matters: dynamically quantized graphs multiply u8 activations by int8 weights
//! (`MatMulInteger`, `DynamicQuantizeMatMul`) in ONNX Runtime's MLAS library, which picks its
//! u8×s8 kernel from the CPU at start-up (onnxruntime/core/mlas/lib/platform.cpp):
//! - AMX (AMX-TILE + AMX-INT8, enabled by the OS): `tdpbusd`, 32-bit sums;
//! - AVX-512 VNNI, or AVX-VNNI without AVX-512: `vpdpbusd`, 32-bit sums;
//! - AVX-512 BW without VNNI, or AVX2 alone: `vpmaddubsw`, which adds each pair of u8×s8 products
//!   into a 16-bit lane **with saturation** (255·127·2 = 64,770 does not fit in 32,767);
//! - neither AVX2 nor AVX-512: the SSE kernel, which widens to 16 bits first and sums in 32.
//!
//! With 32-bit sums the integer products are exact, so every such CPU computes the same int8
//! results (only the float parts of the graph differ, in their last bits). Where pairs saturate,
//! results differ, and the model can lose accuracy: scores computed on one CPU are not the truth
//! on another.

use std::sync::OnceLock;

/// The instruction sets that select ONNX Runtime's CPU kernels. Names are the Linux
/// `/proc/cpuinfo` flags, so that a report can be checked against the kernel's own list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    pub avx2: bool,
    pub fma: bool,
    pub avx512f: bool,
    /// AVX-512 BW, DQ and VL together: what MLAS calls "AVX-512 core".
    pub avx512bw: bool,
    pub avx512_vnni: bool,
    pub avx_vnni: bool,
    /// AMX-TILE and AMX-INT8, with the tile state enabled by the operating system.
    pub amx_int8: bool,
}

/// ONNX Runtime's u8×s8 matrix-product kernel on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    Sse,
    Avx2,
    AvxVnni,
    Avx512Core,
    Avx512Vnni,
    Amx,
    /// Not an x86-64 processor: another library's kernels, not described here.
    NotX86,
}

impl Int8Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::Avx2 => "avx2",
            Self::AvxVnni => "avx-vnni",
            Self::Avx512Core => "avx512-core",
            Self::Avx512Vnni => "avx512-vnni",
            Self::Amx => "amx",
            Self::NotX86 => "not-x86",
        }
    }

    /// Whether pairs of u8×s8 products are summed in 16 bits with saturation.
    pub fn saturates(self) -> bool {
        matches!(self, Self::Avx2 | Self::Avx512Core)
    }
}

impl CpuFeatures {
    /// The flags present, in `/proc/cpuinfo` spelling.
    pub fn names(&self) -> Vec<&'static str> {
        let mut cpu = *self;
        cpu.flags().into_iter().filter_map(|(name, on)| on.then_some(name)).collect()
    }

    /// The features named (in `/proc/cpuinfo` spelling); other names are ignored.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Self {
        let mut cpu = Self::default();
        for (name, on) in cpu.flags() {
            *on = names.iter().any(|n| n.as_ref() == name);
        }
        cpu
    }

    /// Each feature with its name: the one list both directions use.
    fn flags(&mut self) -> [(&'static str, &mut bool); 7] {
        [
            ("avx2", &mut self.avx2),
            ("fma", &mut self.fma),
            ("avx512f", &mut self.avx512f),
            ("avx512bw", &mut self.avx512bw),
            ("avx512_vnni", &mut self.avx512_vnni),
            ("avx_vnni", &mut self.avx_vnni),
            ("amx_int8", &mut self.amx_int8),
        ]
    }

    /// What `GET /v1/models` and `t5serve cpu` report.
    pub fn report(&self) -> serde_json::Value {
        let kernel = self.int8_kernel();
        serde_json::json!({
            "features": self.names(),
            "int8_kernel": kernel.name(),
            "int8_kernel_saturates": kernel.saturates(),
        })
    }

    /// The kernel MLAS selects, in its order: AVX2 (+FMA) first, AVX-VNNI over it, AVX-512
    /// core over that (with or without VNNI), AMX over everything.
    pub fn int8_kernel(&self) -> Int8Kernel {
        if cfg!(not(target_arch = "x86_64")) {
            return Int8Kernel::NotX86;
        }
        if !(self.avx2 && self.fma) {
            return Int8Kernel::Sse;
        }
        let mut kernel = if self.avx_vnni { Int8Kernel::AvxVnni } else { Int8Kernel::Avx2 };
        if self.avx512f && self.avx512bw {
            kernel = if self.avx512_vnni { Int8Kernel::Avx512Vnni } else { Int8Kernel::Avx512Core };
        }
        if self.amx_int8 {
            kernel = Int8Kernel::Amx;
        }
        kernel
    }

    #[cfg(target_arch = "x86_64")]
    fn detect() -> Self {
        use std::arch::{is_x86_feature_detected as has, x86_64::__cpuid_count};
        // AMX is not in std's detection macro on stable Rust: read cpuid leaf 7 and XCR0 as MLAS
        // does (AMX-TILE is EDX bit 24, AMX-INT8 bit 25; XCR0 bits 17-18 are the tile state).
        let max_leaf = __cpuid_count(0, 0).eax;
        let leaf7_edx = if max_leaf >= 7 { __cpuid_count(7, 0).edx } else { 0 };
        let amx_cpu = leaf7_edx & (1 << 24) != 0 && leaf7_edx & (1 << 25) != 0;
        let tile_state = 0b11 << 17;
        // SAFETY: xgetbv exists where the xsave feature is detected (std checks OSXSAVE too).
        let amx_os = has!("xsave") && (unsafe { xcr0() } & tile_state) == tile_state;
        Self {
            avx2: has!("avx2"),
            fma: has!("fma"),
            avx512f: has!("avx512f"),
            avx512bw: has!("avx512bw") && has!("avx512dq") && has!("avx512vl"),
            avx512_vnni: has!("avx512vnni"),
            avx_vnni: has!("avxvnni"),
            amx_int8: amx_cpu && amx_os,
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn detect() -> Self {
        Self::default()
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    // SAFETY: the caller checked that the CPU and the OS support xgetbv.
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

/// This machine's CPU, read once.
pub fn host() -> &'static CpuFeatures {
    static HOST: OnceLock<CpuFeatures> = OnceLock::new();
    HOST.get_or_init(CpuFeatures::detect)
}

/// Whether an int8 export (its `quantization.json`) can saturate on `kernel`: signed 8-bit
/// weights over the full range. Weights quantized with `reduce_range` use 7 bits (a pair sums
/// to at most 255·64·2 = 32,640, which fits), and unsigned weights take MLAS's u8×u8 kernel,
/// which widens to 16 bits before it multiplies; neither saturates.
pub fn int8_may_saturate(kernel: Int8Kernel, quantization: Option<&serde_json::Value>) -> bool {
    let Some(q) = quantization else { return false };
    let signed = q.get("weight_type").and_then(|w| w.as_str()) == Some("QInt8");
    let reduced = q.get("reduce_range").and_then(|r| r.as_bool()).unwrap_or(false);
    kernel.saturates() && signed && !reduced
}

/// What kind of quantized model meets which kernel, for the start-up log: e.g. `signed 8-bit
/// per-tensor weights on avx2 (pairs of products saturate)`, `4-bit weights (MatMulNBits) on
/// avx512-vnni`. `None` for a float model.
pub fn int8_kind(kernel: Int8Kernel, quantization: Option<&serde_json::Value>) -> Option<String> {
    let q = quantization?;
    let text = |key: &str| q.get(key).and_then(|v| v.as_str());
    let flag = |key: &str| q.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
    let weights = if text("dtype") == Some("int4") {
        "4-bit weights (MatMulNBits)".to_string()
    } else {
        let sign = if text("weight_type") == Some("QUInt8") { "unsigned" } else { "signed" };
        let bits = if flag("reduce_range") { "7-bit" } else { "8-bit" };
        let scale = if flag("per_channel") { "per-channel" } else { "per-tensor" };
        format!("{sign} {bits} {scale} weights")
    };
    let sums = if int8_may_saturate(kernel, Some(q)) {
        "pairs of products saturate"
    } else if kernel.saturates() {
        "these weights cannot saturate its 16-bit pair sums"
    } else {
        "exact 32-bit sums"
    };
    Some(format!("{weights} on {} ({sums})", kernel.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(flags: &[&str]) -> CpuFeatures {
        CpuFeatures::from_names(flags)
    }

    #[test]
    fn the_int8_kernel_follows_mlas_order_of_precedence() {
        let table: &[(&[&str], Int8Kernel)] = &[
            (&[], Int8Kernel::Sse),
            (&["avx2"], Int8Kernel::Sse), // MLAS wants FMA with AVX2
            (&["avx2", "fma"], Int8Kernel::Avx2),
            (&["avx2", "fma", "avx_vnni"], Int8Kernel::AvxVnni),
            (&["avx2", "fma", "avx512f"], Int8Kernel::Avx2), // AVX-512F alone is not "core"
            (&["avx2", "fma", "avx512f", "avx512bw"], Int8Kernel::Avx512Core),
            (&["avx2", "fma", "avx512f", "avx512bw", "avx_vnni"], Int8Kernel::Avx512Core),
            (&["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"], Int8Kernel::Avx512Vnni),
            (&["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"], Int8Kernel::Amx),
        ];
        for (flags, want) in table {
            assert_eq!(cpu(flags).int8_kernel(), *want, "{flags:?}");
        }
    }

    #[test]
    fn only_16_bit_pair_sums_saturate() {
        let saturating: Vec<_> = [
            Int8Kernel::Sse,
            Int8Kernel::Avx2,
            Int8Kernel::AvxVnni,
            Int8Kernel::Avx512Core,
            Int8Kernel::Avx512Vnni,
            Int8Kernel::Amx,
        ]
        .into_iter()
        .filter(|k| k.saturates())
        .collect();
        assert_eq!(saturating, [Int8Kernel::Avx2, Int8Kernel::Avx512Core]);
    }

    #[test]
    fn only_full_range_signed_weights_may_saturate() {
        let q = |v: serde_json::Value| Some(v);
        let s8 = q(serde_json::json!({"weight_type": "QInt8"}));
        assert!(int8_may_saturate(Int8Kernel::Avx2, s8.as_ref()));
        assert!(int8_may_saturate(Int8Kernel::Avx512Core, s8.as_ref()));
        assert!(!int8_may_saturate(Int8Kernel::Avx512Vnni, s8.as_ref()));
        assert!(!int8_may_saturate(Int8Kernel::Amx, s8.as_ref()));
        let reduced = q(serde_json::json!({"weight_type": "QInt8", "reduce_range": true}));
        assert!(!int8_may_saturate(Int8Kernel::Avx2, reduced.as_ref()));
        let u8w = q(serde_json::json!({"weight_type": "QUInt8"}));
        assert!(!int8_may_saturate(Int8Kernel::Avx2, u8w.as_ref()));
        assert!(!int8_may_saturate(Int8Kernel::Avx2, None));
    }

    #[test]
    fn names_use_the_proc_cpuinfo_spelling() {
        let all = cpu(&["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"]);
        assert_eq!(all.names(), ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"]);
        assert!(cpu(&[]).names().is_empty());
        assert_eq!(CpuFeatures::from_names(&all.names()), all);
    }

    #[test]
    fn the_int8_kind_names_the_weights_and_what_the_kernel_does_with_them() {
        let q = |v: serde_json::Value| Some(v);
        let signed = q(serde_json::json!({"dtype": "int8", "weight_type": "QInt8", "per_channel": false}));
        assert_eq!(int8_kind(Int8Kernel::Avx2, None), None);
        assert_eq!(
            int8_kind(Int8Kernel::Avx2, signed.as_ref()).unwrap(),
            "signed 8-bit per-tensor weights on avx2 (pairs of products saturate)"
        );
        assert_eq!(
            int8_kind(Int8Kernel::Avx512Vnni, signed.as_ref()).unwrap(),
            "signed 8-bit per-tensor weights on avx512-vnni (exact 32-bit sums)"
        );
        let reduced = q(serde_json::json!({"weight_type": "QInt8", "per_channel": true, "reduce_range": true}));
        assert_eq!(
            int8_kind(Int8Kernel::Avx2, reduced.as_ref()).unwrap(),
            "signed 7-bit per-channel weights on avx2 (these weights cannot saturate its 16-bit pair sums)"
        );
        let unsigned = q(serde_json::json!({"weight_type": "QUInt8"}));
        assert!(int8_kind(Int8Kernel::Avx2, unsigned.as_ref()).unwrap().starts_with("unsigned 8-bit per-tensor"));
        let int4 = q(serde_json::json!({"dtype": "int4", "bits": 4}));
        assert_eq!(
            int8_kind(Int8Kernel::Amx, int4.as_ref()).unwrap(),
            "4-bit weights (MatMulNBits) on amx (exact 32-bit sums)"
        );
    }
}
