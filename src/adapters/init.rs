//! Seeded parameter initialisation, so an adapter's start depends only on its config seed.

use burn::module::Param;
use burn::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A deterministic stream of initial values.
pub struct Init {
    rng: StdRng,
    device: Device,
}

impl Init {
    pub fn new(seed: u64, device: &Device) -> Self {
        Self { rng: StdRng::seed_from_u64(seed), device: device.clone() }
    }

    /// The device the values are put on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn param<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> Param<Tensor<D>> {
        Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), &self.device))
    }

    /// Uniform on `[-bound, bound)`.
    pub fn uniform<const D: usize>(&mut self, shape: [usize; D], bound: f64) -> Param<Tensor<D>> {
        let n = shape.iter().product();
        let values = (0..n).map(|_| self.rng.random_range(-bound..bound) as f32).collect();
        self.param(values, shape)
    }

    /// Normal with mean 0 (Box-Muller).
    pub fn normal<const D: usize>(&mut self, shape: [usize; D], std: f64) -> Param<Tensor<D>> {
        let n = shape.iter().product();
        let values = (0..n)
            .map(|_| {
                let u1: f64 = 1.0 - self.rng.random::<f64>();
                let u2: f64 = self.rng.random();
                (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect();
        self.param(values, shape)
    }

    pub fn constant<const D: usize>(&mut self, shape: [usize; D], value: f32) -> Param<Tensor<D>> {
        self.param(vec![value; shape.iter().product()], shape)
    }

    /// Ones on the main diagonal, zeros elsewhere (any shape).
    pub fn eye(&mut self, [rows, cols]: [usize; 2]) -> Param<Tensor<2>> {
        let values = (0..rows * cols).map(|i| if i / cols == i % cols { 1.0 } else { 0.0 }).collect();
        self.param(values, [rows, cols])
    }

    /// `torch.nn.Linear`'s weight init (Kaiming-uniform, `a = sqrt(5)`): bound `1 / sqrt(fan_in)`.
    pub fn kaiming<const D: usize>(&mut self, shape: [usize; D], fan_in: usize) -> Param<Tensor<D>> {
        self.uniform(shape, 1.0 / (fan_in as f64).sqrt())
    }
}
