"""Training: the Trainer (checkpoints, resume, evaluation, the final test score), the
built-in tasks with their recipes and baselines, the command line's functions (``api``)
and truncated BPTT (:func:`tbptt_chunks`, :func:`detach_state`)."""

from rnnkit.train.tbptt import detach_state, tbptt_chunks

__all__ = ["detach_state", "tbptt_chunks"]
