#!/usr/bin/env bash
# Debian packages the tests and the demo need: the real Fashion-MNIST files
# and g++ (keras_hebb's native selection op is compiled at setup).
set -euo pipefail
missing=()
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  missing+=(dataset-fashion-mnist)
fi
if ! command -v g++ >/dev/null; then
  missing+=(g++)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "Installing Debian packages: ${missing[*]} ..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
