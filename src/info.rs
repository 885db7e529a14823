//! `dis2 info`: what this binary was built with and what it can compute on.

use anyhow::Result;

use crate::device::{cuda_device_count, DeviceChoice};
use crate::precision::{CpuBf16, CudaBf16, PrecisionChoice};

/// The lines of the report, as (label, value).
pub fn report(device: DeviceChoice) -> Result<Vec<(&'static str, String)>> {
    let resolved = device.resolve()?;
    let cuda_count = cuda_device_count();
    Ok(vec![
        ("dis2", env!("CARGO_PKG_VERSION").to_string()),
        (
            "tch",
            option_env!("DIS2_TCH_VERSION")
                .unwrap_or("unknown")
                .to_string(),
        ),
        (
            "libtorch",
            option_env!("DIS2_LIBTORCH_VERSION")
                .unwrap_or("unknown")
                .to_string(),
        ),
        (
            "libtorch lib",
            option_env!("DIS2_LIBTORCH_LIB")
                .unwrap_or("unknown")
                .to_string(),
        ),
        ("CUDA available", yes_no(cuda_count > 0)),
        ("CUDA devices", cuda_count.to_string()),
        ("cuDNN available", yes_no(tch::Cuda::cudnn_is_available())),
        ("GDAL", gdal::version::version_info("RELEASE_NAME")),
        (
            "gdal crate",
            option_env!("DIS2_GDAL_CRATE_VERSION")
                .unwrap_or("unknown")
                .to_string(),
        ),
        ("malloc", crate::alloc::allocator_name().to_string()),
        ("torch threads", tch::get_num_threads().to_string()),
        ("rayon threads", rayon::current_num_threads().to_string()),
        ("device", format!("{device} -> {resolved:?}")),
        ("CPU bf16", CpuBf16::detect().describe()),
        ("CUDA bf16", cuda_bf16(cuda_count)),
        (
            "precision auto",
            format!(
                "{} on {resolved:?}",
                PrecisionChoice::Auto.resolve(resolved)?
            ),
        ),
    ])
}

/// Each CUDA device's name, compute capability and bfloat16 support, `; `-separated.
fn cuda_bf16(count: usize) -> String {
    if count == 0 {
        return "no CUDA device".to_string();
    }
    (0..count)
        .map(|i| match CudaBf16::detect(i) {
            Some(d) => d.describe(),
            None => format!("cuda:{i}: not described by the CUDA driver"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn yes_no(flag: bool) -> String {
    if flag { "yes" } else { "no" }.to_string()
}

pub(crate) fn print_info(device: DeviceChoice) -> Result<()> {
    for (label, value) in report(device)? {
        println!("{label:<16} {value}");
    }
    Ok(())
}
