"""Run by torchrun from test_distributed.py: one DDP step of the Clover objective on this rank's half batch."""

import os
import sys

import torch

sys.path.insert(0, os.getcwd())

from tests.model.helpers import deterministic_tiny_model  # noqa: E402
from training.distributed import cleanup, init_distributed  # noqa: E402
from training.objective import CloverObjective, objective_config  # noqa: E402
from training.trainer import TrainingStep  # noqa: E402


def main(work: str) -> None:
    info = init_distributed("cpu")
    torch.manual_seed(0)
    model = deterministic_tiny_model()
    model.load_state_dict(torch.load(os.path.join(work, "init.pt"), weights_only=True))
    batch = torch.load(os.path.join(work, "batch.pt"), weights_only=True)
    local = batch["frames"].shape[0] // info.world_size
    mine = {k: v[info.rank * local : (info.rank + 1) * local] for k, v in batch.items()}
    objective = CloverObjective(objective_config("clover", matching=False, caption_negatives=True), info)
    step = torch.nn.parallel.DistributedDataParallel(TrainingStep(model, objective), find_unused_parameters=True)
    loss, _ = step(mine, torch.Generator().manual_seed(7))
    loss.backward()
    losses = [torch.zeros(()) for _ in range(info.world_size)]
    torch.distributed.all_gather(losses, loss.detach())
    if info.is_main:
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"losses": torch.stack(losses), "grads": grads}, os.path.join(work, "ddp.pt"))
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
