//! Where vectors live on the device, in buffers the optimizer owns or the caller's.

use crate::error::{Error, Result};

/// A range of bytes of a wgpu buffer: where a vector lives on the device. Offsets and sizes
/// are in bytes; the kernels read f32 elements, so both are multiples of 4 where it matters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferRange {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl BufferRange {
    pub fn new(buffer: wgpu::Buffer, offset: u64, size: u64) -> Self {
        BufferRange {
            buffer,
            offset,
            size,
        }
    }

    /// The whole of `buffer`.
    pub fn whole(buffer: wgpu::Buffer) -> Self {
        let size = buffer.size();
        BufferRange::new(buffer, 0, size)
    }

    /// The f32 elements the range holds.
    pub fn elements(&self) -> u64 {
        self.size / 4
    }

    /// The part of this range `bytes` long from `offset` bytes in.
    pub(crate) fn sub(&self, offset: u64, bytes: u64) -> BufferRange {
        BufferRange::new(self.buffer.clone(), self.offset + offset, bytes)
    }

    /// Refuses a range that leaves its buffer, or that holds fewer than `needed` bytes;
    /// `what` names it in the error.
    pub(crate) fn check_holds(&self, what: &str, needed: u64) -> Result<()> {
        let end = self.offset.checked_add(self.size);
        if end.is_none_or(|end| end > self.buffer.size()) {
            return Err(Error::Layout(format!(
                "{what}: the range of {} bytes from offset {} leaves its buffer of {} bytes",
                self.size,
                self.offset,
                self.buffer.size()
            )));
        }
        if self.size < needed {
            return Err(Error::Layout(format!(
                "{what}: the range holds {} bytes, {needed} are needed",
                self.size
            )));
        }
        Ok(())
    }
}

/// θ and the gradient of a tensor, or of a whole group's arena, in the caller's buffers, used
/// in place (zero-copy). Both need STORAGE usage, and COPY_SRC / COPY_DST for reading θ back
/// and stepping from host gradients. θ and g may share a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorBuffers {
    pub theta: BufferRange,
    pub grad: BufferRange,
}
