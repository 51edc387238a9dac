//! From a burn tensor on the wgpu backend to the (buffer, offset, size) its values live in.

use burn::backend::wgpu::{AutoCompiler, CubeBackend, CubeTensor, WgpuResource};
use burn::backend::Cube;
use burn::cubecl::wgpu::WgpuServer;
use burn::tensor::{DType, Tensor};
use cubecl_runtime::storage::ManagedResource;

use crate::error::{Error, Result};

/// The cubecl server behind every wgpu client (the shader compiler is chosen at run time).
type Server = WgpuServer<AutoCompiler>;

/// burn's float primitive for `Cube` as a plain `CubeTensor`, with fusion on (burn's default)
/// or off: one generic function over both does not compile, so each gets an impl.
trait IntoCube {
    fn into_cube(self) -> CubeTensor;
}

impl IntoCube for CubeTensor {
    fn into_cube(self) -> CubeTensor {
        self
    }
}

impl IntoCube
    for burn_fusion::FusionTensor<<CubeBackend as burn_fusion::FusionBackend>::FusionRuntime>
{
    fn into_cube(self) -> CubeTensor {
        // Runs the operations fusion has queued for this tensor, so its buffer holds its value.
        let client = self.client.clone();
        client.resolve_tensor_float::<CubeBackend>(self)
    }
}

fn is_contiguous(shape: &[usize], strides: &[usize]) -> bool {
    let mut expected = 1;
    for (&d, &s) in shape.iter().zip(strides).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected *= d;
    }
    true
}

/// A burn tensor's memory, pinned: while the view lives, cubecl neither frees, reuses nor
/// relocates the allocation, so commands recorded against it stay valid until submitted.
pub(crate) struct GpuView {
    _tensor: CubeTensor,
    resource: ManagedResource<WgpuResource>,
    bytes: u64,
}

impl GpuView {
    /// The view of a (non-autodiff) tensor; `what` names it in errors.
    pub fn of<const D: usize>(tensor: Tensor<D>, what: &dyn Fn() -> String) -> Result<GpuView> {
        let bad = |problem: String| Error::Tensor {
            what: what(),
            problem,
        };
        let primitive = tensor.try_into_primitive::<Cube>().map_err(|e| {
            bad(format!(
                "not on burn's wgpu backend ({e:?}); bayesprop-burn steps wgpu tensors only"
            ))
        })?;
        let cube = primitive.into_cube();
        if cube.dtype != DType::F32 {
            return Err(bad(format!("dtype {:?}; the kernels step f32", cube.dtype)));
        }
        if cube.meta.is_tiled() || !is_contiguous(cube.meta.shape(), cube.meta.strides()) {
            return Err(bad(format!(
                "not contiguous (shape {:?}, strides {:?})",
                cube.meta.shape(),
                cube.meta.strides()
            )));
        }
        let bytes = cube.meta.num_elements() as u64 * 4;
        // Submits the tensor's pending stream work first, so the buffer holds its value.
        let resource = cube
            .client
            .get_resource::<Server>(cube.handle.clone())
            .map_err(|e| bad(format!("its buffer cannot be reached: {e:?}")))?;
        Ok(GpuView {
            _tensor: cube,
            resource,
            bytes,
        })
    }

    pub fn buffer(&self) -> &burn::tensor::wgpu::wgpu::Buffer {
        &self.resource.resource().buffer
    }

    /// Byte offset of the first element: pooled tensors share buffers.
    pub fn offset(&self) -> u64 {
        self.resource.resource().offset
    }

    /// Bytes of the elements (the allocation may be padded beyond them).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// An error unless `grad` has as many elements as this view (a parameter, `what`).
    pub fn check_gradient(&self, grad: &GpuView, what: &dyn Fn() -> String) -> Result<()> {
        if grad.bytes == self.bytes {
            return Ok(());
        }
        Err(Error::Tensor {
            what: what(),
            problem: format!(
                "{} elements, its gradient {}",
                self.bytes / 4,
                grad.bytes / 4
            ),
        })
    }

    /// The elements' range, as bayesprop takes a caller's tensor.
    pub fn range(&self) -> bayesprop::BufferRange {
        bayesprop::BufferRange::new(self.buffer().clone(), self.offset(), self.bytes)
    }
}
