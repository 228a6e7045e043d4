"""Training: truncated BPTT for now; the Trainer lives here too."""

from rnnkit.train.tbptt import batchify, detach_state, tbptt_chunks

__all__ = ["batchify", "detach_state", "tbptt_chunks"]
