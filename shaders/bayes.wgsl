// `bayes`, the seed's optimizer (SPEC §2): EMA of g², variance update and mean update in one
// pass. CPU twin: src/reference/bayes.rs.

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
    bound: f32,           // 1: sigma_max = fixed_point, σ ≤ σ*(h + eps²); 0: none
    pad: f32,
}

@group(0) @binding(4) var<storage, read_write> s: array<V>;
@group(0) @binding(5) var<storage, read_write> sigma: array<V>;
// Bound to a 16-byte placeholder when momentum is off; then never read or written.
@group(0) @binding(6) var<storage, read_write> m: array<V>;

// Branch-free per element, as the CPU twin's `update_element`: σ*(x) is computed for every
// element and selected, which gives the same bits as branching. (Without the bound the CPU
// loop skips σ*(x) in blocks where no σ is 0; a GPU has arithmetic to spare, so this kernel
// does not.)
fn update(i: u32, g: V, ok: B, p: Scalars) {
    let th = theta[i];
    let s_old = s[i];
    let sig0 = sigma[i];

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
    // σ*(x) = η²/2 + η·sqrt(η²/4 + 1/x), at x = h + eps²: σ's start where σ = 0 and h > 0,
    // and its bound under sigma_max = fixed_point
    let x = h + p.eps_sq;
    let star = p.eta_sq * 0.5 + p.eta * sqrt(p.eta_sq * 0.25 + 1.0 / x);
    let sig1 = select(sig0, star, sig0 == V(0.0) & h > V(0.0));
    // where σ > 0: posterior variance σ/(1 + hσ), exact for h = 0, then diffusion by η²
    let live = sig1 > V(0.0);
    let unbounded = sig1 / (1.0 + h * sig1) + p.eta_sq;
    // min(σ, σ*) spelled as a comparison, as the CPU twin does (`min` may differ on NaN)
    let post = select(unbounded, select(unbounded, star, unbounded > star), p.bound > 0.0);
    let th_new = select(th, th - post * d, live);
    let sig_new = select(sig1, post, live);

    s[i] = select(s_old, s_new, ok);
    sigma[i] = select(sig0, sig_new, ok);
    theta[i] = select(th, th_new, ok);
}
