#!/usr/bin/env bash
# The CPU fast path's `skip-element` step against a hand-written C loop of the same step
# (scripts/c_loop/step.c: the same arithmetic, chunks and threads), run side by side and
# interleaved, so that the load of this shared machine weighs on both alike. Prints each run's
# median step times and the Rust step's speed as a fraction of C's (C time / Rust time).
#
# usage: scripts/c_loop.sh [SIZE [ROUNDS [STEPS]]]   (default 64M 3 10; threads: THREADS, else
# every core, for rayon and OpenMP alike)
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:-64M}" rounds="${2:-3}" steps="${3:-10}"
threads="${THREADS:-$(nproc)}"
export RAYON_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" OMP_PROC_BIND=false
command -v gcc >/dev/null || { apt-get update -qq && apt-get install -y -qq gcc; }
command -v jq >/dev/null || { apt-get update -qq && apt-get install -y -qq jq; }
cargo build --release --quiet
out=target/c_loop
mkdir -p "$out"
# No FMA contraction (Rust never contracts), and sqrtf without errno so that it vectorizes as
# Rust's sqrt does (without it gcc calls libm per element).
cc=(gcc -O3 -march=native -fopenmp -ffp-contract=off -fno-math-errno -Wall -Wextra)
"${cc[@]}" -o "$out/step" scripts/c_loop/step.c -lm
n=$(target/release/bayesprop bench --device cpu --sizes "$size" --optimizer sgd --steps 1 \
  --matrix-only --json | jq '.[0].n')
echo "n=$n ($size), $threads threads, $steps timed steps per run, $rounds rounds; ${cc[*]}"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# rust/roof and c/roof: each step's time against its own touch of the same arrays in the same run.
printf '%-9s %5s %9s %9s %9s %9s %12s\n' optimizer round "rust ms" "c ms" rust/roof c/roof "rust speed/c"
for round in $(seq "$rounds"); do
  for optimizer in bayes adam; do
    rust=$(target/release/bayesprop bench --device cpu --nonfinite skip-element \
      --optimizer "$optimizer" --sizes "$size" --steps "$steps" --matrix-only --json)
    rust_s=$(jq '.[0].step_seconds_median' <<<"$rust")
    fraction=$(jq '.[0].roofline_fraction' <<<"$rust")
    read -r _ _ _ c_s c_touch _ < <("$out/step" "$optimizer" "$n" "$steps")
    awk -v o="$optimizer" -v k="$round" -v r="$rust_s" -v c="$c_s" -v f="$fraction" \
      -v ct="$c_touch" 'BEGIN { printf "%-9s %5d %9.2f %9.2f %9.2f %9.2f %12.3f\n",
        o, k, 1e3 * r, 1e3 * c, f, ct / c, c / r }'
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
