//! The VTAB-1k-style protocol: which images of a source make the train, validation and test sets.
//!
//! - **test**: a fixed set, the same for every seed: a stratified draw with a constant seed from
//!   the source's test pool, or, for a source without one, from its single pool (whose remaining
//!   images are then the training pool).
//! - **train** and **validation**: disjoint stratified draws from the training pool with the
//!   protocol's seed (validation from the source's validation pool where it has one).
//!
//! A stratified draw of `n` takes from each class its share of `n` in proportion to the class's
//! size in the pool (largest remainders get the rounding), picked by a seeded shuffle, so that
//! the class balance follows the pool's. The draws use `StdRng::seed_from_u64` and the dataset
//! splits' platform-independent shuffle: the same on every machine.

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::sources::{Pool, Source};
use crate::data::split::shuffle;
use crate::{Error, Result};

/// How many images each split takes and the seed of the train/validation draw. The test set
/// does not depend on the seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protocol {
    pub train: usize,
    pub validation: usize,
    pub test: usize,
    pub seed: u64,
}

impl Default for Protocol {
    /// VTAB-1k: 800 training and 200 validation images; 2,000 test images.
    fn default() -> Self {
        Protocol { train: 800, validation: 200, test: 2000, seed: 0 }
    }
}

/// The seed of the test draw: a constant, so that every seed is scored on the same images.
const TEST_SEED: u64 = 0x5445_5354_0000_0001;
/// Keeps the train/validation stream apart from other uses of the same user seed.
const DRAW_STREAM: u64 = 0x494d_4147_4500_0002;

/// The indices (into `pool`, ascending) one split takes.
#[derive(Debug)]
pub(super) struct Selection<'a> {
    pub pool: &'a Pool,
    pub indices: Vec<usize>,
}

/// The train, validation and test selections of `source` under `protocol`.
pub(super) fn plan<'a>(source: &'a Source, protocol: &Protocol) -> Result<[Selection<'a>; 3]> {
    if protocol.train == 0 {
        return Err(Error::Config("the protocol needs at least one training image (--train-images)".into()));
    }
    let classes = source.labels.len();
    let too_many = |what: &str, asked: usize, pool: &str, have: usize| {
        Error::Config(format!(
            "{}: the protocol asks for {asked} {what} but {pool} has {have}; choose fewer with \
             --train-images/--val-images/--test-images (now {}/{}/{})",
            source.name, protocol.train, protocol.validation, protocol.test
        ))
    };

    let mut fixed = StdRng::seed_from_u64(TEST_SEED);
    let (test, rest) = match &source.test {
        Some(pool) => {
            if protocol.test > pool.len() {
                return Err(too_many("test images", protocol.test, "its test pool", pool.len()));
            }
            (Selection { pool, indices: draw(pool, &all(pool), protocol.test, classes, &mut fixed) }, all(&source.train))
        }
        None => {
            let pool = &source.train;
            let asked = protocol.test + protocol.train + protocol.validation;
            if asked > pool.len() {
                return Err(too_many("images in all (test + train + validation)", asked, "the source", pool.len()));
            }
            let test = draw(pool, &all(pool), protocol.test, classes, &mut fixed);
            let rest = without(&all(pool), &test);
            (Selection { pool, indices: test }, rest)
        }
    };

    let mut rng = StdRng::seed_from_u64(protocol.seed ^ DRAW_STREAM);
    let train_pool = &source.train;
    let (train, validation) = match &source.validation {
        Some(pool) => {
            if protocol.train > rest.len() {
                return Err(too_many("training images", protocol.train, "the training pool", rest.len()));
            }
            if protocol.validation > pool.len() {
                return Err(too_many("validation images", protocol.validation, "the validation pool", pool.len()));
            }
            let train = draw(train_pool, &rest, protocol.train, classes, &mut rng);
            (train, Selection { pool, indices: draw(pool, &all(pool), protocol.validation, classes, &mut rng) })
        }
        None => {
            if protocol.train + protocol.validation > rest.len() {
                return Err(too_many(
                    "training + validation images",
                    protocol.train + protocol.validation,
                    "the training pool",
                    rest.len(),
                ));
            }
            let train = draw(train_pool, &rest, protocol.train, classes, &mut rng);
            let left = without(&rest, &train);
            let validation = draw(train_pool, &left, protocol.validation, classes, &mut rng);
            (train, Selection { pool: train_pool, indices: validation })
        }
    };
    Ok([Selection { pool: train_pool, indices: train }, validation, test])
}

fn all(pool: &Pool) -> Vec<usize> {
    (0..pool.len()).collect()
}

/// `from` without the (ascending) indices of `taken`.
fn without(from: &[usize], taken: &[usize]) -> Vec<usize> {
    from.iter().copied().filter(|i| taken.binary_search(i).is_err()).collect()
}

/// A stratified draw of `n` of the `candidates` (`n <= candidates.len()`), returned ascending.
fn draw(pool: &Pool, candidates: &[usize], n: usize, classes: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut by_class = vec![Vec::new(); classes];
    for &i in candidates {
        by_class[pool.targets[i]].push(i);
    }
    for members in &mut by_class {
        shuffle(members, rng);
    }
    let total = candidates.len().max(1);
    let mut counts: Vec<usize> = by_class.iter().map(|m| n * m.len() / total).collect();
    // The rounding goes to the largest remainders (ties: lower class id); a class with a
    // remainder always has room for one more.
    let mut order: Vec<usize> = (0..classes).collect();
    order.sort_by_key(|&k| (std::cmp::Reverse(n * by_class[k].len() % total), k));
    let missing = n - counts.iter().sum::<usize>();
    for &k in order.iter().take(missing) {
        counts[k] += 1;
    }
    let mut chosen: Vec<usize> = by_class.iter().zip(&counts).flat_map(|(m, &c)| m[..c].iter().copied()).collect();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::super::sources::Item;
    use super::*;

    /// A pool with `counts[k]` images of class `k`, interleaved.
    fn pool(counts: &[usize]) -> Pool {
        let mut targets = Vec::new();
        let max = counts.iter().max().copied().unwrap_or(0);
        for i in 0..max {
            for (k, &c) in counts.iter().enumerate() {
                if i < c {
                    targets.push(k);
                }
            }
        }
        Pool { items: targets.iter().map(|_| Item::File("x.png".into())).collect(), targets }
    }

    fn source(train: Pool, validation: Option<Pool>, test: Option<Pool>, classes: usize) -> Source {
        Source { name: "toy".into(), labels: (0..classes).map(|k| format!("c{k}")).collect(), train, validation, test }
    }

    fn class_counts(selection: &Selection, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &i in &selection.indices {
            counts[selection.pool.targets[i]] += 1;
        }
        counts
    }

    #[test]
    fn draw_is_stratified_and_exact() {
        let p = pool(&[500, 300, 200]);
        let mut rng = StdRng::seed_from_u64(1);
        let chosen = draw(&p, &all(&p), 100, 3, &mut rng);
        assert_eq!(chosen.len(), 100);
        let counts = class_counts(&Selection { pool: &p, indices: chosen }, 3);
        assert_eq!(counts, [50, 30, 20]);
        // Rounding: 10 of [3, 3, 3] classes.
        let p = pool(&[3, 3, 3]);
        let chosen = draw(&p, &all(&p), 8, 3, &mut rng);
        let counts = class_counts(&Selection { pool: &p, indices: chosen }, 3);
        assert_eq!(counts.iter().sum::<usize>(), 8);
        assert!(counts.iter().all(|&c| (2..=3).contains(&c)), "{counts:?}");
        // Everything, and nothing.
        assert_eq!(draw(&p, &all(&p), 9, 3, &mut rng), all(&p));
        assert!(draw(&p, &all(&p), 0, 3, &mut rng).is_empty());
    }

    #[test]
    fn one_pool_gives_a_fixed_test_set_and_seeded_disjoint_train_and_validation() {
        let s = source(pool(&[400, 400, 200]), None, None, 3);
        let protocol = Protocol { train: 100, validation: 50, test: 200, seed: 0 };
        let [train, validation, test] = plan(&s, &protocol).unwrap();
        assert_eq!((train.indices.len(), validation.indices.len(), test.indices.len()), (100, 50, 200));
        assert_eq!(class_counts(&train, 3), [40, 40, 20]);
        assert_eq!(class_counts(&test, 3), [80, 80, 40]);
        let mut everything: Vec<usize> = train.indices.iter().chain(&validation.indices).chain(&test.indices).copied().collect();
        everything.sort_unstable();
        everything.dedup();
        assert_eq!(everything.len(), 350, "the three sets are disjoint");

        let again = plan(&s, &protocol).unwrap();
        assert_eq!(again[0].indices, train.indices, "deterministic");
        let other = plan(&s, &Protocol { seed: 1, ..protocol.clone() }).unwrap();
        assert_ne!(other[0].indices, train.indices, "the seed changes train");
        assert_ne!(other[1].indices, validation.indices, "the seed changes validation");
        assert_eq!(other[2].indices, test.indices, "the test set is the same for every seed");
        let more = plan(&s, &Protocol { train: 300, ..protocol }).unwrap();
        assert_eq!(more[2].indices, test.indices, "and for every training size");
    }

    #[test]
    fn split_sources_use_their_pools() {
        let s = source(pool(&[50, 50]), Some(pool(&[10, 10])), Some(pool(&[30, 30])), 2);
        let protocol = Protocol { train: 100, validation: 20, test: 60, seed: 3 };
        let [train, validation, test] = plan(&s, &protocol).unwrap();
        assert!(std::ptr::eq(train.pool, &s.train) && std::ptr::eq(validation.pool, s.validation.as_ref().unwrap()));
        assert!(std::ptr::eq(test.pool, s.test.as_ref().unwrap()));
        assert_eq!(train.indices, all(&s.train));
        assert_eq!(test.indices.len(), 60);
        assert_eq!(validation.indices.len(), 20);
    }

    #[test]
    fn asking_for_too_many_names_the_counts_and_the_flags() {
        let s = source(pool(&[30, 30]), None, None, 2);
        let err = plan(&s, &Protocol::default()).unwrap_err().to_string();
        assert!(err.contains("toy: the protocol asks for 3000 images in all") && err.contains("the source has 60"), "{err}");
        assert!(err.contains("--train-images/--val-images/--test-images (now 800/200/2000)"), "{err}");
        let s = source(pool(&[30, 30]), None, Some(pool(&[5, 5])), 2);
        let err = plan(&s, &Protocol { train: 10, validation: 5, test: 20, seed: 0 }).unwrap_err().to_string();
        assert!(err.contains("20 test images but its test pool has 10"), "{err}");
        let err = plan(&s, &Protocol { train: 58, validation: 5, test: 10, seed: 0 }).unwrap_err().to_string();
        assert!(err.contains("63 training + validation images but the training pool has 60"), "{err}");
        let err = plan(&s, &Protocol { train: 0, validation: 5, test: 10, seed: 0 }).unwrap_err().to_string();
        assert!(err.contains("at least one training image"), "{err}");
    }
}
