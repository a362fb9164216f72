//! Fine-tuning: the loop, its schedule, metrics and resumable checkpoints.

pub mod checkpoint;
pub mod collapse;
pub mod config;
pub mod data_parallel;
pub mod divergence;
pub mod event_log;
pub mod loss_scale;
pub mod metrics;
pub mod schedule;
pub mod state;
pub mod trainer;
pub mod update_clip;

pub use config::{BestMetric, ReportTo, TrainConfig};
pub use metrics::EvalMetrics;
pub use schedule::{Decay, LrSchedule};
pub use trainer::{Objective, TrainReport, reset_peak_rss, train};
