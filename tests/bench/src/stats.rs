//! Summary statistics of a set of samples.

use serde::Serialize;

#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
}

/// n, min, median, p90 (nearest rank) and max of `v`; `None` when empty.
pub fn stats(mut v: Vec<f64>) -> Option<Stats> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    // The rank is positive and at most n.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rank = (n as f64 * 0.9).ceil() as usize;
    let p90 = v[rank.clamp(1, n) - 1];
    Some(Stats {
        n,
        min: v[0],
        median,
        p90,
        max: v[n - 1],
    })
}

/// `a / b` of two optional figures.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_odd_and_even_sets() {
        let s = stats(vec![5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.min, s.median, s.p90, s.max), (1.0, 3.0, 5.0, 5.0));
        let s = stats((1..=10).map(f64::from).collect()).unwrap();
        assert_eq!((s.n, s.min, s.median, s.p90), (10, 1.0, 5.5, 9.0));
        let s = stats(vec![7.0]).unwrap();
        assert_eq!((s.min, s.median, s.p90), (7.0, 7.0, 7.0));
        assert!(stats(vec![]).is_none());
        assert_eq!(stats(vec![f64::NAN, 2.0]).unwrap().n, 1);
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
    }
}
