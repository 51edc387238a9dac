// `lion` (SPEC §3, Lion as lion-pytorch and optax): decoupled weight decay, a step of ±lr along
// the sign of an interpolation of momentum and gradient, then the momentum's EMA, in one pass.
// CPU twin: src/reference/lion.rs.

fn update(at: At, g: V, ok: B, p: Scalars) {
    let th_old = theta[at.theta];
    let m_old = load_m(at);
    let th = th_old * p.decay_factor;
    let c = p.beta1 * m_old + p.one_minus_beta1 * g;
    // ±lr, or +0 where c = ±0 (sign(0) = 0). Not lr·sign(c): for c = −0 that is −0, and
    // θ − (−0) would turn θ = −0 into +0 where the CPU twin keeps it.
    let step = select(select(V(0.0), V(-p.lr), c < V(0.0)), V(p.lr), c > V(0.0));
    let m_new = p.beta2 * m_old + p.one_minus_beta2 * g;
    store_m(at, select(m_old, m_new, ok));
    store_theta(at, select(th_old, th - step, ok));
}
