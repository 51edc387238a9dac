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

pub mod adam;
pub mod bayes;
pub mod bayes_fp;
pub mod lion;
pub mod rmsprop;
pub mod sgd;
