//! The WGSL kernels: their sources, and validation with naga (no adapter needed).

use wgpu::naga;

/// Element indexing, the non-finite test and the per-group status: in every module.
const COMMON: &str = include_str!("../shaders/common.wgsl");
/// The binding convention of fused optimizer kernels: window of scalars, status, θ, g, state.
const FUSED: &str = include_str!("../shaders/fused.wgsl");

/// Entries of per-step scalars in a group's uniform window (`WINDOW` in `shaders/fused.wgsl`).
pub const WINDOW: usize = 8;
/// Bytes of the window's header (base, policy, two pads) before the scalars.
pub const WINDOW_HEADER_BYTES: usize = 16;

/// One WGSL module: preludes, then `shaders/<name>.wgsl`.
#[derive(Debug)]
pub struct Kernel {
    pub name: &'static str,
    /// Sources prepended to the body, in order.
    pub preludes: &'static [&'static str],
    /// The shader file alone.
    pub body: &'static str,
}

/// A fused optimizer kernel: its entry point is `main`.
const fn fused(name: &'static str, body: &'static str) -> Kernel {
    Kernel {
        name,
        preludes: &[COMMON, FUSED],
        body,
    }
}

pub const BAYES: Kernel = fused("bayes", include_str!("../shaders/bayes.wgsl"));
pub const SGD: Kernel = fused("sgd", include_str!("../shaders/sgd.wgsl"));
pub const RMSPROP: Kernel = fused("rmsprop", include_str!("../shaders/rmsprop.wgsl"));
/// `adam` and `adamw`: one kernel, the difference is in the uniforms.
pub const ADAM: Kernel = fused("adam", include_str!("../shaders/adam.wgsl"));

/// The per-group step control: entry points `scan` and `commit`.
pub const CONTROL: Kernel = Kernel {
    name: "control",
    preludes: &[COMMON],
    body: include_str!("../shaders/control.wgsl"),
};

/// Every module, for validation and `info`.
pub const ALL: &[&Kernel] = &[&CONTROL, &BAYES, &SGD, &RMSPROP, &ADAM];

/// The entry point of every fused optimizer kernel.
pub const ENTRY_POINT: &str = "main";

impl Kernel {
    /// The complete WGSL module: preludes, then the body.
    pub fn source(&self) -> String {
        let mut source = self.preludes.join("\n");
        source.push('\n');
        source.push_str(self.body);
        source
    }

    /// Parses and validates the module with naga, as wgpu would, without any adapter.
    /// Returns what it learned of the module's interface.
    pub fn validate(&self) -> Result<ValidatedKernel, String> {
        let source = self.source();
        let module = naga::front::wgsl::parse_str(&source)
            .map_err(|e| format!("{}: {}", self.name, e.emit_to_string(&source)))?;
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .map_err(|e| format!("{}: {}", self.name, e.emit_to_string(&source)))?;

        let binding = |index: u32| {
            module.global_variables.iter().find_map(|(_, var)| {
                var.binding
                    .as_ref()
                    .filter(|b| b.group == 0 && b.binding == index)
                    .map(|_| var)
            })
        };
        let uniform =
            binding(0).ok_or_else(|| format!("{}: no uniform at binding 0", self.name))?;
        let uniform_size = module.types[uniform.ty].inner.size(module.to_ctx());
        let storage_bindings = (1..).take_while(|&b| binding(b).is_some()).count() as u32;
        Ok(ValidatedKernel {
            uniform_size,
            storage_bindings,
        })
    }
}

/// What validation learned about a kernel's interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidatedKernel {
    /// Bytes of the uniform block at binding 0.
    pub uniform_size: u32,
    /// Storage bindings 1, 2, … (for fused kernels: status, θ, g, then the state slots).
    pub storage_bindings: u32,
}
