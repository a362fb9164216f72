//! The applications built on the library: the `replora` command line, the benchmark harness
//! (`replora bench`, run against PyTorch + PEFT by `scripts/bench`), and the simulation of the
//! paper's theory (`replora simulate`), and grids of runs with a validation-selected report
//! (`replora sweep`), and the curves of runs (`replora plot`, each run's `curves.png`).

pub mod bench;
pub mod cli;
pub mod curves;
pub mod simulate;
pub mod sweep;
