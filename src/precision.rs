//! The precision the network computes in: `--precision fp32|bf16|auto` (`predict`, `eval`, the
//! scoring of `sweep`) and `train.precision` (training), what the machine supports, and the
//! autocast regions the model runs in.
//!
//! - [`PrecisionChoice`] is what the user asks for; [`PrecisionChoice::resolve`] turns it into a
//!   [`Precision`] for a device. `auto` is bf16 where the device computes it well: a CPU with
//!   AVX-512 BF16 or AMX-BF16 (read from `cpuid` at run time, [`CpuBf16::detect`]), a CUDA device
//!   of compute capability 8.0 or more ([`CudaBf16::detect`]); fp32 elsewhere.
//! - bf16 is autocast-style mixed precision (see docs/model.md, "Precision"): inside
//!   [`with_precision`] libtorch's autocast runs convolutions and matrix products in bfloat16
//!   (accumulating in float32) while parameters stay float32; the model keeps its
//!   normalisations, softmaxes, attention scores and losses in float32 ([`fp32`] regions).
//!   Checkpoints are always float32.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use tch::Device;

use crate::native::{autocast_enter, autocast_exit, AutocastDevice};

/// The precision a computation runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Float32 throughout.
    #[default]
    Fp32,
    /// Convolutions and matrix products in bfloat16, the rest in float32.
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the user asked for (`--precision`, `train.precision`); see [`PrecisionChoice::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    #[default]
    Fp32,
    Bf16,
    /// bf16 where the device supports it well, else fp32.
    Auto,
}

impl FromStr for PrecisionChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "float32" => Ok(Self::Fp32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "auto" => Ok(Self::Auto),
            _ => Err(format!(
                "unknown precision {s:?}: expected fp32, bf16 or auto"
            )),
        }
    }
}

impl fmt::Display for PrecisionChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
            Self::Auto => "auto",
        })
    }
}

impl PrecisionChoice {
    /// The precision to compute in on `device`: `auto` is bf16 where [`bf16_is_fast`] says so.
    ///
    /// # Errors
    /// bf16 asked for on a device other than the CPU or CUDA.
    pub fn resolve(self, device: Device) -> Result<Precision> {
        match self {
            Self::Fp32 => Ok(Precision::Fp32),
            Self::Bf16 if autocast_device(device).is_none() => bail!(
                "--precision bf16: supported on the CPU and on CUDA devices, not on {device:?}"
            ),
            Self::Bf16 => Ok(Precision::Bf16),
            Self::Auto if bf16_is_fast(device) => Ok(Precision::Bf16),
            Self::Auto => Ok(Precision::Fp32),
        }
    }
}

/// Whether `device` computes bfloat16 in hardware: a CPU with AVX-512 BF16 or AMX-BF16 enabled by
/// the operating system, or a CUDA device of compute capability 8.0 or more.
pub(crate) fn bf16_is_fast(device: Device) -> bool {
    match device {
        Device::Cpu => CpuBf16::detect().fast(),
        Device::Cuda(i) => CudaBf16::detect(i).is_some_and(|c| c.fast()),
        _ => false,
    }
}

/// What the CPU offers for bfloat16, read at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuBf16 {
    /// `cpuid`: AVX-512 BF16 (`vdpbf16ps`: bfloat16 dot products into float32 lanes).
    pub avx512_bf16: bool,
    /// `cpuid`: AMX-BF16 (tile matrix multiplication of bfloat16).
    pub amx_bf16: bool,
    /// `xgetbv`: the operating system saves the AVX-512 state (without it the instructions fault).
    pub os_avx512: bool,
    /// `xgetbv`: the operating system saves the AMX tile state.
    pub os_amx: bool,
    /// The `flags` line of /proc/cpuinfo: (`avx512_bf16`, `amx_bf16`), where readable.
    pub proc_cpuinfo: Option<(bool, bool)>,
    /// libtorch's own reading (cpuinfo): (`avx512_bf16`, `amx_bf16`), where it reports them.
    pub libtorch: (Option<bool>, Option<bool>),
}

impl CpuBf16 {
    /// Reads `cpuid`, `xgetbv`, /proc/cpuinfo and libtorch's view once per process.
    pub fn detect() -> Self {
        static CPU: OnceLock<CpuBf16> = OnceLock::new();
        CPU.get_or_init(|| {
            let ids = cpuid_bf16();
            CpuBf16 {
                avx512_bf16: ids.avx512_bf16,
                amx_bf16: ids.amx_bf16,
                os_avx512: ids.os_avx512,
                os_amx: ids.os_amx,
                proc_cpuinfo: proc_cpuinfo_flags(),
                libtorch: (
                    crate::native::cpu_capability("avx512_bf16"),
                    crate::native::cpu_capability("amx_bf16"),
                ),
            }
        })
        .clone()
    }

    /// bfloat16 in hardware and usable: AVX-512 BF16 or AMX-BF16 with the OS's support.
    pub(crate) fn fast(&self) -> bool {
        (self.avx512_bf16 && self.os_avx512) || (self.amx_bf16 && self.os_amx)
    }

    /// One line for `dis2 info`, e.g. `AVX-512 BF16 yes, AMX-BF16 no (cpuid; /proc/cpuinfo and
    /// libtorch agree)`.
    pub fn describe(&self) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let mut line = format!(
            "AVX-512 BF16 {}, AMX-BF16 {}",
            yes_no(self.avx512_bf16 && self.os_avx512),
            yes_no(self.amx_bf16 && self.os_amx)
        );
        if self.avx512_bf16 && !self.os_avx512 {
            line.push_str(" (AVX-512 BF16 present but not enabled by the OS)");
        }
        if self.amx_bf16 && !self.os_amx {
            line.push_str(" (AMX present but not enabled by the OS)");
        }
        let ours = (self.avx512_bf16, self.amx_bf16);
        let mut others = Vec::new();
        match self.proc_cpuinfo {
            Some(flags) if flags == ours => others.push("/proc/cpuinfo agrees".to_string()),
            Some((a, b)) => others.push(format!(
                "/proc/cpuinfo differs: avx512_bf16 {}, amx_bf16 {}",
                yes_no(a),
                yes_no(b)
            )),
            None => {}
        }
        match self.libtorch {
            (Some(a), Some(b)) if (a, b) == ours => others.push("libtorch agrees".to_string()),
            (Some(a), Some(b)) => others.push(format!(
                "libtorch differs: avx512_bf16 {}, amx_bf16 {}",
                yes_no(a),
                yes_no(b)
            )),
            _ => {}
        }
        if others.is_empty() {
            format!("{line} (cpuid)")
        } else {
            format!("{line} (cpuid; {})", others.join(", "))
        }
    }
}

/// The bfloat16 bits of `cpuid` and `xgetbv`.
#[derive(Debug, Default)]
struct CpuIds {
    avx512_bf16: bool,
    amx_bf16: bool,
    os_avx512: bool,
    os_amx: bool,
}

#[cfg(target_arch = "x86_64")]
fn cpuid_bf16() -> CpuIds {
    use std::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};
    let bit = |reg: u32, n: u32| reg & (1 << n) != 0;
    // `cpuid` exists on every x86-64 processor; leaves above the maximum are not read.
    let (max_leaf, leaf1) = (__cpuid(0).eax, __cpuid(1));
    // XCR0 may only be read when the OS has enabled XSAVE (CPUID.1:ECX.OSXSAVE[bit 27]).
    let xcr0 = if bit(leaf1.ecx, 27) {
        // SAFETY: OSXSAVE is set, so `xgetbv` is available and enabled.
        unsafe { _xgetbv(0) }
    } else {
        0
    };
    if max_leaf < 7 {
        return CpuIds::default();
    }
    // Leaf 7 exists (max_leaf >= 7); its sub-leaf 1 reads as zeros where undefined.
    let (leaf7, leaf7_1) = (__cpuid_count(7, 0), __cpuid_count(7, 1));
    CpuIds {
        // CPUID.(7,1):EAX[5] AVX512_BF16, with AVX512F (CPUID.(7,0):EBX[16]).
        avx512_bf16: bit(leaf7_1.eax, 5) && bit(leaf7.ebx, 16),
        // CPUID.(7,0):EDX[22] AMX-BF16, with AMX-TILE (EDX[24]).
        amx_bf16: bit(leaf7.edx, 22) && bit(leaf7.edx, 24),
        // XCR0: SSE, AVX, opmask, ZMM_Hi256 and Hi16_ZMM state (bits 1, 2, 5, 6, 7).
        os_avx512: xcr0 & 0xE6 == 0xE6,
        // XCR0: XTILECFG and XTILEDATA (bits 17, 18).
        os_amx: xcr0 & (0b11 << 17) == (0b11 << 17),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_bf16() -> CpuIds {
    CpuIds::default()
}

/// (`avx512_bf16`, `amx_bf16`) from the first `flags` line of /proc/cpuinfo.
fn proc_cpuinfo_flags() -> Option<(bool, bool)> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("flags"))?;
    let flags: Vec<&str> = line.split(':').nth(1)?.split_whitespace().collect();
    Some((flags.contains(&"avx512_bf16"), flags.contains(&"amx_bf16")))
}

/// What a CUDA device offers for bfloat16: its name and compute capability, read from the CUDA
/// driver at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CudaBf16 {
    pub index: usize,
    pub name: String,
    /// (major, minor), e.g. (9, 0) for Hopper.
    pub capability: (i32, i32),
}

impl CudaBf16 {
    /// The CUDA device `index` as the driver describes it; `None` without CUDA or without that
    /// device.
    pub fn detect(index: usize) -> Option<Self> {
        if index >= crate::device::cuda_device_count() {
            return None;
        }
        cuda_driver::describe(index)
    }

    /// bfloat16 tensor cores: compute capability 8.0 (Ampere) or more.
    pub(crate) fn fast(&self) -> bool {
        self.capability.0 >= 8
    }

    /// One line for `dis2 info`, e.g. `cuda:0 NVIDIA H200, compute capability 9.0: bf16 yes`.
    pub fn describe(&self) -> String {
        format!(
            "cuda:{} {}, compute capability {}.{}: bf16 {}",
            self.index,
            self.name,
            self.capability.0,
            self.capability.1,
            if self.fast() {
                "yes"
            } else {
                "no (emulated, slow)"
            }
        )
    }
}

/// The CUDA driver API (libcuda.so.1, loaded when first asked; libtorch has it loaded already on
/// a machine with a GPU): device name and compute capability, which tch does not expose.
mod cuda_driver {
    use std::ffi::{c_char, c_int, c_void, CStr};

    type Init = unsafe extern "C" fn(flags: u32) -> c_int;
    type DeviceGet = unsafe extern "C" fn(device: *mut c_int, ordinal: c_int) -> c_int;
    type Attribute = unsafe extern "C" fn(value: *mut c_int, attr: c_int, device: c_int) -> c_int;
    type Name = unsafe extern "C" fn(name: *mut c_char, len: c_int, device: c_int) -> c_int;

    /// CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR and _MINOR.
    const CAPABILITY_MAJOR: c_int = 75;
    const CAPABILITY_MINOR: c_int = 76;

    /// A symbol of the library `lib` as a function pointer of type `F`.
    ///
    /// # Safety
    /// `F` must be the symbol's true function type.
    unsafe fn symbol<F: Copy>(lib: *mut c_void, name: &CStr) -> Option<F> {
        let f = libc::dlsym(lib, name.as_ptr());
        (!f.is_null()).then(|| std::mem::transmute_copy::<*mut c_void, F>(&f))
    }

    pub(super) fn describe(index: usize) -> Option<super::CudaBf16> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the symbols are the CUDA driver API's
        // documented C functions with these signatures; the out-pointers are valid locals.
        unsafe {
            let lib = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if lib.is_null() {
                return None;
            }
            let init: Init = symbol(lib, c"cuInit")?;
            let device_get: DeviceGet = symbol(lib, c"cuDeviceGet")?;
            let attribute: Attribute = symbol(lib, c"cuDeviceGetAttribute")?;
            let get_name: Name = symbol(lib, c"cuDeviceGetName")?;
            let mut device: c_int = 0;
            if init(0) != 0 || device_get(&mut device, c_int::try_from(index).ok()?) != 0 {
                return None;
            }
            let (mut major, mut minor) = (0, 0);
            if attribute(&mut major, CAPABILITY_MAJOR, device) != 0
                || attribute(&mut minor, CAPABILITY_MINOR, device) != 0
            {
                return None;
            }
            let mut name = [0 as c_char; 256];
            let name = if get_name(name.as_mut_ptr(), 256, device) == 0 {
                CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned()
            } else {
                "unknown device".to_string()
            };
            Some(super::CudaBf16 {
                index,
                name,
                capability: (major, minor),
            })
        }
    }
}

/// The autocast device type of `device`, where libtorch has one dis2 uses.
fn autocast_device(device: Device) -> Option<AutocastDevice> {
    match device {
        Device::Cpu => Some(AutocastDevice::Cpu),
        Device::Cuda(_) => Some(AutocastDevice::Cuda),
        _ => None,
    }
}

/// Restores the autocast state of a region when it ends, also when it unwinds.
struct Region(Option<crate::native::AutocastState>);

impl Drop for Region {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            // Only fails for an unknown device type, which `autocast_device` never gives.
            let _ = autocast_exit(state);
        }
    }
}

/// Runs `f` with the ops on `device` computing in `precision`: libtorch's autocast on (bf16,
/// lower precision bfloat16) or off (fp32), restored afterwards. Regions nest; an fp32 region
/// inside a bf16 one is float32. Devices other than the CPU and CUDA run `f` as it is.
pub(crate) fn with_precision<T>(device: Device, precision: Precision, f: impl FnOnce() -> T) -> T {
    let _region = Region(
        autocast_device(device).and_then(|d| autocast_enter(d, precision == Precision::Bf16).ok()),
    );
    f()
}

/// Runs `f` in float32 on `device` (autocast off), for the parts the model keeps in float32
/// inside a bf16 forward: attention scores and their softmax. Inputs are not converted: cast
/// them with `to_kind(Kind::Float)`.
pub fn fp32<T>(device: Device, f: impl FnOnce() -> T) -> T {
    with_precision(device, Precision::Fp32, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn choices_parse_resolve_and_print() {
        for (text, choice) in [
            ("fp32", PrecisionChoice::Fp32),
            ("BF16", PrecisionChoice::Bf16),
            ("auto", PrecisionChoice::Auto),
        ] {
            assert_eq!(text.parse::<PrecisionChoice>(), Ok(choice));
            assert_eq!(choice.to_string(), text.to_ascii_lowercase());
        }
        let err = "fp16".parse::<PrecisionChoice>().unwrap_err();
        assert!(err.contains("fp32, bf16 or auto"), "{err}");
        let cpu = Device::Cpu;
        assert_eq!(PrecisionChoice::Fp32.resolve(cpu).unwrap(), Precision::Fp32);
        assert_eq!(PrecisionChoice::Bf16.resolve(cpu).unwrap(), Precision::Bf16);
        let auto = PrecisionChoice::Auto.resolve(cpu).unwrap();
        assert_eq!(auto == Precision::Bf16, CpuBf16::detect().fast());
        assert!(PrecisionChoice::Bf16.resolve(Device::Mps).is_err());
    }

    /// cpuid, /proc/cpuinfo and libtorch read the same bfloat16 features where they can be read.
    #[test]
    fn cpu_detection_agrees_with_proc_cpuinfo_and_libtorch() {
        let cpu = CpuBf16::detect();
        if let Some(flags) = cpu.proc_cpuinfo {
            assert_eq!(flags, (cpu.avx512_bf16, cpu.amx_bf16), "{cpu:?}");
        }
        if let (Some(a), Some(b)) = cpu.libtorch {
            assert_eq!((a, b), (cpu.avx512_bf16, cpu.amx_bf16), "{cpu:?}");
        }
        assert!(
            cpu.describe().starts_with("AVX-512 BF16 "),
            "{}",
            cpu.describe()
        );
    }

    /// A bf16 region makes matrix products bfloat16 and restores the previous state, also
    /// around a nested fp32 region.
    #[test]
    fn regions_switch_autocast_and_restore_it() {
        let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        let cpu = AutocastDevice::Cpu;
        assert!(!crate::native::autocast_enabled(cpu));
        let (outer, inner, after_inner) = with_precision(Device::Cpu, Precision::Bf16, || {
            let outer = a.matmul(&a).kind();
            let inner = fp32(Device::Cpu, || a.matmul(&a).kind());
            (outer, inner, crate::native::autocast_enabled(cpu))
        });
        assert_eq!((outer, inner), (Kind::BFloat16, Kind::Float));
        assert!(after_inner, "the fp32 region did not restore bf16");
        assert!(!crate::native::autocast_enabled(cpu));
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
        let fp32_region = with_precision(Device::Cpu, Precision::Fp32, || a.matmul(&a).kind());
        assert_eq!(fp32_region, Kind::Float);
    }
}
