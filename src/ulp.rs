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

#[cfg(test)]
mod tests {
    use super::*;

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
