"""Differentially private training of the behaviour model: DP-SGD with Opacus, user-level.

The privacy unit is a user. Each user contributes exactly ONE training example: their latest
`max_len` events (older ones are truncated, never split into more examples), so clipping each
example's gradient to `max_grad_norm` bounds what any single user can move the model, and Opacus's
accountant turns the noise multiplier, the Poisson sampling rate and the number of steps into an
(epsilon, delta) guarantee for every user, whatever their history.

Choices forced by DP-SGD, with why (docs/privacy.md has the measurements):
- Ghost clipping (Opacus `grad_sample_mode="ghost"`): per-example gradient NORMS are computed
  without materialising per-example gradients, which for the item tables would be batch x catalog
  x width floats. Ghost clipping cannot handle weights shared by two layers, so the model is built
  with untied output tables (`tied_output=False`).
- Sampled softmax (the target against `n_negatives` uniformly drawn items, shared by the batch but
  looked up per example): with the full softmax, the logits and the ghost norms of the output layer
  cost batch x positions x catalog per step, and one epoch on Amazon Beauty did not finish in ten
  minutes; the negatives are drawn independently of the data, so they cost no privacy.
- No early stopping and no best-epoch selection: choosing an epoch by validation on the same users
  would be an unaccounted use of their data. The model trains for the epochs the noise was
  calibrated for and the last state is released.
- Event types and time buckets are not used by the pipeline; their tables are frozen so that every
  trainable parameter gets a per-example gradient.
- A second release beside the network (`cooccurrence_share`, privacy/dp_cooccurrence.py): the pairs of
  items many users take within two steps of each other, noised once with the Gaussian mechanism and
  thresholded, blended into the network's scores by a fixed rule (`COOCCURRENCE_BLEND`; chosen once,
  not per data set: a rule chosen on validation targets would be an unaccounted use of those users'
  data). Both releases are accounted together: the accountant composes the release with the DP-SGD
  steps, and the network's noise is set so that the total is the asked epsilon. On a sparse catalog
  the network alone was at the level of popularity; the pairs are what survives the noise there.
- Our own per-example norm of an embedding table's gradient (`embedding_grad_norms`, registered for
  nn.Embedding in place of Opacus's): Opacus deduplicates every (example, item) pair of a step with
  a two-column `torch.unique`. Most pairs are distinct, so ours adds up the squared position
  gradients and corrects only the repeated pairs, found with one sort of one-dimensional keys: about
  9x faster for a Beauty-sized table (1.12x on a whole DP epoch), and exact for the padding row,
  whose gradient PyTorch leaves at zero (Opacus counts it, over-clipping a little).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shopmind.evaluation import Sequences, Split, evaluate_ranking, leave_one_out
from shopmind.exceptions import InvalidInputError
from shopmind.models.behaviour import BehaviourConfig, BehaviourModel
from shopmind.privacy.dp_cooccurrence import composed_noise_multiplier, private_cooccurrence, release_noise_multiplier
from shopmind.recommend.behaviour import BehaviourRecommender

ACCOUNTANTS = ("prv", "rdp")
# The network's size under DP is fixed, not derived from the data as the non-private size rule does: a
# width or dropout chosen from the number of interactions or the mean history length is itself a
# function of every user's data, released with the model and its card.
DP_D_MODEL = 128
DP_DROPOUT = 0.2
# How the released pairs join the network's scores (recommend/blend.py's "log" rule, weight 1): an item
# paired with the history gains the log of its share of the pairs over 1e-6 (up to 14 nats), so paired
# items lead unless the network is very sure of another; the network orders the rest.
COOCCURRENCE_BLEND = ("log", 1.0)


def secret_seed() -> int:
    """A seed from the operating system's randomness: DP-SGD's noise and Poisson sampling must not be a
    fixed function of the data (with a constant seed, anyone with the code and the other users' data
    could rerun both neighbouring trainings and tell them apart)."""
    return int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)


def embedding_grad_norms(layer: nn.Embedding, activations: list[torch.Tensor],
                         backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Per-example norms of the gradient of `layer.weight`, without per-example gradients.

    Example b's gradient has one row per distinct item it looked up: the sum of the output gradients
    at the positions that looked that item up. Its squared norm is the sum over positions of their
    squared gradient, plus, for items looked up more than once, ||sum||^2 - sum of ||.||^2 over that
    item's positions. Positions that looked up the padding row add nothing (its gradient is zero)."""
    ids = activations[0].reshape(activations[0].shape[0], -1)
    grads = backprops.reshape(-1, backprops.shape[-1])
    n_examples, width = ids.shape
    n = layer.num_embeddings
    keys = torch.arange(n_examples, device=ids.device).repeat_interleave(width) * n + ids.reshape(-1)
    squares = (grads * grads).sum(1)
    if layer.padding_idx is not None:
        squares = squares.masked_fill(ids.reshape(-1) == layer.padding_idx, 0.0)
    norms2 = torch.zeros(n_examples, dtype=grads.dtype, device=grads.device).index_add_(0, keys // n, squares)
    sorted_keys, order = torch.sort(keys)
    repeat = sorted_keys[1:] == sorted_keys[:-1]
    if bool(repeat.any()):
        grouped = torch.zeros(len(keys), dtype=torch.bool, device=keys.device)
        grouped[1:] |= repeat
        grouped[:-1] |= repeat
        positions, group_keys = order[grouped], sorted_keys[grouped]
        if layer.padding_idx is not None:
            real = group_keys % n != layer.padding_idx
            positions, group_keys = positions[real], group_keys[real]
        heads, inverse = torch.unique_consecutive(group_keys, return_inverse=True)
        summed = torch.zeros(len(heads), grads.shape[1], dtype=grads.dtype, device=grads.device)
        summed.index_add_(0, inverse, grads[positions])
        norms2.index_add_(0, heads // n, (summed * summed).sum(1))
        norms2.index_add_(0, group_keys // n, -squares[positions])
    return {layer.weight: norms2.clamp_(min=0).sqrt()}


def _register_norm_sampler() -> None:
    from opacus.grad_sample.utils import register_norm_sampler

    register_norm_sampler(nn.Embedding)(embedding_grad_norms)


class _SampledLogits(nn.Module):
    """The model as Opacus sees it: item sequences, next-item targets and shared negatives in,
    sampled-softmax logits at every position out (the target's logit first)."""

    def __init__(self, model: BehaviourModel):
        super().__init__()
        self.model = model

    def forward(self, items: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        return self.model.heads["next_item"].sampled_logits(self.model.trunk(items), targets, negatives)


def round_up(epsilon: float, places: int = 4) -> float:
    """An epsilon shortened for the model card and the ledger, never below what was spent (round() could
    record up to half a unit in the last place less)."""
    return math.ceil(epsilon * 10 ** places - 1e-9) / 10 ** places


def _noise_only_step(optimizer) -> None:
    """One DP-SGD step on an empty batch: the clipped gradients sum to zero, so the update is the noise,
    scaled and accounted (Opacus's step hook) as every other step."""
    optimizer.zero_grad(set_to_none=True)
    for param in optimizer.params:
        param.grad = torch.zeros_like(param)
    optimizer.step()


def one_example_per_user(sequences: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded (inputs, targets) with one row per user: the user's last max_len + 1 items give
    max_len next-item targets. Targets are item index (0-based) or -1 for padding."""
    x = np.zeros((len(sequences), max_len), dtype=np.int64)
    y = np.full((len(sequences), max_len), -1, dtype=np.int64)
    for row, seq in enumerate(sequences):
        seq = np.asarray(seq, dtype=np.int64)[-(max_len + 1):]
        if len(seq) < 2:
            continue
        n = len(seq) - 1
        x[row, max_len - n:] = seq[:-1] + 1
        y[row, max_len - n:] = seq[1:]
    keep = (y != -1).any(axis=1)
    return x[keep], y[keep]


class PrivateBehaviourRecommender(BehaviourRecommender):
    """The behaviour model trained with user-level DP-SGD; serves exactly like BehaviourRecommender.

    epsilon, delta: the target guarantee (delta defaults to 1 / number of users).
    max_grad_norm: the clipping bound C of each user's gradient.
    epochs, batch_size: passes over the users and the EXPECTED batch size (Poisson sampling).
    content_only: with `item_content` (public catalog text), represent items by their content alone:
    the per-item id vectors stay zero and untrained, so DP-SGD noises a projection and the transformer
    instead of a vector per item (a per-item score bias is still learned).
    cooccurrence_share: the share of epsilon that one release of item pairs would take alone
    (privacy/dp_cooccurrence.py); the network's noise is set so that both together give epsilon.
    0 trains the network alone.
    """

    def __init__(self, epsilon: float = 8.0, delta: float | None = None, max_grad_norm: float = 1.0,
                 epochs: int = 20, batch_size: int = 256, learning_rate: float = 3e-3,
                 n_negatives: int = 256, accountant: str = "prv", secure_mode: bool = False,
                 max_len: int = 50, n_layers: int = 2,
                 n_heads: int = 2, d_model: int | None = None, dropout: float | None = None,
                 content_only: bool = False, cooccurrence_share: float = 0.75,
                 valid_users: int = 3000, threads: int | None = None, seed: int = 0, verbose: bool = False):
        self.epsilon = epsilon
        self.content_only = content_only
        self.cooccurrence_share = cooccurrence_share
        self.delta = delta
        self.max_grad_norm = max_grad_norm
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.n_negatives = n_negatives
        self.accountant = accountant
        self.secure_mode = secure_mode
        self.max_len = max_len
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.d_model = d_model
        self.dropout = dropout
        self.valid_users = valid_users
        self.threads = threads
        self.seed = seed
        self.verbose = verbose

    def fit(self, data: Sequences, split: Split | None = None,
            item_content: np.ndarray | None = None) -> "PrivateBehaviourRecommender":
        from opacus import PrivacyEngine

        _register_norm_sampler()
        if not isinstance(data, Sequences):
            raise InvalidInputError("fit expects shopmind.evaluation.Sequences", field="data")
        if not self.epsilon or self.epsilon <= 0:
            raise InvalidInputError("epsilon must be a positive number", field="epsilon")
        if self.accountant not in ACCOUNTANTS:
            raise InvalidInputError(f"accountant must be one of {', '.join(ACCOUNTANTS)}", field="accountant")
        if item_content is not None and item_content.shape[0] != data.n_items:
            raise InvalidInputError(f"item_content has {item_content.shape[0]} rows for {data.n_items} items",
                                    field="item_content")
        if self.content_only and item_content is None:
            raise InvalidInputError("content_only needs item_content (e.g. title embeddings)", field="content_only")
        if not 0 <= self.cooccurrence_share < 1:
            raise InvalidInputError("cooccurrence_share must be at least 0 and below 1", field="cooccurrence_share")
        if self.secure_mode and self.cooccurrence_share:
            raise InvalidInputError("secure_mode draws DP-SGD's noise from torchcsprng, the item-pair release "
                                    "cannot: set cooccurrence_share to 0 (--pairs-share 0)", field="cooccurrence_share")
        if self.secure_mode and importlib.util.find_spec("torchcsprng") is None:
            raise InvalidInputError("secure_mode needs the torchcsprng package, which is not installed",
                                    field="secure_mode")
        split = split or leave_one_out(data)
        torch.manual_seed(self.seed)  # the initial weights: independent of the data, reproducible
        if self.threads:
            torch.set_num_threads(self.threads)
        x, y = one_example_per_user(split.train, self.max_len)
        n_users = len(x)
        delta = self.delta if self.delta is not None else 1.0 / max(n_users, 2)
        config = BehaviourConfig(
            n_items=data.n_items, max_len=self.max_len, n_layers=self.n_layers, n_heads=self.n_heads,
            d_model=self.d_model or DP_D_MODEL, dropout=self.dropout if self.dropout is not None else DP_DROPOUT,
            tied_output=False, content_dim=0 if item_content is None else int(item_content.shape[1]))
        model = BehaviourModel(config)
        if item_content is not None:  # public catalog text: frozen, costs no privacy; its projections learn
            model.trunk.set_content(torch.from_numpy(np.asarray(item_content, dtype=np.float32)))
        model.trunk.type_emb.weight.requires_grad_(False)
        if self.content_only:  # items are their content: the id tables stay zero and get no noisy update
            for table in (model.trunk.item_emb, model.heads["next_item"].out_vectors):
                with torch.no_grad():
                    table.weight.zero_()
                table.weight.requires_grad_(False)
        wrapped = _SampledLogits(model)
        optimizer = torch.optim.Adam([p for p in wrapped.parameters() if p.requires_grad], lr=self.learning_rate)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                             batch_size=min(self.batch_size, n_users), shuffle=True)
        torch.manual_seed(secret_seed())  # from here on the randomness (noise, sampling, dropout) is secret
        engine = PrivacyEngine(accountant=self.accountant, secure_mode=self.secure_mode)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # secure_mode=False warns that its RNG is not cryptographic;
            # the PRV accountant divides by zero on the way for a release that reads everyone (rate 1)
            pairs = self._release_pairs(split.train, data.n_items, delta, n_users) if self.cooccurrence_share else None
            # What Opacus will do: sample each user at rate 1 / L (L = len(loader)), which its accountant
            # records, in int(1 / (1 / L)) steps an epoch (L - 1 for some L, by float rounding). Planning
            # with rate 1 / steps (at least 1 / L) and that many steps keeps the recorded epsilon within target.
            steps_per_epoch = int(1 / (1 / len(loader)))
            sigma = composed_noise_multiplier(self.epsilon, delta, None if pairs is None else pairs[1]["noise_multiplier"],
                                              1.0 / steps_per_epoch, self.epochs * steps_per_epoch, self.accountant)
            dp_model, dp_optimizer, criterion, dp_loader = engine.make_private(
                module=wrapped, optimizer=optimizer, data_loader=loader,
                criterion=nn.CrossEntropyLoss(ignore_index=-1), noise_multiplier=sigma,
                max_grad_norm=self.max_grad_norm, grad_sample_mode="ghost", poisson_sampling=True)
            if pairs is not None:  # the release happened first; the accountant adds every DP-SGD step after it
                engine.accountant.history.append((pairs[1]["noise_multiplier"], 1.0, 1))
        self.model_, self.config_, self.item_ids_ = model, config, list(data.item_ids)
        started = time.perf_counter()
        self.history_ = []
        # Opacus's ghost clipping backpropagates from the loss twice; torch warns about that each step.
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        steps = 0
        for epoch in range(1, self.epochs + 1):
            dp_model.train()
            total, batches = 0.0, 0
            for xb, yb in dp_loader:
                steps += 1
                if len(xb) == 0:
                    # Poisson sampling drew nobody (probability (1 - q)^n). DP-SGD still takes the step, with
                    # noise alone: the subsampled Gaussian's analysis counts every step, and a skipped step
                    # would tell whether anyone was drawn.
                    _noise_only_step(dp_optimizer)
                    continue
                width = max(1, int((xb != 0).sum(dim=1).max()))
                xb, yb = xb[:, -width:].contiguous(), yb[:, -width:].contiguous()
                negatives = torch.randint(1, config.n_items + 1, (1, self.n_negatives)).expand(len(xb), -1).contiguous()
                logits = dp_model(xb, (yb + 1).clamp(min=0), negatives)   # item index + 1; padding -> 0
                labels = torch.where(yb >= 0, 0, -1)                      # the target is column 0
                loss = criterion(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), shape=logits.shape)
                dp_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                dp_optimizer.step()
                total += float(loss.detach().item())
                batches += 1
            if self.verbose:
                model.eval()
                report = evaluate_ranking(self.score, split, "valid", max_users=self.valid_users, seed=self.seed)[0]
                print({"epoch": epoch, "loss": total / max(batches, 1), "valid_ndcg@10": report.ndcg,
                       "epsilon": engine.get_epsilon(delta), "seconds": round(time.perf_counter() - started, 1)},
                      flush=True)
            # no training loss: an exact average over the users' data, which the guarantee does not cover
            self.history_.append({"epoch": epoch, "seconds": round(time.perf_counter() - started, 1)})
        # A fresh module with the trained weights: nothing of Opacus's hooks stays in the served model.
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.model_ = BehaviourModel(config)
        self.model_.load_state_dict(state)
        self.model_.eval()
        self.train_seconds_ = time.perf_counter() - started
        self.best_epoch_ = self.epochs
        self.blend_ = None if pairs is None else self._pairs_blend(pairs[0], data)
        self.valid_ndcg_ = evaluate_ranking(self.score, split, "valid", max_users=self.valid_users, seed=self.seed)[0].ndcg
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spent = float(engine.get_epsilon(delta))
        self.privacy_ = {
            "mechanism": "DP-SGD (Opacus, ghost clipping), user-level: one example per user"
                         + ("" if pairs is None else "; composed with one Gaussian release of item pairs"),
            "epsilon": round_up(spent), "target_epsilon": self.epsilon,
            "delta": delta, "accountant": self.accountant, "noise_multiplier": float(dp_optimizer.noise_multiplier),
            "max_grad_norm": self.max_grad_norm, "sample_rate": 1.0 / len(loader), "epochs": self.epochs,
            "steps": steps, "n_users": n_users, "secure_mode": self.secure_mode,
            "max_events_per_user": self.max_len + 1,
            "item_pairs": None if pairs is None else {**pairs[1], "blend": list(COOCCURRENCE_BLEND)}}
        return self

    def _release_pairs(self, sequences: list[np.ndarray], n_items: int, delta: float,
                       n_users: int) -> tuple:
        """The item-pair release (privacy/dp_cooccurrence.py), noised for its share of epsilon; its
        draws come from the operating system like the rest of the secret randomness. It reads the
        events DP-SGD reads: each user's latest max_len + 1 items (a sequence too short to be an
        example has no pair either)."""
        release_sigma = release_noise_multiplier(self.epsilon * self.cooccurrence_share, delta, self.accountant)
        table, facts = private_cooccurrence(sequences, n_items, release_sigma, np.random.default_rng(secret_seed()),
                                            max_len=self.max_len + 1)
        return table, {**facts, "epsilon_alone": round_up(self.epsilon * self.cooccurrence_share),
                       "n_users": n_users}

    def _pairs_blend(self, table, data: Sequences):
        from shopmind.models.baselines import ItemKNNRecommender
        from shopmind.recommend.blend import ItemBlend

        knn = ItemKNNRecommender()  # scores with the released table as it is (no fit, no pruning)
        knn.similarity_, knn.item_ids_ = table, list(data.item_ids)
        return ItemBlend(knn, COOCCURRENCE_BLEND[0], COOCCURRENCE_BLEND[1], valid_grid={})

    def save(self, path) -> None:
        super().save(path)
        meta_path = Path(path) / "model.json"
        meta = json.loads(meta_path.read_text())
        meta["privacy"] = self.privacy_
        meta_path.write_text(json.dumps(meta))

    @classmethod
    def load(cls, path) -> "PrivateBehaviourRecommender":
        est = cls._load_weights(path)
        est.privacy_ = json.loads((Path(path) / "model.json").read_text())["privacy"]
        return est
