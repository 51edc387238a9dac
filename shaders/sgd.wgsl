// `sgd` (SPEC §3, torch.optim.SGD): weight decay, momentum with dampening and Nesterov in one
// pass. CPU twin: src/reference/sgd.rs.

fn update(at: At, g_in: V, ok: B, p: Scalars) {
    var g = g_in;
    let th_old = theta[at.theta];
    var th = th_old;

    g = g + p.weight_decay * th;
    if momentum(p) {
        let b_old = load_b(at);
        var b_new = g;
        if !first_step(p) {
            b_new = p.momentum * b_old + p.one_minus_dampening * g;
        }
        store_b(at, select(b_old, b_new, ok));
        if nesterov(p) {
            g = g + p.momentum * b_new;
        } else {
            g = b_new;
        }
    }
    th = th - p.lr * g;
    store_theta(at, select(th_old, th, ok));
}
