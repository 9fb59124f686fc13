//! Latency windows per (plugin, pattern, action) and the status page's
//! per-bucket series, both over bounded exact samples.

use super::stats::{check_latency, percentile};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// Samples kept per window or bucket; calls beyond it still count.
const MAX_SAMPLES: usize = 10_000;

/// What a latency window closed with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Closed {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The baseline p99, when the window regressed.
    pub regressed_from: Option<f64>,
}

/// One (plugin, pattern, action)'s current window and its history.
#[derive(Debug, Default)]
pub(crate) struct LatencyTrack {
    window_start_ms: u64,
    samples: Vec<u32>,
    /// p99s (ms) of previous windows with enough samples, oldest first.
    history: VecDeque<f64>,
}

/// The latency settings a track needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LatencyRule {
    pub window_ms: u64,
    pub min_samples: usize,
    pub min_history: usize,
    pub history: usize,
    pub ratio: f64,
}

impl LatencyTrack {
    /// Adds a call; closes the previous window first when `now_ms` is past it.
    pub(crate) fn add(&mut self, now_ms: u64, micros: u32, rule: &LatencyRule) -> Option<Closed> {
        let closed = self.roll(now_ms, rule);
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(micros);
        }
        closed
    }

    /// Closes the window if `now_ms` is past it.
    pub(crate) fn roll(&mut self, now_ms: u64, rule: &LatencyRule) -> Option<Closed> {
        let start = now_ms - now_ms % rule.window_ms.max(1);
        if start == self.window_start_ms {
            return None;
        }
        self.window_start_ms = start;
        let mut samples = std::mem::take(&mut self.samples);
        if samples.len() < rule.min_samples.max(1) {
            return None;
        }
        samples.sort_unstable();
        let ms = |q| percentile(&samples, q).unwrap_or(0) as f64 / 1000.0;
        let (p50_ms, p99_ms) = (ms(0.5), ms(0.99));
        let history: Vec<f64> = self.history.iter().copied().collect();
        let regressed_from = check_latency(p99_ms, &history, rule.min_history, rule.ratio);
        self.history.push_back(p99_ms);
        while self.history.len() > rule.history.max(1) {
            self.history.pop_front();
        }
        Some(Closed {
            samples: samples.len(),
            p50_ms,
            p99_ms,
            regressed_from,
        })
    }

    /// The baseline p99 (median of the kept windows) and how many there are.
    pub(crate) fn baseline(&self) -> (Option<f64>, usize) {
        let history: Vec<f64> = self.history.iter().copied().collect();
        (super::stats::median(&history), history.len())
    }
}

/// One bucket of the status page's series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// The bucket's start, unix milliseconds.
    pub at_ms: u64,
    pub invocations: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub records_in: u64,
    pub records_out: u64,
}

#[derive(Debug, Default)]
struct Bucket {
    point: SeriesPoint,
    samples: Vec<u32>,
}

/// Buckets of `bucket_ms` over the last `span_ms`.
#[derive(Debug)]
pub(crate) struct Series {
    bucket_ms: u64,
    span_ms: u64,
    buckets: BTreeMap<u64, Bucket>,
}

impl Series {
    pub(crate) fn new(bucket_ms: u64, span_ms: u64) -> Self {
        Series {
            bucket_ms: bucket_ms.max(1),
            span_ms,
            buckets: BTreeMap::new(),
        }
    }

    fn bucket(&mut self, now_ms: u64) -> &mut Bucket {
        let start = now_ms - now_ms % self.bucket_ms;
        let oldest = start.saturating_sub(self.span_ms);
        while self
            .buckets
            .first_key_value()
            .is_some_and(|(k, _)| *k <= oldest)
        {
            self.buckets.pop_first();
        }
        self.buckets.entry(start).or_insert_with(|| Bucket {
            point: SeriesPoint {
                at_ms: start,
                ..SeriesPoint::default()
            },
            samples: Vec::new(),
        })
    }

    pub(crate) fn invocation(&mut self, now_ms: u64, micros: u32, error: bool) {
        let bucket = self.bucket(now_ms);
        bucket.point.invocations += 1;
        bucket.point.errors += u64::from(error);
        if bucket.samples.len() < MAX_SAMPLES {
            bucket.samples.push(micros);
        }
    }

    pub(crate) fn records(&mut self, now_ms: u64, records_in: u64, records_out: u64) {
        let bucket = self.bucket(now_ms);
        bucket.point.records_in += records_in;
        bucket.point.records_out += records_out;
    }

    /// Every bucket of the span up to `now_ms`, oldest first; quiet
    /// buckets are zeros.
    pub(crate) fn points(&self, now_ms: u64) -> Vec<SeriesPoint> {
        let last = now_ms - now_ms % self.bucket_ms;
        let count = self.span_ms / self.bucket_ms;
        (0..count)
            .rev()
            .map(|i| last.saturating_sub(i * self.bucket_ms))
            .map(|at_ms| match self.buckets.get(&at_ms) {
                Some(bucket) => {
                    let mut sorted = bucket.samples.clone();
                    sorted.sort_unstable();
                    let ms = |q| percentile(&sorted, q).unwrap_or(0) as f64 / 1000.0;
                    SeriesPoint {
                        p50_ms: ms(0.5),
                        p99_ms: ms(0.99),
                        ..bucket.point.clone()
                    }
                }
                None => SeriesPoint {
                    at_ms,
                    ..SeriesPoint::default()
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: LatencyRule = LatencyRule {
        window_ms: 1000,
        min_samples: 20,
        min_history: 3,
        history: 5,
        ratio: 2.0,
    };

    fn window(track: &mut LatencyTrack, start_ms: u64, micros: u32, n: usize) -> Option<Closed> {
        let mut closed = None;
        for i in 0..n {
            closed = closed.or(track.add(start_ms + i as u64, micros, &RULE));
        }
        closed
    }

    #[test]
    fn a_slow_window_regresses_against_the_median_of_previous_ones() {
        let mut track = LatencyTrack::default();
        for w in 0..4 {
            let closed = window(&mut track, 1000 * (w + 1), 10_000, 30);
            assert!(closed.is_none_or(|c| c.regressed_from.is_none()));
        }
        // Too few calls: the window neither alerts nor counts.
        window(&mut track, 5000, 90_000, 5);
        window(&mut track, 6000, 50_000, 30);
        let closed = track.roll(7000, &RULE).unwrap();
        assert_eq!(closed.p99_ms, 50.0);
        assert_eq!(closed.regressed_from, Some(10.0));
        assert_eq!(track.baseline().1, 5);
    }

    #[test]
    fn series_fill_quiet_buckets_and_forget_old_ones() {
        let mut series = Series::new(10_000, 60_000);
        series.invocation(5_000, 2_000, false);
        series.invocation(6_000, 4_000, true);
        let early = series.points(9_000);
        assert_eq!(early.last().unwrap().p99_ms, 4.0);
        assert_eq!(early.last().unwrap().errors, 1);
        series.records(100_000, 3, 2);
        let points = series.points(100_000);
        assert_eq!(points.len(), 6);
        assert_eq!(points.last().unwrap().records_in, 3);
        assert!(
            points.iter().all(|p| p.invocations == 0),
            "old bucket dropped"
        );
    }
}
