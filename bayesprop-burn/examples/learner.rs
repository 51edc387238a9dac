//! The digits MLP trained through burn-train's `Learner` three times from the same initial
//! weights and batch order: with burn's Adam, and with bayesprop's `adam` and `bayes` as
//! burn's per-tensor optimizer. The optimizer line is the only one that changes:
//!
//! ```text
//! burn:      AdamConfig::new().init()
//! bayesprop: ModuleOptimizer::from(BayespropConfig::adam().build()?)
//! ```
//!
//! `cargo run --release -p bayesprop-burn --example learner` (`--quick`, or
//! BAYESPROP_BURN_QUICK=1, runs 2 epochs for CI).

#[path = "common/digits.rs"]
mod digits;
#[path = "common/quiet.rs"]
mod quiet;

use std::sync::Arc;

use bayesprop::optim::AdamConfig as OurAdam;
use bayesprop_burn::BayespropConfig;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::optim::{AdamConfig, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use burn_train::metric::LossMetric;
use burn_train::{
    InferenceStep, Learner, RegressionOutput, SupervisedTraining, TrainOutput, TrainStep,
};
use digits::*;

/// A batch of rows of the digits file.
#[derive(Clone, Debug)]
struct Batch {
    x: Tensor<2>,
    onehot: Tensor<2>,
}

#[derive(Clone)]
struct Rows(Arc<Samples>);

impl Batcher<usize, Batch> for Rows {
    fn batch(&self, rows: Vec<usize>, device: &Device) -> Batch {
        let (x, onehot) = tensors(&self.0, &rows, device);
        Batch { x, onehot }
    }
}

/// The MLP with its loss, as the Learner takes a model.
#[derive(Module, Debug)]
struct Classifier {
    mlp: Mlp,
}

impl Classifier {
    fn output(&self, batch: Batch) -> RegressionOutput {
        let logits = self.mlp.forward(batch.x);
        let loss = cross_entropy(logits.clone(), batch.onehot.clone());
        RegressionOutput::new(loss, logits, batch.onehot)
    }
}

impl TrainStep for Classifier {
    type Input = Batch;
    type Output = RegressionOutput;

    fn step(&self, batch: Batch) -> TrainOutput<RegressionOutput> {
        let output = self.output(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl InferenceStep for Classifier {
    type Input = Batch;
    type Output = RegressionOutput;

    fn step(&self, batch: Batch) -> RegressionOutput {
        self.output(batch)
    }
}

fn loader(data: &Arc<Samples>, rows: &[usize], shuffle: bool) -> Arc<dyn DataLoader<Batch>> {
    let builder = DataLoaderBuilder::new(Rows(data.clone())).batch_size(BATCH);
    let builder = if shuffle {
        builder.shuffle(1000)
    } else {
        builder
    };
    builder.build(InMemDataset::new(rows.to_vec()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("BAYESPROP_BURN_QUICK").is_ok_and(|v| v == "1");
    let epochs = if quick { 2 } else { 20 };

    let device = bayesprop_burn::init_device()?;
    device.seed(42);
    let device = device.autodiff();
    let data = Arc::new(load_digits()?);
    let order = permutation(data.y.len(), 7);
    let (test_rows, train_rows) = order.split_at(TEST);
    println!(
        "digits through burn-train's Learner: {} train, {} test; MLP {FEATURES}-{HIDDEN}-\
         {CLASSES}, batch {BATCH}, {epochs} epochs, lr {LR}",
        train_rows.len(),
        test_rows.len()
    );
    let init = Classifier {
        mlp: Mlp::new(&device),
    };

    let burn_adam = AdamConfig::new().with_epsilon(EPS as f32).init();
    let our_adam = ModuleOptimizer::from(
        BayespropConfig::new(OurAdam {
            eps: EPS,
            ..OurAdam::adam()
        })
        .build()?,
    );
    let bayes = ModuleOptimizer::from(
        BayespropConfig::new(bayesprop::BayesConfig {
            eta: ETA,
            ..Default::default()
        })
        .build()?,
    );
    let dir = std::env::temp_dir().join(format!("bayesprop-learner-{}", std::process::id()));
    let mut lines = Vec::new();
    for (name, optim) in [
        ("burn Adam", burn_adam),
        ("bayesprop adam", our_adam),
        ("bayesprop bayes", bayes),
    ] {
        let result = SupervisedTraining::new(
            dir.join(name.replace(' ', "-")),
            loader(&data, train_rows, true),
            loader(&data, test_rows, false),
        )
        .num_epochs(epochs)
        .metric_train_numeric(LossMetric::new())
        .renderer(Box::new(quiet::Quiet))
        .with_application_logger(None)
        .launch(Learner::new(init.clone(), optim, ConstantLr::new(LR)));
        let accuracy = accuracy(&result.model.mlp, &data, test_rows, &device);
        lines.push(format!("{name}: test accuracy {:.1}%", 100.0 * accuracy));
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!();
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
