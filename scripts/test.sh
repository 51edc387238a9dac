#!/usr/bin/env bash
# The one test command (README "Run the tests"; .ci/run calls it).
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

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

echo "== cargo test (release: the same build as the CLI below)"
cargo test --release

echo "== bayesprop info"
cargo run --release --quiet -- info

echo "== bayesprop validate"
cargo run --release --quiet -- validate

echo "== example: gradients computed on the device, stepped in place"
cargo run --release --quiet --example device_gradients
