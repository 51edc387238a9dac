//! The module-level optimizer: every parameter of a burn module stepped in one submit.

use std::collections::HashMap;
use std::path::Path;

use bayesprop::wgpu;
use bayesprop::{
    Checkpoint, GpuOptimizer, OptimizerConfig, ParamGroups, Stepper, TensorBuffers, TensorId,
};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, LearningRate};
use burn::tensor::{Device, GradientCheckpointingStrategy, Shape, Tensor};

use crate::config::BayespropConfig;
use crate::device::shared_context;
use crate::encode::{set_lr, submit_checked, Scratch};
use crate::error::{Error, Result, StepError};
use crate::view::GpuView;

/// A tensor registered with bayesprop at the first step.
struct Registered {
    id: TensorId,
    shape: Vec<usize>,
}

/// What exists once the first step has seen the parameters.
struct Built {
    gpu: GpuOptimizer,
    /// burn's device of the parameters, without autodiff, for state read back as tensors.
    device: Device,
    tensors: HashMap<ParamId, Registered>,
}

/// bayesprop as a burn optimizer. Build it with [`BayespropConfig::init`] (or a named config's
/// `init`), then step with [`BayespropOptimizer::step`] exactly where a burn training loop
/// calls `ModuleOptimizer::step`.
///
/// Each step runs the fused kernels on burn's own parameter and gradient buffers, in place, at
/// the offsets burn's allocator gave them: one command buffer, one submit, no copies and no
/// host round trip. The state (σ, s, m, v, …) lives in bayesprop's arena.
pub struct BayespropOptimizer {
    config: BayespropConfig,
    built: Option<Built>,
    /// A loaded checkpoint, restored at the next step: only then are the parameters' buffers
    /// known (and pinned) to write θ into.
    pending: Option<Checkpoint>,
    scratch: Scratch,
}

impl BayespropOptimizer {
    pub(crate) fn new(config: BayespropConfig) -> Self {
        BayespropOptimizer {
            config,
            built: None,
            pending: None,
            scratch: Scratch::default(),
        }
    }

    /// Steps every parameter of `module` that has a gradient in `grads`, with learning rate
    /// `lr` (ignored by `bayes`, whose variance is its learning rate, unless the config names a
    /// hyperparameter for it: [`BayespropConfig::with_lr_as`]), and returns the module.
    ///
    /// # Panics
    /// burn's optimizers have no error channel, so an error panics here with its message: a
    /// parameter that is not an f32 wgpu tensor, a device not set up with
    /// [`crate::init_device`], or a device error. [`BayespropOptimizer::try_step`] returns it.
    pub fn step<M: Module>(&mut self, lr: LearningRate, module: M, grads: GradientsParams) -> M {
        match self.try_step(lr, module, grads) {
            Ok(module) => module,
            Err(e) => panic!("bayesprop step: {}", e.error),
        }
    }

    /// [`BayespropOptimizer::step`], returning errors with the module unchanged.
    pub fn try_step<M: Module>(
        &mut self,
        lr: LearningRate,
        module: M,
        mut grads: GradientsParams,
    ) -> Result<M, StepError<M>> {
        // What can be checked without touching the module is checked first, so that most
        // errors hand the module back as it came.
        let mut survey = Survey {
            grads: &grads,
            specs: Vec::new(),
        };
        module.visit(&mut survey);
        let specs = survey.specs;
        if specs.is_empty() {
            return Ok(module);
        }
        if let Some(built) = &self.built {
            if let Err(error) = check_same_parameters(built, &specs) {
                return Err(StepError { error, module });
            }
        }
        let mut collect = Collect {
            grads: &mut grads,
            entries: Vec::new(),
            error: None,
        };
        let module = module.map(&mut collect);
        let (entries, error) = (collect.entries, collect.error);
        let result = match error {
            Some(error) => Err(error),
            None => self.step_entries(lr, &specs, &entries),
        };
        // Parameters already moved to fresh tensors must get their values back.
        let result = result.map_err(|error| {
            keep_values(&specs, &mut self.scratch, &entries)
                .err()
                .unwrap_or(error)
        });
        // The views pin burn's buffers until the submit that uses them is on the queue.
        drop(entries);
        match result {
            Ok(()) => Ok(module),
            Err(error) => Err(StepError { error, module }),
        }
    }

    /// Points bayesprop at this step's buffers (building the state at the first step),
    /// restores a loaded checkpoint, sets the learning rate, and submits the step.
    fn step_entries(&mut self, lr: LearningRate, specs: &[Spec], entries: &[Entry]) -> Result<()> {
        let built = match &mut self.built {
            Some(built) => {
                built
                    .gpu
                    .set_tensor_buffers(&places_of(&built.tensors, entries)?)?;
                built
            }
            None => {
                let built = build(&self.config, specs, entries)?;
                self.built.insert(built)
            }
        };
        if let Some(checkpoint) = self.pending.take() {
            built.gpu.restore(&checkpoint)?;
        }
        set_lr(&mut built.gpu, lr, &self.config.lr_as)?;
        submit(&mut built.gpu, &mut self.scratch, entries)
    }

    /// The state vector `name` of a parameter as a burn tensor of its shape, copied on the
    /// device (no host round trip): `sigma`, the posterior variance of `bayes`, or `s`, `m`,
    /// `v`, … (SPEC names; `bayesprop info` lists them per optimizer). A derived vector
    /// (`bayes_fp`'s σ, computed from its stored state) is computed on the host.
    pub fn state<const D: usize>(&self, param: ParamId, name: &str) -> Result<Tensor<D>> {
        let built = self
            .built
            .as_ref()
            .ok_or(Error::NotStarted("reading a state"))?;
        let registered = built.tensors.get(&param).ok_or_else(|| {
            Error::Parameters(format!(
                "parameter {param} has no state: it never had a gradient"
            ))
        })?;
        if registered.shape.len() != D {
            return Err(Error::Parameters(format!(
                "parameter {param} has rank {}, asked for rank {D}",
                registered.shape.len()
            )));
        }
        let shape = Shape::from(registered.shape.clone());
        let derived = built.gpu.config().as_dyn().derived_state_names();
        if derived.contains(&name) {
            // Computed from the stored states on the host (bayes_fp's σ): one round trip.
            let values = built.gpu.tensor_state(registered.id, name)?;
            let data = burn::tensor::TensorData::new(values, shape);
            return Ok(Tensor::from_data(data, &built.device));
        }
        let slice = built.gpu.tensor_state_range(registered.id, name)?;
        let out = Tensor::<D>::empty(shape, &built.device);
        let view = GpuView::of(out.clone(), &|| format!("state {name} of {param}"))?;
        let ctx = built.gpu.context();
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(
            &slice.buffer,
            slice.offset,
            view.buffer(),
            view.offset(),
            slice.size,
        );
        submit_checked(ctx, encoder, "reading a state")?;
        drop(view);
        Ok(out)
    }

    /// σ of a parameter, the posterior variance per element (`bayes` only).
    pub fn sigma<const D: usize>(&self, param: ParamId) -> Result<Tensor<D>> {
        self.state(param, "sigma")
    }

    /// The whole state, θ included, as bayesprop's checkpoint: tensors are named by burn's
    /// parameter ids, which burn's module records keep. θ is read from the parameters' buffers
    /// of the last step, so take it while the module that step returned is alive.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let built = self.built.as_ref().ok_or(Error::NotStarted("saving"))?;
        Ok(built.gpu.checkpoint()?)
    }

    /// Saves [`BayespropOptimizer::checkpoint`] (safetensors). A run loaded from it, with the
    /// module saved at the same step, goes on bit-identically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        Ok(self.checkpoint()?.save(path)?)
    }

    /// Loads a checkpoint written by [`BayespropOptimizer::save`]. It is restored at the next
    /// step, where θ is written into the parameters' buffers that step brings (the same values
    /// as the module saved at the same step) before the step runs.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.pending = Some(Checkpoint::load(path)?);
        Ok(())
    }

    /// The optimizer and hyperparameters this adapter runs.
    pub fn config(&self) -> &OptimizerConfig {
        match &self.built {
            Some(built) => built.gpu.config(),
            None => &self.config.config,
        }
    }

    /// bayesprop's optimizer underneath, once the first step has built it (for step reports,
    /// group configs, or anything else of the [`Stepper`] API).
    pub fn inner(&mut self) -> Option<&mut GpuOptimizer> {
        self.built.as_mut().map(|b| &mut b.gpu)
    }
}

/// A parameter with a gradient, as the first pass over the module sees it.
struct Spec {
    id: ParamId,
    shape: Vec<usize>,
    device: Device,
}

/// The first pass: which parameters have gradients, with their shapes and device.
struct Survey<'a> {
    grads: &'a GradientsParams,
    specs: Vec<Spec>,
}

impl ModuleVisitor for Survey<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.grads.get::<D>(param.id).is_none() {
            return;
        }
        let stored: &Tensor<D> = param;
        self.specs.push(Spec {
            id: param.id,
            shape: stored.dims().to_vec(),
            device: stored.device(),
        });
    }
}

/// One parameter of this step: where θ is read, where it is written and where its gradient is.
struct Entry {
    id: ParamId,
    theta: GpuView,
    /// A fresh tensor θ is written to when the parameter's buffer is shared (a clone of the
    /// module holds it), so the clone keeps its values; else θ is written in place.
    out: Option<GpuView>,
    grad: GpuView,
}

/// Walks the module, pairing each parameter with its gradient. A mapper cannot fail, so the
/// first error is kept and every later parameter passes through untouched.
struct Collect<'a> {
    grads: &'a mut GradientsParams,
    entries: Vec<Entry>,
    error: Option<Error>,
}

impl Collect<'_> {
    /// The parameter as the module keeps it: θ itself, or the fresh tensor θ goes to.
    fn prepare<const D: usize>(&mut self, id: ParamId, tensor: Tensor<D>) -> Tensor<D> {
        if self.error.is_some() {
            return tensor;
        }
        let Some(grad) = self.grads.remove::<D>(id) else {
            return tensor;
        };
        if tensor.is_distributed() {
            self.error = Some(Error::Tensor {
                what: format!("parameter {id}"),
                problem: "distributed parameters are not supported".into(),
            });
            return tensor;
        }
        let autodiff = AutodiffState::of(&tensor);
        let inner = tensor.inner();
        // Checked before any view takes a reference to the buffer.
        let shared = !inner.can_mut();
        let fresh = shared.then(|| Tensor::<D>::empty(inner.shape(), &inner.device()));
        let entry = (|| {
            let what = || format!("parameter {id}");
            let theta = GpuView::of(inner.clone(), &what)?;
            let out = match &fresh {
                Some(f) => Some(GpuView::of(f.clone(), &what)?),
                None => None,
            };
            let grad = GpuView::of(grad, &|| format!("gradient of parameter {id}"))?;
            theta.check_gradient(&grad, &what)?;
            Ok(Entry {
                id,
                theta,
                out,
                grad,
            })
        })();
        let kept = match entry {
            Ok(entry) => {
                self.entries.push(entry);
                fresh.unwrap_or(inner)
            }
            Err(e) => {
                self.error = Some(e);
                inner
            }
        };
        autodiff.restore(kept)
    }
}

impl ModuleMapper for Collect<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = self.prepare(id, tensor);
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// What a parameter carries for autodiff, put back on the value after the step (as burn's
/// `ModuleOptimizer` does): `Tensor::from_inner` alone would drop it.
struct AutodiffState {
    require_grad: bool,
    checkpointing: Option<GradientCheckpointingStrategy>,
}

impl AutodiffState {
    fn of<const D: usize>(tensor: &Tensor<D>) -> Self {
        AutodiffState {
            require_grad: tensor.is_require_grad(),
            checkpointing: tensor.gradient_checkpointing_strategy(),
        }
    }

    fn restore<const D: usize>(self, inner: Tensor<D>) -> Tensor<D> {
        let mut tensor = Tensor::from_inner(inner);
        if let Some(strategy) = self.checkpointing {
            tensor = tensor.with_gradient_checkpointing_strategy(strategy);
        }
        if self.require_grad {
            tensor = tensor.require_grad();
        }
        tensor
    }
}

/// bayesprop's optimizer over the parameters of the first step, each a tensor of one group
/// named by its parameter id, on the wgpu device the parameters live on, stepping them where
/// burn keeps them.
fn build(config: &BayespropConfig, specs: &[Spec], entries: &[Entry]) -> Result<Built> {
    let device = specs[0].device.clone().inner();
    let ctx = shared_context(&device)?;
    let mut groups = ParamGroups::new();
    let group = groups.add_group("burn", config.config.clone())?;
    groups.set_policy(group, config.policy)?;
    groups.set_state_format(group, config.storage.format, config.storage.seed)?;
    let mut tensors = HashMap::new();
    for spec in specs {
        // θ₀ is never used: θ is wherever burn keeps it.
        let len = spec.shape.iter().product();
        let name = spec.id.val().to_string();
        let id = groups.add_tensor(group, &name, &spec.shape, &vec![0.0; len])?;
        tensors.insert(
            spec.id,
            Registered {
                id,
                shape: spec.shape.clone(),
            },
        );
    }
    let places = places_of(&tensors, entries)?;
    let mut gpu = GpuOptimizer::from_tensors_in(&ctx, &groups, &places)?;
    gpu.set_grad_transform(config.transform)?;
    Ok(Built {
        gpu,
        device,
        tensors,
    })
}

/// Where this step's parameters and gradients are, in registration order. A shared
/// parameter is stepped in its fresh tensor (see [`Entry::out`]), where `submit` copies it
/// first.
fn places_of(
    tensors: &HashMap<ParamId, Registered>,
    entries: &[Entry],
) -> Result<Vec<TensorBuffers>> {
    let mut places: Vec<Option<TensorBuffers>> = vec![None; tensors.len()];
    for entry in entries {
        let registered = tensors.get(&entry.id).ok_or_else(|| {
            Error::Parameters(format!(
                "parameter {} was not there at the first step",
                entry.id
            ))
        })?;
        let theta = entry.out.as_ref().unwrap_or(&entry.theta);
        places[registered.id.0] = Some(TensorBuffers {
            theta: theta.range(),
            grad: entry.grad.range(),
        });
    }
    places
        .into_iter()
        .map(|p| {
            p.ok_or_else(|| {
                Error::Parameters("a parameter of the first step has no gradient".into())
            })
        })
        .collect()
}

/// The arena holds the parameters of the first step: a step must bring exactly those.
fn check_same_parameters(built: &Built, specs: &[Spec]) -> Result<()> {
    let known = specs.iter().all(|s| match built.tensors.get(&s.id) {
        Some(r) => r.shape == s.shape,
        None => false,
    });
    if known && specs.len() == built.tensors.len() {
        return Ok(());
    }
    Err(Error::Parameters(format!(
        "this step has gradients for {} parameters, the first step for {}, or shapes differ: \
         bayesprop steps the parameters of the first step, each with a gradient every step",
        specs.len(),
        built.tensors.len()
    )))
}

/// Records the step on burn's buffers, after copying each shared parameter into its fresh
/// tensor: one command buffer, one submit.
fn submit(gpu: &mut GpuOptimizer, scratch: &mut Scratch, entries: &[Entry]) -> Result<()> {
    let ctx = gpu.context().clone();
    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("bayesprop-burn step"),
        });
    scratch.copy_shared(ctx.device(), &mut encoder, shared_pairs(entries));
    gpu.encode_step(&mut encoder)?;
    submit_checked(&ctx, encoder, "the step")
}

/// Each shared parameter's θ and the fresh tensor that replaces it.
fn shared_pairs(entries: &[Entry]) -> Vec<(&GpuView, &GpuView)> {
    entries
        .iter()
        .filter_map(|e| Some((&e.theta, e.out.as_ref()?)))
        .collect()
}

/// After a failed step, gives the fresh tensors that replaced shared parameters their values.
fn keep_values(specs: &[Spec], scratch: &mut Scratch, entries: &[Entry]) -> Result<()> {
    if entries.iter().all(|e| e.out.is_none()) {
        return Ok(());
    }
    let ctx = shared_context(&specs[0].device.clone().inner())?;
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    scratch.copy_shared(ctx.device(), &mut encoder, shared_pairs(entries));
    submit_checked(&ctx, encoder, "restoring parameters after a failed step")
}
