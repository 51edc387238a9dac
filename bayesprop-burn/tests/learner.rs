//! bayesprop inside burn-train's `Learner`: one line in place of burn's optimizer. Every row of
//! the table trains as a plain loop with the same steps does, bit for bit, and a run resumed
//! from the Learner's checkpoint goes on as the straight run, bit for bit. The same for the
//! fused module-level step through `TrainStep::optimize` (`FusedStep`), clipping included.

mod common;
#[path = "../examples/common/quiet.rs"]
mod quiet;

use std::sync::Arc;

use bayesprop::OptimizerConfig;
use bayesprop_burn::{BayespropConfig, FusedStep};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsParams, ModuleOptimizer};
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

/// burn-train's supervised training for `epochs`, checkpoints in `dir`, resuming from those
/// of epoch `resume`, if any.
fn training<M>(dir: &std::path::Path, epochs: usize, resume: Option<usize>) -> SupervisedTraining<M>
where
    M: burn_train::LearnerModel,
    M: TrainStep<Input = Batch, Output = RegressionOutput>,
    M: InferenceStep<Input = Batch, Output = RegressionOutput>,
{
    let training = SupervisedTraining::new(dir, loader(0), loader(100))
        .num_epochs(epochs)
        .with_default_checkpointers()
        .with_metric_logger(InMemoryMetricLogger::new())
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .renderer(Box::new(quiet::Quiet))
        .with_application_logger(None);
    match resume {
        Some(epoch) => training.checkpoint(epoch),
        None => training,
    }
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
    let training = training(dir, epochs, resume);
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
        assert_resumes(name, |dir, epochs, resume| {
            flat(&learner_run(model.clone(), &config, dir, epochs, resume))
        });
    }
}

/// 3 epochs straight, and 1 epoch then 3 resumed from the checkpoints of epoch 1, by `run`
/// (θ after a run of so many epochs in a folder, resuming from an epoch): the same θ, bit for
/// bit.
fn assert_resumes(name: &str, run: impl Fn(&std::path::Path, usize, Option<usize>) -> Vec<f32>) {
    let straight_dir = temp_dir(&format!("{name}-straight"));
    let straight = run(&straight_dir, 3, None);
    let dir = temp_dir(&format!("{name}-split"));
    run(&dir, 1, None);
    let resumed = run(&dir, 3, Some(1));
    assert_eq!(
        bits(&resumed),
        bits(&straight),
        "{name}: 3 epochs resumed at epoch 1 vs straight"
    );
    let _ = std::fs::remove_dir_all(&straight_dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The model of the fused path: the module-level optimizer in a skipped field, stepped from
/// `TrainStep::optimize`.
#[derive(Module, Debug)]
struct FusedRegression {
    inner: Regression,
    #[module(skip)]
    fused: FusedStep,
}

impl TrainStep for FusedRegression {
    type Input = Batch;
    type Output = RegressionOutput;

    fn step(&self, batch: Batch) -> TrainOutput<RegressionOutput> {
        let output = self.inner.output(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }

    fn optimize(
        self,
        _per_tensor: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        grads: GradientsParams,
    ) -> Self {
        let fused = self.fused.clone();
        fused.optimize(self, lr, grads)
    }
}

impl InferenceStep for FusedRegression {
    type Input = Batch;
    type Output = RegressionOutput;

    fn step(&self, batch: Batch) -> RegressionOutput {
        self.inner.output(batch)
    }
}

/// Trains through the Learner on the fused path for `epochs`, its state saved each epoch in
/// `dir`; resuming from the checkpoints of epoch `resume`, if any.
fn fused_run(
    mlp: Mlp,
    config: &BayespropConfig,
    dir: &std::path::Path,
    epochs: usize,
    resume: Option<usize>,
) -> Mlp {
    let fused = FusedStep::new(config).with_checkpoints(dir, BATCHES);
    if let Some(epoch) = resume {
        fused.resume(dir, epoch * BATCHES).unwrap();
    }
    let training = training(dir, epochs, resume);
    let model = FusedRegression {
        inner: Regression { mlp },
        fused,
    };
    // The Learner's own optimizer is never stepped: `optimize` is overridden.
    let placeholder = optimizer(&OptimizerConfig::default_for("sgd").unwrap());
    let learner = Learner::new(model, placeholder, ConstantLr::new(LR));
    training.launch(learner).model.inner.mlp
}

/// Configs of the fused path, with what only it can do: global-norm clipping and a loss scale.
fn fused_configs() -> Vec<BayespropConfig> {
    vec![
        BayespropConfig::bayes().with_clip_norm(0.05),
        BayespropConfig::adamw()
            .with_clip_norm(0.05)
            .with_grad_scale(4.0),
        BayespropConfig::lion(),
    ]
}

#[test]
fn the_fused_step_trains_in_the_learner_as_in_a_plain_loop() {
    let device = common::device();
    for config in fused_configs() {
        let name = config.config().name();
        let mlp = Mlp::new(&device);
        let mut plain = Regression { mlp: mlp.clone() };
        let mut optim = config.init();
        for _epoch in 0..2 {
            for t in 0..BATCHES {
                let (x, y) = common::batch(&device, t);
                let output = TrainStep::step(&plain, Batch { x, y });
                plain = optim.step(LR, plain, output.grads);
            }
        }
        let dir = temp_dir(&format!("fused-{name}"));
        let trained = fused_run(mlp, &config, &dir, 2, None);
        assert_eq!(
            bits(&flat(&trained)),
            bits(&flat(&plain.mlp)),
            "{name}: θ after 2 epochs of the fused step in the Learner vs a plain loop"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn the_fused_step_resumes_from_its_checkpoints_bit_for_bit() {
    let device = common::device();
    for config in fused_configs() {
        let name = config.config().name();
        let mlp = Mlp::new(&device);
        assert_resumes(&format!("fused-{name}"), |dir, epochs, resume| {
            flat(&fused_run(mlp.clone(), &config, dir, epochs, resume))
        });
    }
}
