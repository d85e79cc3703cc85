"""Data parallelism and FSDP with jax.sharding: one device mesh, and where each array lives on it.

The mesh has two axes. "data" replicates the parameters and splits the batch; "fsdp" splits the
batch too, and also shards each large parameter (and its optimizer state) along one dimension,
so a device holds 1/fsdp of it (ZeRO-3). XLA inserts the all-gathers and reduce-scatters; the
train step is the same code on 1 device and on N. On one device everything degenerates to no
sharding.
"""

import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gptjax.errors import UsageError

AXES = ("data", "fsdp")
MIN_SHARDED_SIZE = 2**14  # smaller arrays (biases, LayerNorm scales) are replicated: not worth a collective


def initialize_distributed() -> None:
    """Join a multi-host run when the environment sets JAX_COORDINATOR_ADDRESS (host:port of
    process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID; else do nothing. (On Cloud TPU and SLURM,
    jax.distributed.initialize() finds these itself: set only JAX_COORDINATOR_ADDRESS=auto.)"""
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address or jax.distributed.is_initialized():
        return
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across hosts
    if address == "auto":
        jax.distributed.initialize()
        return
    try:
        num_processes, process_id = int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"])
    except (KeyError, ValueError):
        raise UsageError("JAX_COORDINATOR_ADDRESS is set: set JAX_NUM_PROCESSES and JAX_PROCESS_ID "
                         "(0 .. JAX_NUM_PROCESSES-1) as integers too") from None
    jax.distributed.initialize(address, num_processes=num_processes, process_id=process_id)


def main_process_first(what: str, first: Callable[[], Any], then: Callable[[], Any]) -> Any:
    """first() on process 0 while the others wait, then then() on the others (which read what it
    wrote on a shared disk, or make their own copy on their own). When any process fails, every
    other one stops too, in one line naming it, rather than waiting at the next collective for
    one that never reaches it (until a timeout, then a traceback)."""
    main, result, failure = jax.process_index() == 0, None, None
    try:
        if main:
            result = first()
    except Exception as e:  # raised below, once the other processes know not to wait
        failure = e
    if jax.process_count() > 1:
        first_done = multihost_utils.broadcast_one_to_all(np.array(failure is None))
        if not main and first_done:
            try:
                result = then()
            except Exception as e:
                failure = e
        done = multihost_utils.process_allgather(np.array(failure is None))
        if failure is None and not done.all():
            raise UsageError(f"process {int(np.argmin(done))} did not finish {what} (its output says why), so "
                             "this process stops too: start them all again")
    if failure is not None:
        raise failure
    return result


def make_mesh(data: int = -1, fsdp: int = 1) -> Mesh:
    """A (data, fsdp) mesh over every device of every process; data=-1 takes the rest."""
    n = jax.device_count()
    if fsdp < 1 or n % fsdp:
        raise UsageError(f"config.mesh.fsdp={fsdp} must be a divisor of the {n} device{'s' * (n != 1)} "
                         "(only mesh.data takes -1, the devices fsdp leaves)")
    if data == -1:
        data = n // fsdp
    if data * fsdp != n:
        raise UsageError(f"config.mesh.data={data} x mesh.fsdp={fsdp} must equal the {n} device{'s' * (n != 1)}")
    # jax.make_mesh orders devices by the interconnect's topology. Auto axes: the shardings above
    # are constraints and XLA chooses the rest, whatever a JAX version's default axis type is.
    return jax.make_mesh((data, fsdp), AXES, axis_types=(AxisType.Auto,) * len(AXES))


def param_spec(shape: tuple, fsdp: int) -> P:
    """Shard the largest dimension that fsdp divides, for arrays big enough; else replicate."""
    if fsdp == 1 or int(np.prod(shape)) < MIN_SHARDED_SIZE:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            return P(*(["fsdp" if d == dim else None for d in range(len(shape))]))
    return P()


def state_shardings(state: Any, mesh: Mesh) -> Any:
    """A NamedSharding for every array of a TrainState (parameters and optimizer state alike)."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(lambda a: NamedSharding(mesh, param_spec(a.shape, fsdp)), state)


def jit_sharded(make: Callable[..., Any], mesh: Mesh, *example_args: Any) -> Callable[..., Any]:
    """make (which returns a TrainState, or any pytree of arrays), jitted so that each array of its
    result is computed straight into its state_shardings on the mesh: no device, and no host,
    ever holds a whole parameter or optimizer moment that FSDP shards. example_args: what make
    will be called with (arrays already placed), donated: their buffers may become the result's."""
    return jax.jit(make, out_shardings=state_shardings(jax.eval_shape(make, *example_args), mesh),
                   donate_argnums=tuple(range(len(example_args))))


def place(tree: Any, shardings: Any) -> Any:
    """Arrays that every process holds identically on the host, put on a mesh that may span
    processes (jax.device_put accepts only devices of this process)."""
    return jax.tree.map(
        lambda a, where: jax.make_array_from_callback(a.shape, where, lambda index: np.asarray(a)[index]),
        tree, shardings,
    )


def abstract_on_mesh(tree: Any, mesh: Mesh) -> Any:
    """ShapeDtypeStructs of tree's arrays, carrying their state_shardings (compile or restore
    targets that allocate nothing)."""
    return jax.tree.map(lambda a, where: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=where),
                        tree, state_shardings(tree, mesh))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Batches split along their batch dimension (the second of (A, B, T)) over both axes."""
    return NamedSharding(mesh, P(*([None] * (ndim - 2)), AXES, None))


def put_batch(batch: tuple[np.ndarray, ...], mesh: Mesh) -> tuple[jax.Array, ...]:
    """This process's rows of a global batch, as global arrays split across the mesh."""
    return tuple(
        jax.make_array_from_process_local_data(batch_sharding(mesh, part.ndim), part) for part in batch
    )


def process_rows(global_batch_size: int) -> slice:
    """The rows of every global batch that this process reads."""
    per_process = global_batch_size // jax.process_count()
    return slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
