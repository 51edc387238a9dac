// `adam` and `adamw` (SPEC §3, torch.optim.Adam and AdamW): one kernel, the difference is in
// the uniforms (coupled weight decay g ← g + λθ, or decoupled θ ← θ·(1 − lr·λ)). Optional
// AMSGrad. CPU twin: src/reference/adam.rs.

fn update(at: At, g_in: V, ok: B, p: Scalars) {
    var g = g_in;
    let th_old = theta[at.theta];
    var th = th_old;

    if decoupled(p) {
        th = th * p.decay_factor;
    } else {
        g = g + p.weight_decay * th;
    }
    let m_old = load_m(at);
    let v_old = load_v(at);
    let m_new = p.beta1 * m_old + p.one_minus_beta1 * g;
    let v_new = p.beta2 * v_old + p.one_minus_beta2 * (g * g);
    store_m(at, select(m_old, m_new, ok));
    store_v(at, select(v_old, v_new, ok));
    var v_used = v_new;
    if amsgrad(p) {
        // A comparison, not `max`, whose NaN result WGSL leaves to the device.
        let v_max_old = load_v_max(at);
        let v_max_new = select(v_max_old, v_new, v_new > v_max_old);
        store_v_max(at, select(v_max_old, v_max_new, ok));
        v_used = v_max_new;
    }
    th = th - p.lr * (m_new * p.c1) / (sqrt(v_used * p.c2) + p.eps);
    store_theta(at, select(th_old, th, ok));
}
