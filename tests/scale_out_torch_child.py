"""Child of `test_scale_out.py`: PyTorch DistributedDataParallel (gloo).

`python scale_out_torch_child.py RANK WORLD PORT OUT_DIR` with
KERAS_BACKEND=torch. The Keras model (a `torch.nn.Module` on this backend)
is wrapped in `DistributedDataParallel` and trained by a torch loop with
`torch.optim.Adam`, each rank on its slice of every global batch, as in
keras-io's "distributed training with torch" guide. Rank 0 first trains the
same model in one process on the whole global batches (no DDP), the
reference. Writes `OUT_DIR/rank<R>.npz` (and `OUT_DIR/single.npz`, `OUT_DIR/initial.npz`).

With `RECIPE RECIPE_PORT` after it, each rank then runs docs/distributed.md's
DDP recipe (file RECIPE) as a script in the same process, with the
environment `torchrun` gives a rank (RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT=RECIPE_PORT), its printed output to `OUT_DIR/recipe<R>.txt`.
"""

import datetime
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import keras
import scale_out_model as m


def train(model, module, part=slice(None)):
    """`EPOCHS` passes over the global batches, `part` of each batch."""
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad],
        lr=m.LEARNING_RATE)
    for _ in range(m.EPOCHS):
        for x, y in m.global_batches():
            x, y = torch.from_numpy(x[part]), torch.from_numpy(y[part])
            optimizer.zero_grad(set_to_none=True)
            loss = torch.mean((module(x, training=True) - y) ** 2)
            loss.backward()
            optimizer.step()


def main(rank, world, port, out_dir):
    assert keras.backend.backend() == "torch", keras.backend.backend()
    torch.set_num_threads(1)
    if rank == 0:
        np.savez(f"{out_dir}/initial.npz", **m.snapshot(m.build()))
        single = m.build()
        train(single, single)
        np.savez(f"{out_dir}/single.npz", **m.snapshot(single))
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
        world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        model = m.build()
        ddp = DistributedDataParallel(model)
        local = m.GLOBAL_BATCH // world
        train(model, ddp, slice(rank * local, (rank + 1) * local))
        np.savez(f"{out_dir}/rank{rank}.npz", **m.snapshot(model))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_recipe(rank, world, recipe, port, out_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    m.run_recipe(recipe, f"{out_dir}/recipe{rank}.txt")


if __name__ == "__main__":
    rank, world = int(sys.argv[1]), int(sys.argv[2])
    main(rank, world, int(sys.argv[3]), sys.argv[4])
    if len(sys.argv) > 5:
        run_recipe(rank, world, sys.argv[5], int(sys.argv[6]), sys.argv[4])
