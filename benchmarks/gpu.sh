#!/usr/bin/env bash
# The checks that need a CUDA device, as one run of a few minutes: the triton engine's
# tests (its kernels, and the CUDA graphs of its loops and the Python fused engine's),
# every test with a CUDA case (the `device` fixture's "cuda", the gpu-marked ones: CUDA
# autocast in fp16 and bf16, the Triton scan on the GPU), then `rnnkit bench --device
# cuda` for the cells the triton engine runs and a user's cell, at the issue's sizes, and
# the scan section (minGRU, minLSTM: chunked, triton, log). Writes its reports into OUT
# (default benchmarks/results):
#
#     bash benchmarks/gpu.sh            # on the GPU machine, from the repository root
#
# It uses the torch already installed there (any 2.x with CUDA): rnnkit is installed
# beside it without touching it.
set -uo pipefail  # not -e: the bench runs even where a test fails; the status says so
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M)
python=${PYTHON:-python3}
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || exit 1
"$python" -m pip install -q --no-deps -e . && "$python" -m pip install -q typer rich \
    scikit-learn statsmodels pandas matplotlib hypothesis pytest pytest-xdist ninja triton || exit 1
{
  echo "# rnnkit on $("$python" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())')"
  echo
  echo '## the triton engine on the GPU'
  echo '```'
  timeout 150 "$python" -m pytest -q -n 0 -p no:cacheprovider tests/test_triton_engine.py \
      tests/test_graphs.py 2>&1 | tail -30
  engine=${PIPESTATUS[0]}
  echo '```'
  echo '## tests with a CUDA case'
  echo '```'
  timeout 200 "$python" -m pytest -q -n 0 -p no:cacheprovider -k "cuda or gpu" \
      tests/test_autocast.py tests/test_engines.py tests/test_lengths_and_states.py \
      tests/test_triton_scan.py tests/test_torch_nn.py 2>&1 | tail -40
  tests=${PIPESTATUS[0]}
  echo '```'
  echo "pytest exit status: triton engine $engine, CUDA cases $tests"
  [ "$engine" = 0 ] || tests=$engine
} > "$out/$stamp-gpu-tests.md"  # a group, not a subshell: $tests stays set
timeout 300 "$python" -m rnnkit bench --device cuda --no-streaming \
    --cells lstm,gru,lstm-layer-norm,lstm-zoneout,gru-layer-norm,cifg,mingru,minlstm \
    --engines native,triton,fused-python \
    --size 50,1,64,64 --size 200,8,32,64 --size 1000,16,64,128 --size 100,32,256,256 \
    --size 100,64,512,512 --save-to "$out" > "$out/$stamp-cuda.log" 2>&1
bench=$?
echo "wrote $out/$stamp-gpu-tests.md, $out/$stamp-cuda.log and the bench report in $out"
echo "tests: exit $tests; bench: exit $bench"
[ "$tests" = 0 ] && [ "$bench" = 0 ]
