//! Deterministic, stratified dataset splits and training subsamples.
//!
//! Same dataset + same seed => same split on any machine: the permutations come from
//! `StdRng::seed_from_u64` (ChaCha) drawing `u64`s, independent of the platform's word size.
//! Each class is split on its own, so every split's class proportions follow the dataset's: a
//! class's count in a split is its ideal share rounded down or up (within one example); the
//! rounding is balanced across classes so that split sizes also stay near their ideal.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Dataset;
use crate::{Error, Result};

/// Fractions of a train/validation/test split and the seed that picks the examples.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitConfig {
    pub train: f64,
    pub validation: f64,
    pub test: f64,
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig { train: 0.7, validation: 0.15, test: 0.15, seed: 0 }
    }
}

impl SplitConfig {
    /// Checks that the fractions are in [0, 1], sum to 1, and leave some training data.
    pub fn validate(&self) -> Result<()> {
        let parts = [self.train, self.validation, self.test];
        if parts.iter().any(|f| !f.is_finite() || *f < 0.0 || *f > 1.0) || self.train <= 0.0 {
            return Err(Error::Config(format!(
                "--split fractions must lie in [0, 1] with train > 0; got train {}, validation {}, test {}",
                self.train, self.validation, self.test
            )));
        }
        let sum: f64 = parts.iter().sum();
        if (sum - 1.0).abs() > 1e-6 {
            return Err(Error::Config(format!(
                "--split fractions must sum to 1; train {} + validation {} + test {} = {sum}",
                self.train, self.validation, self.test
            )));
        }
        Ok(())
    }
}

/// A dataset's train, validation and test parts (each in the dataset's order, each with the
/// dataset's full label set).
#[derive(Clone, Debug)]
pub struct Splits {
    pub train: Dataset,
    pub validation: Dataset,
    pub test: Dataset,
    /// The seed the split was made with; [`Splits::train_fraction`] reuses it.
    pub seed: u64,
}

impl Splits {
    /// A stratified subsample of the training split holding `fraction` of it (at least one
    /// example per class), for sample-efficiency runs. See [`Dataset::stratified_sample`].
    pub fn train_fraction(&self, fraction: f64) -> Result<Dataset> {
        self.train.stratified_sample(fraction, self.seed)
    }

    /// Errors if the validation or the test split is empty: metrics over no examples would read
    /// as 0 (and the best epoch would be picked by nothing). Names the labels with the fewest
    /// examples, the usual cause, since each label is split on its own.
    pub fn check_evaluable(&self) -> Result<()> {
        for (name, part) in [("validation", &self.validation), ("test", &self.test)] {
            if !part.is_empty() {
                continue;
            }
            let mut counts: Vec<(usize, &str)> = [&self.train, &self.validation, &self.test]
                .iter()
                .map(|p| p.class_counts())
                .fold(vec![0; self.train.labels.len()], |acc, c| acc.iter().zip(c).map(|(a, b)| a + b).collect())
                .into_iter()
                .zip(self.train.labels.iter().map(String::as_str))
                .collect();
            counts.sort();
            let few: Vec<String> = counts.iter().take(5).map(|(n, l)| format!("{l:?} ({n})")).collect();
            let more = if counts.len() > 5 { format!(" and {} more", counts.len() - 5) } else { String::new() };
            return Err(Error::Config(format!(
                "the {name} split is empty: the split is stratified (each label is divided on its own) and the labels have too few \
                 examples for it; fewest: {}{more}. Add examples per label or give the {name} split a larger fraction with --split",
                few.join(", ")
            )));
        }
        Ok(())
    }
}

/// Shuffles `items` (Fisher-Yates) with draws that are the same on every platform.
pub(crate) fn shuffle<T>(items: &mut [T], rng: &mut StdRng) {
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i as u64) as usize;
        items.swap(i, j);
    }
}

/// Example indices of each class (by class id), in dataset order.
fn by_class(dataset: &Dataset) -> Vec<Vec<usize>> {
    let mut classes = vec![Vec::new(); dataset.labels.len()];
    for (i, id) in dataset.label_ids().into_iter().enumerate() {
        classes[id].push(i);
    }
    classes
}

/// Seeds for the different uses of one user seed, so that they draw independent streams.
const SPLIT_STREAM: u64 = 0x5350_4c49_5400_0001;
const SAMPLE_STREAM: u64 = 0x5341_4d50_4c45_0002;

impl Dataset {
    /// Splits the dataset into train/validation/test, stratified by label.
    pub fn split(&self, config: &SplitConfig) -> Result<Splits> {
        config.validate()?;
        if self.is_empty() {
            return Err(Error::Config("cannot split an empty dataset".into()));
        }
        let fractions = [config.train, config.validation, config.test];
        let mut rng = StdRng::seed_from_u64(config.seed ^ SPLIT_STREAM);
        let mut parts: [Vec<usize>; 3] = Default::default();
        let mut carry = [0.0f64; 3];
        for mut indices in by_class(self) {
            shuffle(&mut indices, &mut rng);
            let counts = apportion(indices.len(), &fractions, &mut carry);
            let mut rest = indices.as_slice();
            for (part, count) in parts.iter_mut().zip(counts) {
                part.extend_from_slice(&rest[..count]);
                rest = &rest[count..];
            }
        }
        let [train, validation, test] = parts.map(|mut p| {
            p.sort_unstable();
            self.subset(&p)
        });
        Ok(Splits { train, validation, test, seed: config.seed })
    }

    /// A stratified subsample with `fraction` (in (0, 1]) of each class, rounded, and at least
    /// one example of every class that has any. Deterministic in `seed`; for one seed, a smaller
    /// fraction's sample is contained in a larger one's.
    pub fn stratified_sample(&self, fraction: f64, seed: u64) -> Result<Dataset> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(Error::Config(format!("a training fraction must lie in (0, 1]; got {fraction}")));
        }
        let mut rng = StdRng::seed_from_u64(seed ^ SAMPLE_STREAM);
        let mut chosen = Vec::new();
        for mut indices in by_class(self) {
            shuffle(&mut indices, &mut rng);
            let n = indices.len();
            let k = ((fraction * n as f64).round() as usize).clamp(n.min(1), n);
            chosen.extend_from_slice(&indices[..k]);
        }
        chosen.sort_unstable();
        Ok(self.subset(&chosen))
    }
}

/// Splits `n` examples of one class by `fractions`: each count is its ideal share rounded down
/// or up, the counts sum to `n`, the first part gets at least one example, and the rounding
/// goes where earlier classes rounded down the most (`carry`, updated).
fn apportion(n: usize, fractions: &[f64; 3], carry: &mut [f64; 3]) -> [usize; 3] {
    let ideal = fractions.map(|f| f * n as f64);
    let mut counts = ideal.map(|x| (x + 1e-9).floor() as usize);
    let left = n - counts.iter().sum::<usize>().min(n);
    let mut order: Vec<usize> = (0..3).filter(|&k| fractions[k] > 0.0).collect();
    order.sort_by(|&a, &b| {
        let score = |k: usize| ideal[k] - counts[k] as f64 + carry[k];
        score(b).total_cmp(&score(a)).then(a.cmp(&b))
    });
    for &k in order.iter().cycle().take(left) {
        counts[k] += 1;
    }
    if n > 0 && counts[0] == 0 {
        // Every class must reach training: take one from the part with the largest surplus.
        let from = (1..3)
            .filter(|&k| counts[k] > 0)
            .max_by(|&a, &b| (counts[a] as f64 - ideal[a]).total_cmp(&(counts[b] as f64 - ideal[b])).then(b.cmp(&a)));
        if let Some(from) = from {
            counts[from] -= 1;
            counts[0] += 1;
        }
    }
    for k in 0..3 {
        carry[k] += ideal[k] - counts[k] as f64;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::super::Example;
    use super::*;

    /// 3 classes of 50, 33 and 7 examples.
    fn toy() -> Dataset {
        let mut examples = Vec::new();
        for (label, n) in [("a", 50), ("b", 33), ("c", 7)] {
            for i in 0..n {
                examples.push(Example::new(format!("{label} {i}"), label));
            }
        }
        // Interleave so that classes are not contiguous.
        examples.sort_by_key(|e| e.text.split(' ').nth(1).unwrap().parse::<usize>().unwrap());
        Dataset::new(examples).unwrap()
    }

    #[test]
    fn split_is_deterministic_and_seed_dependent() {
        let ds = toy();
        let a = ds.split(&SplitConfig::default()).unwrap();
        let b = ds.split(&SplitConfig::default()).unwrap();
        assert_eq!(a.train, b.train);
        assert_eq!(a.validation, b.validation);
        assert_eq!(a.test, b.test);
        let c = ds.split(&SplitConfig { seed: 1, ..Default::default() }).unwrap();
        assert_ne!(a.train, c.train);
    }

    #[test]
    fn split_is_a_partition() {
        let ds = toy();
        let s = ds.split(&SplitConfig::default()).unwrap();
        let mut all: Vec<&Example> = s.train.examples.iter().chain(&s.validation.examples).chain(&s.test.examples).collect();
        assert_eq!(all.len(), ds.len());
        all.sort_by(|x, y| x.text.cmp(&y.text));
        all.dedup();
        assert_eq!(all.len(), ds.len());
        for part in [&s.train, &s.validation, &s.test] {
            assert_eq!(part.labels, ds.labels);
        }
    }

    /// A fixed seed gives the same split on every machine and build: the first training texts
    /// are pinned here (change only on purpose).
    #[test]
    fn split_is_pinned() {
        let s = toy().split(&SplitConfig { seed: 42, ..Default::default() }).unwrap();
        let head: Vec<&str> = s.test.examples.iter().take(5).map(|e| e.text.as_str()).collect();
        assert_eq!(head, PINNED_TEST_HEAD);
    }
    const PINNED_TEST_HEAD: [&str; 5] = ["c 1", "b 3", "a 4", "a 5", "a 20"];

    #[test]
    fn split_is_stratified() {
        let ds = toy();
        for seed in 0..20 {
            for config in [
                SplitConfig { seed, ..Default::default() },
                SplitConfig { train: 0.8, validation: 0.1, test: 0.1, seed },
                SplitConfig { train: 0.5, validation: 0.5, test: 0.0, seed },
            ] {
                let s = ds.split(&config).unwrap();
                let fractions = [config.train, config.validation, config.test];
                let mut total = 0;
                for (part, f) in [&s.train, &s.validation, &s.test].into_iter().zip(fractions) {
                    for (count, class_n) in part.class_counts().into_iter().zip(ds.class_counts()) {
                        let ideal = f * class_n as f64;
                        assert!((count as f64 - ideal).abs() <= 1.0, "seed {seed} {config:?}: {count} vs ideal {ideal}");
                    }
                    let ideal = f * ds.len() as f64;
                    assert!((part.len() as f64 - ideal).abs() <= 1.5, "seed {seed}: split size {} vs {ideal}", part.len());
                    total += part.len();
                }
                assert_eq!(total, ds.len());
                assert_eq!(s.test.len() + s.validation.len() + s.train.len(), ds.len());
                if config.test == 0.0 {
                    assert!(s.test.is_empty());
                }
            }
        }
    }

    #[test]
    fn tiny_classes_reach_training() {
        let examples =
            vec![Example::new("x", "rare"), Example::new("y", "rare2"), Example::new("z", "common"), Example::new("w", "common")];
        let ds = Dataset::new(examples).unwrap();
        let s = ds.split(&SplitConfig { train: 0.2, validation: 0.4, test: 0.4, seed: 3 }).unwrap();
        assert!(s.train.class_counts().iter().all(|&c| c >= 1), "{:?}", s.train.class_counts());
    }

    #[test]
    fn labels_seen_once_leave_no_validation_data_and_are_named() {
        let examples: Vec<Example> = (0..12).map(|i| Example::new(format!("t{i}"), format!("label{i}"))).collect();
        let s = Dataset::new(examples).unwrap().split(&SplitConfig::default()).unwrap();
        assert!(s.validation.is_empty());
        let e = s.check_evaluable().unwrap_err().to_string();
        assert!(e.contains("validation split is empty") && e.contains("\"label0\" (1)") && e.contains("--split"), "{e}");
        assert!(toy().split(&SplitConfig::default()).unwrap().check_evaluable().is_ok());
    }

    #[test]
    fn invalid_fractions_are_rejected() {
        let ds = toy();
        for config in [
            SplitConfig { train: 0.7, validation: 0.2, test: 0.2, seed: 0 },
            SplitConfig { train: 0.0, validation: 0.5, test: 0.5, seed: 0 },
            SplitConfig { train: 1.2, validation: -0.1, test: -0.1, seed: 0 },
            SplitConfig { train: f64::NAN, validation: 0.0, test: 0.0, seed: 0 },
        ] {
            assert!(matches!(ds.split(&config), Err(Error::Config(_))), "{config:?}");
        }
    }

    #[test]
    fn train_fraction_is_stratified_nested_and_covers_every_class() {
        let ds = toy();
        let s = ds.split(&SplitConfig::default()).unwrap();
        let train_counts = s.train.class_counts();
        let mut previous: Option<Dataset> = None;
        for f in [0.01, 0.1, 0.25, 0.5, 1.0] {
            let sub = s.train_fraction(f).unwrap();
            assert_eq!(sub, s.train_fraction(f).unwrap(), "deterministic");
            for (count, n) in sub.class_counts().into_iter().zip(&train_counts) {
                assert!(count >= 1);
                assert!((count as f64 - (f * *n as f64).max(1.0)).abs() <= 1.0, "f {f}: {count} of {n}");
            }
            if let Some(prev) = previous {
                assert!(prev.examples.iter().all(|e| sub.examples.contains(e)), "f {f}: samples are nested");
            }
            previous = Some(sub);
        }
        assert_eq!(s.train_fraction(1.0).unwrap(), s.train);
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            assert!(matches!(s.train_fraction(bad), Err(Error::Config(_))), "{bad}");
        }
    }
}
