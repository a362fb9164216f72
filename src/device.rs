//! Which device computes: `--device cpu | wgpu[:N] | vulkan[:N] | cuda[:N] | rocm[:N] | metal[:N]`.
//!
//! The CPU is burn's `flex` backend, always built; each GPU backend is a cargo feature of the
//! same name forwarding to burn's (docs/gpu.md). A [`DeviceSpec`] only names a device;
//! [`DeviceSpec::open`] checks that its backend is compiled in and that the device exists, so a
//! command can fail on a bad `--device` before it writes anything. Nothing in a run directory
//! depends on the device: weights and checkpoints are written from host f32 values.

use std::fmt;
use std::str::FromStr;

use burn::prelude::Device;

use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::precision::Precision;

crate::choice_enum! {
    /// A compute backend `--device` can name; its name is also the cargo feature that builds
    /// it (not for `cpu`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Backend: "device" {
        /// burn's `flex` CPU backend (with replora's fused kernels).
        Cpu => "cpu",
        /// wgpu, the graphics API chosen by the driver (WGSL shaders through naga).
        Wgpu => "wgpu",
        /// wgpu pinned to Vulkan (cubecl's SPIR-V compiler).
        Vulkan => "vulkan",
        /// NVIDIA CUDA.
        Cuda => "cuda",
        /// AMD ROCm (HIP).
        Rocm => "rocm",
        /// Apple Metal (through wgpu).
        Metal => "metal",
    }
}

impl Backend {
    /// Whether this build has the backend (its cargo feature was on).
    pub fn compiled_in(self) -> bool {
        match self {
            Backend::Cpu => true,
            Backend::Wgpu => cfg!(feature = "wgpu"),
            Backend::Vulkan => cfg!(feature = "vulkan"),
            Backend::Cuda => cfg!(feature = "cuda"),
            Backend::Rocm => cfg!(feature = "rocm"),
            Backend::Metal => cfg!(feature = "metal"),
        }
    }
}

/// A device as `--device` names it: a backend and, for a GPU, which of its devices (the first
/// when no index is given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    pub backend: Backend,
    pub index: Option<usize>,
}

impl DeviceSpec {
    /// The CPU (`--device cpu`, the default).
    pub const CPU: DeviceSpec = DeviceSpec { backend: Backend::Cpu, index: None };

    /// The burn device, or why it cannot be used: its backend is not compiled in (the error
    /// names the cargo feature), or this machine has no such device.
    pub fn open(&self) -> Result<Device> {
        let backend = self.backend;
        if !backend.compiled_in() {
            let name = backend.name();
            return Err(Error::Config(format!(
                "--device {self}: this replora was built without the {name} backend; rebuild it with `cargo build --release --features {name}` (docs/gpu.md)"
            )));
        }
        if backend == Backend::Cpu {
            return Ok(Device::flex());
        }
        // Listing a backend's devices loads its driver, which some runtimes report by panicking.
        let listed = std::panic::catch_unwind(|| gpu::enumerate(backend));
        let devices = match listed {
            Ok(devices) => devices,
            Err(panic) => {
                let why = panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied());
                return Err(Error::Config(format!(
                    "--device {self}: the {} runtime could not list its devices: {}",
                    backend.name(),
                    why.unwrap_or("its driver failed to load")
                )));
            }
        };
        let index = self.index.unwrap_or(0);
        let count = devices.len();
        devices.into_iter().nth(index).ok_or_else(|| {
            let hint = match backend {
                Backend::Wgpu | Backend::Vulkan => " (without a GPU, Mesa's lavapipe gives one: scripts/gpu-lavapipe)",
                _ => "",
            };
            Error::Config(match count {
                0 => format!("--device {self}: this machine has no {} device{hint}", backend.name()),
                n => format!("--device {self}: no device {index}; this machine has {n} {} device(s), 0 to {}", backend.name(), n - 1),
            })
        })
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}:{i}", self.backend.name()),
            None => f.write_str(self.backend.name()),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let names = Backend::names().join(", ");
        let (name, index) = match s.split_once(':') {
            Some((name, index)) => (name, Some(index)),
            None => (s, None),
        };
        let backend = Backend::from_name(name.trim())
            .ok_or_else(|| Error::Config(format!("unknown device {name:?}: expected one of {names}, with an optional :INDEX (wgpu:1)")))?;
        let index = match index {
            None => None,
            Some(_) if backend == Backend::Cpu => {
                return Err(Error::Config(format!("{s:?}: the CPU takes no device index; give `cpu`")));
            }
            Some(i) => {
                Some(i.trim().parse::<usize>().map_err(|_| Error::Config(format!("{s:?}: {i:?} is not a device index (0, 1, ...)")))?)
            }
        };
        Ok(DeviceSpec { backend, index })
    }
}

/// Checks that every device can run its products in `precision` (`--precision`), before a
/// command writes anything: the CPU's fused kernels multiply in f32, and a GPU backend must have
/// arithmetic in the dtype (burn's `Device::supports_dtype`: wgpu's WGSL has no bf16, for
/// one).
pub fn check_precision(precision: Precision, specs: &[DeviceSpec], devices: &[Device]) -> Result<()> {
    if precision == Precision::F32 {
        return Ok(());
    }
    let name = precision.name();
    if let Some(cpu) = specs.iter().find(|s| s.backend == Backend::Cpu) {
        return Err(Error::Config(format!(
            "--precision {name}: --device {cpu} multiplies in f32 (the CPU kernels have no 16-bit arithmetic); {name} products need a GPU backend. `--quantize {name}` holds the base in {name} here, which halves its memory"
        )));
    }
    if let Some((spec, _)) = specs.iter().zip(devices).find(|(_, d)| !d.supports_dtype(precision.dtype())) {
        return Err(Error::Config(format!(
            "--precision {name}: --device {spec} has no {name} arithmetic (burn reports it storable at most); use {} or f32",
            if precision == Precision::Bf16 { "f16" } else { "bf16" }
        )));
    }
    Ok(())
}

/// Checks the devices of a training command (`--device cuda:0,cuda:1`: one model replica trains
/// on each, data parallel, `training::data_parallel`): all of one backend. A device may be
/// listed twice (two replicas take turns on it: the tests' way to run data parallel without two
/// devices).
pub fn check_list(specs: &[DeviceSpec]) -> Result<()> {
    let Some(first) = specs.first() else { return Err(Error::Config("--device: no device given".into())) };
    match specs.iter().find(|s| s.backend != first.backend) {
        Some(other) => Err(Error::Config(format!(
            "--device: data parallel devices must all be of one backend ({} and {} are not)",
            first.backend.name(),
            other.backend.name()
        ))),
        None => Ok(()),
    }
}

/// The GPU backends' device lists, in burn's order (the `N` of `wgpu:N`).
#[cfg(any(feature = "wgpu", feature = "cuda", feature = "rocm"))]
mod gpu {
    use burn::tensor::{Device, DeviceType};

    use super::Backend;

    pub fn enumerate(backend: Backend) -> Vec<Device> {
        let kind = match backend {
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => DeviceType::Wgpu,
            #[cfg(feature = "vulkan")]
            Backend::Vulkan => DeviceType::Vulkan,
            #[cfg(feature = "cuda")]
            Backend::Cuda => DeviceType::Cuda,
            #[cfg(feature = "rocm")]
            Backend::Rocm => DeviceType::Rocm,
            #[cfg(feature = "metal")]
            Backend::Metal => DeviceType::Metal,
            // The caller checked that the backend is compiled in; the CPU is not listed.
            _ => return vec![],
        };
        Device::enumerate(kind).into_vec()
    }
}

/// Without a GPU backend there is no device to list.
#[cfg(not(any(feature = "wgpu", feature = "cuda", feature = "rocm")))]
mod gpu {
    pub fn enumerate(_: super::Backend) -> Vec<burn::tensor::Device> {
        vec![]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_backend_with_and_without_an_index() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::CPU);
        assert_eq!("wgpu".parse::<DeviceSpec>().unwrap(), DeviceSpec { backend: Backend::Wgpu, index: None });
        assert_eq!("cuda:1".parse::<DeviceSpec>().unwrap(), DeviceSpec { backend: Backend::Cuda, index: Some(1) });
        for &backend in Backend::ALL {
            let spec: DeviceSpec = backend.name().parse().unwrap();
            assert_eq!(spec.backend, backend);
            assert_eq!(spec.to_string(), backend.name());
        }
        assert_eq!("vulkan:2".parse::<DeviceSpec>().unwrap().to_string(), "vulkan:2");
    }

    #[test]
    fn refuses_bad_names_and_indices_with_the_choices() {
        let err = |s: &str| s.parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(err("gpu").contains("expected one of cpu, wgpu, vulkan, cuda, rocm, metal"), "{}", err("gpu"));
        assert!(err("cuda:x").contains("\"x\" is not a device index"), "{}", err("cuda:x"));
        assert!(err("cuda:-1").contains("is not a device index"), "{}", err("cuda:-1"));
        assert!(err("cpu:0").contains("the CPU takes no device index"), "{}", err("cpu:0"));
        assert!(err("").contains("unknown device"), "{}", err(""));
    }

    #[test]
    fn a_device_list_is_of_one_backend() {
        let cuda = |i| DeviceSpec { backend: Backend::Cuda, index: Some(i) };
        assert!(check_list(&[DeviceSpec::CPU, DeviceSpec::CPU]).is_ok());
        assert!(check_list(&[cuda(0), cuda(1)]).is_ok());
        let e = check_list(&[DeviceSpec::CPU, cuda(0)]).unwrap_err().to_string();
        assert!(e.contains("must all be of one backend (cpu and cuda are not)"), "{e}");
        assert!(check_list(&[]).unwrap_err().to_string().contains("no device"));
    }

    #[test]
    fn the_cpu_opens_to_flex() {
        assert_eq!(DeviceSpec::CPU.open().unwrap(), Device::flex());
    }

    #[test]
    fn a_backend_not_compiled_in_names_its_cargo_feature() {
        for backend in Backend::ALL.iter().copied().filter(|b| !b.compiled_in()) {
            let e = DeviceSpec { backend, index: None }.open().unwrap_err().to_string();
            assert!(e.contains(&format!("--features {}", backend.name())), "{e}");
        }
    }
}
