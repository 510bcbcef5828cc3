"""``--parallel tensor|pipeline`` for ``olmo3 generate``, ``olmo3 chat`` and ``olmo3 serve``: one model across the
ranks of ``mlx.launch``.

Every rank runs the same command line. Rank 0 does what the command does on one machine (only it prints); the
others load their part of the model and follow rank 0's commands until it is done
(:func:`olmo3.parallel.cluster.run_follower`). Before any MLX import, SIGTERM is taken over
(:func:`olmo3.parallel.watchdog.take_sigterm`) so that ``mlx.launch`` stopping the group ends every rank cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .options import memory_limit, model_path

if TYPE_CHECKING:
    from ..parallel.cluster import Cluster

__all__ = ["add_parallel_option", "launch_rank", "run_parallel"]

HELP = (
    "run across the processes mlx.launch started: tensor (every rank holds 1/N of each layer) or pipeline "
    "(each rank holds a range of layers); rank 0 prints"
)


def add_parallel_option(p: argparse.ArgumentParser, text: str = HELP) -> None:
    p.add_argument("--parallel", choices=("tensor", "pipeline"), help=text)


def launch_rank() -> int:
    """This process's rank as ``mlx.launch`` (or ``mpirun``) set it, before MLX is imported."""
    for var in ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value)
    return 0


def _cache_dir(args: argparse.Namespace) -> Path:
    from ..appinfo import kv_cache_dir

    given = getattr(args, "cache_dir", None)
    return Path(given).expanduser() if given else kv_cache_dir()


def run_parallel(args: argparse.Namespace, sampling: dict[str, Any]) -> int:
    """``olmo3 generate|chat|serve … --parallel MODE`` on this rank."""
    from ..parallel.watchdog import take_sigterm

    rank = launch_rank()
    if rank == 0 and args.command == "serve":  # rank 0 serves HTTP (its signals and a lost rank: serve_parallel)
        from .serve_parallel import serve_leader

        return serve_leader(args)
    cluster: Cluster | None = None
    take_sigterm(rank, lambda: cluster.watchdog if cluster is not None else None)
    if rank != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - only rank 0 prints; kept open until the process ends
        # Ctrl-C reaches every process in the terminal; on rank 0 it cancels the reply, the followers go on.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ..parallel.cluster import ClusterLoader, init_cluster, run_follower

    cluster = init_cluster(args.parallel)
    if cluster.rank != 0:
        try:
            folder, problem = model_path(args), ""
        except ValueError as e:
            folder, problem = None, str(e)
        return run_follower(
            cluster, folder, cache_dir=_cache_dir(args), memory_limit=memory_limit(args), problem=problem
        )
    loader = ClusterLoader(cluster, cache_dir=_cache_dir(args), memory_limit=memory_limit(args))
    # Rank 0 runs the command as on one machine, with the loader in place of the folder (`olmo3 serve --parallel`
    # does the same in serve_parallel, with an on_lost of its own: 503 answers, then an exit for a restart).
    try:
        if args.command == "generate":
            from .main import cmd_generate

            return cmd_generate(args, loader=loader)
        if args.command == "chat":
            from .chat import run_chat

            return run_chat(args, sampling, loader=loader)
        raise ValueError(f"olmo3 {args.command} does not take --parallel")
    except RuntimeError as e:  # a collective failed ("[ring] connection to a peer was lost"): a rank went away
        loader.broken = True
        time.sleep(1.0)  # the watchdog names the rank and ends the process; if it has nothing to say:
        print(f"olmo3: the parallel group failed: {e}", file=sys.stderr)
        return 1
    finally:
        if args.command == "generate":  # chat: the engine stops the group after spilling its caches
            loader.close()
