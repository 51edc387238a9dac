#!/usr/bin/env bash
# The figures of docs/performance.md, from real runs: every command below, each one's output
# under docs/bench/. Speeds move with the machine's load: the runs print the load average, and
# every roofline fraction is taken against a roofline measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
cargo build --release --quiet
bench() { target/release/bayesprop bench "$@"; }
out=docs/bench
mkdir -p "$out"

# The matrix: every optimizer, 1M/16M/64M, reference/cpu/gpu, default policy (skip-step), with
# the many-tensor case and the scan pass's cost.
bench --repeat 3 | tee "$out/matrix.txt"
# The CPU alone, with the default policy and then without the extra read of g that skip-step
# needs (the rows of docs/performance.md's table); the first with the fused training step against the
# unfused sequence.
bench --device cpu --sizes 16M,64M --repeat 3 --training-step | tee "$out/cpu-skip-step.txt"
bench --device cpu --sizes 16M,64M --nonfinite skip-element --repeat 3 \
  | tee "$out/cpu-skip-element.txt"
# The training step alone, fused against unfused, each row against its own touch.
bench --device cpu --sizes 16M,64M --optimizer bayes --matrix-only --training-step --repeat 3 \
  | tee "$out/cpu-training-step.txt"
for run in 1 2; do
  bench --device gpu --sizes 4M --optimizer adam --matrix-only --training-step --repeat 2
done | tee "$out/gpu-unfused.txt"
bench --device gpu --sizes 16M --optimizer adam --matrix-only --training-step \
  | tee -a "$out/gpu-unfused.txt"
# The GPU alone at the sizes of docs/performance.md's table, with the fused training step.
bench --device gpu --sizes 16M,64M --matrix-only --training-step --repeat 3 \
  | tee "$out/gpu-16M-64M.txt"
# Throughput against N, every device (the figure).
bench --optimizer bayes --sizes 16K,64K,256K,1M,4M,16M,64M --matrix-only --repeat 2 \
  --plot "$out/throughput.svg" | tee "$out/throughput.txt"
# vec4 against one element per invocation, alternating.
for run in 1 2; do
  bench --optimizer bayes --device gpu --sizes 1M,16M --matrix-only --repeat 2 \
    | tee "$out/gpu-vec4-$run.txt"
  bench --optimizer bayes --device gpu --sizes 1M,16M --matrix-only --repeat 2 --scalar-only \
    | tee "$out/gpu-scalar-$run.txt"
done
# Workgroup size on this adapter.
for size in 64 128 256 512 1024; do
  bench --optimizer bayes --device gpu --sizes 4M --matrix-only --repeat 3 \
    --workgroup-size "$size" | tee "$out/gpu-workgroup-$size.txt"
done
# The skip-element step against a hand-written C loop of it, interleaved.
scripts/c_loop.sh 64M 3 10 | tee "$out/c-loop-64M.txt"
# What the GPU's fused training step spends beyond the plain step: unscaling alone, clipping
# alone, both; interleaved.
for round in 1 2; do
  for flags in "" "--clip-norm off" "--grad-scale 1"; do
    echo "## bench --device gpu --sizes 4M --optimizer adam --matrix-only --training-step --repeat 2 $flags"
    # shellcheck disable=SC2086
    bench --device gpu --sizes 4M --optimizer adam --matrix-only --training-step --repeat 2 $flags
  done
done | tee "$out/gpu-training-step-4M.txt"
# Low-precision state on the CPU (SPEC §6): each format's rows under both policies.
for optimizer in bayes adam; do
  for policy in skip-step skip-element; do
    echo "## bench --optimizer $optimizer --sizes 64M --device cpu --matrix-only --steps 10 --nonfinite $policy --set state_format=f32,bf16,q8"
    bench --optimizer "$optimizer" --sizes 64M --device cpu --matrix-only --steps 10 \
      --nonfinite "$policy" --set state_format=f32,bf16,q8
  done
done | tee "$out/cpu-state-format.txt"
