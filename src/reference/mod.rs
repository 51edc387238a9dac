//! CPU twins of the kernels: SPEC's expressions evaluated exactly as written, element by element,
//! in the order written and without fused multiply-add (Rust never contracts `a * b + c`).
//!
//! Each file mirrors `shaders/<name>.wgsl` loop for loop. The functions are generic over the
//! float type: in f32 they are the reference the kernels are held to, in f64 the oracle for
//! error studies.

/// Defines `fn $name<F: Float>(…)` from one body three times: as built (SSE2 on x86-64), and
/// compiled for AVX2 and for AVX-512, chosen at run time by what the CPU has. Every `step` is
/// defined through this, so that its loops compile to 8- or 16-wide SIMD where they can: the
/// divisions and square roots of these updates need that width to keep up with memory on the
/// fast CPU path. The results do not change: every SIMD lane rounds `+ − × ÷ sqrt` exactly as
/// the scalar instruction does, and FMA is neither enabled nor ever contracted to by Rust.
macro_rules! simd_fn {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident<F: Float>($($arg:ident: $ty:ty),* $(,)?) $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name<F: Float>($($arg: $ty),*) {
            #[inline(always)]
            fn portable<F: Float>($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512<F: Float>($($arg: $ty),*) {
                portable($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            unsafe fn avx2<F: Float>($($arg: $ty),*) {
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

pub mod adam;
pub mod bayes;
pub mod rmsprop;
pub mod sgd;
