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

@group(0) @binding(4) var<storage, read_write> v: array<V>;
// Each bound to a 16-byte placeholder when its option is off; then never read or written.
@group(0) @binding(5) var<storage, read_write> a: array<V>;
@group(0) @binding(6) var<storage, read_write> b: array<V>;

fn update(at: At, g_in: V, ok: B, p: Scalars) {
    var g = g_in;
    let th_old = theta[at.theta];
    var th = th_old;

    g = g + p.weight_decay * th;
    let v_old = v[at.state];
    let v_new = p.alpha * v_old + p.one_minus_alpha * (g * g);
    v[at.state] = select(v_old, v_new, ok);
    var v_bar = v_new;
    if p.centered != 0.0 {
        let a_old = a[at.state];
        let a_new = p.alpha * a_old + p.one_minus_alpha * g;
        a[at.state] = select(a_old, a_new, ok);
        v_bar = v_new - a_new * a_new;
    }
    if p.momentum > 0.0 {
        let b_old = b[at.state];
        let b_new = p.momentum * b_old + g / (sqrt(v_bar) + p.eps);
        b[at.state] = select(b_old, b_new, ok);
        th = th - p.lr * b_new;
    } else {
        th = th - p.lr * g / (sqrt(v_bar) + p.eps);
    }
    theta[at.theta] = select(th_old, th, ok);
}
