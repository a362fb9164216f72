//! Error-vs-n plots on log-log axes (PNG and SVG), one line and band per model.
//! Text uses DejaVu Sans embedded from the `dejavu` crate through plotters'
//! `ab_glyph` feature, so no system font or C library is needed.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

/// One model's curve: points (n, mean, standard error) and its fitted slope label.
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64, f64)>,
}

pub struct Panel {
    pub title: String,
    pub y_desc: String,
    pub curves: Vec<Curve>,
}

const COLORS: [RGBColor; 4] = [RGBColor(214, 39, 40), RGBColor(31, 119, 180), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];

pub fn register_font() -> Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if ok { Ok(()) } else { Err(anyhow!("embedded DejaVu Sans failed to load")) }
}

/// Writes the panels side by side to `png` and `svg`.
pub fn write_plots(title: &str, panels: &[Panel], png: &Path, svg: &Path) -> Result<()> {
    register_font()?;
    let size = (700 * panels.len() as u32, 620);
    draw(BitMapBackend::new(png, size).into_drawing_area(), title, panels)?;
    draw(SVGBackend::new(svg, size).into_drawing_area(), title, panels)
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, title: &str, panels: &[Panel]) -> Result<()> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot: {e:?}");
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(e)?;
    for (area, panel) in root.split_evenly((1, panels.len())).iter().zip(panels) {
        draw_panel(area, panel).map_err(e)?;
    }
    root.present().map_err(e)
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let pts = p.curves.iter().flat_map(|c| c.points.iter());
    let (mut xlo, mut xhi, mut ylo, mut yhi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(n, m, se) in pts {
        xlo = xlo.min(n);
        xhi = xhi.max(n);
        ylo = ylo.min(band_low(m, se));
        yhi = yhi.max(m + 1.96 * se);
    }
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d((xlo / 1.3..xhi * 1.3).log_scale(), (ylo / 2.0..yhi * 6.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("n (training samples)")
        .y_desc(&p.y_desc)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .x_label_formatter(&|x| format!("{x:.0e}"))
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .draw()?;
    for (c, color) in p.curves.iter().zip(COLORS.iter().cycle()) {
        let mut band: Vec<(f64, f64)> = c.points.iter().map(|&(n, m, se)| (n, m + 1.96 * se)).collect();
        band.extend(c.points.iter().rev().map(|&(n, m, se)| (n, band_low(m, se))));
        chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.18))))?;
        let line: Vec<(f64, f64)> = c.points.iter().map(|&(n, m, _)| (n, m)).collect();
        let col = *color;
        chart
            .draw_series(LineSeries::new(line.clone(), col.stroke_width(2)))?
            .label(&c.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], col.stroke_width(3)));
        chart.draw_series(line.into_iter().map(|pt| Circle::new(pt, 3, col.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

/// Lower edge of the 95% band, kept positive for the log axis.
fn band_low(m: f64, se: f64) -> f64 {
    (m - 1.96 * se).max(m / 5.0)
}
