//! Evaluation metrics: loss and accuracy for every task, macro-F1 for classification.

use serde::{Deserialize, Serialize};

/// Metrics of one evaluation pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub loss: f64,
    pub accuracy: f64,
    /// Unweighted mean of per-class F1 (classes absent from both labels and predictions
    /// skipped); classification only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macro_f1: Option<f64>,
    /// Greedy generation equals the correct answer (multiple choice, where measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<f64>,
    pub examples: usize,
}

impl EvalMetrics {
    pub fn compute(predictions: &[usize], labels: &[usize], num_classes: usize, loss: f64) -> Self {
        assert_eq!(predictions.len(), labels.len());
        let n = labels.len();
        let correct = predictions.iter().zip(labels).filter(|(p, l)| p == l).count();
        let mut f1s = vec![];
        for c in 0..num_classes {
            let tp = predictions.iter().zip(labels).filter(|(p, l)| **p == c && **l == c).count() as f64;
            let predicted = predictions.iter().filter(|p| **p == c).count() as f64;
            let actual = labels.iter().filter(|l| **l == c).count() as f64;
            if predicted + actual > 0.0 {
                f1s.push(2.0 * tp / (predicted + actual));
            }
        }
        Self {
            loss,
            accuracy: if n == 0 { 0.0 } else { correct as f64 / n as f64 },
            macro_f1: Some(if f1s.is_empty() { 0.0 } else { f1s.iter().sum::<f64>() / f1s.len() as f64 }),
            exact_match: None,
            examples: n,
        }
    }

    /// The value `metric` picks the best epoch by (higher is better); `None` where this
    /// evaluation does not compute it.
    pub fn score(&self, metric: super::BestMetric) -> Option<f64> {
        match metric {
            super::BestMetric::Accuracy => Some(self.accuracy),
            super::BestMetric::MacroF1 => self.macro_f1,
            super::BestMetric::Loss => Some(-self.loss),
        }
    }

    /// One line for the log: loss, accuracy and, where computed, macro-F1.
    pub fn describe(&self) -> String {
        let f1 = self.macro_f1.map_or(String::new(), |f| format!(" macro-F1 {f:.4}"));
        format!("loss {:.4} accuracy {:.4}{f1}", self.loss, self.accuracy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_macro_f1() {
        // Class 0: tp 2, predicted 3, actual 2 -> f1 0.8; class 1: tp 1, predicted 1, actual 2 -> 2/3.
        let m = EvalMetrics::compute(&[0, 0, 1, 0], &[0, 0, 1, 1], 3, 0.5);
        assert_eq!(m.accuracy, 0.75);
        assert!((m.macro_f1.unwrap() - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!(m.examples, 4);
    }
}
