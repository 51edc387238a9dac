//! A burn MLP on the digits the repo ships (`data/digits.csv.gz`), trained on burn's wgpu
//! backend three times from the same initial weights and batches: with burn's own Adam, and
//! with bayesprop's `adam` and `bayes` through the adapter. The optimizer is the only line
//! that changes between the runs.
//!
//! `cargo run --release -p bayesprop-burn --example digits` (`--quick`, or
//! BAYESPROP_BURN_QUICK=1, runs 2 epochs for CI).

#[path = "common/digits.rs"]
mod digits;

use bayesprop::optim::AdamConfig as OurAdam;
use bayesprop_burn::{BayesConfig, BayespropConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use digits::*;

struct Run {
    name: &'static str,
    losses: Vec<f64>,
    accuracy: f64,
    model: Mlp,
}

/// Trains `model` for `epochs`, calling `step` where a burn loop calls its optimizer.
fn train(
    name: &'static str,
    mut model: Mlp,
    mut step: impl FnMut(Mlp, GradientsParams) -> Mlp,
    data: &Samples,
    (train_rows, test_rows): (&[usize], &[usize]),
    epochs: usize,
    device: &Device,
) -> Run {
    let mut losses = Vec::new();
    for epoch in 0..epochs {
        let order = permutation(train_rows.len(), 1000 + epoch as u64);
        let (mut sum, mut batches) = (0.0, 0);
        for chunk in order.chunks(BATCH) {
            let rows: Vec<usize> = chunk.iter().map(|&i| train_rows[i]).collect();
            let (x, y) = tensors(data, &rows, device);
            let loss = cross_entropy(model.forward(x), y);
            sum += loss.to_data().try_to_vec::<f32>().unwrap()[0] as f64;
            batches += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = step(model, grads);
        }
        losses.push(sum / batches as f64);
        println!(
            "{name:>16}  epoch {:>2}  loss {:.4}",
            epoch + 1,
            sum / batches as f64
        );
    }
    Run {
        name,
        accuracy: accuracy(&model, data, test_rows, device),
        losses,
        model,
    }
}

fn flat(model: &Mlp) -> Vec<f32> {
    [
        model.hidden.weight.val().to_data(),
        model.hidden.bias.as_ref().unwrap().val().to_data(),
        model.out.weight.val().to_data(),
        model.out.bias.as_ref().unwrap().val().to_data(),
    ]
    .iter()
    .flat_map(|d| d.try_to_vec::<f32>().unwrap())
    .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("BAYESPROP_BURN_QUICK").is_ok_and(|v| v == "1");
    let epochs = if quick { 2 } else { 20 };

    // The one extra line: burn's wgpu device, shared with bayesprop.
    let device = bayesprop_burn::init_device()?;
    let ctx = bayesprop_burn::shared_context(&device)?;
    println!(
        "adapter: {} ({:?})",
        ctx.adapter_info().name,
        ctx.adapter_info().backend
    );
    device.seed(42);
    let device = device.autodiff();

    let data = load_digits()?;
    let order = permutation(data.y.len(), 7);
    let (test_rows, train_rows) = order.split_at(TEST);
    let rows = (train_rows, test_rows);
    println!(
        "digits: {} train, {} test; MLP {FEATURES}-{HIDDEN}-{CLASSES} (relu), batch {BATCH}, \
         {epochs} epochs, lr {LR}",
        train_rows.len(),
        test_rows.len()
    );
    let init = Mlp::new(&device);

    let mut burn_adam = AdamConfig::new().with_epsilon(EPS as f32).init();
    let mut our_adam = BayespropConfig::new(OurAdam {
        eps: EPS,
        ..OurAdam::adam()
    })
    .init();
    let mut bayes = BayesConfig::new().with_eta(ETA).init();
    let runs = [
        train(
            "burn Adam",
            init.clone(),
            |m, g| burn_adam.step(LR, m, g),
            &data,
            rows,
            epochs,
            &device,
        ),
        train(
            "bayesprop adam",
            init.clone(),
            |m, g| our_adam.step(LR, m, g),
            &data,
            rows,
            epochs,
            &device,
        ),
        train(
            "bayesprop bayes",
            init,
            |m, g| bayes.step(LR, m, g),
            &data,
            rows,
            epochs,
            &device,
        ),
    ];

    // Speed is `cargo bench -p bayesprop-burn`'s job: here the first run would also pay for
    // compiling burn's kernels.
    println!("\n| optimizer | final train loss | test accuracy |");
    println!("| --- | --- | --- |");
    for run in &runs {
        println!(
            "| {} | {:.4} | {:.1}% |",
            run.name,
            run.losses.last().copied().unwrap_or(f64::NAN),
            100.0 * run.accuracy,
        );
    }
    let (a, b) = (flat(&runs[0].model), flat(&runs[1].model));
    let gap = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    println!(
        "\nburn Adam vs bayesprop adam after {epochs} epochs: max |Δθ| = {gap:.2e} \
         (same formula, different rounding; see docs/burn.md)"
    );
    let sigma = bayes.sigma::<2>(runs[2].model.hidden.weight.id)?;
    let sigma = sigma.to_data().try_to_vec::<f32>().unwrap();
    let mean = sigma.iter().map(|&s| s as f64).sum::<f64>() / sigma.len() as f64;
    println!(
        "bayes: mean posterior variance σ of the hidden weights {mean:.3e} (read back as a burn tensor)"
    );
    Ok(())
}
