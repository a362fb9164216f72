//! Issue 27: a run frozen at the majority class after one gradient spike, and the default that
//! avoids it (`beta_2 = 0.99`).
//!
//! On MiniLM (docs/study/collapse.md) the adapters' gradient norm rose about 25-fold within 10
//! steps as the model began to learn (RepLoRA's generators: 0.02 -> 0.51), the next step sent
//! the loss back to ln 2, and the update norm then moved by 0.001 in 210 steps. AdamW divides
//! each step by the root of its second-moment average. At `beta_2 = 0.999` (e7480c6's default)
//! that average still holds the small gradients from before the spike when it comes, so the
//! steps along the spike's direction grow to nearly twice the learning rate, one oversized jump;
//! afterwards it remembers the spike for about a thousand steps, so every later step is a
//! fraction of the learning rate and the run cannot leave the flat region it was knocked into.
//! At 0.99 (about 100 steps of memory) the steps come back within the run; at 0.95 (about 20)
//! they stay at the learning rate through the spike. This test replays that gradient pattern
//! through the trainer's own optimizer, built from a `TrainConfig` as every run builds it; the
//! end-to-end reproduction (3 seeds per setting, about 15 minutes) is
//! `scripts/study/collapse-hyperbaton`.

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use replora::training::TrainConfig;
use replora::training::trainer::optimizer;

#[derive(Module, Debug)]
struct Weights {
    w: Param<Tensor<1>>,
}

const D: usize = 256;
const LR: f64 = 2e-3;
const BEFORE: usize = 70;
const SPIKE: usize = 10;
const AFTER: usize = 300;

/// Mean `|step| / lr` per coordinate at each optimizer step, for gradients of norm 0.02 with
/// random signs, except `SPIKE` steps after the first `BEFORE`, 25 times as large and all in one
/// direction (the signal the model starts to learn).
fn step_sizes(cfg: &TrainConfig) -> Vec<f64> {
    let device = Device::flex().autodiff();
    let mut model = Weights { w: Param::from_tensor(Tensor::zeros([D], &device)) };
    let mut optim = optimizer(cfg, vec![]);
    let mut state = 7u64;
    let mut random_signs = || -> Vec<f32> {
        (0..D)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if state >> 63 == 1 { 1.0 } else { -1.0 }
            })
            .collect()
    };
    let direction = random_signs();
    let mut sizes = vec![];
    for step in 0..BEFORE + SPIKE + AFTER {
        let (norm, signs) = if (BEFORE..BEFORE + SPIKE).contains(&step) { (0.5, direction.clone()) } else { (0.02, random_signs()) };
        let grad: Vec<f32> = signs.iter().map(|s| s * norm / (D as f32).sqrt()).collect();
        let before: Vec<f32> = model.w.val().into_data().try_to_vec().unwrap();
        let mut grads = GradientsParams::new();
        grads.register(model.w.id, Tensor::<1>::from_data(TensorData::new(grad, [D]), &device));
        model = optim.step(LR, model, grads);
        let after: Vec<f32> = model.w.val().into_data().try_to_vec().unwrap();
        sizes.push(after.iter().zip(&before).map(|(a, b)| ((a - b) as f64).abs()).sum::<f64>() / D as f64 / LR);
    }
    sizes
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Step sizes (as `step / lr`) under `cfg`: before the spike (its last 30 steps), the largest
/// during it, 100-150 steps after it, and 250-300 steps after it.
fn around_the_spike(cfg: &TrainConfig) -> [f64; 4] {
    let sizes = step_sizes(cfg);
    let end = BEFORE + SPIKE;
    let largest = sizes[BEFORE..end].iter().copied().fold(0.0, f64::max);
    let [before, during, after, late] =
        [mean(&sizes[BEFORE - 30..BEFORE]), largest, mean(&sizes[end + 100..end + 150]), mean(&sizes[end + 250..end + AFTER])];
    eprintln!(
        "beta_2 {}: step / lr {before:.3} before the spike, up to {during:.2} in it, {after:.3} 100-150 steps after, {late:.3} 250-300 after",
        cfg.adam_beta2
    );
    [before, during, after, late]
}

/// The default (0.99) forgets the spike about ten times sooner than e7480c6's 0.999, and this
/// test fails on 0.999. In this replay that shows late: 250-300 steps after the spike, the
/// steps are back to 44% of their size before it at 0.99 and at 23% at 0.999 (100-150 steps
/// after, both are near 20%; the jump itself is 1.56 x lr against 1.80). End to end, on the
/// reproduction (352 steps, the spike near step 90), that was the difference between learning
/// and sitting at the majority class for the rest of the run: 0.99 learned all three seeds
/// (docs/study/collapse.md). 0.95 recovers fastest but costs accuracy wherever nothing
/// collapses, so it is the remedy the collapse warning names, not the default.
#[test]
fn at_the_default_beta2_the_optimizer_recovers_from_a_gradient_spike() {
    let default = TrainConfig::default();
    let [_, during, _, late] = around_the_spike(&default);
    let old = TrainConfig { adam_beta2: 0.999, ..TrainConfig::default() };
    let [old_before, old_during, old_after, old_late] = around_the_spike(&old);
    assert!(old_during > 1.5 && old_after < 0.3 * old_before, "beta_2 0.999 did not jump and freeze: {old_during:.2}, {old_after:.3}");
    assert!(
        late > 1.5 * old_late && during < old_during,
        "beta_2 {}: {late:.3} x lr 250-300 steps after the spike (0.999: {old_late:.3}), a jump of {during:.2} (0.999: {old_during:.2})",
        default.adam_beta2
    );

    let remedy = TrainConfig { adam_beta2: 0.95, ..TrainConfig::default() };
    let [before, during, after, _] = around_the_spike(&remedy);
    assert!(during < 1.2 && after > 0.7 * before, "beta_2 0.95: {during:.2} x lr in the spike, then {after:.3} vs {before:.3}");
}

/// `--update-clip true` keeps beta_2 0.999 and caps the jump instead: each tensor's step is cut
/// to RMS 1, so the spike moves no coordinate further than the learning rate on average. It does
/// not shorten the memory, so the steps after the spike stay small, as at plain 0.999; end to end
/// that is not enough: RepLoRA's seed 0 of the reproduction still collapses with it
/// (docs/study/collapse.md), so the memory after the spike, not the jump's size, decides.
#[test]
fn update_clipping_caps_the_jump_at_the_learning_rate() {
    let plain = TrainConfig { adam_beta2: 0.999, ..TrainConfig::default() };
    let clipped = TrainConfig { update_clip: true, ..plain.clone() };
    let [before, during, after, _] = around_the_spike(&clipped);
    assert!(during <= 1.0 + 1e-3, "a step of {during:.3} x lr along the spike");
    assert!(after < 0.3 * before, "the memory of the spike is beta_2's: {after:.3} vs {before:.3}");
    let [plain_before, ..] = around_the_spike(&plain);
    assert!((before - plain_before).abs() < 0.02 * plain_before, "clipping changed the steady steps: {before:.3} vs {plain_before:.3}");
}
