// `bayes_fp` (SPEC §2b): `bayes` held at the fixed point σ*(h + eps²) of the current curvature,
// so σ is not stored. EMA of g², direction and mean update in one pass. After
// `bayes_step.wgsl` (the step's first half, shared with `bayes`). CPU
// twin: src/reference/bayes_fp.rs.

fn update(at: At, g: V, ok: B, p: Scalars) {
    let th = theta[at.theta];
    let s_old = load_s(at);
    var m_old = V(0.0);
    if momentum(p) {
        m_old = load_m(at);
    }
    let c = curvature_and_direction(p, th, g, s_old, m_old);
    if momentum(p) {
        store_m(at, select(m_old, c.m, ok));
    }
    let sigma = sigma_star(p, c.h + p.eps_sq);

    store_s(at, select(s_old, c.s, ok));
    store_theta(at, select(th, th - sigma * c.d, ok));
}
