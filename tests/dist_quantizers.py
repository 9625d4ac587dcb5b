"""Run by test_quantizers under torchrun with 1 or 2 processes: train quantizers a few steps on one global batch
split across the processes, check every rank holds the same codebooks, then save rank 0's statistics."""

import sys

import torch
import torch.distributed as dist

from genlab.config import from_dict
from genlab.tokenizers.quantizers import MultiScaleVQ, ResidualVQ, VectorQuantizer

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)  # the same initial codebooks everywhere
vq = VectorQuantizer(
    from_dict(VectorQuantizer.Config, {"codebook_size": 64, "ema_decay": 0.9, "dead_code_threshold": 0.8}), dim=4
)
rvq = ResidualVQ(
    from_dict(
        ResidualVQ.Config, {"depth": 3, "vq": {"codebook_size": 32, "ema_decay": 0.9, "dead_code_threshold": 0.5}}
    ),
    dim=4,
)
msvq = MultiScaleVQ(
    from_dict(MultiScaleVQ.Config, {"scales": [1, 2, 4], "vq": {"codebook_size": 32, "dead_code_threshold": 0.5}}),
    dim=4,
)
g = torch.Generator().manual_seed(1)
stats = {}
for _ in range(6):
    batch = torch.randn(8, 4, 4, 4, generator=g)
    local = batch.chunk(world)[rank].clone().requires_grad_()  # as an encoder output would
    for name, q in (("vq", vq), ("rvq", rvq), ("msvq", msvq)):
        out = q(local)
        out.loss.backward()  # a training step's backward; the collectives ran in the forward
        stats |= {f"{name}.{k}": v.reshape(1) for k, v in out.stats.items()}
if rank == 0:  # evaluation on the main process alone must not communicate (it would hang)
    with torch.no_grad():
        vq(batch), rvq(batch), msvq(batch)
    vq.eval(), rvq.eval(), msvq.eval()
    vq(batch), rvq(batch), msvq(batch)
dist.barrier()
state = {
    f"{n}.{k}": v.float() for n, q in (("vq", vq), ("rvq", rvq), ("msvq", msvq)) for k, v in q.state_dict().items()
}
for k, v in state.items():  # every rank holds rank 0's codebooks and statistics
    ref = v.clone()
    dist.broadcast(ref, src=0)
    assert torch.allclose(ref, v, atol=1e-6), f"rank {rank} differs in {k}"
if rank == 0:
    restarts = sum(int(q.reseeded) for q in (vq, *rvq.vqs, msvq.vq))
    torch.save({**state, **stats, "restarts": torch.tensor(float(restarts))}, sys.argv[1])
dist.destroy_process_group()
