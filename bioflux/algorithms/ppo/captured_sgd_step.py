"""One PPO SGD step over fixed-size minibatch buffers, replayed as a CUDA graph on a GPU.

Why: on a GPU a [128,128] SGD step over a few thousand rows is ~1 ms of device work, but the
eager step costs ~8 ms of host time (measured on an H200: backward 3.7 ms, forward 2.4 ms,
loss 1.4 ms, clip + Adam 1.6 ms per step): several hundred kernel launches, each behind
RLlib's and PyTorch's Python. A CUDA graph records the launches of one whole step once —
forward, PPO loss, backward, gradient clip, ``nan_to_num``, fused Adam — and replays them with
one call, so the host cost of a step no longer depends on how many kernels it runs.

How (the recipe of PyTorch's "whole network capture"):

- every module's minibatch lives in *static buffers* of ``capacity`` rows (the learner's
  ``minibatch_size``, which bounds every module's part of a minibatch; see
  ``learner.minibatch_plan``). Each step copies its rows in with ``index_select(out=)``;
  the rows past the part's size repeat its first row and are masked out of the loss by
  ``LOSS_MASK``, so the loss, its gradients and the logged statistics are those of the
  unpadded minibatch;
- the step is the learner's own code (``forward_train``, ``compute_loss_for_module``,
  ``compute_gradients``, ``postprocess_gradients``, ``apply_gradients``); it is warmed up on a
  side stream, then captured. Warm-up updates the weights, so weights and Adam state are saved
  before and restored (in place) after: the capture itself changes nothing;
- the metrics the step logs (losses, statistics, the gradient norm) are recorded during the
  capture as references to the graph's output tensors and logged with the values of the
  update's last minibatch (the only one RLlib reports: its loss metrics use ``window=1``);
- a graph depends on the buffers' shapes, the learning rates (baked in as floats) and the
  coefficient tensors it reads (entropy, KL): the learner keeps a graph per such key.

Not captured (no CUDA graph asked, or no GPU: the tests on CPU) the same step runs eagerly over
the same buffers: that is what the equivalence tests compare with the plain learner, and what a
compiled forward (``torch_compile_learner``) uses, since one shape means one compilation.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

import torch
import tree
from ray.rllib.core.columns import Columns

logger = logging.getLogger(__name__)

WARMUP_STEPS = 3  # PyTorch's recipe: a few eager steps on a side stream before capturing
ROW_VALID = "bioflux_row_valid"  # in a padded minibatch: True for its real rows, not padding


class HeldMetrics:
    """Stands in for the learner's ``MetricsLogger`` during SGD steps whose values are not
    logged as they come: ``log_value`` / ``log_dict`` calls are dropped (``record=False``: the
    steps before an update's last, whose window-1 values RLlib would overwrite) or kept in
    ``calls`` (``record=True``: while a step is captured, their tensors are the graph's outputs,
    logged after the update's last replay); everything else goes to the logger. Kept tensors
    are detached: a kept autograd graph would keep the parameters' ``AccumulateGrad`` nodes,
    and with them the stream they were made on, alive into a later capture."""

    def __init__(self, metrics: Any, *, record: bool) -> None:
        self._metrics = metrics
        self.record = record
        self.calls: list[tuple[str, tuple, dict]] = []

    def log_value(self, *args: Any, **kwargs: Any) -> None:
        if self.record:
            self.calls.append(("log_value", _detached(args), _detached(kwargs)))

    def log_dict(self, *args: Any, **kwargs: Any) -> None:
        if self.record:
            self.calls.append(("log_dict", _detached(args), _detached(kwargs)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._metrics, name)


def dropped(metrics: Any) -> bool:
    """Whether what is logged to ``metrics`` now is dropped (nothing need be computed for it)."""
    return isinstance(metrics, HeldMetrics) and not metrics.record


def _detached(value: Any) -> Any:
    return tree.map_structure(lambda x: x.detach() if torch.is_tensor(x) else x, value)


def _snapshot(value: Any) -> Any:
    return tree.map_structure(lambda x: x.detach().clone() if torch.is_tensor(x) else x, value)


class CapturedSGDStep:
    """Static minibatch buffers of ``capacity`` rows per module, and one SGD step over them
    (``run_step(buffers, metrics)`` → loss per module), replayed as a CUDA graph when
    ``capture``."""

    def __init__(
        self,
        columns: dict[str, dict[str, Any]],
        *,
        capacity: int,
        run_step: Callable[[dict[str, dict[str, Any]], Any], dict[str, torch.Tensor]],
        learner_state: Callable[[], tuple[list[torch.Tensor], list[dict[str, Any]]]],
        capture: bool,
    ) -> None:
        self.capacity = capacity
        self._run_step = run_step
        self._learner_state = learner_state
        self.captured = capture
        self.buffers = {
            mid: {
                **{
                    k: tree.map_structure(lambda t: t.new_empty((capacity, *t.shape[1:])), v)
                    for k, v in cols.items()
                    if k not in (Columns.LOSS_MASK, ROW_VALID)
                },
                Columns.LOSS_MASK: torch.zeros(
                    capacity, dtype=torch.bool, device=_columns_device(cols)
                ),
                ROW_VALID: torch.zeros(capacity, dtype=torch.bool, device=_columns_device(cols)),
            }
            for mid, cols in columns.items()
        }
        self._row = {
            mid: torch.arange(capacity, device=_columns_device(c)) for mid, c in columns.items()
        }
        self._graph: torch.cuda.CUDAGraph | None = None
        self.capture_error: str | None = None
        self._recorded: list[tuple[str, tuple, dict]] = []
        self.losses: dict[str, torch.Tensor] = {}

    @staticmethod
    def signature(columns: dict[str, dict[str, Any]], capacity: int) -> tuple:
        """What the buffers (and so a captured graph) depend on in the data."""
        return (
            capacity,
            tuple(
                (mid, k, tuple((tuple(t.shape[1:]), t.dtype) for t in tree.flatten(v)))
                for mid, cols in sorted(columns.items())
                for k, v in sorted(cols.items())
                if k != Columns.LOSS_MASK
            ),
        )

    def load(self, columns: dict[str, dict[str, Any]], indices: dict[str, torch.Tensor]) -> None:
        """Copy the rows ``indices`` of every module's ``columns`` into the buffers; rows past
        a part's size repeat its first row and are masked out."""
        for mid, index in indices.items():
            n, buf, cols = len(index), self.buffers[mid], columns[mid]
            if n > self.capacity:
                raise ValueError(f"{mid}: a minibatch part of {n} rows > capacity {self.capacity}")
            padded = torch.cat([index, index[:1].expand(self.capacity - n)])
            for k, v in cols.items():
                if k not in (Columns.LOSS_MASK, ROW_VALID):
                    for src, dst in zip(tree.flatten(v), tree.flatten(buf[k]), strict=True):
                        torch.index_select(src, 0, padded, out=dst)
            torch.lt(self._row[mid], n, out=buf[ROW_VALID])
            mask = buf[Columns.LOSS_MASK]
            if Columns.LOSS_MASK in cols:
                torch.logical_and(buf[ROW_VALID], cols[Columns.LOSS_MASK][padded], out=mask)
            else:
                mask.copy_(buf[ROW_VALID])

    def step(self, metrics: Any) -> None:
        """One SGD step over the loaded buffers. ``metrics``: the logger for the step's values
        when the step runs eagerly (a stand-in that drops them for all but the last step).

        A capture that fails (an op that cannot be captured) leaves weights and optimizer
        state as they were and the CUDA generator usable, warns, and this step object runs
        eagerly from then on (``capture_error`` says why)."""
        if self.captured and self._graph is None:
            try:
                self._graph = self._make_graph(metrics)
            except RuntimeError as error:
                _release_default_generator()
                self.captured, self.capture_error = False, f"{type(error).__name__}: {error}"
                logger.warning(
                    "learner_cuda_graph: the SGD step could not be captured (%s); training "
                    "goes on without the CUDA graph",
                    self.capture_error,
                )
        if not self.captured:
            self.losses = _detached(self._run_step(self.buffers, metrics))
            return
        self._graph.replay()

    def log_last(self, metrics: Any) -> None:
        """Log what the captured step logs, with the values of the last replay."""
        for method, args, kwargs in self._recorded:
            args = tuple(_snapshot(a) for a in args)
            kwargs = {k: _snapshot(v) for k, v in kwargs.items()}
            getattr(metrics, method)(*args, **kwargs)

    def _make_graph(self, metrics: Any) -> torch.cuda.CUDAGraph:
        params, opt_states = self._learner_state()
        saved_params = [p.detach().clone() for p in params]
        saved_states = [_snapshot(s) for s in opt_states]
        # Drop what this object keeps of earlier steps (see HeldMetrics), and collect
        # garbage now rather than mid-capture. (A capture after eager SGD steps of the same
        # learner can still fail on a GPU: see the README; training captures first.)
        self.losses = {}
        gc.collect()
        collecting = gc.isenabled()
        gc.disable()
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            warmup = HeldMetrics(metrics, record=True)  # kept, then dropped with it
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    self._run_step(self.buffers, warmup)
            torch.cuda.current_stream().wait_stream(side)
            recorder = HeldMetrics(metrics, record=True)
            graph = torch.cuda.CUDAGraph()
            # A private memory pool per graph (graphs sharing one must replay in capture
            # order); thread_local: other threads of the process (Ray's) may use CUDA meanwhile.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.losses = _detached(self._run_step(self.buffers, recorder))
            self._recorded = recorder.calls
            return graph
        finally:
            if collecting:
                gc.enable()
            _restore(params, saved_params, self._learner_state()[1], saved_states)


def _release_default_generator() -> None:
    """After a failed capture: PyTorch leaves the device's default CUDA generator marked as
    capturing (its ``capture_epilogue`` never ran), so any later random op on the device fails
    with "Offset increment outside graph capture". A clone of its state (same seed and offset,
    not capturing) takes its place."""
    if not torch.cuda.is_initialized():  # nothing was captured on a device
        return
    generator = torch.cuda.default_generators[torch.cuda.current_device()]
    try:
        generator.graphsafe_set_state(generator.clone_state())
    except RuntimeError as error:  # not expected; the eager fallback may still not need it
        logger.warning("learner_cuda_graph: could not reset the CUDA generator (%s)", error)


@torch.no_grad()
def _restore(
    params: list[torch.Tensor],
    saved_params: list[torch.Tensor],
    opt_states: list[dict[str, Any]],
    saved_states: list[dict[str, Any]],
) -> None:
    """Put weights and optimizer state back in place (the captured graph reads these very
    tensors). A state that did not exist before the warm-up (a first update) is zeroed: Adam's
    lazily created state is step 0 and zero moments."""
    for p, saved in zip(params, saved_params, strict=True):
        p.copy_(saved)
    for state, saved in zip(opt_states, saved_states, strict=True):
        for key, value in state.items():
            if not torch.is_tensor(value):
                continue
            if key in saved and torch.is_tensor(saved[key]):
                value.copy_(saved[key])
            else:
                value.zero_()


def _columns_device(columns: dict[str, Any]) -> torch.device:
    return next(t for t in tree.flatten(columns) if torch.is_tensor(t)).device
