// `sgd` (SPEC §3, torch.optim.SGD): weight decay, momentum with dampening and Nesterov in one
// pass. CPU twin: src/reference/sgd.rs.

struct Scalars {
    lr: f32,
    momentum: f32,             // μ; 0 turns momentum off
    one_minus_dampening: f32,
    weight_decay: f32,
    first_step: f32,           // 1 at t = 1: the buffer starts as the gradient, as in torch
    nesterov: f32,             // 1: step along g + μ·b, else along b
    pad0: f32,
    pad1: f32,
}

// Bound to a 16-byte placeholder when momentum is off; then never read or written.
@group(0) @binding(4) var<storage, read_write> b: array<V>;

fn update(at: At, g_in: V, ok: B, p: Scalars) {
    var g = g_in;
    let th_old = theta[at.theta];
    var th = th_old;

    g = g + p.weight_decay * th;
    if p.momentum > 0.0 {
        let b_old = b[at.state];
        var b_new = g;
        if p.first_step == 0.0 {
            b_new = p.momentum * b_old + p.one_minus_dampening * g;
        }
        b[at.state] = select(b_old, b_new, ok);
        if p.nesterov != 0.0 {
            g = g + p.momentum * b_new;
        } else {
            g = b_new;
        }
    }
    th = th - p.lr * g;
    theta[at.theta] = select(th_old, th, ok);
}
