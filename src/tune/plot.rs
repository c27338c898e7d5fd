//! `--plot`: every candidate's speedup against its metric (SVG), with the
//! Pareto front, A_min and the chosen candidate marked.

use super::record::Candidate;
use anyhow::{anyhow, Result};
use plotters::prelude::*;

pub fn svg(
    candidates: &[Candidate],
    chosen: Option<usize>,
    floor: f64,
    metric: &str,
    unit: &str,
) -> Result<String> {
    let points: Vec<(f64, f64)> = candidates
        .iter()
        .filter_map(|c| Some((c.speedup?, c.metric?)))
        .collect();
    let mut front: Vec<(f64, f64)> = candidates
        .iter()
        .filter(|c| c.front)
        .filter_map(|c| Some((c.speedup?, c.metric?)))
        .collect();
    front.sort_by(|a, b| a.0.total_cmp(&b.0));
    let span = |values: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let pad = ((hi - lo) * 0.08).max(0.05 * hi.abs().max(1e-3));
        (lo - pad, hi + pad)
    };
    let (x0, x1) = span(&mut points.iter().map(|p| p.0).chain([1.0]));
    let (y0, y1) = span(&mut points.iter().map(|p| p.1).chain([floor]));
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (800, 520)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing the plot: {e}");
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("onnx-opt tune: speed against accuracy", ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("speedup over the original (×)")
            .y_desc(format!("{metric} ({unit})"))
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 4, BLUE.mix(0.6).filled())),
            )
            .map_err(|e| err(&e))?
            .label("candidate")
            .legend(|(x, y)| Circle::new((x, y), 4, BLUE.mix(0.6).filled()));
        chart
            .draw_series(LineSeries::new(front.clone(), RED.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], RED.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(
                vec![(x0, floor), (x1, floor)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label("A_min")
            .legend(|(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], BLACK));
        if let Some(p) = chosen.and_then(|k| Some((candidates[k].speedup?, candidates[k].metric?)))
        {
            chart
                .draw_series(std::iter::once(Circle::new(p, 8, GREEN.stroke_width(3))))
                .map_err(|e| err(&e))?
                .label("chosen")
                .legend(|(x, y)| Circle::new((x, y), 6, GREEN.stroke_width(3)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_marks_front_floor_and_choice() {
        let mut cs = vec![];
        for (s, m) in [(1.0, 99.0), (1.8, 98.5), (2.4, 90.0)] {
            let mut c = Candidate::new(&format!("{s}"), "form");
            c.speedup = Some(s);
            c.metric = Some(m);
            cs.push(c);
        }
        super::super::record::mark_front(&mut cs);
        let svg = svg(&cs, Some(1), 98.0, "top1", "%").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        for label in ["Pareto front", "A_min", "chosen", "top1 (%)"] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert!(svg.matches("<circle").count() >= 4);
    }
}
