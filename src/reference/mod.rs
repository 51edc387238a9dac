//! CPU twins of the kernels: SPEC's expressions evaluated exactly as written, element by element,
//! in the order written and without fused multiply-add (Rust never contracts `a * b + c`).
//!
//! Each file mirrors `shaders/<name>.wgsl` loop for loop. The functions are generic over the
//! float type: in f32 they are the reference the kernels are held to, in f64 the oracle for
//! error studies.

pub mod adam;
pub mod bayes;
pub mod rmsprop;
pub mod sgd;
