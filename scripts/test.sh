#!/usr/bin/env bash
# The one test command (README "Run it"; .ci/run calls it).
# Installs the software Vulkan driver when no Vulkan driver is present and it can (root and
# apt-get), then: formatting, lints, every test (unit, integration, shader validation, GPU
# agreement on the chosen adapter) and `bayesprop validate`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# Lavapipe prints a warning on every start without it.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

# A Vulkan driver registers an ICD manifest in one of these folders.
has_vulkan_driver() {
  compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null || compgen -G '/etc/vulkan/icd.d/*.json' >/dev/null
}

if ! has_vulkan_driver; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing the software Vulkan driver (mesa-vulkan-drivers)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq mesa-vulkan-drivers >/dev/null
  else
    echo "== no Vulkan driver found and cannot install one (needs root and apt-get):" \
         "install mesa-vulkan-drivers, or set BAYESPROP_SKIP_GPU_TESTS=1 to skip GPU tests" >&2
  fi
fi

echo "== cargo fmt --check"
cargo fmt --check

echo "== cargo clippy --all-targets -- -D warnings (the library, every feature, and the CLI)"
cargo clippy --all-targets --all-features -- -D warnings

# The library alone, then each feature alone: a cfg mistake shows up as an error or an unused
# item here. `-p bayesprop`, or the CLI's features would be unified in. Clippy checks without
# code generation, which keeps this cheap.
echo "== cargo clippy -p bayesprop --no-default-features (the core alone), then each feature alone"
cargo clippy -p bayesprop --all-targets --no-default-features -- -D warnings
for feature in ndarray bench demo; do
  echo "   --features $feature"
  cargo clippy -p bayesprop --all-targets --no-default-features --features "$feature" -- -D warnings
done

# What `bayesprop = { path = ... }` brings a library user, with default features, resolved
# as a dependent crate outside this workspace resolves it.
echo "== a dependent crate with default features gets none of the tools' crates"
dependent=$(mktemp -d)
mkdir -p "$dependent/src"
printf '[package]\nname = "dependent"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\nbayesprop = { path = "%s" }\n' \
  "$PWD" > "$dependent/Cargo.toml"
touch "$dependent/src/lib.rs"
cp Cargo.lock "$dependent/Cargo.lock"
tools=$(cargo tree --manifest-path "$dependent/Cargo.toml" -e normal --prefix none |
  grep -E '^(clap|plotters|indicatif|flate2|ndarray-npy) ' | sort -u || true)
rm -rf "$dependent"
if [ -n "$tools" ]; then
  echo "bayesprop with default features depends on:" $tools >&2
  exit 1
fi

echo "== cargo doc: the API documentation builds without warnings (broken or private links)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet -p bayesprop

echo "== cargo test (release: the same build as the CLI below): the library and the CLI"
cargo test --release

echo "== bayesprop info"
cargo run --release --quiet -- info

echo "== bayesprop validate"
cargo run --release --quiet -- validate

echo "== example: gradients computed on the device, stepped in place"
cargo run --release --quiet --example device_gradients
echo "== example: tensors at a framework pool's offsets, stepped in place"
cargo run --release --quiet --example caller_tensors

# The burn adapter is a workspace member: the commands above cover the root crate only.
echo "== bayesprop-burn: clippy, tests, and the digits example shortened"
cargo clippy -p bayesprop-burn --all-targets -- -D warnings
cargo test --release -p bayesprop-burn
BAYESPROP_BURN_QUICK=1 cargo run --release --quiet -p bayesprop-burn --example digits
echo "== bayesprop-burn: the Learner example shortened"
BAYESPROP_BURN_QUICK=1 cargo run --release --quiet -p bayesprop-burn --example learner
