"""The tasks ``rnnkit train`` knows: data, model and metric for each, with defaults that
run on built-in data with no arguments.

A task gives the Trainer: ``build_model()``; ``train_batch(step)``, which depends only
on the seed and the step (so a resumed run sees the same batches); ``loss(model,
batch, state) -> (loss, state)`` where ``state`` is carried between steps (the
language model's TBPTT state); ``evaluate(model, split) -> metrics`` on the
``"validation"`` or the ``"test"`` split; ``baselines()``, the simple baselines'
metrics on the same splits; ``extra()``, what a checkpoint must keep to use the model
again (vocabularies, scalers); ``units(batch)``, the tokens (time steps) of a batch,
for the throughput.

Every task has a training, a validation and a test split that never overlap: models
are chosen on validation, and the test split is scored once, after training. Each
task's ``recipe`` holds its default settings (options and training), chosen by
measurement on the validation split.
"""

# the bounds MAX_UNKNOWN, MAX_TEXT_TOKENS and PREDICT_BATCH_TOKENS are read here; the
# modules that use them (tasks.base, tasks.text) are where a test patches them
from rnnkit.train.tasks.base import (INIT_CHOICES, LIMITS, MAX_SEED, MAX_UNKNOWN, SPLITS, Task,
                                     TaskOptions, check_split)
from rnnkit.train.tasks.digits import Digits
from rnnkit.train.tasks.series import Forecasting
from rnnkit.train.tasks.synthetic import Adding, Copying
from rnnkit.train.tasks.text import (MAX_TEXT_TOKENS, PREDICT_BATCH_TOKENS, Classification,
                                     LanguageModelling, Tagging, Translation)

TASKS = {t.name: t for t in (LanguageModelling, Classification, Tagging, Translation,
                             Forecasting, Digits, Adding, Copying)}


def recipe(task: str, given: dict | None = None) -> dict:
    """The task's default settings (TaskOptions and TrainConfig fields) where they differ
    from the generic defaults, for a run with the settings ``given``."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    return TASKS[task].recipe_for(given or {})


__all__ = ["INIT_CHOICES", "LIMITS", "MAX_SEED", "MAX_UNKNOWN", "MAX_TEXT_TOKENS",
           "PREDICT_BATCH_TOKENS", "SPLITS", "TASKS", "Task", "TaskOptions",
           "check_split", "recipe", "LanguageModelling", "Classification", "Tagging",
           "Translation", "Forecasting", "Digits", "Adding", "Copying"]
