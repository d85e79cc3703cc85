"""Memory per device of one GPT-2 (124M) train step under each sharding, as XLA plans it.

    python benchmarks/memory.py [--batch 8 --devices 8]
    python benchmarks/memory.py --init [--devices 8]   # building the train state, 124M and 350M

Nothing is allocated: the step is compiled for abstract inputs on `--devices` CPU devices
(XLA's host-platform device count) and XLA's memory analysis of the compiled program is printed:
parameters + optimizer state + batch (arguments) and the largest live temporaries, per device.
Also prints each compile time. --init instead plans sharding.jit_sharded's construction of the
whole train state (initialisation and AdamW's moments), replicated and FSDP.
"""

import argparse
import os
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="global batch of 1024-token sequences")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--init", action="store_true", help="plan the train state's construction instead")
    args = parser.parse_args()
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices} {flags}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    import numpy as np
    from flax import nnx
    from jax.sharding import Mesh

    import gptjax
    from gptjax import sharding

    if args.init:
        print(f"building the train state (float32, AdamW), planned MiB per device on {args.devices} devices")
        print(f"{'model':12s} {'replicated':>11s} {'FSDP':>8s} {'ratio':>6s}")
        for name, cfg in (("GPT-2 124M", gptjax.GPTConfig()),
                          ("GPT-2 350M", gptjax.GPTConfig(n_layer=24, n_head=16, n_embd=1024))):
            make = lambda cfg=cfg: gptjax.TrainState.create(gptjax.GPT(cfg, rngs=nnx.Rngs(0)), gptjax.adamw())
            planned = []
            for data, fsdp in ((args.devices, 1), (1, args.devices)):
                memory = sharding.jit_sharded(make, sharding.make_mesh(data, fsdp)).lower().compile().memory_analysis()
                planned.append((memory.output_size_in_bytes + memory.temp_size_in_bytes) / 2**20)
            print(f"{name:12s} {planned[0]:11.0f} {planned[1]:8.0f} {planned[0] / planned[1]:6.2f}")
        return
    settings = [("1 device", 1, 1, False), ("data parallel", args.devices, 1, False),
                ("FSDP", 1, args.devices, False), ("data 2 x FSDP", 2, args.devices // 2, False),
                ("1 device, remat", 1, 1, True), ("FSDP, remat", 1, args.devices, True)]
    print(f"GPT-2 124M, batch {args.batch} x 1024 tokens, float32, AdamW; MiB per device")
    print(f"{'setting':18s} {'params+opt+batch':>17s} {'temporaries':>12s} {'total':>8s} {'compile s':>10s}")
    for name, data, fsdp, remat in settings:
        cfg = gptjax.GPTConfig(remat=remat)  # nanoGPT's GPT-2 defaults: 12 x 768, block 1024
        devices = np.asarray(jax.devices()[: data * fsdp]).reshape(data, fsdp)
        mesh = Mesh(devices, sharding.AXES)
        state = jax.eval_shape(lambda cfg=cfg: gptjax.TrainState.create(gptjax.GPT(cfg, rngs=nnx.Rngs(0)),
                                                                        gptjax.adamw()))
        state = sharding.abstract_on_mesh(state, mesh)
        batch = jax.ShapeDtypeStruct((args.batch, 1024), np.int32, sharding=sharding.batch_sharding(mesh, 2))
        start = time.perf_counter()
        compiled = gptjax.train_step.lower(state, batch, batch).compile()
        seconds = time.perf_counter() - start
        memory = compiled.memory_analysis()
        arguments = memory.argument_size_in_bytes / 2**20
        temporaries = memory.temp_size_in_bytes / 2**20
        print(f"{name:18s} {arguments:17.0f} {temporaries:12.0f} {arguments + temporaries:8.0f} {seconds:10.1f}")


if __name__ == "__main__":
    main()
