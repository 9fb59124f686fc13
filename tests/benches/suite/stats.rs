//! Sampling and the results table.

use std::path::Path;
use std::time::{Duration, Instant};

/// Per-call (or per-batch) times of one subject, in seconds.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64());
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    pub fn median(&self) -> f64 {
        let v = self.sorted();
        v[v.len() / 2]
    }

    pub fn p99(&self) -> f64 {
        let v = self.sorted();
        v[(v.len() * 99 / 100).min(v.len() - 1)]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// "12.3 µs median, 20.1 µs p99"
    pub fn time_text(&self) -> String {
        format!(
            "{} median, {} p99 (n={})",
            human_time(self.median()),
            human_time(self.p99()),
            self.len()
        )
    }
}

pub fn human_time(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.2} s")
    } else if seconds >= 1e-3 {
        format!("{:.2} ms", seconds * 1e3)
    } else {
        format!("{:.2} µs", seconds * 1e6)
    }
}

pub fn human_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2} M rec/s", per_second / 1e6)
    } else {
        format!("{:.1} k rec/s", per_second / 1e3)
    }
}

/// Times `subjects` call by call, round-robin in chunks of `chunk` calls,
/// so slow drift (frequency scaling, a noisy neighbour) hits all alike.
/// `warmup` untimed calls of each first.
pub fn interleave(
    subjects: &mut [&mut dyn FnMut()],
    warmup: usize,
    rounds: usize,
    chunk: usize,
) -> Vec<Samples> {
    for f in subjects.iter_mut() {
        for _ in 0..warmup {
            f();
        }
    }
    let mut samples = vec![Samples::default(); subjects.len()];
    for _ in 0..rounds {
        for (f, s) in subjects.iter_mut().zip(&mut samples) {
            for _ in 0..chunk {
                let start = Instant::now();
                f();
                s.push(start.elapsed());
            }
        }
    }
    samples
}

/// What a figure must reach.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
    None,
}

/// One line of the table.
#[derive(Debug)]
pub struct Row {
    pub figure: String,
    pub subject: String,
    pub baseline: String,
    /// The figure the goal applies to (a ratio, or ms for absolute goals).
    pub value: f64,
    pub unit: &'static str,
    pub goal: Goal,
}

impl Row {
    pub fn pass(&self) -> Option<bool> {
        match self.goal {
            Goal::AtMost(t) => Some(self.value <= t),
            Goal::AtLeast(t) => Some(self.value >= t),
            Goal::None => None,
        }
    }

    fn value_text(&self) -> String {
        format!("{:.2}{}", self.value, self.unit)
    }

    fn target_text(&self) -> String {
        match self.goal {
            Goal::AtMost(t) => format!("≤ {t}{}", self.unit),
            Goal::AtLeast(t) => format!("≥ {t}{}", self.unit),
            Goal::None => "—".to_owned(),
        }
    }

    fn pass_text(&self) -> &'static str {
        match self.pass() {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "info",
        }
    }
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| figure | subject | baseline | ratio / value | target | result |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.figure,
            r.subject,
            r.baseline,
            r.value_text(),
            r.target_text(),
            r.pass_text()
        );
    }
    out
}

pub fn json(rows: &[Row], mode: &str) -> serde_json::Value {
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "figure": r.figure,
                "subject": r.subject,
                "baseline": r.baseline,
                "value": r.value,
                "unit": r.unit.trim(),
                "target": r.target_text(),
                "result": r.pass_text(),
            })
        })
        .collect();
    serde_json::json!({ "mode": mode, "rows": rows })
}

/// Writes `results.json` and `results.md` into `dir`.
pub fn write(dir: &Path, rows: &[Row], mode: &str, header: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let text = serde_json::to_string_pretty(&json(rows, mode)).expect("JSON");
    std::fs::write(dir.join("results.json"), text + "\n")?;
    std::fs::write(
        dir.join("results.md"),
        format!("{header}\n\n{}", markdown(rows)),
    )
}
