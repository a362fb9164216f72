//! The curves of one or several runs from their `metrics.jsonl` (`replora plot`, and the
//! `curves.png` that `train` writes): the training loss and each epoch's validation loss on one
//! panel, the validation accuracy (and macro-F1 where computed) on the other, every run on the
//! same axes. Drawn with plotters, in the colors and with the font and atomic renames of the
//! sweep's plot.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use super::sweep::plot::{PALETTE, temporary};
use crate::error::{Error, Result};
use crate::layout;

/// One run's logged points: `(step, value)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunCurves {
    /// The legend's name for the run.
    pub name: String,
    pub train_loss: Vec<(f64, f64)>,
    pub validation_loss: Vec<(f64, f64)>,
    pub validation_accuracy: Vec<(f64, f64)>,
    pub validation_macro_f1: Vec<(f64, f64)>,
}

impl RunCurves {
    /// The points of the run in `dir`, named `name`. Lines that are not JSON (one a kill cut
    /// short) are skipped.
    pub fn read(dir: &Path, name: String) -> Result<Self> {
        if !layout::is_run(dir) {
            return Err(Error::State(format!(
                "{} holds no run (no {}): give a directory `replora train` wrote",
                dir.display(),
                layout::RUN_FILE
            )));
        }
        let file = dir.join(layout::METRICS_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let mut curves = RunCurves { name, ..Default::default() };
        for line in text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
            let Some(step) = line["step"].as_f64() else { continue };
            let point = |v: &Value| v.as_f64().map(|v| (step, v));
            match line.get("validation") {
                Some(v) => {
                    curves.validation_loss.extend(point(&v["loss"]));
                    curves.validation_accuracy.extend(point(&v["accuracy"]));
                    curves.validation_macro_f1.extend(point(&v["macro_f1"]));
                }
                None => curves.train_loss.extend(point(&line["loss"])),
            }
        }
        Ok(curves)
    }

    fn is_empty(&self) -> bool {
        self.train_loss.is_empty() && self.validation_loss.is_empty() && self.validation_accuracy.is_empty()
    }
}

/// The runs in `dirs`, each named by its directory's last part, or its whole path where two
/// runs share a last part.
pub fn read_runs(dirs: &[PathBuf]) -> Result<Vec<RunCurves>> {
    let last = |d: &Path| d.file_name().map_or(d.display().to_string(), |n| n.to_string_lossy().into_owned());
    dirs.iter()
        .map(|d| {
            let shared = dirs.iter().filter(|o| last(o) == last(d)).count() > 1;
            RunCurves::read(d, if shared { d.display().to_string() } else { last(d) })
        })
        .collect()
}

/// Writes the runs' curves to `png` and, if given, `svg` (each drawn into a temporary file and
/// renamed into place). An error when no run has logged a point yet.
pub fn write(runs: &[RunCurves], png: &Path, svg: Option<&Path>) -> Result<()> {
    if runs.iter().all(RunCurves::is_empty) {
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        return Err(Error::State(format!("nothing to plot: no metrics logged yet in {}", names.join(", "))));
    }
    crate::apps::simulate::plot::register_font().map_err(|e| Error::Config(format!("plot: {e}")))?;
    let size = (1120, 460);
    let png_tmp = temporary(png);
    draw(BitMapBackend::new(&png_tmp, size).into_drawing_area(), runs).map_err(|e| Error::format(png, e))?;
    std::fs::rename(&png_tmp, png).map_err(|e| Error::io(png, e))?;
    if let Some(svg) = svg {
        let svg_tmp = temporary(svg);
        draw(SVGBackend::new(&svg_tmp, size).into_drawing_area(), runs).map_err(|e| Error::format(svg, e))?;
        std::fs::rename(&svg_tmp, svg).map_err(|e| Error::io(svg, e))?;
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, runs: &[RunCurves]) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{e:?}");
    root.fill(&WHITE).map_err(e)?;
    let panels = root.split_evenly((1, 2));
    let loss: Vec<Series> = runs
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            [
                Series { label: format!("{} train", r.name), points: &r.train_loss, color: i, dashed: false },
                Series { label: format!("{} validation", r.name), points: &r.validation_loss, color: i, dashed: true },
            ]
        })
        .collect();
    // Losses fall and metrics rise: each legend sits where its curves end up far from it.
    panel(&panels[0], "loss", "loss", &loss, SeriesLabelPosition::UpperRight).map_err(e)?;
    let metrics: Vec<Series> = runs
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            [
                Series { label: format!("{} accuracy", r.name), points: &r.validation_accuracy, color: i, dashed: false },
                Series { label: format!("{} macro-F1", r.name), points: &r.validation_macro_f1, color: i, dashed: true },
            ]
        })
        .collect();
    panel(&panels[1], "validation", "validation metric", &metrics, SeriesLabelPosition::LowerRight).map_err(e)?;
    root.present().map_err(e)
}

/// One curve: a run's points of one quantity.
struct Series<'a> {
    label: String,
    points: &'a [(f64, f64)],
    /// The run's index: its color.
    color: usize,
    /// Validation curves are dashed beside the run's solid training curve (loss panel), macro-F1
    /// beside accuracy (metric panel).
    dashed: bool,
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    series: &[Series],
    legend: SeriesLabelPosition,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let points = series.iter().flat_map(|s| s.points);
    let (xhi, ylo, yhi) = points.fold((1.0f64, f64::MAX, f64::MIN), |(x, lo, hi), p| (x.max(p.0), lo.min(p.1), hi.max(p.1)));
    let (ylo, yhi) = if ylo > yhi { (0.0, 1.0) } else { (ylo, yhi) };
    let pad = ((yhi - ylo) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xhi * 1.02, (ylo - pad)..(yhi + pad))?;
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        .y_desc(y_desc)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(WHITE.mix(0.0))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let color = PALETTE[s.color % PALETTE.len()];
        let style = color.stroke_width(2);
        let line: Vec<(f64, f64)> = s.points.to_vec();
        let drawn = if s.dashed {
            chart.draw_series(DashedLineSeries::new(line, 6, 4, style))?
        } else {
            chart.draw_series(LineSeries::new(line, style))?
        };
        let dashed = s.dashed;
        drawn.label(s.label.as_str()).legend(move |(x, y)| {
            let end = if dashed { x + 10 } else { x + 22 };
            PathElement::new(vec![(x, y), (end, y)], color.stroke_width(3))
        });
        // Validation is logged once an epoch: its points are marked.
        if s.dashed || caption == "validation" {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(legend)
        .label_font(("sans-serif", 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_points_come_from_its_metrics_lines() {
        let dir = tempfile::tempdir().unwrap();
        let err = RunCurves::read(dir.path(), "a".into()).unwrap_err().to_string();
        assert!(err.contains("holds no run"), "{err}");
        std::fs::write(dir.path().join(layout::RUN_FILE), "{}").unwrap();
        std::fs::write(
            dir.path().join(layout::METRICS_FILE),
            concat!(
                r#"{"step": 2, "epoch": 1, "loss": 1.5, "lr": 0.1}"#,
                "\n",
                r#"{"epoch": 1, "step": 3, "validation": {"loss": 1.25, "accuracy": 0.5, "macro_f1": 0.4, "examples": 4}}"#,
                "\n",
                r#"{"step": 4, "ep"#
            ),
        )
        .unwrap();
        let curves = RunCurves::read(dir.path(), "a".into()).unwrap();
        assert_eq!(curves.train_loss, [(2.0, 1.5)]);
        assert_eq!(curves.validation_loss, [(3.0, 1.25)]);
        assert_eq!(curves.validation_accuracy, [(3.0, 0.5)]);
        assert_eq!(curves.validation_macro_f1, [(3.0, 0.4)]);

        let (png, svg) = (dir.path().join("c.png"), dir.path().join("c.svg"));
        write(&[curves.clone(), RunCurves { name: "b".into(), ..curves }], &png, Some(&svg)).unwrap();
        let png_bytes = std::fs::read(&png).unwrap();
        assert_eq!(&png_bytes[1..4], b"PNG");
        let svg_text = std::fs::read_to_string(&svg).unwrap();
        assert!(svg_text.contains("a train") && svg_text.contains("b validation"), "both runs are in the legend");
        let empty = RunCurves { name: "c".into(), ..Default::default() };
        assert!(write(&[empty], &png, None).unwrap_err().to_string().contains("nothing to plot"));
    }
}
