"""`python -m wan_vae` for tests of the torch.distributed path, run under torch.distributed.run.

"{rank}" in an argument becomes this process's rank (so that one rank can be given another file), and
WAN_VAE_TEST_FAIL="RANK:CHUNK" makes that rank's decode raise when it reaches that chunk: a failure in
the middle of a decode, without any hook in the library.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan_vae import cli  # noqa: E402
from wan_vae.run import decode  # noqa: E402

rank = os.environ["RANK"]
fail = os.environ.get("WAN_VAE_TEST_FAIL")
if fail and fail.split(":")[0] == rank:
    at, real = int(fail.split(":")[1]), decode.land

    def failing_land(net, plan, k, mid, t0, t1, *args, **kwargs):
        if t0 >= at:
            raise RuntimeError(f"injected failure at latent frame {t0}")
        return real(net, plan, k, mid, t0, t1, *args, **kwargs)

    decode.land = failing_land

if sys.argv[1] == "frames":  # frames VAE LATENT OUT.pt [TILE_SIZE]: the library's frames, saved by rank 0
    import torch

    from wan_vae import load_vae
    from wan_vae.run import distributed
    from wan_vae.files.latents import read_latent_file

    group = distributed.setup("cpu")
    try:
        frames = list(distributed.decode_frames(load_vae(sys.argv[2]), read_latent_file(sys.argv[3]), group, tiling="on",
                                                tile_size=int(sys.argv[5]) if len(sys.argv) > 5 else 64))  # fmt: skip
        if group.rank == 0:
            torch.save(torch.cat(frames), sys.argv[4])
    finally:
        group.close()
    sys.exit(0)
sys.exit(cli.main([a.replace("{rank}", rank) for a in sys.argv[1:]]))
