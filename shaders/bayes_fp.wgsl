// `bayes_fp` (SPEC §2b): `bayes` held at the fixed point σ*(h + eps²) of the current curvature,
// so σ is not stored. EMA of g², direction and mean update in one pass. CPU twin:
// src/reference/bayes_fp.rs. The uniform block is `bayes`'s.

struct Scalars {
    beta: f32,
    one_minus_beta: f32,
    c2: f32,              // 1/(1 - beta^t) with bias correction, else 1
    weight_decay: f32,
    beta1: f32,           // momentum; 0 turns it off
    one_minus_beta1: f32,
    c1: f32,              // 1/(1 - beta1^t)
    eta: f32,
    eta_sq: f32,
    eps_sq: f32,
    pad0: f32,
    pad1: f32,
}

@group(0) @binding(4) var<storage, read_write> s: array<V>;
// Bound to a 16-byte placeholder when momentum is off; then never read or written.
@group(0) @binding(5) var<storage, read_write> m: array<V>;

fn update(i: u32, g: V, ok: B, p: Scalars) {
    let th = theta[i];
    let s_old = s[i];

    let s_new = p.beta * s_old + p.one_minus_beta * g * g;
    let s_hat = s_new * p.c2;
    let h = s_hat + p.weight_decay;
    let g_tilde = g + p.weight_decay * th;
    var d = g_tilde;
    if p.beta1 > 0.0 {
        let m_old = m[i];
        let m_new = p.beta1 * m_old + p.one_minus_beta1 * g_tilde;
        m[i] = select(m_old, m_new, ok);
        d = m_new * p.c1;
    }
    // σ*(x) = η²/2 + η·sqrt(η²/4 + 1/x), at x = h + eps²
    let x = h + p.eps_sq;
    let sigma = p.eta_sq * 0.5 + p.eta * sqrt(p.eta_sq * 0.25 + 1.0 / x);

    s[i] = select(s_old, s_new, ok);
    theta[i] = select(th, th - sigma * d, ok);
}
