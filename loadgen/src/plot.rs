//! `plot A.json [B.json …] -o FILE.png|svg`: the picture of a run.
//!
//! Top: latency by percentile, both axes logarithmic, the x axis spread the way
//! HdrHistogram plots are (`1 / (1 − p)`: 0 %, 90 %, 99 %, 99.9 % … equally spaced), so
//! the tail is as visible as the median. Bottom: messages received per second over the
//! run, warm-up included (it is marked in the report's timeline). One colour per report,
//! named by its label. Drawn with plotters (bitmap backend for PNG, SVG backend for SVG).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::cli::PlotArgs;
use crate::report::Report;

/// Largest x of the percentile axis (99.9999 %).
const X_MAX: f64 = 1e6;

fn x_of(percentile: f64) -> f64 {
    let rest = 1.0 - percentile / 100.0;
    if rest <= 1.0 / X_MAX {
        X_MAX
    } else {
        1.0 / rest
    }
}

fn percentile_label(x: &f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    if p <= 0.0 {
        "0%".into()
    } else {
        let s = format!("{p:.6}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("{s}%")
    }
}

const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    reports: &[(String, Report)],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |err: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing failed: {err}");
    root.fill(&WHITE).map_err(e)?;
    let (_, h) = root.dim_in_pixel();
    let (top, bottom) = root.split_vertically(h * 58 / 100);

    // Latency percentiles.
    let curves: Vec<Vec<(f64, f64)>> = reports
        .iter()
        .map(|(_, r)| {
            r.results
                .latency
                .curve
                .iter()
                .filter(|p| p[1] > 0.0)
                .map(|p| (x_of(p[0]), p[1]))
                .collect()
        })
        .collect();
    let lat_values = curves.iter().flatten().map(|p| p.1);
    let (lo, hi) = lat_values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi > 0.0 {
        (lo / 1.5, hi * 1.5)
    } else {
        (1.0, 1000.0)
    };
    let mut chart = ChartBuilder::on(&top)
        .caption("Latency by percentile", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d((1.0..X_MAX).log_scale(), (lo..hi).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency")
        .x_label_formatter(&percentile_label)
        .y_label_formatter(&|v| crate::report::dur_us(*v))
        .draw()
        .map_err(e)?;
    for (i, ((name, _), pts)) in reports.iter().zip(curves).enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;

    // Throughput over time: points at the middle of each second; trailing empty seconds
    // (the drain) left out.
    let series: Vec<Vec<(f64, f64)>> = reports
        .iter()
        .map(|(_, r)| {
            let last = r
                .timeline
                .iter()
                .rposition(|t| t.received > 0)
                .map_or(0, |i| i + 1);
            r.timeline[..last]
                .iter()
                .map(|t| (t.second as f64 + 0.5, t.received as f64))
                .collect()
        })
        .collect();
    let max_t = series.iter().flatten().map(|p| p.0).fold(1.0f64, f64::max) + 1.0;
    let max_r = series.iter().flatten().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("Messages received per second", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..max_t, 0.0..max_r)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("msgs/s")
        .y_label_formatter(&|v| crate::report::si(*v))
        .draw()
        .map_err(e)?;
    for (i, ((name, _), pts)) in reports.iter().zip(series).enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Output format chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PNG bitmap.
    Png,
    /// SVG vector.
    Svg,
}

/// The format for `path`, from its extension.
pub fn format_of(path: &Path) -> anyhow::Result<Format> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => Ok(Format::Png),
        Some("svg") => Ok(Format::Svg),
        _ => bail!("{}: the output must end in .png or .svg", path.display()),
    }
}

/// Draws `reports` (name, report) into `out`.
pub fn plot(reports: &[(String, Report)], out: &Path, size: (u32, u32)) -> anyhow::Result<()> {
    match format_of(out)? {
        Format::Png => draw(BitMapBackend::new(out, size).into_drawing_area(), reports),
        Format::Svg => draw(SVGBackend::new(out, size).into_drawing_area(), reports),
    }
}

/// Runs `plot`.
pub fn run(args: &PlotArgs) -> anyhow::Result<ExitCode> {
    format_of(&args.output)?;
    let mut loaded = Vec::new();
    for p in &args.reports {
        loaded.push((p.clone(), Report::load(p)?));
    }
    let reports = names(&loaded);
    plot(&reports, &args.output, (args.width, args.height))?;
    println!("plot written to {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

fn display_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// Legend names: the report's label, with the file name added when labels repeat.
pub fn names(loaded: &[(std::path::PathBuf, Report)]) -> Vec<(String, Report)> {
    loaded
        .iter()
        .map(|(p, r)| {
            let dup = loaded.iter().filter(|(_, o)| o.label == r.label).count() > 1;
            let name = match (r.label.is_empty(), dup) {
                (true, _) => display_name(p),
                (false, true) => format!("{} ({})", r.label, display_name(p)),
                (false, false) => r.label.clone(),
            };
            (name, r.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis() {
        assert_eq!(x_of(0.0), 1.0);
        assert!((x_of(90.0) - 10.0).abs() < 1e-9);
        assert!((x_of(99.9) - 1000.0).abs() < 1e-6);
        assert_eq!(x_of(100.0), X_MAX);
        assert_eq!(percentile_label(&10.0), "90%");
        assert_eq!(percentile_label(&1000.0), "99.9%");
        assert_eq!(percentile_label(&1.0), "0%");
    }

    #[test]
    fn draws_png_and_svg() {
        let a = crate::report::tests_support::sample_report(1000.0, 50.0);
        let mut b = crate::report::tests_support::sample_report(900.0, 80.0);
        b.label = "b".into();
        let dir = std::env::temp_dir();
        for ext in ["png", "svg"] {
            let out = dir.join(format!("lg-plot-{}.{ext}", std::process::id()));
            plot(
                &[("a".into(), a.clone()), ("b".into(), b.clone())],
                &out,
                (800, 600),
            )
            .unwrap();
            let bytes = std::fs::read(&out).unwrap();
            assert!(bytes.len() > 1000);
            if ext == "png" {
                assert_eq!(&bytes[..4], b"\x89PNG");
            } else {
                assert!(String::from_utf8_lossy(&bytes).contains("<svg"));
            }
            let _ = std::fs::remove_file(&out);
        }
        assert!(format_of(Path::new("x.gif")).is_err());
    }
}
