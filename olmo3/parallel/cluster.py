"""A parallel group's start-up, rank 0's model loader and the followers' side.

Every rank runs the same command line (``mlx.launch … -- olmo3 generate|chat … --parallel tensor|pipeline``). Then:

1. **Hand-shake** (:func:`handshake`, one ``all_gather``): each rank reports whether it found the model, its
   fingerprint (config + weight file names and sizes), its memory budget, its pid and host name; rank 0 adds the
   port of its watchdog (``olmo3.parallel.watchdog``), to which the followers then connect.
2. **Verdict** (rank 0, broadcast): every rank has the model and the same fingerprint, the split works
   (``olmo3.parallel.layout``), every follower reached the watchdog, and the model fits: weights + KV at the chosen
   context against the ranks' budgets **added up**, and each rank's share against its own budget. Otherwise every
   rank stops; rank 0 says why (the followers say nothing more).
3. **Pipeline hand-over**: send/recv if every rank can evaluate them (tried once, agreed with an ``all_sum``), else
   ``all_sum`` hops (MLX-CUDA has no send/recv). ``OLMO3_PIPELINE_HANDOVER=sendrecv|collective`` skips the trial.
   **Tensor q/k-norm** (``olmo3.parallel.layout``): rank 0 picks ``local`` (whole q/k projections on every rank, no
   collective: faster) unless a rank's part then does not fit and ``collective`` would, or rank 0 has
   ``OLMO3_TP_QK_NORM=local|collective``; it tells the others with an ``all_sum``.
4. Each rank loads only its slices (``olmo3.parallel.slices``); rank 0 also the tokenizer. Rank 0 then runs the
   chat (:class:`ClusterLoader` gives the engine a :class:`olmo3.parallel.replicate.LeaderModel`), the followers
   :func:`run_follower` until rank 0 says stop.

**``olmo3 serve --parallel``** (``olmo3.cli.serve_parallel``): rank 0 builds its ``Engine`` with
``loader=ClusterLoader(…)`` (as ``olmo3 chat --parallel`` does) and serves HTTP from it; the other ranks call
:func:`run_follower` and serve nothing. Its watchdog's ``on_lost`` turns a lost rank into 503 answers, then an exit
for a supervisor to start the group again.

Imports MLX: the hand-shake and loading run on the MLX thread.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import mlx.core as mx

from ..fit import LoadPlan, ModelShape, ModelWontFitError, plan_load
from ..memory import MemoryBudget, memory_budget
from ..model.config import ModelArgs
from ..model.modelinfo import ModelInfo, ModelLoadError, _quantization, inspect_model_dir, read_config, weight_files
from ..units import format_bytes
from .layout import QK_NORMS, Layout, ParallelError, make_layout, rank_kv_per_token, rank_weight_bytes
from .replicate import CacheFiles, LeaderModel, follow, ints
from .shard import HANDOVERS, Shard, load_shard
from .slices import SliceReader
from .watchdog import Watchdog, leader_addresses

__all__ = [
    "Cluster",
    "ClusterLoader",
    "RankReport",
    "agree_qk_norm",
    "cluster_fit",
    "init_cluster",
    "probe_handover",
    "run_follower",
]

log = logging.getLogger(__name__)

OK: Final = 1
NO_MODEL: Final = 2
_REPORT: Final = 40  # ints per rank: status, pid, budget MiB, port, fingerprint (16), host (20)


@dataclasses.dataclass(frozen=True)
class RankReport:
    rank: int
    status: int
    pid: int
    budget_bytes: int
    port: int
    fingerprint: str
    host: str

    def who(self) -> str:
        return f"rank {self.rank} ({self.host}, pid {self.pid})"


def _text(values: list[int]) -> str:
    return bytes(v for v in values if 0 < v < 128).decode(errors="replace")


def _codes(text: str, n: int) -> list[int]:
    data = text.encode("ascii", errors="replace")[:n]
    return list(data) + [0] * (n - len(data))


class Cluster:
    """This process's place in the group: rank, world, the MLX group and the watchdog."""

    def __init__(self, group: Any, mode: str, on_lost: Any = None):
        self.group, self.mode = group, mode
        self.rank, self.world = group.rank(), group.size()
        self.watchdog = Watchdog(self.rank, self.world, on_lost)
        self.layout: Layout | None = None
        self.handover = "sendrecv"


def init_cluster(mode: str, on_lost: Any = None) -> Cluster:
    """Join the group ``mlx.launch`` started (ring, JACCL, NCCL or MPI: whichever it set up)."""
    group = mx.distributed.init()
    if group.size() < 2:
        raise ParallelError(
            "--parallel needs at least 2 ranks: start it with mlx.launch (e.g. mlx.launch -n 2 -- olmo3 …, or "
            "--hostfile hosts.json for several machines)"
        )
    return Cluster(group, mode, on_lost)


def handshake(cluster: Cluster, status: int, fingerprint: str, budget_bytes: int) -> list[RankReport]:
    """Every rank's report (module docstring, step 1)."""
    port = cluster.watchdog.listen() if cluster.rank == 0 else 0
    mine = [status, os.getpid(), budget_bytes >> 20, port, *_codes(fingerprint, 16), *_codes(socket.gethostname(), 20)]
    table = mx.distributed.all_gather(mx.array([mine], dtype=mx.int32), group=cluster.group)
    mx.eval(table)
    rows = [ints(row) for row in table]
    reports = [
        RankReport(r, row[0], row[1], row[2] << 20, row[3], _text(row[4:20]), _text(row[20:40]))
        for r, row in enumerate(rows)
    ]
    if cluster.rank != 0:
        cluster.watchdog.connect(leader_addresses(), reports[0].port)
    return reports


def _verdict(cluster: Cluster, ok: bool = False) -> bool:
    """Rank 0's go (``ok``) or stop, on every rank (a follower's ``ok`` is not used)."""
    flag = mx.array([1 if ok else 0], dtype=mx.int32)
    if cluster.rank != 0:
        flag = mx.zeros((1,), mx.int32)
    out = mx.distributed.all_sum(flag, group=cluster.group)
    mx.eval(out)
    return bool(ints(out)[0])


def agree_qk_norm(cluster: Cluster, choice: str = "local") -> str:
    """Rank 0's ``choice`` of q/k-norm (``layout.QK_NORMS``) on every rank."""
    mine = QK_NORMS.index(choice) if cluster.rank == 0 else 0
    out = mx.distributed.all_sum(mx.array([mine], dtype=mx.int32), group=cluster.group)
    mx.eval(out)
    return QK_NORMS[ints(out)[0]]


def _tensor_layout(
    info: ModelInfo,
    args: ModelArgs,
    world: int,
    sizes: dict[str, int],
    quant: Any,
    reports: list[RankReport],
    context_tokens: int | None,
    force: bool,
) -> tuple[Layout, LoadPlan]:
    """Rank 0's tensor layout and its fit: q/k-norm ``local`` unless only ``collective`` fits (or the environment
    says which)."""
    forced = os.environ.get("OLMO3_TP_QK_NORM", "")
    choices = [forced] if forced in QK_NORMS else list(QK_NORMS)
    for qk in choices[:-1]:
        layout = make_layout("tensor", world, args, sizes, quant, qk_norm=qk)
        try:
            return layout, cluster_fit(info, args, layout, sizes, reports, context_tokens, force)
        except ModelWontFitError:
            log.info("parallel: whole q/k projections on every rank do not fit; q/k-norm by all_sum")
    layout = make_layout("tensor", world, args, sizes, quant, qk_norm=choices[-1])
    return layout, cluster_fit(info, args, layout, sizes, reports, context_tokens, force)


def probe_handover(cluster: Cluster) -> str:
    """``sendrecv`` if every rank can evaluate send/recv, else ``collective`` (every rank gets the same answer)."""
    forced = os.environ.get("OLMO3_PIPELINE_HANDOVER", "")
    if forced in HANDOVERS:
        return forced
    g, r, n = cluster.group, cluster.rank, cluster.world
    ok = 1
    x = mx.array([r + 1], dtype=mx.int32)
    try:  # the pipeline's own pattern: 0 → 1 → … → n-1 → 0
        if r == 0:
            mx.eval(mx.distributed.send(x, 1, group=g))
            got = mx.distributed.recv_like(x, n - 1, group=g)
            mx.eval(got)
        else:
            got = mx.distributed.recv_like(x, r - 1, group=g)
            mx.eval(got)
            mx.eval(mx.distributed.send(x, (r + 1) % n, group=g))
        ok = int(ints(got)[0] == (r - 1) % n + 1)
    except Exception as e:  # MLX-CUDA: "Send has no CUDA implementation"
        log.info("send/recv unavailable (%s); the pipeline hands over with all_sum", e)
        ok = 0
    total = mx.distributed.all_sum(mx.array([ok], dtype=mx.int32), group=g)
    mx.eval(total)
    return "sendrecv" if ints(total)[0] == n else "collective"


def _sizes(folder: Path) -> tuple[dict[str, int], SliceReader]:
    reader = SliceReader(weight_files(folder))
    return reader.sizes(), reader


def cluster_fit(
    info: ModelInfo,
    args: ModelArgs,
    layout: Layout,
    sizes: dict[str, int],
    reports: list[RankReport],
    context_tokens: int | None,
    force: bool,
) -> LoadPlan:
    """The cluster's verdict: the whole model against the budgets added up, then each rank's share against its own.

    Raises ``ModelWontFitError`` (naming the rank whose part does not fit) unless ``force``."""
    shape = ModelShape.of(info)
    total = MemoryBudget(sum(r.budget_bytes for r in reports), "cluster")
    # Raises ModelWontFitError unless forced; the context is chosen against the cluster's budget.
    plan = plan_load(shape, context_tokens=context_tokens, budget=total, force=force)
    for rep in reports:
        full, sliding = rank_kv_per_token(
            layout, args, info.kv_bytes_per_token_full, info.kv_bytes_per_token_sliding, rep.rank
        )
        mine = ModelShape(
            rank_weight_bytes(layout, sizes, rep.rank), full, sliding, info.sliding_window, info.max_position_embeddings
        )
        fit = mine.fit(plan.context_tokens, MemoryBudget(rep.budget_bytes, "given"))
        if fit.verdict == "wont_fit" and not force:
            fit = dataclasses.replace(fit, message=f"{rep.who()} cannot hold its part: {fit.message}")
            raise ModelWontFitError(LoadPlan(plan.context_tokens, plan.max_context, fit), info.path)
    return plan


def rank_share(info: ModelInfo, args: ModelArgs, layout: Layout, sizes: dict[str, int], rank: int) -> ModelInfo:
    """``info`` with the weights and KV bytes per token of ``rank``'s part: what this machine holds. The engine's
    memory policies (the KV kept warm, how long one conversation may grow) then weigh this machine's part against
    this machine's budget; the fingerprint and everything else stay the whole model's."""
    full, sliding = rank_kv_per_token(layout, args, info.kv_bytes_per_token_full, info.kv_bytes_per_token_sliding, rank)
    return dataclasses.replace(
        info,
        weight_bytes=rank_weight_bytes(layout, sizes, rank),
        kv_bytes_per_token_full=full,
        kv_bytes_per_token_sliding=sliding,
    )


def _local_report(folder: Path | None, memory_limit: int | None) -> tuple[int, str, int, str]:
    """(status, fingerprint, budget bytes, problem) for this rank."""
    from ..chat.engine import record_working_set

    record_working_set()  # this thread runs MLX: Metal's working set is the budget
    budget = memory_budget(memory_limit).bytes
    if folder is None:
        return NO_MODEL, "", budget, "no model given"
    try:
        return OK, inspect_model_dir(folder).fingerprint, budget, ""
    except (ModelLoadError, ValueError, OSError) as e:
        return NO_MODEL, "", budget, str(e)


class ClusterLoader:
    """Rank 0's loader for the engine (``Engine(loader=…)``) and ``olmo3 generate``: hand-shake, verdict, its
    part of the model wrapped in a :class:`LeaderModel`."""

    def __init__(self, cluster: Cluster, *, cache_dir: Path, memory_limit: int | None = None):
        self.cluster, self.cache_dir, self.memory_limit = cluster, Path(cache_dir), memory_limit
        self.model: LeaderModel | None = None
        self.reader: SliceReader | None = None  # what rank 0 read (tests measure it)
        self.broken = False  # a collective failed: the group cannot be used any more
        self.reports: list[RankReport] = []  # every rank's hand-shake report (after plan)
        self.weight_bytes = 0  # the whole model's (each rank's engine sees its own part)
        self._plan: LoadPlan | None = None
        self._folder: Path | None = None

    def plan(
        self, path: Path, *, context_tokens: int | None = None, budget: MemoryBudget | None = None, force: bool = False
    ) -> LoadPlan:
        if self._plan is not None:
            if Path(path) != self._folder:
                raise ParallelError("a parallel group runs one model; start it again to use another")
            return self._plan
        c = self.cluster
        folder = Path(path)
        status, fingerprint, own_budget, problem = _local_report(folder, self.memory_limit)
        reports = handshake(c, status, fingerprint, own_budget)
        self.reports = reports
        error: Exception | None = None
        try:
            if problem:
                raise ParallelError(problem)
            missing = [r.who() for r in reports if r.status != OK]
            if missing:
                raise ParallelError(f"{', '.join(missing)} could not open the model (see its message)")
            other = [r.who() for r in reports if r.fingerprint != reports[0].fingerprint]
            if other:
                raise ParallelError(
                    f"{', '.join(other)} has other weights than rank 0 (fingerprints differ): every host needs the "
                    "same model folder or download"
                )
            lost = c.watchdog.wait_for_followers()
            if lost:
                raise ParallelError(
                    f"rank(s) {', '.join(map(str, lost))} could not reach rank 0's watchdog on port {reports[0].port}; "
                    "set OLMO3_LEADER_ADDR to an address of rank 0 they can reach (mlx.launch --env …)"
                )
            info = inspect_model_dir(folder)
            self.weight_bytes = info.weight_bytes
            config, args = read_config(folder)
            sizes, _ = _sizes(folder)
            quant = _quantization(config)
            if c.mode == "tensor":
                c.layout, self._plan = _tensor_layout(info, args, c.world, sizes, quant, reports, context_tokens, force)
            else:
                c.layout = make_layout(c.mode, c.world, args, sizes, quant)
                self._plan = cluster_fit(info, args, c.layout, sizes, reports, context_tokens, force)
        except Exception as e:
            error = e
        if not _verdict(c, error is None) or error is not None:
            c.watchdog.close()
            raise error if error is not None else ParallelError("the group stopped")
        if c.mode == "pipeline":
            c.handover = probe_handover(c)
        else:
            assert c.layout is not None
            agree_qk_norm(c, c.layout.qk_norm)
        self._folder = folder
        assert c.layout is not None and self._plan is not None
        log.info(
            "parallel: %s; budgets %s", c.layout.describe(), ", ".join(format_bytes(r.budget_bytes) for r in reports)
        )
        return self._plan

    def describe(self) -> dict[str, Any]:
        """The group as a server reports it (``/health``, ``/v1/olmo/info``): the split, every rank's host and
        memory budget, and the budgets added up (what the model was checked against)."""
        c = self.cluster
        return {
            "mode": c.mode,
            "ranks": c.world,
            "layout": c.layout.describe() if c.layout is not None else "",
            "weight_bytes": self.weight_bytes,
            "budget_bytes": sum(r.budget_bytes for r in self.reports),
            "hosts": [
                {"rank": r.rank, "host": r.host, "pid": r.pid, "budget_bytes": r.budget_bytes} for r in self.reports
            ],
        }

    def load(self, path: Path) -> tuple[LeaderModel, Any]:
        from ..model.loader import load_tokenizer

        if self.model is not None:
            return self.model, self.model.tokenizer
        if self._plan is None:
            self.plan(path)
        c = self.cluster
        assert c.layout is not None
        folder = Path(path)
        shard, self.reader = _load_part(c, folder)
        info = rank_share(inspect_model_dir(folder), shard.args, c.layout, self.reader.sizes(), 0)
        files = CacheFiles(self.cache_dir, 0, c.layout.key(), c.layout.tag(0), len(c.layout.layers_of(0)))
        model = LeaderModel(shard, files, info)
        model.tokenizer = load_tokenizer(folder)
        self.model = model
        return model, model.tokenizer

    def close(self) -> None:
        """Stop the followers (rank 0's normal end) and the watchdog. After a failed collective (``broken``) or a lost
        rank nothing is sent: it could wait forever; the followers stop when the watchdog's connection closes."""
        if self.model is not None and not self.broken and self.cluster.watchdog.lost is None:
            self.model.close()
        self.cluster.watchdog.close()


def _load_part(c: Cluster, folder: Path) -> tuple[Shard, SliceReader]:
    assert c.layout is not None
    config, args = read_config(folder)
    reader = SliceReader(weight_files(folder))
    shard = load_shard(args, _quantization(config), reader, c.group, c.layout, c.rank, handover=c.handover)
    return shard, reader


FOLLOWER_GRACE_S = 5.0  # a refused group: how long a follower waits for rank 0 to explain and exit


def run_follower(
    cluster: Cluster,
    folder: Path | None,
    *,
    cache_dir: Path,
    memory_limit: int | None = None,
    problem: str = "",
    on_loaded: Callable[[Shard, SliceReader], None] | None = None,
) -> int:
    """A follower's whole life: hand-shake, verdict, its part of the model, then rank 0's commands until STOP.

    ``problem``: why ``folder`` is None (the model name did not resolve on this host); ``on_loaded(shard, reader)``
    is told what was loaded (tests measure it). Returns the exit status: 0 after STOP, 2 when the group did not
    start (rank 0 says why), 1 when this rank failed (rank 0 is told why and stops the group)."""
    c = cluster
    status, fingerprint, budget, local_problem = _local_report(folder, memory_limit)
    problem = problem or local_problem
    if problem:
        sys.stderr.write(f"olmo3 (rank {c.rank}): {problem}\n")
    handshake(c, status, fingerprint, budget)
    if not _verdict(c):
        # Rank 0 says why. Leave it the time to: mlx.launch stops every rank as soon as one exits with an error,
        # and a follower that left first would have the launcher stop rank 0 before its one line was out.
        time.sleep(FOLLOWER_GRACE_S)
        c.watchdog.close()
        return 2
    assert folder is not None
    config, args = read_config(folder)
    sizes, _ = _sizes(folder)
    if c.mode == "pipeline":
        c.layout = make_layout(c.mode, c.world, args, sizes, _quantization(config))
        c.handover = probe_handover(c)
    else:
        qk = agree_qk_norm(c)
        c.layout = make_layout(c.mode, c.world, args, sizes, _quantization(config), qk_norm=qk)
    try:
        shard, reader = _load_part(c, folder)
        if on_loaded is not None:
            on_loaded(shard, reader)
        files = CacheFiles(
            Path(cache_dir), c.rank, c.layout.key(), c.layout.tag(c.rank), len(c.layout.layers_of(c.rank))
        )
        follow(shard, files)
    except Exception as e:  # rank 0 reports it (and stops the group); this rank says it once and exits
        log.debug("rank %d failed", c.rank, exc_info=True)
        c.watchdog.report_error(f"{type(e).__name__}: {e}")
        sys.stderr.write(f"olmo3 (rank {c.rank}): {type(e).__name__}: {e}\n")
        return 1
    c.watchdog.close()
    return 0
