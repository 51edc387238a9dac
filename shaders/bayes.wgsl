// `bayes`, the seed's optimizer (SPEC §2): EMA of g², variance update and mean update in one
// pass. After `bayes_step.wgsl` (the step's first half, shared with
// `bayes_fp`). CPU twin: src/reference/bayes.rs.

// Branch-free per element, as the CPU twin's `update_element`: σ*(x) is computed for every
// element and selected, which gives the same bits as branching. (Without the bound the CPU
// loop skips σ*(x) in blocks where no σ is 0; a GPU has arithmetic to spare, so this kernel
// does not.)
fn update(at: At, g: V, ok: B, p: Scalars) {
    let th = theta[at.theta];
    let s_old = load_s(at);
    let sig0 = load_sigma(at);

    var m_old = V(0.0);
    if momentum(p) {
        m_old = load_m(at);
    }
    let c = curvature_and_direction(p, th, g, s_old, m_old);
    if momentum(p) {
        store_m(at, select(m_old, c.m, ok));
    }
    let s_new = c.s;
    let h = c.h;
    let d = c.d;
    // σ*(h + eps²): σ's start where σ = 0 and h > 0, and its bound under
    // sigma_max = fixed_point
    let star = sigma_star(p, h + p.eps_sq);
    let sig1 = select(sig0, star, sig0 == V(0.0) & h > V(0.0));
    // where σ > 0: posterior variance σ/(1 + hσ), exact for h = 0, then diffusion by η²
    let live = sig1 > V(0.0);
    let unbounded = sig1 / (1.0 + h * sig1) + p.eta_sq;
    // min(σ, σ*) spelled as a comparison, as the CPU twin does (`min` may differ on NaN)
    let post = select(unbounded, select(unbounded, star, unbounded > star), bound(p));
    let th_new = select(th, th - post * d, live);
    let sig_new = select(sig1, post, live);

    store_s(at, select(s_old, s_new, ok));
    store_sigma(at, select(sig0, sig_new, ok));
    store_theta(at, select(th, th_new, ok));
}
