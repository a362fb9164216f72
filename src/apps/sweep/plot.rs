//! The sweep's plot (PNG and SVG): per dataset, test accuracy of each method's selected
//! configuration against the training fraction, mean ± sd over seeds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{Selected, mean_sd};
use crate::error::{Error, Result};

/// The curves' colors (matplotlib's first seven), also those of `replora plot`.
pub(crate) const PALETTE: [RGBColor; 7] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

/// One color per method, the same in every figure; other curves in grey.
fn color(method: &str) -> RGBColor {
    let methods = ["lora", "replora", "dora", "full", "probe", "adapter", "prefix"];
    methods.iter().position(|m| *m == method).map_or(RGBColor(127, 127, 127), |i| PALETTE[i])
}

/// (fraction, mean %, sd %) per method, per dataset.
type Curves = BTreeMap<String, BTreeMap<String, Vec<(f64, f64, f64)>>>;

fn curves(selected: &[Selected]) -> Curves {
    let mut out: Curves = BTreeMap::new();
    for s in selected {
        let c = &s.config;
        let (m, sd) = mean_sd(&c.test_accuracy);
        out.entry(c.data.clone()).or_default().entry(c.method.clone()).or_default().push((c.train_fraction, 100.0 * m, 100.0 * sd));
    }
    for methods in out.values_mut() {
        for points in methods.values_mut() {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }
    out
}

/// Writes both plots, each drawn into a temporary file and renamed into place; where there is
/// nothing to plot, removes the plots an earlier report left, which would not describe this one.
pub fn write(selected: &[Selected], png: &Path, svg: &Path) -> Result<()> {
    let curves = curves(selected);
    if curves.is_empty() {
        for path in [png, svg] {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(path, e)),
                _ => {}
            }
        }
        return Ok(());
    }
    crate::apps::simulate::plot::register_font().map_err(|e| Error::Config(format!("plot: {e}")))?;
    let size = (560 * curves.len() as u32, 480);
    let (png_tmp, svg_tmp) = (temporary(png), temporary(svg));
    draw(BitMapBackend::new(&png_tmp, size).into_drawing_area(), &curves).map_err(|e| Error::format(png, e))?;
    draw(SVGBackend::new(&svg_tmp, size).into_drawing_area(), &curves).map_err(|e| Error::format(svg, e))?;
    for (tmp, path) in [(png_tmp, png), (svg_tmp, svg)] {
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// `report.<pid>.tmp.png` for `report.png`: the backend picks the image format by extension.
pub(crate) fn temporary(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{stem}.{}.tmp.{ext}", std::process::id()))
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, curves: &Curves) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{e:?}");
    root.fill(&WHITE).map_err(e)?;
    for (area, (data, methods)) in root.split_evenly((1, curves.len())).iter().zip(curves) {
        panel(area, data, methods).map_err(e)?;
    }
    root.present().map_err(e)
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &str,
    methods: &BTreeMap<String, Vec<(f64, f64, f64)>>,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let points = methods.values().flatten();
    let (xlo, xhi) = points.clone().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    let (ylo, yhi) = points.fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.1 - p.2), hi.max(p.1 + p.2)));
    let pad = ((yhi - ylo) * 0.1).max(1.0);
    // The measured fractions label the axis (a log axis labels only powers of ten).
    let mut fractions: Vec<f64> = methods.values().flatten().map(|p| p.0).collect();
    fractions.sort_by(f64::total_cmp);
    fractions.dedup();
    let mut chart = ChartBuilder::on(area)
        .caption(data, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((xlo / 1.5..xhi * 1.5).log_scale().with_key_points(fractions), (ylo - pad).max(0.0)..(yhi + pad).min(100.0))?;
    chart
        .configure_mesh()
        .x_desc("training fraction")
        .y_desc("test accuracy % (selected on validation)")
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .x_labels(6)
        .light_line_style(WHITE.mix(0.0))
        .x_label_formatter(&|x| format!("{x:.2}"))
        .draw()?;
    for (method, pts) in methods {
        let col = color(method);
        // The band: mean ± sd over seeds, from the upper edge out and the lower edge back.
        let band: Vec<(f64, f64)> =
            pts.iter().map(|&(x, m, sd)| (x, m + sd)).chain(pts.iter().rev().map(|&(x, m, sd)| (x, m - sd))).collect();
        chart.draw_series(std::iter::once(Polygon::new(band, col.mix(0.18).filled())))?;
        chart
            .draw_series(LineSeries::new(pts.iter().map(|&(x, m, _)| (x, m)), col.stroke_width(2)))?
            .label(method.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], col.stroke_width(3)));
        chart.draw_series(pts.iter().map(|&(x, m, _)| Circle::new((x, m), 4, col.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::sweep::report::Config;

    /// A report without a plot (no finished runs) must not sit beside the last report's plots.
    #[test]
    fn a_report_without_curves_leaves_no_stale_plot() {
        let dir = tempfile::tempdir().unwrap();
        let (png, svg) = (dir.path().join("report.png"), dir.path().join("report.svg"));
        let config = Config {
            data: "d".into(),
            train_fraction: 1.0,
            method: "lora".into(),
            setting: String::new(),
            seeds: vec![0],
            validation: vec![0.5],
            test_accuracy: vec![0.5],
            test_macro_f1: vec![0.5],
            trainable_percent: 1.0,
            minutes: 0.0,
        };
        write(&[Selected { config, vs_baseline: None }], &png, &svg).unwrap();
        assert!(png.is_file() && svg.is_file());
        let names = || std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect::<Vec<_>>();
        assert_eq!(names().len(), 2, "temporary files left: {:?}", names());
        write(&[], &png, &svg).unwrap();
        assert!(names().is_empty(), "stale plots left: {:?}", names());
    }
}
