"""The traced serving pass gives the eager pass's states for any batch size and length, with and without
event context, and a model the tracer cannot follow is served eagerly."""

from __future__ import annotations

import numpy as np
import torch

from shopmind.models.behaviour import BehaviourConfig, BehaviourModel
from shopmind.recommend import serving_pass
from shopmind.recommend.serving_pass import newest_states


def _model(**overrides) -> BehaviourModel:
    torch.manual_seed(0)
    config = BehaviourConfig(**{"n_items": 80, "max_len": 20, "d_model": 32, "n_layers": 2, "n_heads": 2,
                                "n_time_buckets": 22, "calendar": True, "content_dim": 6, **overrides})
    model = BehaviourModel(config)
    if config.content_dim:
        model.trunk.set_content(torch.randn(80, config.content_dim))
    return model.eval()


def test_traced_pass_equals_the_eager_pass_at_every_shape():
    model = _model()
    generator = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for batch, length in ((1, 1), (1, 20), (7, 4), (32, 13), (3, 20)):
            items = torch.randint(1, 81, (batch, length), generator=generator)
            items[: batch // 2, : length // 3] = 0  # left padding
            context = torch.randint(1, 8, (batch, length, 4), generator=generator)
            for ctx in (None, context):
                torch.testing.assert_close(newest_states(model, items, ctx), model.last_hidden(items, ctx),
                                           rtol=1e-5, atol=1e-5)
    assert set(serving_pass._TRACED[model]) == {False, True}
    assert all(traced is not None for traced in serving_pass._TRACED[model].values())  # both kinds traced


def test_the_trace_follows_the_models_weights_and_a_new_model_gets_its_own():
    model = _model(calendar=False, content_dim=0)
    items = torch.randint(1, 81, (4, 9))
    with torch.inference_mode():
        before = newest_states(model, items, None)
    with torch.no_grad():
        model.trunk.item_emb.weight.mul_(2.0)  # shared parameters, not a copy
    with torch.inference_mode():
        after = newest_states(model, items, None)
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, model.last_hidden(items, None), rtol=1e-5, atol=1e-5)
        other = _model(calendar=False, content_dim=0, d_model=16)
        torch.testing.assert_close(newest_states(other, items, None), other.last_hidden(items, None))


def test_a_model_the_tracer_cannot_follow_is_served_eagerly(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("cannot trace")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    model = _model()
    items = torch.randint(1, 81, (3, 7))
    with torch.inference_mode():
        np.testing.assert_allclose(newest_states(model, items, None).numpy(), model.last_hidden(items, None).numpy())
    assert serving_pass._TRACED[model][False] is None
