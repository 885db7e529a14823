//! `--device auto|cpu|cuda|cuda:N`, shared by every subcommand that computes.

use anyhow::{bail, Result};
use std::fmt;
use std::str::FromStr;
use tch::Device;

/// What the user asked for; resolved to a `tch::Device` once libtorch is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA device 0 when present, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let expected = "expected auto, cpu, cuda or cuda:N";
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(Self::Cuda)
                    .map_err(|_| format!("bad CUDA index {n:?} in {s:?}: {expected}")),
                None => Err(format!("unknown device {s:?}: {expected}")),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// The device to compute on, or an error when CUDA is asked for and not there.
    pub fn resolve(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto => Ok(Device::cuda_if_available()),
            Self::Cuda(index) => {
                let count = cuda_device_count();
                if count == 0 {
                    bail!(
                        "--device {self}: CUDA is not available here (no GPU, driver or CUDA \
                         runtime found); use --device cpu or --device auto"
                    );
                }
                if index >= count {
                    bail!(
                        "--device {self}: only {count} CUDA device(s), numbered 0 to {}",
                        count - 1
                    );
                }
                Ok(Device::Cuda(index))
            }
        }
    }
}

/// The number of CUDA devices libtorch sees (0 without GPU or driver).
pub fn cuda_device_count() -> usize {
    if tch::Cuda::is_available() {
        usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("auto".parse::<DeviceChoice>(), Ok(DeviceChoice::Auto));
        assert_eq!("CPU".parse::<DeviceChoice>(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(3)));
        assert!("cuda:x"
            .parse::<DeviceChoice>()
            .unwrap_err()
            .contains("bad CUDA index"));
        assert!("gpu"
            .parse::<DeviceChoice>()
            .unwrap_err()
            .contains("expected auto, cpu"));
    }

    #[test]
    fn cpu_and_auto_always_resolve() {
        assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), Device::Cpu);
        let auto = DeviceChoice::Auto.resolve().unwrap();
        assert_eq!(auto.is_cuda(), cuda_device_count() > 0);
    }

    #[test]
    fn missing_cuda_is_an_error_not_a_panic() {
        let count = cuda_device_count();
        let err = DeviceChoice::Cuda(count).resolve().unwrap_err().to_string();
        assert!(err.contains("--device cuda:"), "{err}");
    }
}
