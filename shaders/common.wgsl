// Prelude shared by every fused optimizer kernel; the host prepends it to each shader.
//
// Binding convention (the host builds every kernel's layout from it):
//   @binding(0) uniform  Scalars  hyperparameters and per-step scalars (the host computes them
//                                  in f64 each step, so changing them needs no new pipeline)
//   @binding(1) storage  theta    read_write
//   @binding(2) storage  grad     read
//   @binding(3..) storage state   read_write, in the optimizer's state-slot order
//
// One invocation updates one element. The dispatch is 2-D so that N may exceed
// 65,535 workgroups; the element count is the length of the bound `theta` range, so a chunk
// of a larger vector is just a smaller binding.

override WORKGROUP_SIZE: u32 = 256u;

fn element_index(workgroup: vec3<u32>, workgroups: vec3<u32>, local: u32) -> u32 {
    return (workgroup.y * workgroups.x + workgroup.x) * WORKGROUP_SIZE + local;
}
