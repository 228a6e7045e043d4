"""Training: truncated BPTT for now; the Trainer lives here too."""

from rnnkit.train.tbptt import detach_state, tbptt_chunks

__all__ = ["detach_state", "tbptt_chunks"]
