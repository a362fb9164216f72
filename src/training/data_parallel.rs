//! Data parallel training: the micro-batches of one optimizer step spread over several devices,
//! one replica of the model on each, their gradients summed on the first device, which steps.
//!
//! A run's arithmetic does not depend on how many devices compute it: an optimizer step is
//! still `grad_accum` micro-batches of `batch_size`, each micro-batch with its own dropout seed,
//! and only where each one's forward and backward pass runs changes. So a run equals its
//! one-device version (up to the order of the gradient sum), and resumes on any device count.
//! Replica `r` takes micro-batches `r, r + n, r + 2n, ...` of each step, so `grad_accum` should
//! be a multiple of the device count for every device to be busy.
//!
//! The gradients reach the first device through burn's own transfer (`Tensor::to_device`), on
//! every backend. burn 0.22's collective `all_reduce` is implemented only by its CUDA runtime
//! (`flex`, `ndarray` and wgpu leave it unimplemented), so it is not the path here (docs/gpu.md).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;

use super::config::TrainConfig;
use super::trainer::Objective;
use crate::error::{Error, Result};

/// A device list the run can use: at least one device, and no more than an optimizer step has
/// micro-batches (a device beyond `grad_accum` would never compute).
pub fn check_devices(cfg: &TrainConfig, devices: &[Device]) -> Result<()> {
    match devices.len() {
        0 => Err(Error::Config("--device: no device given".into())),
        n if n > cfg.grad_accum => Err(Error::Config(format!(
            "--device lists {n} devices, but an optimizer step has only --grad-accum {} micro-batch(es): each device computes whole micro-batches, so set --grad-accum to a multiple of {n} (the batch per step is --batch-size x --grad-accum on any number of devices; docs/gpu.md)",
            cfg.grad_accum
        ))),
        _ => Ok(()),
    }
}

/// A micro-batch's forward and backward passes: its mean loss (detached) and the gradients of
/// the given multiple of it, computed by the given model on the given device.
pub type Forward<'a, M> = dyn Fn(&M, &Device, usize, f64) -> (Tensor<1>, GradientsParams) + Sync + 'a;

/// The model's copies on the devices after the first, kept equal to it after every step.
pub struct Replicas<M> {
    /// The replicas, with their devices; the model itself computes on `main`.
    others: Vec<(Device, M)>,
    main: Device,
    /// One lock per distinct device, taken around each micro-batch's passes: a forward pass seeds
    /// its device's random generator (dropout), so two replicas on one device take turns there.
    locks: Vec<Mutex<()>>,
    /// The lock each device slot (the main device first) takes.
    lock_of: Vec<usize>,
}

impl<M: Objective> Replicas<M> {
    /// `model` (on `devices[0]`) copied onto each later device; frozen weights are copied once
    /// here, trainable ones after each step ([`Replicas::refresh`]).
    pub fn new(model: &M, devices: &[Device]) -> Self {
        let lock_of: Vec<usize> = devices.iter().map(|d| devices.iter().position(|e| e == d).expect("the device itself")).collect();
        let others = devices[1..].iter().map(|d| (d.clone(), model.clone().fork(d))).collect();
        Replicas { others, main: devices[0].clone(), locks: devices.iter().map(|_| Mutex::new(())).collect(), lock_of }
    }

    /// How many devices compute.
    pub fn devices(&self) -> usize {
        self.others.len() + 1
    }

    /// The forward and backward passes of the micro-batches `range`, each loss scaled by
    /// `scale` before its backward pass: every micro-batch's (unscaled, detached) loss on the
    /// main device, in order, and the gradients summed on the main device.
    pub fn passes(&mut self, model: &M, range: Range<usize>, scale: f64, forward: &Forward<'_, M>) -> (Vec<Tensor<1>>, GradientsParams) {
        let (n, first) = (self.devices(), range.start);
        let share = |r: usize| range.clone().filter(move |i| (i - first) % n == r);
        let locks = (&self.locks, &self.lock_of);
        let pass = |replica: &M, device: &Device, slot: usize, i: usize| {
            // Whole passes: a backward pass that recomputes activations draws dropout masks too.
            let _turn = locks.0[locks.1[slot]].lock().unwrap_or_else(|e| e.into_inner());
            forward(replica, device, i, scale)
        };
        let run = |replica: &M, device: &Device, slot: usize| {
            let mut sum = GradientsAccumulator::<M>::new();
            let losses: Vec<(usize, Tensor<1>)> = share(slot)
                .map(|i| {
                    let (loss, grads) = pass(replica, device, slot, i);
                    sum.accumulate(replica, grads);
                    (i, loss)
                })
                .collect();
            (losses, sum.grads())
        };
        let others = std::mem::take(&mut self.others);
        let (mine, theirs) = std::thread::scope(|scope| {
            let handles: Vec<_> = others
                .into_iter()
                .enumerate()
                .map(|(r, (device, replica))| {
                    scope.spawn(move || {
                        let result = run(&replica, &device, r + 1);
                        (device, replica, result)
                    })
                })
                .collect();
            let mine = run(model, &self.main, 0);
            let theirs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect();
            (mine, theirs)
        });
        let (mut losses, grads) = mine;
        if theirs.is_empty() {
            // One device: its own sum is the step's, with no second pass over the parameters.
            return (losses.into_iter().map(|(_, l)| l).collect(), grads);
        }
        let mut total = GradientsAccumulator::<M>::new();
        total.accumulate(model, grads);
        for (device, replica, (replica_losses, replica_grads)) in theirs {
            losses.extend(replica_losses.into_iter().map(|(i, l)| (i, l.to_device(&self.main))));
            total.accumulate(model, replica_grads.to_device(&self.main, &replica));
            self.others.push((device, replica));
        }
        losses.sort_by_key(|(i, _)| *i);
        (losses.into_iter().map(|(_, l)| l).collect(), total.grads())
    }

    /// Copies `model`'s trainable parameters (just stepped) onto every replica.
    pub fn refresh(&mut self, model: &M) {
        if self.others.is_empty() {
            return;
        }
        let mut trainable = Trainable(HashMap::new());
        model.visit(&mut trainable);
        for (device, replica) in &mut self.others {
            let mut update = Update { values: &trainable.0, device };
            *replica = replica.clone().map(&mut update);
        }
    }
}

/// The trainable tensors of a module, flattened, by parameter id.
struct Trainable(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Trainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if value.is_require_grad() {
            let len = value.shape().num_elements();
            self.0.insert(param.id, value.reshape([len]));
        }
    }
}

/// Replaces each parameter found in `values` with that value on `device`, a new leaf of the
/// replica's own autodiff graph.
struct Update<'a> {
    values: &'a HashMap<ParamId, Tensor<1>>,
    device: &'a Device,
}

impl ModuleMapper for Update<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(value) = self.values.get(&param.id).cloned() else { return param };
        param.map(|old| value.to_device(self.device).reshape(old.shape()).detach().require_grad())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// `loss = sum((w * x + b)^2)` with `b` frozen.
    #[derive(Module, Debug)]
    struct Line {
        w: Param<Tensor<1>>,
        b: Param<Tensor<1>>,
    }

    impl Objective for Line {
        type Batch = f32;
        fn loss(&self, x: &f32, _: &Device) -> Tensor<1> {
            (self.w.val().mul_scalar(*x) + self.b.val()).powi_scalar(2).sum()
        }
        fn examples(_: &f32) -> usize {
            1
        }
    }

    fn line(device: &Device, w: [f32; 3]) -> Line {
        let w = Tensor::<1>::from_floats(w, device).require_grad();
        let b = Param::from_tensor(Tensor::from_floats([0.5, -1.0, 0.25], device)).set_require_grad(false);
        Line { w: Param::from_tensor(w), b }
    }

    fn values(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn two_replicas_compute_their_shares_on_their_own_threads_and_sum_what_one_device_does() {
        let device = Device::flex().autodiff();
        let model = line(&device, [1.0, 2.0, -3.0]);
        let batches = [0.5f32, -1.0, 2.0, 3.0];
        let threads = Mutex::new(HashSet::new());
        let forward = |m: &Line, d: &Device, i: usize, scale: f64| {
            threads.lock().unwrap().insert(std::thread::current().id());
            m.loss_and_gradients(&batches[i], d, scale, false)
        };
        let (one_losses, one_grads) = Replicas::new(&model, std::slice::from_ref(&device)).passes(&model, 0..4, 0.25, &forward);
        assert_eq!(threads.lock().unwrap().len(), 1);
        threads.lock().unwrap().clear();
        let mut two = Replicas::new(&model, &[device.clone(), device.clone()]);
        let (two_losses, two_grads) = two.passes(&model, 0..4, 0.25, &forward);
        assert_eq!(threads.lock().unwrap().len(), 2, "the second replica computes on its own thread");

        let losses = |l: Vec<Tensor<1>>| l.into_iter().flat_map(values).collect::<Vec<f32>>();
        assert_eq!(losses(one_losses), losses(two_losses), "each micro-batch's loss, in order");
        let (g1, g2) = (values(one_grads.get::<1>(model.w.id).unwrap()), values(two_grads.get::<1>(model.w.id).unwrap()));
        // d/dw of 0.25 * sum_x sum((w x + b)^2) = 0.5 * sum_x x (w x + b)
        let expected: Vec<f32> = (0..3)
            .map(|k| {
                let (w, b) = ([1.0f32, 2.0, -3.0][k], [0.5f32, -1.0, 0.25][k]);
                0.5 * batches.iter().map(|x| x * (w * x + b)).sum::<f32>()
            })
            .collect();
        for (a, b) in g1.iter().zip(&g2).chain(g1.iter().zip(&expected)) {
            assert!((a - b).abs() < 1e-5, "{g1:?} {g2:?} {expected:?}");
        }
        assert!(two_grads.get::<1>(model.b.id).is_none(), "a frozen parameter has no gradient");
    }

    #[test]
    fn a_refresh_copies_the_stepped_trainable_parameters_onto_every_replica() {
        let device = Device::flex().autodiff();
        let model = line(&device, [1.0, 2.0, 3.0]);
        let mut replicas = Replicas::new(&model, &[device.clone(), device.clone(), device.clone()]);
        let stepped = Line { w: Param::initialized(model.w.id, Tensor::from_floats([4.0, 5.0, 6.0], &device).require_grad()), ..model };
        replicas.refresh(&stepped);
        for (_, replica) in &replicas.others {
            assert_eq!(values(replica.w.val()), [4.0, 5.0, 6.0]);
            assert!(replica.w.val().is_require_grad(), "the replica's copy is a leaf it trains");
            assert_eq!(values(replica.b.val()), [0.5, -1.0, 0.25]);
        }
    }
}
