//! bayesprop inside burn-train's `Learner`: one line in place of burn's optimizer. Every row of
//! the table trains as a plain loop with the same steps does, bit for bit, and a run resumed
//! from the Learner's checkpoint goes on as the straight run, bit for bit.

mod common;

use std::sync::Arc;

use bayesprop::OptimizerConfig;
use bayesprop_burn::BayespropConfig;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Tensor};
use burn_train::logger::InMemoryMetricLogger;
use burn_train::metric::LossMetric;
use burn_train::{
    InferenceStep, Learner, RegressionOutput, SupervisedTraining, TrainOutput, TrainStep,
};
use common::{bits, flat, Mlp};

const LR: f64 = 3e-3;
/// Batches per epoch.
const BATCHES: usize = 4;

#[derive(Clone, Debug)]
struct Batch {
    x: Tensor<2>,
    y: Tensor<2>,
}

/// Item t is the test's deterministic batch t (common::batch): one item per batch.
struct Batches;

impl Batcher<usize, Batch> for Batches {
    fn batch(&self, items: Vec<usize>, device: &Device) -> Batch {
        let (x, y) = common::batch(device, items[0]);
        Batch { x, y }
    }
}

/// The model with its loss, as the Learner takes it.
#[derive(Module, Debug)]
struct Regression {
    mlp: Mlp,
}

impl Regression {
    fn output(&self, batch: Batch) -> RegressionOutput {
        let out = self.mlp.forward(batch.x);
        let loss = (out.clone() - batch.y.clone()).powi_scalar(2).mean();
        RegressionOutput::new(loss, out, batch.y)
    }
}

impl TrainStep for Regression {
    type Input = Batch;
    type Output = RegressionOutput;

    fn step(&self, batch: Batch) -> TrainOutput<RegressionOutput> {
        let output = self.output(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl InferenceStep for Regression {
    type Input = Batch;
    type Output = RegressionOutput;

    fn step(&self, batch: Batch) -> RegressionOutput {
        self.output(batch)
    }
}

fn loader(first: usize) -> Arc<dyn DataLoader<Batch>> {
    DataLoaderBuilder::new(Batches)
        .batch_size(1)
        .build(InMemDataset::new((first..first + BATCHES).collect()))
}

fn optimizer(config: &OptimizerConfig) -> ModuleOptimizer {
    ModuleOptimizer::from(BayespropConfig::new(config.clone()).build().unwrap())
}

/// Trains `model` through the Learner for `epochs` (resuming from the checkpoint of epoch
/// `resume`, if any), with checkpoints in `dir`.
fn learner_run(
    model: Regression,
    config: &OptimizerConfig,
    dir: &std::path::Path,
    epochs: usize,
    resume: Option<usize>,
) -> Regression {
    let mut training = SupervisedTraining::new(dir, loader(0), loader(100))
        .num_epochs(epochs)
        .with_default_checkpointers()
        .with_metric_logger(InMemoryMetricLogger::new())
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .with_application_logger(None);
    if let Some(epoch) = resume {
        training = training.checkpoint(epoch);
    }
    let learner = Learner::new(model, optimizer(config), ConstantLr::new(LR));
    training.launch(learner).model
}

fn configs() -> Vec<OptimizerConfig> {
    let mut configs = OptimizerConfig::all_defaults();
    for config in &mut configs {
        let _ = config.as_dyn_mut().set("lr", &LR.to_string());
    }
    configs
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bayesprop-learner-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn every_row_trains_in_the_learner_as_in_a_plain_loop() {
    let device = common::device();
    for config in configs() {
        let name = config.name();
        let model = Regression {
            mlp: Mlp::new(&device),
        };
        // The plain loop: the same batches in the same order, the same steps.
        let mut plain = model.clone();
        let mut optim = optimizer(&config);
        for _epoch in 0..2 {
            for t in 0..BATCHES {
                let (x, y) = common::batch(&device, t);
                let output = TrainStep::step(&plain, Batch { x, y });
                plain = optim.step(LR, plain, output.grads);
            }
        }
        let dir = temp_dir(name);
        let trained = learner_run(model, &config, &dir, 2, None);
        assert_eq!(
            bits(&flat(&trained)),
            bits(&flat(&plain)),
            "{name}: θ after 2 epochs in the Learner vs a plain loop"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_run_resumed_from_the_learners_checkpoint_goes_on_bit_for_bit() {
    let device = common::device();
    let configs = [
        OptimizerConfig::default_for("bayes").unwrap(),
        bayesprop::BayesConfig {
            momentum: 0.9,
            ..Default::default()
        }
        .into(),
        OptimizerConfig::default_for("adamw").unwrap(),
    ];
    for config in configs {
        let name = config.name();
        let model = Regression {
            mlp: Mlp::new(&device),
        };
        let straight_dir = temp_dir(&format!("{name}-straight"));
        let straight = learner_run(model.clone(), &config, &straight_dir, 3, None);
        let dir = temp_dir(&format!("{name}-split"));
        learner_run(model.clone(), &config, &dir, 1, None);
        let resumed = learner_run(model, &config, &dir, 3, Some(1));
        assert_eq!(
            bits(&flat(&resumed)),
            bits(&flat(&straight)),
            "{name}: 3 epochs resumed at epoch 1 vs straight"
        );
        let _ = std::fs::remove_dir_all(&straight_dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
