//! The UCI optical handwritten digits, embedded in the binary (see `data/README.md`), and the
//! demo's fixed train/validation/test split.

use std::io::Read;

use flate2::read::GzDecoder;
use ndarray::{Array2, Axis};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::{Error, Result};

/// `data/digits.csv.gz`, from the scikit-learn wheel: 64 pixels (0…16) and the label per row.
const DIGITS_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");
const SOURCE: &str = "data/digits.csv.gz (embedded)";

/// Pixels per image (8×8).
pub const FEATURES: usize = 64;
/// Digits 0–9.
pub const CLASSES: usize = 10;
/// Rows in the file.
pub const SAMPLES: usize = 1797;

/// Images as rows of `FEATURES` pixels scaled to [0, 1], and their labels.
#[derive(Clone, Debug)]
pub struct Samples {
    pub x: Array2<f32>,
    pub y: Vec<usize>,
}

impl Samples {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Samples {
        Samples {
            x: self.x.select(Axis(0), indices),
            y: indices.iter().map(|&i| self.y[i]).collect(),
        }
    }
}

/// The three disjoint parts the demo uses: fit on `train`, choose hyperparameters on
/// `validation`, report on `test` (and never choose with it).
#[derive(Clone, Debug)]
pub struct Split {
    pub train: Samples,
    pub validation: Samples,
    pub test: Samples,
}

/// Sizes of the validation and test parts; the rest (1,197) is for training.
pub const VALIDATION: usize = 300;
pub const TEST: usize = 300;

/// Decompresses and parses the embedded file: all 1,797 samples in file order.
pub fn load_digits() -> Result<Samples> {
    let mut text = String::new();
    GzDecoder::new(DIGITS_GZ)
        .read_to_string(&mut text)
        .map_err(|e| Error::file(SOURCE, format!("cannot decompress: {e}")))?;
    parse_csv(&text)
}

fn parse_csv(text: &str) -> Result<Samples> {
    let mut pixels = Vec::with_capacity(SAMPLES * FEATURES);
    let mut labels = Vec::with_capacity(SAMPLES);
    for (row, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let bad = |what: String| Error::file(SOURCE, format!("row {}: {what}", row + 1));
        let fields: Vec<&str> = line.trim().split(',').collect();
        if fields.len() != FEATURES + 1 {
            return Err(bad(format!(
                "{} fields, expected {}",
                fields.len(),
                FEATURES + 1
            )));
        }
        for field in &fields[..FEATURES] {
            let v: f32 = field
                .trim()
                .parse()
                .map_err(|_| bad(format!("pixel `{field}` is not a number")))?;
            if !(0.0..=16.0).contains(&v) {
                return Err(bad(format!("pixel {v} outside 0..=16")));
            }
            pixels.push(v / 16.0);
        }
        let label = fields[FEATURES].trim();
        match label.parse::<usize>() {
            Ok(l) if l < CLASSES => labels.push(l),
            _ => return Err(bad(format!("label `{label}` is not a digit 0-9"))),
        }
    }
    let n = labels.len();
    let x = Array2::from_shape_vec((n, FEATURES), pixels)
        .map_err(|e| Error::file(SOURCE, e.to_string()))?;
    Ok(Samples { x, y: labels })
}

/// A seeded random permutation cut into test, validation and train (in that order of the
/// permutation). The same seed always gives the same split.
pub fn split(all: &Samples, seed: u64) -> Split {
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.shuffle(&mut SmallRng::seed_from_u64(seed));
    let (test, rest) = order.split_at(TEST.min(order.len()));
    let (validation, train) = rest.split_at(VALIDATION.min(rest.len()));
    Split {
        train: all.select(train),
        validation: all.select(validation),
        test: all.select(test),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_file_is_the_whole_dataset() {
        let all = load_digits().unwrap();
        assert_eq!(all.x.dim(), (SAMPLES, FEATURES));
        assert_eq!(all.len(), SAMPLES);
        let mut counts = [0usize; CLASSES];
        for &y in &all.y {
            counts[y] += 1;
        }
        // Every class has between 174 and 183 samples.
        assert!(
            counts.iter().all(|&c| (170..=185).contains(&c)),
            "{counts:?}"
        );
        assert!(all.x.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }

    #[test]
    fn the_split_is_disjoint_fixed_and_complete() {
        let all = load_digits().unwrap();
        let (a, b) = (split(&all, 7), split(&all, 7));
        assert_eq!(a.train.x, b.train.x);
        assert_eq!(a.test.y, b.test.y);
        assert_eq!(
            (a.train.len(), a.validation.len(), a.test.len()),
            (SAMPLES - VALIDATION - TEST, VALIDATION, TEST)
        );
    }

    #[test]
    fn bad_rows_are_errors_that_name_the_row() {
        let row = |label: &str| format!("{}{label}\n", "0,".repeat(FEATURES));
        assert!(parse_csv(&row("3")).is_ok());
        let e = parse_csv(&format!("{}{}", row("3"), row("11"))).unwrap_err();
        assert!(e.to_string().contains("row 2"), "{e}");
        assert!(parse_csv("1,2,3\n").is_err());
    }
}
