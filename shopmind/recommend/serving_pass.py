"""The serving pass of the behaviour model (each sequence's newest trunk state) as one TorchScript call.

Why: run eagerly, the pass is about a hundred small torch calls, and each one releases the GIL and
takes it back. In a server, the batching thread (recommend/batching.py) competes for the GIL with the
event loop and the request threads, so every one of those hand-backs can wait: at saturation a batch
of 16 first visits took 55 ms of wall time for 32 ms of CPU. Traced, the pass is one call that drops
the GIL once. In process it saves only 0.3 to 1 ms per pass (5 to 20%); over HTTP, with the GIL
contended, one server saturated at 268-287 first visits/s against 207-229/s eagerly (two runs,
2026-12-04, docs/benchmarks.md).

The trace is taken once per model object and input kind (with or without event context) on small
synthetic inputs, then checked against the eager pass on two other shapes: traced shapes stay dynamic
(batch size and length are read from the input), and a trace that disagrees with the eager pass, or
fails, is not used: that model keeps the eager pass. TorchScript's optimising executor is off for
these calls: it would re-specialise the graph for every new (batch, length) shape, and serving sees
a new one on most batches. Parameters are shared with the model, not copied.
"""

from __future__ import annotations

import logging
import threading
import warnings
import weakref

import torch

from shopmind.models.behaviour import BehaviourModel

log = logging.getLogger(__name__)

_TRACED: "weakref.WeakKeyDictionary[BehaviourModel, dict[bool, torch.jit.ScriptModule | None]]" = (
    weakref.WeakKeyDictionary())  # entries go with their model
_LOCK = threading.Lock()


class _NewestState(torch.nn.Module):
    def __init__(self, model: BehaviourModel):
        super().__init__()
        self.trunk = model.trunk

    def forward(self, items: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.trunk(items, context, last_only=True)[:, -1, :]


def newest_states(model: BehaviourModel, items: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """`model.last_hidden(items, context)`, (B, d), through the traced pass when there is one. The model
    must be in eval mode (it is whenever serving calls this)."""
    with_context = context is not None
    traced = _TRACED.get(model, {}).get(with_context, False)
    if traced is False:
        with _LOCK:
            passes = _TRACED.setdefault(model, {})
            if with_context not in passes:
                passes[with_context] = _trace(model, context)
            traced = passes[with_context]
    if traced is None:
        return model.last_hidden(items, context)
    with torch.jit.optimized_execution(False):
        return traced(items, context) if with_context else traced(items)


def _example(model: BehaviourModel, batch: int, length: int, context: torch.Tensor | None):
    """Left-padded item ids and all-zero context (zero is every context table's padding index)."""
    length = min(length, model.config.max_len)
    generator = torch.Generator().manual_seed(batch * 100 + length)
    items = torch.randint(1, model.config.n_items + 1, (batch, length), generator=generator)
    items[0, : length // 2] = 0
    if context is None:
        return (items,)
    return items, torch.zeros((batch, length, context.shape[-1]), dtype=context.dtype)


def _trace(model: BehaviourModel, context: torch.Tensor | None):
    """The traced pass for inputs with `context`'s kind (None: items only), or None to serve eagerly."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about the length assert: shapes stay dynamic
            traced = torch.jit.trace(_NewestState(model), _example(model, 2, 6, context), check_trace=False)
        with torch.jit.optimized_execution(False):
            for batch, length in ((1, 3), (5, 11)):
                example = _example(model, batch, length, context)
                if not torch.allclose(traced(*example), model.last_hidden(*example), rtol=1e-4, atol=1e-5):
                    log.warning("traced serving pass disagrees with the eager one; serving eagerly")
                    return None
    except Exception as exc:  # any model the tracer cannot follow keeps the eager pass
        log.info("serving pass not traced (%s); serving eagerly", type(exc).__name__)
        return None
    return traced
