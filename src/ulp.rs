//! Distances between floats in units in the last place (ULP).

/// Maps an f32 to an integer whose order is the float order, with -0 and +0 both at 0, so
/// that the difference of two keys counts the floats between them, across zero too.
fn ordered_key(x: f32) -> i64 {
    let bits = x.to_bits() as i32;
    if bits < 0 {
        -((bits & i32::MAX) as i64)
    } else {
        bits as i64
    }
}

/// How many representable f32 lie between `a` and `b` (0 when equal, including -0 vs +0 and
/// NaN vs NaN). A NaN against a number is `u64::MAX`.
pub fn ulp_distance(a: f32, b: f32) -> u64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => 0,
        (false, false) => (ordered_key(a) - ordered_key(b)).unsigned_abs(),
        _ => u64::MAX,
    }
}

/// The largest ULP distance between two slices of equal length, and where it occurs.
pub fn max_ulp_distance(a: &[f32], b: &[f32]) -> (u64, usize) {
    assert_eq!(
        a.len(),
        b.len(),
        "max_ulp_distance: slices differ in length"
    );
    a.iter()
        .zip(b)
        .map(|(&x, &y)| ulp_distance(x, y))
        .enumerate()
        .fold(
            (0, 0),
            |best, (i, d)| if d > best.0 { (d, i) } else { best },
        )
}

/// How far `x` lies from an exact value, in ULPs of the f32 nearest to it, but in units no
/// finer than `f32::MIN_POSITIVE` (2^-126): WGSL lets a GPU flush subnormals to zero, which
/// moves a value by at most that. 0 when both are the same infinity or both NaN; infinite when
/// only one is finite or NaN.
pub fn ulps_from_exact(x: f32, exact: f64) -> f64 {
    if !x.is_finite() || !exact.is_finite() {
        let same = (x.is_nan() && exact.is_nan()) || f64::from(x) == exact;
        return if same { 0.0 } else { f64::INFINITY };
    }
    let nearest = (exact.abs() as f32).min(f32::MAX);
    let ulp = f64::from(f32::from_bits(nearest.to_bits() + 1)) - f64::from(nearest);
    (f64::from(x) - exact).abs() / ulp.max(f64::from(f32::MIN_POSITIVE))
}

/// The mean of [`ulps_from_exact`] over a vector: 0 for an empty one.
pub fn mean_ulps_from_exact(x: &[f32], exact: &[f64]) -> f64 {
    assert_eq!(
        x.len(),
        exact.len(),
        "mean_ulps_from_exact: slices differ in length"
    );
    if x.is_empty() {
        return 0.0;
    }
    x.iter()
        .zip(exact)
        .map(|(&x, &e)| ulps_from_exact(x, e))
        .sum::<f64>()
        / x.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_from_exact_is_in_ulps_of_the_nearest_float() {
        // 1 + 2^-23 is one ULP above 1; half of that is half an ULP.
        assert_eq!(ulps_from_exact(1.0, 1.0 + f64::powi(2.0, -24)), 0.5);
        assert_eq!(ulps_from_exact(-3.0, -3.0), 0.0);
        let up_3000 = f32::from_bits(2.5f32.to_bits() + 3000);
        assert_eq!(ulps_from_exact(up_3000, 2.5), 3000.0);
        // A subnormal flushed to zero is at most one unit of 2^-126 away.
        let subnormal = f64::from(f32::from_bits(1 << 20));
        assert!(ulps_from_exact(0.0, subnormal) < 1.0);
        assert_eq!(ulps_from_exact(f32::NAN, f64::NAN), 0.0);
        assert_eq!(ulps_from_exact(f32::NAN, 1.0), f64::INFINITY);
        assert_eq!(ulps_from_exact(f32::INFINITY, f64::INFINITY), 0.0);
        assert_eq!(mean_ulps_from_exact(&[1.0, up_3000], &[1.0, 2.5]), 1500.0);
    }

    #[test]
    fn neighbours_are_one_apart() {
        assert_eq!(ulp_distance(1.0, f32::from_bits(1.0f32.to_bits() + 1)), 1);
        assert_eq!(
            ulp_distance(-1.0, f32::from_bits((-1.0f32).to_bits() + 1)),
            1
        );
    }

    #[test]
    fn zero_signs_are_equal_and_crossing_zero_counts_both_sides() {
        assert_eq!(ulp_distance(0.0, -0.0), 0);
        let tiny = f32::from_bits(1);
        assert_eq!(ulp_distance(tiny, -tiny), 2);
        assert_eq!(ulp_distance(tiny, 0.0), 1);
        assert_eq!(ulp_distance(-tiny, 0.0), 1);
        // From the smallest negative normal to the largest positive: twice the positive range.
        assert_eq!(
            ulp_distance(-f32::MAX, f32::MAX),
            2 * f32::MAX.to_bits() as u64
        );
    }

    #[test]
    fn nan_is_far_from_numbers_and_equal_to_nan() {
        assert_eq!(ulp_distance(f32::NAN, 1.0), u64::MAX);
        assert_eq!(ulp_distance(f32::NAN, f32::NAN), 0);
    }

    #[test]
    fn max_finds_the_worst_element() {
        let a = [1.0, 2.0, 3.0];
        let b = [1.0, f32::from_bits(2.0f32.to_bits() + 5), 3.0];
        assert_eq!(max_ulp_distance(&a, &b), (5, 1));
    }
}
