#!/usr/bin/env bash
# The GPU check (issue 21), for a machine with an NVIDIA GPU and PyTorch with CUDA: about 5
# minutes. Run it in the repository root:
#
#     bash benchmarks/device_check.sh
#
# On a machine without network, carry what it lacks as wheels in .whl/ (pure-Python, made here
# with: python3 -m pip download --no-deps -d .whl pooch platformdirs torchinfo); they are
# installed into /tmp/site. With $OUT set, the log and both run directories' summaries go there.
#
# 1. The tests of the code that trains, with their runs on the GPU (DIGITCMP_TEST_DEVICE=cuda).
# 2. Step time per model on the GPU: the reference engine, and the stacked engine with 15
#    rounds folded into grouped convolutions (digitcmp's GPU path) and slot by slot.
# 3. The full protocol (3 models x 15 rounds x 25 epochs) on the CPU cores and on the GPU,
#    then every GPU round's test error against the CPU run's spread (widened by 3 pp).
# 4. benchmarks/speed.py --device cuda: the protocol's wall time, FLOPs and the fraction of the
#    GPU's float32 matmul rate; its last line, reproduce_seconds=, is the figure to report.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/device-check}
mkdir -p "$out"
exec > >(tee "$out/device_check.log") 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 DIGITCMP_CACHE=/tmp/digitcmp-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
nproc

echo "== 1. tests on the GPU"
DIGITCMP_TEST_DEVICE=cuda timeout 150 python3 -m pytest -q -x -p no:cacheprovider tests/test_train.py \
  tests/test_stacked.py tests/test_device.py tests/test_probcmp.py tests/test_checkpoint.py

echo "== 2. step time on the GPU"
timeout 90 python3 benchmarks/step_time.py --device cuda --steps 20

echo "== 3. the protocol on $(nproc) CPU cores and on the GPU"
/usr/bin/time -f "cpu protocol: %e s wall" python3 -m digitcmp reproduce --data embedded --device cpu \
  --no-progress --out /tmp/protocol-cpu > /dev/null
/usr/bin/time -f "gpu protocol: %e s wall" python3 -m digitcmp reproduce --data embedded --device cuda \
  --executor serial --no-progress --out /tmp/protocol-gpu > /dev/null
python3 benchmarks/device_compare.py /tmp/protocol-cpu /tmp/protocol-gpu
cp /tmp/protocol-cpu/summary.md "$out/cpu-summary.md"; cp /tmp/protocol-gpu/summary.md "$out/gpu-summary.md"

echo "== 4. speed"
timeout 120 python3 benchmarks/speed.py --device cuda --executor serial --data embedded
