#!/usr/bin/env bash
# System packages promptscope needs on Debian/Ubuntu, installed only when missing: a Vulkan driver (Mesa's
# lavapipe renders on the CPU when there is no GPU), the X11 libraries winit opens at run time, and Xvfb
# for headless windows (GUI tests, screenshots), and Slurm with munge (the sweep test starts a one-node
# cluster). The Rust toolchain comes from rustup.
set -euo pipefail
pkgs=(xvfb xauth mesa-vulkan-drivers libvulkan1 libegl1 libgl1 libxkbcommon-x11-0 libxcursor1 libxrandr2 libxi6 libx11-xcb1 fonts-dejavu-core
  slurm-wlm munge)
missing=()
command -v python3 >/dev/null || pkgs+=(python3 python3-pip)
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The export test reads our files with Python's own safetensors reader.
if ! python3 -c "import safetensors, numpy" 2>/dev/null; then
  python3 -m pip install --quiet safetensors numpy || python3 -m pip install --quiet --break-system-packages safetensors numpy
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi
