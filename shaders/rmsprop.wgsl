// `rmsprop` (SPEC §3, torch.optim.RMSprop): weight decay, EMA of g², optional centring and
// momentum in one pass. CPU twin: src/reference/rmsprop.rs.

fn update(at: At, g_in: V, ok: B, p: Scalars) {
    var g = g_in;
    let th_old = theta[at.theta];
    var th = th_old;

    g = g + p.weight_decay * th;
    let v_old = load_v(at);
    let v_new = p.alpha * v_old + p.one_minus_alpha * (g * g);
    store_v(at, select(v_old, v_new, ok));
    var v_bar = v_new;
    if centered(p) {
        let a_old = load_a(at);
        let a_new = p.alpha * a_old + p.one_minus_alpha * g;
        store_a(at, select(a_old, a_new, ok));
        v_bar = v_new - a_new * a_new;
    }
    if momentum(p) {
        let b_old = load_b(at);
        let b_new = p.momentum * b_old + g / (sqrt(v_bar) + p.eps);
        store_b(at, select(b_old, b_new, ok));
        th = th - p.lr * b_new;
    } else {
        th = th - p.lr * g / (sqrt(v_bar) + p.eps);
    }
    store_theta(at, select(th_old, th, ok));
}
