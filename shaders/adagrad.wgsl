// `adagrad` (SPEC §3, torch.optim.Adagrad): weight decay, the running sum of g² and the step
// along g / (sqrt(sum) + eps), in one pass. `Scalars` (clr, the learning rate of step t, with
// its decay) and the binding of `sum` are generated. CPU twin: src/reference/adagrad.rs.

fn update(at: At, g_in: V, ok: B, p: Scalars) {
    var g = g_in;
    let th_old = theta[at.theta];
    if decay(p) {
        g = g + p.weight_decay * th_old;
    }
    let sum_old = load_sum(at);
    let sum_new = sum_old + g * g;
    store_sum(at, select(sum_old, sum_new, ok));
    store_theta(at, select(th_old, th_old - p.clr * g / (sqrt(sum_new) + p.eps), ok));
}
