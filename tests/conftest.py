import os

import pytest
import torch

# Tiny ops dominate these tests; two threads make them slower, not faster.
torch.set_num_threads(1)
# Compare against full-precision float32 on GPUs too.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Without a GPU, Triton kernels run in Triton's CPU interpreter: set before any kernel is
# defined (rnnkit imports them on first use), so that the tests can check them here.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)
