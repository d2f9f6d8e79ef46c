#!/usr/bin/env bash
# One GPU check of issue 31 in one call (about 8 minutes on an H100/H200): the CUDA tests, the side-by-side
# table on CUDA (neurodeploy fp32 vs SpikingJelly 2.0 multi- and single-step vs the dense floor) and the
# conv MNIST CUDA-vs-CPU rows. Results go to $OUT (or benchmarks/ when OUT is unset).
#
# The machine has PyTorch but no internet: carry SpikingJelly and what neurodeploy needs beyond the image as
# wheels in .whl/ (from the repository root, on a machine with pip):
#   python3 -m pip download --no-deps -d .whl spikingjelly==2.0.0 loguru
# (plus neurodeploy's own pure-Python dependencies missing there, e.g. nir), then run, from the repository root:
#   bash benchmarks/device_check.sh
set -uo pipefail
OUT=${OUT:-benchmarks}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"
# 1. the CUDA path against the CPU path, spike for spike (about a minute)
NEURODEPLOY_TEST_DEVICE=cuda timeout 120 python3 -m pytest tests/test_cuda.py -q 2>&1 | tail -5 | tee "$OUT/test_cuda.txt"
# 2. the side-by-side table on CUDA (T = 50; VGG-11 trains for one epoch first, on the GPU's host CPU)
timeout 300 python3 benchmarks/side_by_side.py --device cuda --threads 16 --repeats 3 \
  --out "$OUT/side_by_side_cuda.json" 2>&1 | grep -v "INFO\|it/s" | tee "$OUT/side_by_side_cuda.txt"
# 3. conv MNIST, CUDA against CPU through the main job (never run before: the CSR fix for PyTorch 2.11)
timeout 150 python3 benchmarks/cuda_vs_cpu.py --archs conv_mnist --profiles ideal,pynn --samples 500 \
  --out "$OUT/cuda_vs_cpu_conv.json" 2>&1 | tail -8 | tee "$OUT/cuda_vs_cpu_conv.txt"
