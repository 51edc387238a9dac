//! The digits problem both burn examples train: the data the repo ships
//! (`data/digits.csv.gz`), a fixed split and batch order, the MLP and its loss.
#![allow(dead_code)]

use std::io::Read;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::{Device, Tensor};

pub const FEATURES: usize = 64;
pub const CLASSES: usize = 10;
pub const HIDDEN: usize = 128;
pub const TEST: usize = 300;
pub const BATCH: usize = 64;
pub const LR: f64 = 1e-2;
/// burn's Adam default; bayesprop's `adam` is given the same.
pub const EPS: f64 = 1e-5;
pub const ETA: f64 = 3e-3;

#[derive(Module, Debug)]
pub struct Mlp {
    pub hidden: Linear,
    pub out: Linear,
}

impl Mlp {
    pub fn new(device: &Device) -> Self {
        Mlp {
            hidden: LinearConfig::new(FEATURES, HIDDEN).init(device),
            out: LinearConfig::new(HIDDEN, CLASSES).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out.forward(relu(self.hidden.forward(x)))
    }
}

pub struct Samples {
    pub x: Vec<f32>,
    pub y: Vec<usize>,
}

/// The file's rows: 64 pixels in 0..=16 (scaled to [0, 1]) and the digit.
pub fn load_digits() -> Result<Samples, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/digits.csv.gz");
    let gz = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_string(&mut text)
        .map_err(|e| format!("{path}: {e}"))?;
    let mut samples = Samples {
        x: Vec::new(),
        y: Vec::new(),
    };
    for (row, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let fields: Vec<f32> = line
            .split(',')
            .map(|f| f.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{path} row {}: {e}", row + 1))?;
        if fields.len() != FEATURES + 1 {
            return Err(format!("{path} row {}: {} fields", row + 1, fields.len()));
        }
        samples
            .x
            .extend(fields[..FEATURES].iter().map(|p| p / 16.0));
        samples.y.push(fields[FEATURES] as usize);
    }
    Ok(samples)
}

/// A permutation from a fixed seed (xorshift Fisher–Yates): the same split and batches in
/// every run.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed.max(1);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}

pub fn tensors(s: &Samples, rows: &[usize], device: &Device) -> (Tensor<2>, Tensor<2>) {
    let x: Vec<f32> = rows
        .iter()
        .flat_map(|&r| s.x[r * FEATURES..(r + 1) * FEATURES].iter().copied())
        .collect();
    let mut onehot = vec![0.0f32; rows.len() * CLASSES];
    for (i, &r) in rows.iter().enumerate() {
        onehot[i * CLASSES + s.y[r]] = 1.0;
    }
    (
        Tensor::<1>::from_floats(x.as_slice(), device).reshape([rows.len(), FEATURES]),
        Tensor::<1>::from_floats(onehot.as_slice(), device).reshape([rows.len(), CLASSES]),
    )
}

pub fn cross_entropy(logits: Tensor<2>, onehot: Tensor<2>) -> Tensor<1> {
    (log_softmax(logits, 1) * onehot).sum_dim(1).mean().neg()
}

pub fn accuracy(model: &Mlp, s: &Samples, rows: &[usize], device: &Device) -> f64 {
    let (x, _) = tensors(s, rows, device);
    let logits = model.forward(x).to_data().try_to_vec::<f32>().unwrap();
    let correct = rows
        .iter()
        .enumerate()
        .filter(|(i, &r)| {
            let row = &logits[i * CLASSES..(i + 1) * CLASSES];
            let best = (0..CLASSES).max_by(|&a, &b| row[a].total_cmp(&row[b]));
            best == Some(s.y[r])
        })
        .count();
    correct as f64 / rows.len() as f64
}
