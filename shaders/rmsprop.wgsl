// `rmsprop` (SPEC §3, torch.optim.RMSprop): weight decay, EMA of g², optional centring and
// momentum in one pass. CPU twin: src/reference/rmsprop.rs.

struct Scalars {
    lr: f32,
    alpha: f32,
    one_minus_alpha: f32,
    eps: f32,
    weight_decay: f32,
    momentum: f32,  // μ; 0 turns momentum off
    centered: f32,  // 1: divide by sqrt(v − a²), else by sqrt(v)
    pad0: f32,
}

@group(0) @binding(2) var<storage, read_write> theta: array<f32>;
@group(0) @binding(3) var<storage, read> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
// Each bound to a 16-byte placeholder when its option is off; then never read or written.
@group(0) @binding(5) var<storage, read_write> a: array<f32>;
@group(0) @binding(6) var<storage, read_write> b: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = element_index(workgroup, workgroups, local);
    if i >= arrayLength(&theta) {
        return;
    }
    var g = grad[i];
    if !admit(g) {
        return;
    }
    let p = step_scalars();
    var th = theta[i];

    g = g + p.weight_decay * th;
    let v_new = p.alpha * v[i] + p.one_minus_alpha * (g * g);
    v[i] = v_new;
    var v_bar = v_new;
    if p.centered != 0.0 {
        let a_new = p.alpha * a[i] + p.one_minus_alpha * g;
        a[i] = a_new;
        v_bar = v_new - a_new * a_new;
    }
    if p.momentum > 0.0 {
        let b_new = p.momentum * b[i] + g / (sqrt(v_bar) + p.eps);
        b[i] = b_new;
        th = th - p.lr * b_new;
    } else {
        th = th - p.lr * g / (sqrt(v_bar) + p.eps);
    }
    theta[i] = th;
}
