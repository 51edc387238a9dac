//! Checkpoints: the optimizer's state in the safetensors format, readable from Python.
//!
//! Tensors are named `group.tensor.vector` (`theta` for the parameters, then the optimizer's
//! state by its SPEC name, e.g. `decay.w1.sigma`). State held in `bf16` or `q8` (SPEC §6) is
//! stored as held: a BF16 tensor, or a U8 tensor of codes with its F32 scales, one per block
//! of 256 elements, in `group.tensor.vector_scales`. The header's metadata holds a JSON manifest
//! (format version, each group's optimizer config, non-finite policy, state format and seed,
//! schedules and step count, and the gradient transform) and a CRC-32 of the manifest and of every tensor's
//! bytes, so a changed digit in the manifest is caught as well as a flipped bit in the data or
//! a broken header. A checkpoint is device independent: saved on the GPU, it loads on the CPU.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{StateFormat, STATE_Q8_BLOCK};
use crate::error::{Error, Result};
use crate::layout::{GroupId, Layout};
use crate::optim::{NonFinitePolicy, OptimizerConfig};
use crate::schedule::HyperSchedule;
use crate::transform::GradTransform;

const FORMAT: &str = "bayesprop-checkpoint";
/// 2: configs, policies, schedules and the transform as JSON, and the manifest's own CRC.
/// 3: state held in bf16 or q8, with each group's state format and seed. A checkpoint of f32
/// state only is still written as version 2, which earlier readers load.
const VERSION: u32 = 2;
const VERSION_HELD: u32 = 3;
/// The suffix of a q8 vector's scales: `group.tensor.m_scales`.
const SCALES_SUFFIX: &str = "_scales";
const MANIFEST_KEY: &str = "bayesprop";
const CHECKSUM_KEY: &str = "crc32";
/// The manifest's entry among the checksums (tensor names always hold two dots).
const MANIFEST_CHECKSUM: &str = "manifest";

/// One group's record. [`Checkpoint::restore_settings`] (or `Stepper::restore_all`) puts its
/// config, policy and schedules back; a plain restore keeps those of the optimizer restored
/// into, as a config file would.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub name: String,
    /// The SPEC name of its optimizer.
    pub optimizer: String,
    pub config: OptimizerConfig,
    pub policy: NonFinitePolicy,
    pub schedules: Vec<HyperSchedule>,
    /// Steps applied.
    pub steps: u64,
    /// How its state is held (SPEC §6); `f32` in checkpoints older than this field.
    #[serde(default)]
    pub state_format: StateFormat,
    /// The seed of its stochastic rounding.
    #[serde(default)]
    pub state_seed: u32,
}

/// One tensor's vectors: `theta`, then each used state by its SPEC name, in f32; in a group
/// whose state is held in `bf16` or `q8`, `vectors` is `theta` alone and `held` has the state.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorState {
    pub group: String,
    pub name: String,
    pub shape: Vec<usize>,
    pub vectors: Vec<(String, Vec<f32>)>,
    /// The used state vectors as held, in slot order; empty in `f32`.
    pub held: Vec<(String, HeldVector)>,
}

/// One state vector of a tensor as held in `bf16` or `q8` (SPEC §6).
#[derive(Clone, Debug, PartialEq)]
pub enum HeldVector {
    /// One code per element: the top 16 bits of an f32.
    Bf16(Vec<u16>),
    /// One code per element, and one scale per block of 256 elements from the tensor's start
    /// (the last block may be shorter).
    Q8 { codes: Vec<u8>, scales: Vec<f32> },
}

impl HeldVector {
    pub fn format(&self) -> StateFormat {
        match self {
            HeldVector::Bf16(_) => StateFormat::Bf16,
            HeldVector::Q8 { .. } => StateFormat::Q8,
        }
    }

    /// Elements it holds.
    pub fn len(&self) -> usize {
        match self {
            HeldVector::Bf16(codes) => codes.len(),
            HeldVector::Q8 { codes, .. } => codes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything a resume needs, independent of the device.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub groups: Vec<GroupState>,
    pub tensors: Vec<TensorState>,
    /// The gradient transform it was saved with.
    pub transform: GradTransform,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    groups: Vec<GroupState>,
    transform: GradTransform,
    /// Tensor names (`group.tensor`) in registration order, with their vectors.
    tensors: Vec<(String, Vec<String>)>,
}

/// How errors name checkpoint bytes that are not a file.
const BYTES_ORIGIN: &str = "<checkpoint bytes>";

fn crc(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

fn key(group: &str, tensor: &str, vector: &str) -> String {
    format!("{group}.{tensor}.{vector}")
}

impl Checkpoint {
    /// Assembles a checkpoint from each group's step count and, per group, each f32 vector's
    /// arena (`theta` first, then the used states in slot order, as
    /// [`crate::layout::GroupSpec::f32_vectors`]); the caller adds the held state.
    pub(crate) fn from_arenas(
        layout: &Layout,
        steps: &[u64],
        arenas: &[Vec<(String, Vec<f32>)>],
    ) -> Self {
        let groups = layout
            .groups()
            .iter()
            .zip(steps)
            .map(|(g, &steps)| GroupState {
                name: g.name.clone(),
                optimizer: g.config.name().to_string(),
                config: g.config.clone(),
                policy: g.policy,
                schedules: g.schedules.clone(),
                steps,
                state_format: g.state_format,
                state_seed: g.state_seed,
            })
            .collect();
        let tensors = layout
            .tensors()
            .iter()
            .map(|t| TensorState {
                group: layout.groups()[t.group.0].name.clone(),
                name: t.name.clone(),
                shape: t.shape.clone(),
                vectors: arenas[t.group.0]
                    .iter()
                    .map(|(name, arena)| (name.clone(), arena[t.range()].to_vec()))
                    .collect(),
                held: Vec::new(),
            })
            .collect();
        Checkpoint {
            groups,
            tensors,
            transform: *layout.transform(),
        }
    }

    /// `layout` with the saved configs, policies, schedules and transform, each checked as
    /// the setters check them (the same optimizers and state vectors); `layout` itself is
    /// not changed, so a caller applies the result only once the state is restored too.
    pub fn restore_settings(&self, layout: &Layout) -> Result<Layout> {
        let mut restored = layout.clone();
        if self.groups.len() != layout.groups().len() {
            return Err(Error::CheckpointMismatch(format!(
                "{} group(s), expected {}",
                self.groups.len(),
                layout.groups().len()
            )));
        }
        for (g, saved) in self.groups.iter().enumerate() {
            let id = GroupId(g);
            // The schedules go first: the saved config must take them, not the live one.
            restored.set_group_schedules(id, Vec::new())?;
            restored.set_group_config(id, saved.config.clone())?;
            restored.set_group_schedules(id, saved.schedules.clone())?;
            restored.set_group_policy(id, saved.policy)?;
        }
        restored.set_transform(self.transform)?;
        Ok(restored)
    }

    /// Checks the checkpoint fits `layout` (the same groups, optimizers, tensors, shapes and
    /// state vectors), and returns per group each vector's arena (padding 0) and step count.
    pub(crate) fn to_arenas(&self, layout: &Layout) -> Result<Vec<(u64, Vec<Vec<f32>>)>> {
        let mismatch = Error::CheckpointMismatch;
        if self.groups.len() != layout.groups().len()
            || self.tensors.len() != layout.tensors().len()
        {
            return Err(mismatch(format!(
                "{} group(s) and {} tensor(s), expected {} and {}",
                self.groups.len(),
                self.tensors.len(),
                layout.groups().len(),
                layout.tensors().len()
            )));
        }
        let mut arenas: Vec<(u64, Vec<Vec<f32>>)> = Vec::new();
        for (saved, live) in self.groups.iter().zip(layout.groups()) {
            if saved.name != live.name || saved.optimizer != live.config.name() {
                return Err(mismatch(format!(
                    "group `{}` ({}), expected `{}` ({})",
                    saved.name,
                    saved.optimizer,
                    live.name,
                    live.config.name()
                )));
            }
            // SPEC §6: loading into another format would reinterpret or re-round the state.
            if (saved.state_format, saved.state_seed) != (live.state_format, live.state_seed) {
                return Err(mismatch(format!(
                    "group `{}` holds its state as state_format={} state_seed={}, the optimizer \
                     as state_format={} state_seed={}; build the optimizer with the \
                     checkpoint's (a checkpoint is never converted between formats)",
                    saved.name,
                    saved.state_format,
                    saved.state_seed,
                    live.state_format,
                    live.state_seed
                )));
            }
            let vectors = live.f32_vectors().len();
            arenas.push((saved.steps, vec![vec![0.0; live.arena_len]; vectors]));
        }
        for (saved, live) in self.tensors.iter().zip(layout.tensors()) {
            let group = &layout.groups()[live.group.0];
            let expected: Vec<&str> = group.vectors().iter().map(|(name, _)| *name).collect();
            let names: Vec<&str> = (saved.vectors.iter().map(|(n, _)| n.as_str()))
                .chain(saved.held.iter().map(|(n, _)| n.as_str()))
                .collect();
            let f32_count = group.f32_vectors().len();
            if saved.group != group.name
                || saved.name != live.name
                || saved.shape != live.shape
                || names != expected
                || saved.vectors.len() != f32_count
            {
                return Err(mismatch(format!(
                    "tensor {} {:?} with {names:?}, expected {} {:?} with {expected:?}",
                    key(&saved.group, &saved.name, "*"),
                    saved.shape,
                    key(&group.name, &live.name, "*"),
                    live.shape
                )));
            }
            for (arena, (_, values)) in arenas[live.group.0].1.iter_mut().zip(&saved.vectors) {
                if values.len() != live.len() {
                    return Err(mismatch(format!(
                        "tensor `{}` has {} values",
                        live.name,
                        values.len()
                    )));
                }
                arena[live.range()].copy_from_slice(values);
            }
            for (name, held) in &saved.held {
                let blocks = live.len().div_ceil(STATE_Q8_BLOCK);
                let fits = held.format() == group.state_format
                    && held.len() == live.len()
                    && match held {
                        HeldVector::Q8 { scales, .. } => scales.len() == blocks,
                        HeldVector::Bf16(_) => true,
                    };
                if !fits {
                    return Err(mismatch(format!(
                        "{} holds {} {} codes, expected {} in {}",
                        key(&saved.group, &saved.name, name),
                        held.len(),
                        held.format(),
                        live.len(),
                        group.state_format
                    )));
                }
            }
        }
        Ok(arenas)
    }

    /// Writes the checkpoint atomically: a temporary file beside `path`, fsync, rename.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.serialize(path)?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temporary = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)?;
            // The rename itself is durable once the directory is synced.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            Error::file(path, e)
        })
    }

    /// The checkpoint as the bytes of a safetensors file, for callers who keep state in
    /// their own storage.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.serialize(Path::new(BYTES_ORIGIN))
    }

    /// A checkpoint from the bytes of [`Checkpoint::to_bytes`] or of a saved file, checked as
    /// [`Checkpoint::load`] checks a file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::deserialize(bytes, Path::new(BYTES_ORIGIN))
    }

    /// The safetensors bytes; `origin` names the destination in errors.
    fn serialize(&self, origin: &Path) -> Result<Vec<u8>> {
        // safetensors stores little-endian bytes.
        let mut data = Vec::new();
        let mut manifest_tensors = Vec::new();
        use safetensors::Dtype;
        fn f32_bytes(values: &[f32]) -> Vec<u8> {
            values.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        for t in &self.tensors {
            let mut names = Vec::new();
            for (vector, values) in &t.vectors {
                let name = key(&t.group, &t.name, vector);
                data.push((name, Dtype::F32, t.shape.clone(), f32_bytes(values)));
                names.push(vector.clone());
            }
            for (vector, held) in &t.held {
                let name = key(&t.group, &t.name, vector);
                match held {
                    HeldVector::Bf16(codes) => {
                        let bytes = codes.iter().flat_map(|c| c.to_le_bytes()).collect();
                        data.push((name, Dtype::BF16, t.shape.clone(), bytes));
                    }
                    HeldVector::Q8 { codes, scales } => {
                        data.push((name.clone(), Dtype::U8, t.shape.clone(), codes.clone()));
                        let scales_name = format!("{name}{SCALES_SUFFIX}");
                        data.push((
                            scales_name,
                            Dtype::F32,
                            vec![scales.len()],
                            f32_bytes(scales),
                        ));
                    }
                }
                names.push(vector.clone());
            }
            manifest_tensors.push((format!("{}.{}", t.group, t.name), names));
        }
        let mut views = Vec::new();
        let mut checksums = HashMap::new();
        for (name, dtype, shape, bytes) in &data {
            checksums.insert(name.clone(), crc(bytes));
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map_err(|e| Error::file(origin, format!("tensor {name}: {e}")))?;
            views.push((name.clone(), view));
        }
        let held = self
            .groups
            .iter()
            .any(|g| g.state_format != StateFormat::F32);
        let manifest = Manifest {
            format: FORMAT.into(),
            version: if held { VERSION_HELD } else { VERSION },
            groups: self.groups.clone(),
            transform: self.transform,
            tensors: manifest_tensors,
        };
        let manifest = serde_json::to_string(&manifest).expect("serializable");
        checksums.insert(MANIFEST_CHECKSUM.to_string(), crc(manifest.as_bytes()));
        let metadata = HashMap::from([
            (MANIFEST_KEY.to_string(), manifest),
            (
                CHECKSUM_KEY.to_string(),
                serde_json::to_string(&checksums).expect("serializable"),
            ),
        ]);
        safetensors::serialize(views, Some(metadata)).map_err(|e| Error::file(origin, e))
    }

    /// Reads and checks a checkpoint: the safetensors header, the manifest and its version,
    /// and every tensor's CRC-32.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
        Self::deserialize(&bytes, path)
    }

    /// Checks and reads safetensors bytes; `path` names their origin in errors.
    fn deserialize(bytes: &[u8], path: &Path) -> Result<Self> {
        let corrupt =
            |what: String| Error::file(path, format!("not a valid bayesprop checkpoint: {what}"));
        let (_, header) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e.to_string()))?;
        let tensors =
            safetensors::SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let field = |key: &str| {
            metadata
                .get(key)
                .ok_or_else(|| corrupt(format!("no `{key}` metadata")))
        };
        let checksums: HashMap<String, String> = serde_json::from_str(field(CHECKSUM_KEY)?)
            .map_err(|e| corrupt(format!("checksums: {e}")))?;
        // Step counts, configs and schedules decide the resumed run as much as the tensors.
        let manifest_text = field(MANIFEST_KEY)?;
        if checksums.get(MANIFEST_CHECKSUM) != Some(&crc(manifest_text.as_bytes())) {
            return Err(corrupt(
                "manifest: checksum mismatch (step counts, configs, policies, schedules or the \
                 transform were altered)"
                    .into(),
            ));
        }
        let manifest: Manifest =
            serde_json::from_str(manifest_text).map_err(|e| corrupt(format!("manifest: {e}")))?;
        if manifest.format != FORMAT || ![VERSION, VERSION_HELD].contains(&manifest.version) {
            return Err(corrupt(format!(
                "format {} version {}, expected {FORMAT} version {VERSION} or {VERSION_HELD}",
                manifest.format, manifest.version
            )));
        }
        // One tensor's bytes, checked against its CRC-32 and its dtype.
        let read = |name: &str, dtype: safetensors::Dtype| {
            let view = tensors
                .tensor(name)
                .map_err(|e| corrupt(format!("{name}: {e}")))?;
            if view.dtype() != dtype {
                return Err(corrupt(format!(
                    "{name} is {:?}, expected {dtype:?}",
                    view.dtype()
                )));
            }
            if checksums.get(name) != Some(&crc(view.data())) {
                return Err(corrupt(format!(
                    "{name}: checksum mismatch (the data is damaged)"
                )));
            }
            Ok(view)
        };
        let f32s = |bytes: &[u8]| -> Vec<f32> {
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        let formats: HashMap<&str, StateFormat> = manifest
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.state_format))
            .collect();
        let mut states = Vec::new();
        for (full_name, vectors) in &manifest.tensors {
            let (group, name) = full_name
                .split_once('.')
                .ok_or_else(|| corrupt(format!("tensor name `{full_name}`")))?;
            let mut state = TensorState {
                group: group.to_string(),
                name: name.to_string(),
                shape: Vec::new(),
                vectors: Vec::new(),
                held: Vec::new(),
            };
            let format = formats.get(group).copied().unwrap_or_default();
            for (k, vector) in vectors.iter().enumerate() {
                let name = key(group, name, vector);
                // θ is f32 in every format; the state is held as its group's format says.
                let held = if k == 0 { StateFormat::F32 } else { format };
                let view = match held {
                    StateFormat::F32 => read(&name, safetensors::Dtype::F32)?,
                    StateFormat::Bf16 => read(&name, safetensors::Dtype::BF16)?,
                    StateFormat::Q8 => read(&name, safetensors::Dtype::U8)?,
                };
                state.shape = view.shape().to_vec();
                let data = view.data();
                match held {
                    StateFormat::F32 => state.vectors.push((vector.clone(), f32s(data))),
                    StateFormat::Bf16 => {
                        let codes = data
                            .chunks_exact(2)
                            .map(|b| u16::from_le_bytes([b[0], b[1]]))
                            .collect();
                        state.held.push((vector.clone(), HeldVector::Bf16(codes)));
                    }
                    StateFormat::Q8 => {
                        let scales_name = format!("{name}{SCALES_SUFFIX}");
                        let scales = f32s(read(&scales_name, safetensors::Dtype::F32)?.data());
                        let codes = data.to_vec();
                        state
                            .held
                            .push((vector.clone(), HeldVector::Q8 { codes, scales }));
                    }
                }
            }
            states.push(state);
        }
        Ok(Checkpoint {
            groups: manifest.groups,
            tensors: states,
            transform: manifest.transform,
        })
    }
}
