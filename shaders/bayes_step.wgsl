// Prepended to `bayes` and `bayes_fp`: the parts of SPEC §2's step they share (as
// `curvature_and_direction` and `sigma_star` in src/reference/bayes.rs), over their one uniform
// block, `BayesScalars` in src/reference/bayes.rs.

struct Curvature {
    s: V,   // the new EMA of g²
    h: V,   // ŝ + λ
    d: V,   // g̃ = g + λθ, or m·c1 with momentum
    m: V,   // the new momentum (m_old without)
}

// `m_old` is only read with momentum: the caller loads it, and stores `m`, only then.
fn curvature_and_direction(p: Scalars, th: V, g: V, s_old: V, m_old: V) -> Curvature {
    let s_new = p.beta * s_old + p.one_minus_beta * g * g;
    let s_hat = s_new * p.c2;
    let h = s_hat + p.weight_decay;
    let g_tilde = g + p.weight_decay * th;
    var d = g_tilde;
    var m_new = m_old;
    if momentum(p) {
        m_new = p.beta1 * m_old + p.one_minus_beta1 * g_tilde;
        d = m_new * p.c1;
    }
    return Curvature(s_new, h, d, m_new);
}

// σ*(x) = η²/2 + η·sqrt(η²/4 + 1/x), the fixed point of the variance update at curvature x.
fn sigma_star(p: Scalars, x: V) -> V {
    return p.eta_sq * 0.5 + p.eta * sqrt(p.eta_sq * 0.25 + 1.0 / x);
}
