//! The per-tensor optimizer: burn's `Optimizer` trait, so that burn's `ModuleOptimizer`, and
//! with it burn-train's `Learner`, steps every parameter through bayesprop's fused kernels.

use std::sync::{Arc, Mutex, PoisonError};

use bayesprop::wgpu;
use bayesprop::{
    Checkpoint, GpuOptimizer, HeldVector, OptimizerConfig, ParamGroups, Stepper, TensorBuffers,
};
use burn::optim::{LearningRate, Optimizer, RecordState, StateSink, StateSource};
use burn::tensor::{DType, Device, Tensor, TensorData};
use burn_pack::Scalar;

use crate::config::BayespropConfig;
use crate::device::shared_context;
use crate::encode::{set_lr, submit_checked, Scratch};
use crate::error::{Error, Result, StepError};
use crate::view::GpuView;

/// bayesprop as burn's per-tensor optimizer: `ModuleOptimizer::from(config.build()?)` in place
/// of `AdamConfig::new().init()`, and so the optimizer of burn-train's `Learner`.
///
/// Each parameter is stepped by the fused kernel on burn's own θ and gradient buffers, in
/// place, with its state (σ, s, m, v, …) on the device. burn keeps that state per parameter
/// ([`TensorState`]) and writes it into its optimizer records, so the Learner's checkpointer
/// saves and resumes it bit for bit.
///
/// What this path gives up against [`crate::BayespropOptimizer`]: one dispatch and one submit
/// per parameter (not one per step), and no norm over every parameter, so no global-norm
/// clipping ([`BayespropConfig::build`] refuses it). The non-finite policy acts per tensor.
#[derive(Clone)]
pub struct BayespropTensorOptimizer {
    config: BayespropConfig,
    /// Carries a shared parameter's values within one wgpu buffer (see [`Scratch`]).
    scratch: Arc<Mutex<Scratch>>,
}

/// One parameter's optimizer state as burn keeps it: bayesprop's state of that tensor on the
/// device, or the vectors a record brought, restored at the parameter's next step.
///
/// burn treats a state as a value: a clone is a snapshot. A clone shares the device state
/// until one of them steps; that step first copies it (through the host), so the other keeps
/// its values.
#[derive(Clone)]
pub struct TensorState<const D: usize> {
    held: Arc<Mutex<Held>>,
}

enum Held {
    /// bayesprop's optimizer over this one tensor, θ and g in burn's buffers.
    Live(Box<GpuOptimizer>),
    /// From a record, or copied from a shared state: applied at the next step.
    Saved(Saved),
}

/// A tensor's state off the device: steps applied and each state vector by its SPEC name, in
/// f32 or, for a `bf16` or `q8` state format, as held.
#[derive(Clone)]
struct Saved {
    steps: u64,
    shape: Vec<usize>,
    vectors: Vec<(String, Vec<f32>)>,
    held: Vec<(String, HeldVector)>,
}

/// A failed per-tensor step: the error, with θ and the state as they came (in `module`).
pub type TensorStepError<const D: usize> = Box<StepError<(Tensor<D>, Option<TensorState<D>>)>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BayespropTensorOptimizer {
    pub(crate) fn new(config: BayespropConfig) -> Self {
        BayespropTensorOptimizer {
            config,
            scratch: Arc::default(),
        }
    }

    /// The optimizer and hyperparameters (burn's learning rate sets the one
    /// [`BayespropConfig::with_lr_as`] names, at each step).
    pub fn config(&self) -> &OptimizerConfig {
        &self.config.config
    }

    /// burn's step, returning errors: θ and the state come back with the error as they came.
    pub fn try_step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<TensorState<D>>,
    ) -> Result<(Tensor<D>, TensorState<D>), TensorStepError<D>> {
        // Checked before any view takes a reference to the buffer.
        let shared = !tensor.can_mut();
        let fresh = shared.then(|| Tensor::<D>::empty(tensor.shape(), &tensor.device()));
        match self.step_views(lr, &tensor, fresh.as_ref(), grad, state.as_ref()) {
            Ok(state) => Ok((fresh.unwrap_or(tensor), state)),
            Err(error) => Err(Box::new(StepError {
                error,
                module: (tensor, state),
            })),
        }
    }

    fn step_views<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: &Tensor<D>,
        fresh: Option<&Tensor<D>>,
        grad: Tensor<D>,
        state: Option<&TensorState<D>>,
    ) -> Result<TensorState<D>> {
        let what = || "a parameter".to_string();
        let theta = GpuView::of(tensor.clone(), &what)?;
        let out = fresh.map(|f| GpuView::of(f.clone(), &what)).transpose()?;
        let grad = GpuView::of(grad, &|| "a parameter's gradient".into())?;
        theta.check_gradient(&grad, &what)?;
        let place = TensorBuffers {
            theta: out.as_ref().unwrap_or(&theta).range(),
            grad: grad.range(),
        };
        let shape = tensor.dims().to_vec();
        let device = tensor.device();
        // A state held elsewhere too (a clone of burn's, or a record's) is copied, never
        // stepped under the other holder.
        let state = match state {
            None => TensorState::fresh(),
            Some(s) if Arc::strong_count(&s.held) == 1 => s.clone(),
            Some(s) => TensorState::from_saved(s.to_saved()?),
        };
        {
            let mut held = lock(&state.held);
            match &mut *held {
                Held::Live(gpu) => gpu.set_tensor_buffers(std::slice::from_ref(&place))?,
                Held::Saved(saved) => {
                    let gpu = self.build(&device, &shape, &place, saved)?;
                    *held = Held::Live(Box::new(gpu));
                }
            }
            let Held::Live(gpu) = &mut *held else {
                unreachable!("built above")
            };
            set_lr(gpu, lr, &self.config.lr_as)?;
            let ctx = gpu.context().clone();
            let mut encoder =
                ctx.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("bayesprop-burn tensor step"),
                    });
            let shared = out.as_ref().map(|out| (&theta, out)).into_iter().collect();
            lock(&self.scratch).copy_shared(ctx.device(), &mut encoder, shared);
            gpu.encode_step(&mut encoder)?;
            submit_checked(&ctx, encoder, "the step")?;
        }
        // The views pin burn's buffers until the submit that uses them is on the queue.
        drop((theta, out, grad));
        Ok(state)
    }

    /// bayesprop's optimizer over one tensor in burn's buffers, with the state `saved` holds
    /// (none: a first step).
    fn build(
        &self,
        device: &Device,
        shape: &[usize],
        place: &TensorBuffers,
        saved: &Saved,
    ) -> Result<GpuOptimizer> {
        let ctx = shared_context(device)?;
        let mut groups = ParamGroups::new();
        let group = groups.add_group("burn", self.config.config.clone())?;
        groups.set_policy(group, self.config.policy)?;
        let storage = self.config.storage;
        groups.set_state_format(group, storage.format, storage.seed)?;
        // θ₀ is never used: θ is wherever burn keeps it.
        let len = shape.iter().product();
        groups.add_tensor(group, "param", shape, &vec![0.0; len])?;
        let mut gpu = GpuOptimizer::from_tensors_in(&ctx, &groups, std::slice::from_ref(place))?;
        gpu.set_grad_transform(self.config.transform)?;
        if saved.steps > 0 || !saved.vectors.is_empty() || !saved.held.is_empty() {
            let checkpoint = saved.checkpoint_for(&gpu, shape)?;
            gpu.restore(&checkpoint)?;
        }
        Ok(gpu)
    }
}

impl Saved {
    /// `gpu`'s checkpoint with this state in place of its own: θ stays as read from burn's
    /// buffer, every state vector the optimizer uses must be here, by name and length.
    fn checkpoint_for(&self, gpu: &GpuOptimizer, shape: &[usize]) -> Result<Checkpoint> {
        // A state without vectors (sgd without momentum) has no shape to check.
        if (!self.vectors.is_empty() || !self.held.is_empty()) && self.shape != shape {
            return Err(Error::Parameters(format!(
                "a saved optimizer state of shape {:?} for a parameter of shape {shape:?}",
                self.shape
            )));
        }
        let mut checkpoint = gpu.checkpoint()?;
        checkpoint.groups[0].steps = self.steps;
        let missing = |name: &str| {
            Error::Parameters(format!(
                "the saved optimizer state has no `{name}` as {} uses it: it was saved by \
                 another optimizer, config or state format",
                gpu.config().name()
            ))
        };
        let tensor = &mut checkpoint.tensors[0];
        for (name, values) in tensor.vectors.iter_mut().filter(|(n, _)| n != "theta") {
            let saved = self.vectors.iter().find(|(n, _)| n == name);
            *values = saved.ok_or_else(|| missing(name))?.1.clone();
        }
        for (name, held) in &mut tensor.held {
            let saved = self
                .held
                .iter()
                .find(|(n, h)| n == name && h.format() == held.format());
            *held = saved.ok_or_else(|| missing(name))?.1.clone();
        }
        Ok(checkpoint)
    }
}

impl<const D: usize> TensorState<D> {
    fn fresh() -> Self {
        Self::from_saved(Saved {
            steps: 0,
            shape: Vec::new(),
            vectors: Vec::new(),
            held: Vec::new(),
        })
    }

    fn from_saved(saved: Saved) -> Self {
        TensorState {
            held: Arc::new(Mutex::new(Held::Saved(saved))),
        }
    }

    /// The state off the device: one read back.
    fn to_saved(&self) -> Result<Saved> {
        match &*lock(&self.held) {
            Held::Saved(saved) => Ok(saved.clone()),
            Held::Live(gpu) => {
                let checkpoint = gpu.checkpoint()?;
                let (group, tensor) = (&checkpoint.groups[0], &checkpoint.tensors[0]);
                Ok(Saved {
                    steps: group.steps,
                    shape: tensor.shape.clone(),
                    vectors: tensor
                        .vectors
                        .iter()
                        .filter(|(name, _)| name != "theta")
                        .cloned()
                        .collect(),
                    held: tensor.held.clone(),
                })
            }
        }
    }

    /// Steps applied to this parameter (a skipped step does not count).
    pub fn steps(&self) -> Result<u64> {
        Ok(self.to_saved()?.steps)
    }

    /// The state vector `name` (`sigma`, `s`, `m`, `v`, … by SPEC name), read back (f32
    /// state; a `bf16` or `q8` state is read through bayesprop's `GpuOptimizer::state`).
    pub fn vector(&self, name: &str) -> Result<Vec<f32>> {
        let saved = self.to_saved()?;
        saved
            .vectors
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| Error::Parameters(format!("this state has no vector `{name}`")))
    }
}

/// Every state vector name of bayesprop's table: a record is read back by these names.
fn state_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = OptimizerConfig::all_defaults()
        .iter()
        .flat_map(|c| c.as_dyn().state_slots().into_iter().map(|slot| slot.name))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

const STEPS: &str = "steps";

/// The suffix of a q8 vector's scales in a record: `{prefix}.{SPEC name}_scales`.
const SCALES: &str = "_scales";

impl<const D: usize> RecordState for TensorState<D> {
    /// `{prefix}.steps`, and one tensor of the parameter's shape per state vector, named
    /// `{prefix}.{SPEC name}`: f32, or as held in `bf16` (u16 codes) and `q8` (u8 codes, with
    /// f32 scales in `{prefix}.{SPEC name}_scales`).
    ///
    /// # Panics
    /// When the state cannot be read back from the device (a device error): burn's trait has
    /// no error channel.
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        let saved = self
            .to_saved()
            .unwrap_or_else(|e| panic!("bayesprop: reading the optimizer state for a record: {e}"));
        out.push_scalar(prefix, STEPS, Scalar::from(saved.steps));
        for (name, values) in saved.vectors {
            out.push_tensor(prefix, &name, TensorData::new(values, saved.shape.clone()));
        }
        for (name, held) in saved.held {
            let codes = match held {
                HeldVector::Bf16(codes) => TensorData::new(codes, saved.shape.clone()),
                HeldVector::Q8 { codes, scales } => {
                    let blocks = vec![scales.len()];
                    let scales_name = format!("{name}{SCALES}");
                    out.push_tensor(prefix, &scales_name, TensorData::new(scales, blocks));
                    TensorData::new(codes, saved.shape.clone())
                }
            };
            out.push_tensor(prefix, &name, codes);
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, _device: &Device) -> Option<Self> {
        let steps = u64::try_from(src.take_scalar(prefix, STEPS)?).ok()?;
        let mut shape = None;
        let (mut vectors, mut held) = (Vec::new(), Vec::new());
        for name in state_names() {
            let Some(data) = src.take_tensor(prefix, name) else {
                continue;
            };
            shape = Some(data.shape().to_vec());
            let name = name.to_string();
            match data.dtype() {
                DType::U16 => {
                    let codes = data.as_slice::<u16>().ok()?.to_vec();
                    held.push((name, HeldVector::Bf16(codes)));
                }
                DType::U8 => {
                    let scales = src.take_tensor(prefix, &format!("{name}{SCALES}"))?;
                    let codes = data.as_slice::<u8>().ok()?.to_vec();
                    let scales = scales.as_slice::<f32>().ok()?.to_vec();
                    held.push((name, HeldVector::Q8 { codes, scales }));
                }
                _ => vectors.push((name, data.as_slice::<f32>().ok()?.to_vec())),
            }
        }
        Some(Self::from_saved(Saved {
            steps,
            shape: shape.unwrap_or_default(),
            vectors,
            held,
        }))
    }
}

impl Optimizer for BayespropTensorOptimizer {
    type State<const D: usize> = TensorState<D>;

    /// # Panics
    /// burn's `Optimizer` trait has no error channel, so an error panics here with its message
    /// (a tensor not on a device set up with [`crate::init_device`], a device error, a record
    /// of another optimizer). [`BayespropTensorOptimizer::try_step`] returns it.
    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        match self.try_step(lr, tensor, grad, state) {
            Ok((tensor, state)) => (tensor, Some(state)),
            Err(e) => panic!(
                "bayesprop step: {} (burn's Optimizer::step cannot return errors; \
                 BayespropTensorOptimizer::try_step does)",
                e.error
            ),
        }
    }

    /// The state stays where it is: bayesprop's state of a tensor lives on the device of the
    /// tensor's first step, and a record's until the next step.
    fn to_device<const D: usize>(state: Self::State<D>, _device: &Device) -> Self::State<D> {
        state
    }
}
