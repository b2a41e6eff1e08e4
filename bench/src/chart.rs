//! A latency-by-percentile chart drawn as HdrHistogram plots are: the percentile on a log
//! axis (0%, 90%, 99%, 99.9%, ...), latency on a linear one, one line per target. Written as
//! a self-contained SVG, no plotting library.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

pub struct Series<'a> {
    pub name: &'a str,
    /// Nanoseconds.
    pub histogram: &'a Histogram<u64>,
}

const W: f64 = 900.0;
const H: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 180.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// x position of quantile `q`: log10(1 / (1 - q)), so 90% -> 1, 99% -> 2, 99.9% -> 3.
fn nines(q: f64) -> f64 {
    (1.0 / (1.0 - q).max(1e-9)).log10()
}

/// A "nice" step (1, 2 or 5 x 10^n) giving about `ticks` ticks up to `max`.
fn step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

pub fn percentile_svg(title: &str, series: &[Series<'_>]) -> String {
    // As many nines as the smallest histogram supports (at least 2, at most 5).
    let fewest = series
        .iter()
        .map(|s| s.histogram.len())
        .min()
        .unwrap_or(1)
        .max(1);
    let x_max = ((fewest as f64).log10().floor()).clamp(2.0, 5.0);
    let q_max = 1.0 - 10f64.powf(-x_max);
    let curves: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            let mut pts: Vec<(f64, f64)> = s
                .histogram
                .iter_quantiles(10)
                .map(|v| (v.quantile_iterated_to(), v.value_iterated_to() as f64 / 1e3))
                .filter(|(q, _)| *q <= q_max)
                .map(|(q, us)| (nines(q), us))
                .collect();
            pts.push((x_max, s.histogram.value_at_quantile(q_max) as f64 / 1e3));
            pts
        })
        .collect();
    let y_top = curves.iter().flatten().map(|p| p.1).fold(1.0, f64::max);
    let y_step = step(y_top, 8.0);
    let y_max = (y_top / y_step).ceil() * y_step;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + pw * x / x_max;
    let py = |y: f64| TOP + ph * (1.0 - y / y_max);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="15" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        escape(title)
    );
    // Grid and axes.
    let mut y = 0.0;
    while y <= y_max + y_step / 2.0 {
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            py(y) + 4.0,
            trim(y),
            py = py(y)
        );
        y += y_step;
    }
    for n in 0..=(x_max as usize) {
        let label = match n {
            0 => "0%".to_owned(),
            n => format!("{}%", trim(100.0 * (1.0 - 10f64.powi(-(n as i32))))),
        };
        let x = px(n as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            TOP + ph,
            TOP + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        LEFT + pw / 2.0,
        H - 14.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(22 {}) rotate(-90)" text-anchor="middle">latency (us)</text>"#,
        TOP + ph / 2.0
    );
    // One line per series, and the legend.
    for (i, (serie, pts)) in series.iter().zip(&curves).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let ly = TOP + 10.0 + 22.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            LEFT + pw + 14.0,
            LEFT + pw + 40.0,
            LEFT + pw + 46.0,
            ly + 4.0,
            escape(serie.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn trim(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_and_steps() {
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(step(95.0, 8.0), 20.0);
        assert_eq!(step(7.0, 8.0), 1.0);
        assert_eq!(trim(99.9), "99.9");
        assert_eq!(trim(90.0), "90");
    }

    #[test]
    fn one_polyline_per_series_within_the_plot() {
        let mut a = crate::gen::histogram();
        let mut b = crate::gen::histogram();
        for i in 1..=10_000u64 {
            a.record(20_000 + i).unwrap();
            b.record(40_000 + 3 * i).unwrap();
        }
        let svg = percentile_svg(
            "t <1>",
            &[
                Series {
                    name: "direct",
                    histogram: &a,
                },
                Series {
                    name: "proxy",
                    histogram: &b,
                },
            ],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("99.99%"), "10,000 samples give four nines");
        assert!(svg.contains("t &lt;1&gt;"));
        // Every plotted point lies inside the plot area.
        for line in svg.lines().filter(|l| l.starts_with("<polyline")) {
            let pts = line
                .split("points=\"")
                .nth(1)
                .unwrap()
                .trim_end_matches("\"/>");
            for p in pts.split(' ') {
                let (x, y) = p.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((LEFT..=W - RIGHT + 0.1).contains(&x), "x {x}");
                assert!((TOP - 0.1..=H - BOTTOM + 0.1).contains(&y), "y {y}");
            }
        }
    }
}
