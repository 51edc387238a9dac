//! CPU twins of the kernels: SPEC's expressions evaluated exactly as written, element by element,
//! in the order written and without fused multiply-add (Rust never contracts `a * b + c`).
//!
//! Each file mirrors `shaders/<name>.wgsl` loop for loop. The functions are generic over the
//! float type: in f32 they are the reference the kernels are held to, in f64 the oracle for
//! error studies.

/// Defines `fn $name<F: Float>(…)` (or a fn without the type parameter, with or without a
/// return type) from one body three times: as built (SSE2 on x86-64), and compiled for AVX2
/// and for AVX-512, chosen at run time by what the CPU has. Every `step` is defined through
/// this, so that its loops compile to 8- or 16-wide SIMD where they can: the divisions and
/// square roots of these updates need that width to keep up with memory on the fast CPU path
/// (so do the non-finite count and the touch roofline's loop). The results do not change:
/// every SIMD lane rounds `+ − × ÷ sqrt` exactly as the scalar instruction does, and FMA is
/// neither enabled nor ever contracted to by Rust.
macro_rules! simd_fn {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident $(<$g:ident: $bound:path>)?
            ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name $(<$g: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable $(<$g: $bound>)? ($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512 $(<$g: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                portable($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            unsafe fn avx2 $(<$g: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                portable($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F, the only feature `avx512` is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2, the only feature `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// Declares a kernel's uniform block once, as a list of scalar names; from it come:
/// - the struct, generic over the float type (`Foo<f64>` from the host's f64 computation,
///   `Foo<f32>` as the kernel and the reference get it), `repr(C)`, one `F` per name;
/// - `to_f32` (each scalar rounded once), `uniform_bytes` (the f32 block padded with zeros to a
///   multiple of 16 bytes, the stride of a uniform array element), `Pod` and `Zeroable`;
/// - `SCALARS`, the names in order, from which [`crate::kernels::Kernel`] writes the WGSL
///   `struct Scalars { name: f32, …, pad0: f32, … }` in front of the kernel's body.
///
/// ```text
/// scalars! {
///     /// doc of the struct
///     pub struct LionScalars {
///         /// doc of the scalar
///         lr,
///         beta1,
///     }
/// }
/// ```
macro_rules! scalars {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$field_meta:meta])* $field:ident),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        ///
        /// Declared once (`scalars!`): the kernel's WGSL `struct Scalars` is generated from it,
        /// field for field, f32 each, padded to a multiple of 16 bytes.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name<F> {
            $($(#[$field_meta])* pub $field: F,)+
        }

        /// The scalars of the uniform block, in order: the WGSL `struct Scalars`'s fields.
        pub const SCALARS: &[&str] = &[$(stringify!($field)),+];

        // SAFETY: `repr(C)` with only f32 fields: no padding, every bit pattern valid.
        unsafe impl bytemuck::Zeroable for $name<f32> {}
        unsafe impl bytemuck::Pod for $name<f32> {}

        impl $name<f64> {
            /// Rounds every scalar to f32, as the kernel receives them.
            pub fn to_f32(&self) -> $name<f32> {
                $name {
                    $($field: self.$field as f32,)+
                }
            }
        }

        impl $name<f32> {
            /// The kernel's uniform block: the scalars, then zeros to a multiple of 16 bytes
            /// (the generated WGSL struct's `pad` fields).
            pub fn uniform_bytes(&self) -> Vec<u8> {
                let mut bytes = bytemuck::bytes_of(self).to_vec();
                bytes.resize($crate::kernels::scalars_bytes(SCALARS.len()), 0);
                bytes
            }
        }
    };
}

// The twin of every row of the optimizer table, `shaders/<file>.wgsl`'s CPU side. Declared
// here, not by the table: the table imports the twins, and nothing here imports the table.
pub mod adagrad;
pub mod adam;
pub mod bayes;
pub mod bayes_fp;
pub mod lion;
pub mod rmsprop;
pub mod sgd;

// The twin of `shaders/state_codec.wgsl`, the low-precision state's codec (SPEC §6), a prelude
// that no table row names yet.
pub mod state_codec;
