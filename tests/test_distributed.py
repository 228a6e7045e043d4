"""Data-parallel training: two CPU processes (gloo), as torchrun would start them."""

import gc
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    torch.set_num_threads(1)
    from rnnkit.train.tasks import TASKS, TaskOptions
    from rnnkit.train.trainer import TrainConfig, Trainer

    config = TrainConfig(max_steps=6, eval_every=3, progress=False)
    for task in ("adding", "forecast"):  # forecast trains through a method: DDP must see it
        options = TaskOptions(hidden_size=8, seq_len=10, batch_size=4)
        # the control: each rank alone on its own data, as without the process group
        os.environ["WORLD_SIZE"] = "1"
        alone = Trainer(TASKS[task](TaskOptions(**{**vars(options), "seed": 7919 * rank})),
                        config, f"{out_dir}/{task}-alone{rank}")
        alone.fit()
        torch.save(alone.model.state_dict(), f"{out_dir}/{task}-alone{rank}.pt")
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                          WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
        trainer = Trainer(TASKS[task](options), config, f"{out_dir}/{task}")
        trainer.fit()
        torch.save(trainer.model.state_dict(), f"{out_dir}/{task}-ddp{rank}.pt")
    # free the DDP wrapper and wait for the other rank before tearing the group down: a
    # rank that destroyed its group while the other was still freeing its own DDP
    # wrapper hung that one (about one run in three)
    del trainer, alone
    gc.collect()
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _run_two(args, deadline=240.0):
    """Start two workers; fail (never hang) if they have not finished by the deadline."""
    context = mp.start_processes(_worker, args=args, nprocs=2, join=False, start_method="spawn")
    end = time.monotonic() + deadline
    while not context.join(timeout=5):
        if time.monotonic() > end:
            for p in context.processes:
                p.kill()
            pytest.fail(f"the two training processes did not finish within {deadline:.0f} s")


def test_two_processes_keep_identical_weights(tmp_path):
    _run_two((2, _free_port(), str(tmp_path)))
    for task in ("adding", "forecast"):
        a, b = (torch.load(tmp_path / f"{task}-ddp{r}.pt") for r in (0, 1))
        for k in a:
            assert torch.equal(a[k], b[k]), (task, k)
        assert (tmp_path / task / "last.pt").is_file()  # rank 0 wrote the run
        # without the process group the same two ranks drift apart: the equality above
        # is the gradients being averaged, not a coincidence
        a, b = (torch.load(tmp_path / f"{task}-alone{r}.pt") for r in (0, 1))
        assert any(not torch.equal(a[k], b[k]) for k in a), task
