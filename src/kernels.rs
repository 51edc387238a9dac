//! The WGSL kernels: their sources, and validation with naga (no adapter needed).

use wgpu::naga;

/// Prepended to every kernel: the binding convention and the element index of a 2-D dispatch.
const PRELUDE: &str = include_str!("../shaders/common.wgsl");

/// One fused optimizer kernel, `shaders/<name>.wgsl`, entry point `main`.
#[derive(Debug)]
pub struct Kernel {
    pub name: &'static str,
    /// The shader file alone, without the prelude.
    pub body: &'static str,
}

pub const BAYES: Kernel = Kernel {
    name: "bayes",
    body: include_str!("../shaders/bayes.wgsl"),
};

/// Every kernel, for validation and `info`.
pub const ALL: &[&Kernel] = &[&BAYES];

/// The entry point of every kernel.
pub const ENTRY_POINT: &str = "main";

impl Kernel {
    /// The complete WGSL module: prelude, then the kernel.
    pub fn source(&self) -> String {
        format!("{PRELUDE}\n{}", self.body)
    }

    /// Parses and validates the module with naga, as wgpu would, without any adapter.
    /// Returns the module and the byte size of its uniform block (binding 0).
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
        let has_entry = module.entry_points.iter().any(|e| e.name == ENTRY_POINT);
        if !has_entry {
            return Err(format!("{}: no entry point `{ENTRY_POINT}`", self.name));
        }
        Ok(ValidatedKernel {
            uniform_size,
            storage_bindings,
        })
    }
}

/// What validation learned about a kernel's interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidatedKernel {
    /// Bytes of the `Scalars` uniform block.
    pub uniform_size: u32,
    /// Storage bindings 1, 2, … (θ, g, then the state slots).
    pub storage_bindings: u32,
}
