//! The arithmetic of baselines: medians and percentiles over bounded
//! samples, and the volume and latency rules built on them.

use super::alerts::AlertKind;

/// The median of `values` (the mean of the middle two for an even count);
/// `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// The `q`-quantile (0.0..=1.0) of `sorted` by the nearest-rank method;
/// `None` when empty.
pub fn percentile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The volume rule: with at least `min_history` earlier observations, the
/// baseline is the median of the last `baseline_runs`; `observed` of 0
/// under a positive baseline is `volume_zero`, below `drop_ratio` ×
/// baseline `volume_drop`. Returns the kind and the baseline.
pub fn check_volume(
    observed: u64,
    history: &[u64],
    min_history: usize,
    baseline_runs: usize,
    drop_ratio: f64,
) -> Option<(AlertKind, f64)> {
    if history.len() < min_history.max(1) {
        return None;
    }
    let recent: Vec<f64> = history
        .iter()
        .rev()
        .take(baseline_runs.max(1))
        .map(|&n| n as f64)
        .collect();
    let baseline = median(&recent)?;
    if baseline <= 0.0 {
        None
    } else if observed == 0 {
        Some((AlertKind::VolumeZero, baseline))
    } else if (observed as f64) < drop_ratio * baseline {
        Some((AlertKind::VolumeDrop, baseline))
    } else {
        None
    }
}

/// The latency rule: the baseline p99 is the median of the previous
/// windows' p99s (at least `min_history` of them); `p99` above `ratio` ×
/// baseline regresses. Returns the baseline when it does.
pub fn check_latency(p99: f64, history: &[f64], min_history: usize, ratio: f64) -> Option<f64> {
    if history.len() < min_history.max(1) {
        return None;
    }
    let baseline = median(history)?;
    (p99 > ratio * baseline).then_some(baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.5), Some(50));
        assert_eq!(percentile(&sorted, 0.99), Some(99));
        assert_eq!(percentile(&sorted, 1.0), Some(100));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn volume_needs_history_then_alerts_on_drop_and_zero() {
        let rule = |observed, history: &[u64]| check_volume(observed, history, 3, 5, 0.5);
        assert_eq!(rule(0, &[100, 100]), None, "too little history");
        assert_eq!(rule(60, &[100, 100, 100]), None);
        assert_eq!(
            rule(40, &[100, 100, 100]),
            Some((AlertKind::VolumeDrop, 100.0))
        );
        assert_eq!(
            rule(0, &[100, 90, 110]),
            Some((AlertKind::VolumeZero, 100.0))
        );
        assert_eq!(rule(0, &[0, 0, 0]), None, "a quiet flow stays quiet");
        // Only the last five count, and one outlier does not move a median.
        let history = [1, 1, 1, 1, 100, 100, 5000, 100, 100];
        assert_eq!(rule(60, &history), None);
        assert_eq!(rule(49, &history), Some((AlertKind::VolumeDrop, 100.0)));
    }

    #[test]
    fn latency_regresses_past_the_ratio_of_the_median_p99() {
        assert_eq!(check_latency(100.0, &[10.0, 12.0], 3, 2.0), None);
        assert_eq!(check_latency(20.0, &[10.0, 12.0, 9.0], 3, 2.0), None);
        assert_eq!(check_latency(25.0, &[10.0, 12.0, 9.0], 3, 2.0), Some(10.0));
    }
}
