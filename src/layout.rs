//! Parameter groups and tensors: what a user registers, and where each tensor lives.
//!
//! Each group has its own optimizer config and non-finite policy; its tensors are packed one
//! after another in the group's arena, each starting at a multiple of 4 elements (16 bytes) so
//! that vec4 access never straddles two tensors. The same layout serves the CPU and the GPU, so
//! a checkpoint written by one loads on the other.

use crate::config::{StateFormat, StateStorage};
use crate::error::{Error, Result};
use crate::optim::{NonFinitePolicy, OptimizerConfig};
use crate::schedule::{self, HyperSchedule};
use crate::transform::GradTransform;

/// Tensor offsets in an arena are multiples of this many elements (16 bytes).
pub const TENSOR_ALIGN: usize = 4;

/// A parameter group, by registration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub usize);

/// A tensor, by registration order over all groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub usize);

#[derive(Clone, Debug, PartialEq)]
pub struct GroupSpec {
    pub name: String,
    pub config: OptimizerConfig,
    pub policy: NonFinitePolicy,
    /// How the group's optimizer state is held (SPEC §6); `f32` by default.
    pub state_format: StateFormat,
    /// The seed of the state's stochastic rounding (SPEC §6); 0 by default. Unused in `f32`.
    pub state_seed: u32,
    /// Schedules of its float hyperparameters, at most one per hyperparameter.
    pub schedules: Vec<HyperSchedule>,
    /// Elements in the group's arena: its tensors and the padding between them.
    pub arena_len: usize,
    /// Where the arena starts in a flat vector of every tensor, when it is exactly a window of
    /// it: its tensors follow one another with no padding, in both. Kept as tensors are added,
    /// so that a step finds it without walking the tensors.
    pub(crate) flat_window: Option<usize>,
}

/// One of a group's stored per-element vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Theta,
    /// A state slot of the group's optimizer, by index.
    State(usize),
}

impl GroupSpec {
    /// θ, then the used state vectors in slot order, each with its SPEC name (`theta` for θ).
    /// Checkpoints store a group in this order and comparisons walk it in this order, so it
    /// is spelled out here alone.
    pub fn vectors(&self) -> Vec<(&'static str, Stored)> {
        let slots = self.config.as_dyn().state_slots();
        let used = slots.iter().enumerate().filter(|(_, slot)| slot.used);
        std::iter::once(("theta", Stored::Theta))
            .chain(used.map(|(k, slot)| (slot.name, Stored::State(k))))
            .collect()
    }

    /// The vectors a checkpoint stores as f32: all of [`GroupSpec::vectors`] in `f32`, θ
    /// alone in `bf16` and `q8`, whose state is stored as held (SPEC §6).
    pub fn f32_vectors(&self) -> Vec<(&'static str, Stored)> {
        let mut vectors = self.vectors();
        if self.state_format != StateFormat::F32 {
            vectors.truncate(1);
        }
        vectors
    }
}

/// A fresh state arena of `len` elements per slot of `config`'s optimizer, each at its start
/// value, and empty where the options leave the slot unused: the layout the CPU steps (in f32)
/// and the oracle (in f64) hand to the optimizer.
pub(crate) fn initial_state<F: Copy + From<f32>>(
    config: &OptimizerConfig,
    len: usize,
) -> Vec<Vec<F>> {
    let slots = config.as_dyn().state_slots();
    slots
        .iter()
        .map(|slot| match slot.used {
            true => vec![F::from(slot.init); len],
            false => Vec::new(),
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub group: GroupId,
    pub shape: Vec<usize>,
    /// First element in the group's arena.
    pub offset: usize,
    /// First element in a flat vector of every tensor in registration order.
    pub flat_offset: usize,
}

impl TensorSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tensor's elements in its group's arena.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }

    /// The tensor's elements in a flat vector of every tensor.
    pub fn flat_range(&self) -> std::ops::Range<usize> {
        self.flat_offset..self.flat_offset + self.len()
    }
}

impl GroupSpec {
    /// The config of applied step `t` (1-based): the group's config with its schedules
    /// applied.
    pub fn config_at(&self, t: u64) -> std::borrow::Cow<'_, OptimizerConfig> {
        schedule::config_at(&self.config, &self.schedules, t)
    }
}

/// The groups and tensors of a running optimizer, CPU or GPU: where each tensor lives, each
/// group's config, policy and schedules, and the gradient transform over all groups, all of
/// which may change between steps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layout {
    pub(crate) groups: Vec<GroupSpec>,
    pub(crate) tensors: Vec<TensorSpec>,
    pub(crate) transform: GradTransform,
}

impl Layout {
    pub fn groups(&self) -> &[GroupSpec] {
        &self.groups
    }

    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// What every step does to the raw gradient before the update.
    pub fn transform(&self) -> &GradTransform {
        &self.transform
    }

    /// Replaces the gradient transform (validated).
    pub fn set_transform(&mut self, transform: GradTransform) -> Result<()> {
        transform.validate()?;
        self.transform = transform;
        Ok(())
    }

    /// Elements over all tensors, padding excluded: the length of a flat gradient.
    pub fn total_len(&self) -> usize {
        self.tensors.iter().map(TensorSpec::len).sum()
    }

    /// Refuses a flat gradient whose length is not [`Layout::total_len`], before any group
    /// steps on it.
    pub fn check_gradient(&self, grad: &[f32]) -> Result<()> {
        let expected = self.total_len();
        if grad.len() != expected {
            return Err(Error::LengthMismatch {
                what: "gradient",
                got: grad.len(),
                expected,
            });
        }
        Ok(())
    }

    pub fn tensor(&self, id: TensorId) -> Result<&TensorSpec> {
        self.tensors.get(id.0).ok_or_else(|| {
            Error::Layout(format!(
                "no tensor {} (there are {})",
                id.0,
                self.tensors.len()
            ))
        })
    }

    pub fn group(&self, id: GroupId) -> Result<&GroupSpec> {
        self.groups.get(id.0).ok_or_else(|| {
            Error::Layout(format!(
                "no group {} (there are {})",
                id.0,
                self.groups.len()
            ))
        })
    }

    fn group_mut(&mut self, id: GroupId) -> Result<&mut GroupSpec> {
        self.group(id)?;
        Ok(&mut self.groups[id.0])
    }

    /// The index of the used state slot `name` of a group's optimizer.
    pub fn slot(&self, group: GroupId, name: &str) -> Result<usize> {
        let config = &self.group(group)?.config;
        config
            .as_dyn()
            .state_slots()
            .iter()
            .position(|s| s.name == name && s.used)
            .ok_or_else(|| Error::Unknown {
                what: "state",
                name: name.to_string(),
                known: config.used_state_names().join(", "),
            })
    }

    /// Where a group's vector `name` is read from: a used state slot, or derived from them.
    pub(crate) fn state_source(&self, group: GroupId, name: &str) -> Result<StateSource> {
        let optimizer = self.group(group)?.config.as_dyn();
        match self.slot(group, name) {
            Ok(slot) => Ok(StateSource::Slot(slot)),
            Err(_) if optimizer.derived_state_names().contains(&name) => Ok(StateSource::Derived),
            Err(Error::Unknown { what, name, known }) => Err(Error::Unknown {
                what,
                name,
                known: std::iter::once(known.as_str())
                    .chain(optimizer.derived_state_names().iter().copied())
                    .filter(|k| !k.is_empty())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            Err(e) => Err(e),
        }
    }

    /// A group's derived vector `name`, for the elements whose stored states are `stored`
    /// (slot order, unused slots empty), after `t` applied steps.
    pub(crate) fn derive_state(
        &self,
        group: GroupId,
        name: &str,
        t: u64,
        stored: &[&[f32]],
    ) -> Result<Vec<f32>> {
        // The config of step t: a scheduled η is in σ*.
        let config = self.group(group)?.config_at(t);
        let optimizer = config.as_dyn();
        optimizer
            .derived_state(name, t, stored)
            .ok_or_else(|| Error::Unknown {
                what: "derived state",
                name: name.to_string(),
                known: optimizer.derived_state_names().join(", "),
            })
    }

    /// Replaces one group's hyperparameters (validated; the same state vectors, and a float
    /// for each scheduled hyperparameter).
    pub fn set_group_config(&mut self, group: GroupId, config: OptimizerConfig) -> Result<()> {
        config.validate()?;
        let spec = self.group_mut(group)?;
        spec.config.check_same_layout(&config)?;
        for s in &spec.schedules {
            s.check_applies_to(&config)?;
        }
        spec.config = config;
        Ok(())
    }

    /// Replaces every group's hyperparameters, or none if one would not take them.
    pub fn set_config_everywhere(&mut self, config: &OptimizerConfig) -> Result<()> {
        config.validate()?;
        for group in &self.groups {
            group.config.check_same_layout(config)?;
            for s in &group.schedules {
                s.check_applies_to(config)?;
            }
        }
        for group in &mut self.groups {
            group.config = config.clone();
        }
        Ok(())
    }

    /// Schedules a float hyperparameter of one group, replacing any schedule it had.
    pub fn set_group_schedule(&mut self, group: GroupId, schedule: HyperSchedule) -> Result<()> {
        let spec = self.group_mut(group)?;
        schedule.check_applies_to(&spec.config)?;
        spec.schedules.retain(|s| s.hyper != schedule.hyper);
        spec.schedules.push(schedule);
        Ok(())
    }

    /// Schedules a float hyperparameter of every group, or of none if one lacks it.
    pub fn set_schedule_everywhere(&mut self, schedule: &HyperSchedule) -> Result<()> {
        for group in &self.groups {
            schedule.check_applies_to(&group.config)?;
        }
        for g in 0..self.groups.len() {
            self.set_group_schedule(GroupId(g), schedule.clone())?;
        }
        Ok(())
    }

    /// Replaces one group's schedules (checked; none changes if one does not apply).
    pub fn set_group_schedules(
        &mut self,
        group: GroupId,
        schedules: Vec<HyperSchedule>,
    ) -> Result<()> {
        let spec = self.group_mut(group)?;
        for s in &schedules {
            s.check_applies_to(&spec.config)?;
        }
        spec.schedules = schedules;
        Ok(())
    }

    pub fn set_group_policy(&mut self, group: GroupId, policy: NonFinitePolicy) -> Result<()> {
        self.group_mut(group)?.policy = policy;
        Ok(())
    }

    pub fn set_policy_everywhere(&mut self, policy: NonFinitePolicy) {
        for group in &mut self.groups {
            group.policy = policy;
        }
    }

    /// The tensors of one group.
    pub fn tensors_of(&self, group: usize) -> impl Iterator<Item = &TensorSpec> {
        self.tensors.iter().filter(move |t| t.group.0 == group)
    }

    /// The arena of group `index` from a flat vector of every tensor (zeros in the padding),
    /// or a window of the flat vector itself where they coincide: the group's tensors lie
    /// one after another in both, with no padding between them (so no copy per step).
    pub(crate) fn arena_of<'a>(
        &self,
        index: usize,
        flat: &'a [f32],
    ) -> std::borrow::Cow<'a, [f32]> {
        let group = &self.groups[index];
        if let Some(base) = group.flat_window {
            let window = base..base + group.arena_len;
            if window.end <= flat.len() {
                return std::borrow::Cow::Borrowed(&flat[window]);
            }
        }
        let mut arena = vec![0.0; self.groups[index].arena_len];
        for t in self.tensors_of(index) {
            arena[t.range()].copy_from_slice(&flat[t.flat_range()]);
        }
        std::borrow::Cow::Owned(arena)
    }

    /// A flat vector of every tensor, in registration order, from one arena per group.
    pub(crate) fn flatten(&self, arenas: &[impl AsRef<[f32]>]) -> Vec<f32> {
        let mut flat = Vec::with_capacity(self.total_len());
        for t in &self.tensors {
            flat.extend_from_slice(&arenas[t.group.0].as_ref()[t.range()]);
        }
        flat
    }
}

/// Where a state vector read by name comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StateSource {
    /// The used state slot with this index.
    Slot(usize),
    /// Computed from the stored states on request ([`crate::Optimizer::derived_state`]).
    Derived,
}

/// Groups and tensors, with θ₀ for each tensor. Build a `CpuOptimizer` or `GpuOptimizer` from
/// it.
#[derive(Clone, Debug, Default)]
pub struct ParamGroups {
    layout: Layout,
    /// θ₀ of each group's arena (padding 0).
    theta0: Vec<Vec<f32>>,
}

impl ParamGroups {
    pub fn new() -> Self {
        Self::default()
    }

    /// One group holding one tensor named `theta`: the single-vector case.
    pub fn single(config: OptimizerConfig, theta0: &[f32]) -> Result<Self> {
        let mut groups = ParamGroups::new();
        let group = groups.add_group("params", config)?;
        groups.add_tensor(group, "theta", &[theta0.len()], theta0)?;
        Ok(groups)
    }

    /// Adds a group with its own (validated) config; names must be unique.
    pub fn add_group(&mut self, name: &str, config: impl Into<OptimizerConfig>) -> Result<GroupId> {
        let config = config.into();
        config.validate()?;
        check_name(
            "group",
            name,
            self.layout.groups.iter().map(|g| g.name.as_str()),
        )?;
        self.layout.groups.push(GroupSpec {
            name: name.to_string(),
            config,
            policy: NonFinitePolicy::default(),
            state_format: StateFormat::default(),
            state_seed: 0,
            schedules: Vec::new(),
            arena_len: 0,
            flat_window: None,
        });
        self.theta0.push(Vec::new());
        Ok(GroupId(self.layout.groups.len() - 1))
    }

    pub fn set_policy(&mut self, group: GroupId, policy: NonFinitePolicy) -> Result<()> {
        self.layout.set_group_policy(group, policy)
    }

    /// How `group`'s optimizer state is held, and the seed of its stochastic rounding
    /// (SPEC §6). A storage setting of the group, like its non-finite policy, fixed when the
    /// optimizer is built from these groups. The CPU paths support every format; the GPU
    /// optimizer refuses any but `f32` for now.
    pub fn set_state_format(
        &mut self,
        group: GroupId,
        format: StateFormat,
        seed: u32,
    ) -> Result<()> {
        let spec = self.layout.group_mut(group)?;
        spec.state_format = format;
        spec.state_seed = seed;
        Ok(())
    }

    /// Sets a group's storage option from text: `state_format` (`f32`, `bf16`, `q8`) or
    /// `state_seed` (an integer in 0 ..= 2^32 − 1). A bad key or value is one line.
    pub fn set_group_option(&mut self, group: GroupId, key: &str, value: &str) -> Result<()> {
        let spec = self.layout.group_mut(group)?;
        let mut storage = StateStorage {
            format: spec.state_format,
            seed: spec.state_seed,
        };
        storage.set_option(key, value)?;
        spec.state_format = storage.format;
        spec.state_seed = storage.seed;
        Ok(())
    }

    /// Adds a tensor of `shape` to `group`, starting at θ₀ (in row-major order).
    pub fn add_tensor(
        &mut self,
        group: GroupId,
        name: &str,
        shape: &[usize],
        theta0: &[f32],
    ) -> Result<TensorId> {
        let len: usize = shape.iter().product();
        if theta0.len() != len {
            return Err(Error::LengthMismatch {
                what: "θ₀ of the tensor",
                got: theta0.len(),
                expected: len,
            });
        }
        self.layout.group(group)?;
        let in_group = self.layout.tensors_of(group.0);
        check_name("tensor", name, in_group.map(|t| t.name.as_str()))?;
        let flat_offset = self.layout.total_len();
        let spec = &mut self.layout.groups[group.0];
        let offset = spec.arena_len.next_multiple_of(TENSOR_ALIGN);
        spec.flat_window = match spec.arena_len {
            // The first tensor with elements starts the window.
            0 => Some(flat_offset),
            end => spec
                .flat_window
                .filter(|&base| offset == end && flat_offset == base + offset),
        };
        spec.arena_len = offset + len;
        let arena = &mut self.theta0[group.0];
        arena.resize(offset, 0.0);
        arena.extend_from_slice(theta0);
        self.layout.tensors.push(TensorSpec {
            name: name.to_string(),
            group,
            shape: shape.to_vec(),
            offset,
            flat_offset,
        });
        Ok(TensorId(self.layout.tensors.len() - 1))
    }

    /// Adds a tensor from an ndarray of any shape and layout.
    #[cfg(feature = "ndarray")]
    pub fn add_array<D: ndarray::Dimension>(
        &mut self,
        group: GroupId,
        name: &str,
        theta0: ndarray::ArrayView<'_, f32, D>,
    ) -> Result<TensorId> {
        let values: Vec<f32> = theta0.iter().copied().collect();
        self.add_tensor(group, name, theta0.shape(), &values)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn groups(&self) -> &[GroupSpec] {
        &self.layout.groups
    }

    pub fn tensors(&self) -> &[TensorSpec] {
        &self.layout.tensors
    }

    /// θ₀ of a group's arena, padding included.
    pub fn arena_theta0(&self, group: GroupId) -> &[f32] {
        &self.theta0[group.0]
    }

    /// Elements over all tensors, padding excluded: the length of a flat gradient.
    pub fn total_len(&self) -> usize {
        self.layout.total_len()
    }
}

fn check_name<'a>(
    what: &'static str,
    name: &str,
    mut existing: impl Iterator<Item = &'a str>,
) -> Result<()> {
    if name.is_empty() || name.contains('.') {
        return Err(Error::Layout(format!(
            "{what} name `{name}` must be non-empty and without '.' (checkpoints name tensors group.tensor.state)"
        )));
    }
    if existing.any(|e| e == name) {
        return Err(Error::Layout(format!(
            "{what} name `{name}` is already taken"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::OptimizerConfig;
    use std::borrow::Cow;

    fn sgd() -> OptimizerConfig {
        OptimizerConfig::default_for("sgd").unwrap()
    }

    /// Groups of unpadded tensors registered one group after another step on windows of the
    /// flat gradient; padding or interleaving needs a copy, with zeros in the padding and
    /// nothing of another group.
    #[test]
    fn arena_of_borrows_exactly_when_the_arena_is_a_window() {
        let flat: Vec<f32> = (0..64).map(|i| i as f32).collect();

        // a = [t0 (8), t1 (4)], b = [t2 (12)]: windows 0..12 and 12..24.
        let mut p = ParamGroups::new();
        let (a, b) = (
            p.add_group("a", sgd()).unwrap(),
            p.add_group("b", sgd()).unwrap(),
        );
        p.add_tensor(a, "t0", &[8], &[0.0; 8]).unwrap();
        p.add_tensor(a, "t1", &[4], &[0.0; 4]).unwrap();
        p.add_tensor(b, "t2", &[12], &[0.0; 12]).unwrap();
        let layout = p.layout();
        let flat = &flat[..layout.total_len()];
        for (g, window) in [(0, 0..12), (1, 12..24)] {
            match layout.arena_of(g, flat) {
                Cow::Borrowed(arena) => assert_eq!(arena, &flat[window]),
                Cow::Owned(_) => panic!("group {g} copied"),
            }
        }

        // Interleaved: a = [t0 (4), t2 (4)] around b's t1 (4).
        let mut p = ParamGroups::new();
        let (a, b) = (
            p.add_group("a", sgd()).unwrap(),
            p.add_group("b", sgd()).unwrap(),
        );
        p.add_tensor(a, "t0", &[4], &[0.0; 4]).unwrap();
        p.add_tensor(b, "t1", &[4], &[0.0; 4]).unwrap();
        p.add_tensor(a, "t2", &[4], &[0.0; 4]).unwrap();
        let arena = p.layout().arena_of(0, &flat[..12]);
        assert!(matches!(arena, Cow::Owned(_)));
        assert_eq!(&arena[..], &[0.0, 1.0, 2.0, 3.0, 8.0, 9.0, 10.0, 11.0]);

        // Padded: t0 (3) is followed by one element of padding before t1 (2).
        let mut p = ParamGroups::new();
        let a = p.add_group("a", sgd()).unwrap();
        p.add_tensor(a, "t0", &[3], &[0.0; 3]).unwrap();
        p.add_tensor(a, "t1", &[2], &[0.0; 2]).unwrap();
        let arena = p.layout().arena_of(0, &flat[..5]);
        assert!(matches!(arena, Cow::Owned(_)));
        assert_eq!(&arena[..], &[0.0, 1.0, 2.0, 0.0, 3.0, 4.0]);
    }
}
