//! The SVG plot: boot and container-start distributions (every sample a
//! dot, the median a bar) and the density totals against K.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::{BootReport, DensityReport, StartReport};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn e<E: std::fmt::Display>(err: E) -> String {
    err.to_string()
}

pub fn draw(
    path: &Path,
    boot: Option<&BootReport>,
    start: Option<&StartReport>,
    density: Option<&DensityReport>,
) -> Result<(), String> {
    let root = SVGBackend::new(path, (1100, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let rows = root.split_evenly((3, 1));
    let boot_rows: Vec<(String, Vec<f64>)> = boot
        .map(|b| {
            b.vmms
                .iter()
                .map(|v| {
                    (
                        v.name.clone(),
                        v.samples.iter().map(|s| s.ready_ms).collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let fmt = |r: Option<f64>| r.map_or_else(|| "-".into(), |r| format!("{r:.2}"));
    let boot_title = format!(
        "VM boot: spawn -> agent ready (ms); median husk-vmm/qemu-microvm {}",
        fmt(boot.and_then(|b| b.ratio_median))
    );
    strip(&rows[0], &boot_title, &boot_rows, 1)?;
    let start_rows: Vec<(String, Vec<f64>)> = start
        .map(|s| {
            s.runtimes
                .iter()
                .filter(|r| !r.samples.is_empty())
                .flat_map(|r| {
                    [
                        (
                            format!("{} first byte", r.name),
                            r.samples.iter().map(|s| s.first_byte_ms).collect(),
                        ),
                        (
                            format!("{} exit", r.name),
                            r.samples.iter().map(|s| s.exit_ms).collect(),
                        ),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    strip(
        &rows[1],
        &format!(
            "Container start: spawn `RUNTIME run` -> first byte / exit (ms); median exit {}",
            start
                .map(|s| s
                    .ratios
                    .iter()
                    .map(|(n, _, e)| format!("{n} {}", fmt(*e)))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
        &start_rows,
        2,
    )?;
    let cols = rows[2].split_evenly((1, 2));
    let pts = |f: &dyn Fn(&crate::density::DensityResult) -> Option<f64>| -> Vec<(f64, f64)> {
        density
            .map(|d| {
                d.results
                    .iter()
                    .filter_map(|(k, r)| r.as_ref().ok().and_then(|x| Some((*k as f64, f(x)?))))
                    .collect()
            })
            .unwrap_or_default()
    };
    lines(
        &cols[0],
        "Density: K sandboxes at once, all ready (s)",
        &[("all ready", pts(&|x| Some(x.all_ready_ms / 1e3)))],
    )?;
    lines(
        &cols[1],
        "Density: host memory per sandbox (MiB)",
        &[
            (
                "VMM PSS outside guest RAM",
                pts(&|x| x.host_pss_kib.map(|s| s.median / 1024.0)),
            ),
            (
                "guest RAM touched",
                pts(&|x| x.guest_ram_pss_kib.map(|s| s.median / 1024.0)),
            ),
            (
                "MemAvailable drop",
                pts(&|x| x.mem_available_drop_per_sandbox_kib.map(|v| v / 1024.0)),
            ),
        ],
    )?;
    root.present().map_err(e)
}

fn empty(area: &Area, title: &str) -> Result<(), String> {
    area.titled(title, ("sans-serif", 18)).map_err(e)?;
    area.draw(&Text::new(
        "not run",
        (40, 60),
        ("sans-serif", 14).into_font().color(&BLACK.mix(0.6)),
    ))
    .map_err(e)
}

/// One row per named set: every sample a dot, the median a vertical bar;
/// each `pair` of rows shares a colour.
fn strip(area: &Area, title: &str, rows: &[(String, Vec<f64>)], pair: usize) -> Result<(), String> {
    let max = rows
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max);
    if rows.is_empty() || max <= 0.0 {
        return empty(area, title);
    }
    let n = rows.len();
    let names: Vec<String> = rows.iter().map(|(n, _)| n.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(150)
        .build_cartesian_2d(0f64..max * 1.08, -0.5f64..(n as f64 - 0.5))
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let i = y.round();
            // A whole, non-negative y below the number of rows.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let row = i as usize;
            if (y - i).abs() < 1e-6 && i >= 0.0 && row < names.len() {
                names[row].clone()
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(e)?;
    for (i, (_, v)) in rows.iter().enumerate() {
        let c = COLORS[(i / pair) % COLORS.len()];
        let y = i as f64;
        let m = v.len().max(1) as f64;
        chart
            .draw_series(v.iter().enumerate().map(|(j, x)| {
                // A small vertical spread keeps equal samples apart.
                let dy = (j as f64 / m - 0.5) * 0.3;
                Circle::new((*x, y + dy), 4, c.mix(0.6).filled())
            }))
            .map_err(e)?;
        if let Some(s) = crate::stats::stats(v.clone()) {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(s.median, y - 0.35), (s.median, y + 0.35)],
                    BLACK.stroke_width(3),
                )))
                .map_err(e)?;
        }
    }
    Ok(())
}

/// Lines over K with dots at the points.
fn lines(area: &Area, title: &str, series: &[(&str, Vec<(f64, f64)>)]) -> Result<(), String> {
    let all = series.iter().flat_map(|(_, p)| p.iter().copied());
    let (xmax, ymax) = all.fold((0.0f64, 0.0f64), |(a, b), (x, y)| (a.max(x), b.max(y)));
    if xmax <= 0.0 || ymax <= 0.0 {
        return empty(area, title);
    }
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..xmax * 1.1, 0f64..ymax * 1.15)
        .map_err(e)?;
    chart.configure_mesh().x_desc("K").draw().map_err(e)?;
    for (i, (name, pts)) in series.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(e)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, c.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(e)
}
