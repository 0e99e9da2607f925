"""DP-SGD training of the behaviour model: one example per user, the guarantee in the model card and
the API, canaries that plain training memorises and DP training does not, and the membership audit."""

from __future__ import annotations

import json
import warnings

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shopmind.api.main import create_app
from shopmind.auth import Scope, create_key
from shopmind.evaluation import Sequences
from shopmind.exceptions import BudgetExceededError, InvalidInputError
from shopmind.privacy.dp_training import PrivateBehaviourRecommender, one_example_per_user, round_up
from shopmind.privacy.membership import auc, dp_tpr_bound, membership_audit
from shopmind.recommend.behaviour import BehaviourRecommender
from shopmind.synth import generate_shop, write_shop
from tests.conftest import auth, event, make_shop


@pytest.fixture(scope="module")
def shop_sequences() -> Sequences:
    synthetic = generate_shop(n_users=600, days=20, seed=3)
    events = synthetic.events.filter(pl.col("item_id").is_not_null()).sort("ts")
    grouped = events.group_by("user_id", maintain_order=True).agg(pl.col("item_id"))
    return Sequences.from_lists(grouped["user_id"].to_list(), grouped["item_id"].to_list())


def test_each_user_is_one_example_truncated_never_split():
    sequences = [np.arange(120), np.array([5, 6]), np.array([7]), np.array([1, 2, 3])]
    x, y = one_example_per_user(sequences, max_len=50)
    assert len(x) == 3  # the one-event user gives no target, every other user exactly one row
    assert x[0].tolist() == (np.arange(69, 119) + 1).tolist() and y[0].tolist() == list(range(70, 120))
    assert (y[1] != -1).sum() == 1 and (y[2] != -1).sum() == 2


@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_gradient_norms_are_the_per_example_norms(padding_idx):
    """Our norm sampler against per-example gradients from autograd, with repeated items in an example
    (and repeated negatives across examples) and padding; and against Opacus's where they agree."""
    import torch
    from opacus.grad_sample.embedding_norm_sample import compute_embedding_norm_sample

    from shopmind.privacy.dp_training import embedding_grad_norms

    torch.manual_seed(0)
    layer = torch.nn.Embedding(30, 6, padding_idx=padding_idx)
    ids = torch.cat([torch.randint(0, 30, (8, 12)), torch.randint(1, 30, (1, 5)).expand(8, -1)], dim=1)
    ids[0, :4] = 0  # a padded example
    ids[1, :6] = 7  # one item six times
    weights = torch.randn(8, 17, 6)
    expected = []
    for b in range(8):
        layer.zero_grad()
        (layer(ids[b]) * weights[b]).sum().backward()
        expected.append(layer.weight.grad.norm())
    ours = embedding_grad_norms(layer, [ids], weights)[layer.weight]
    assert torch.allclose(ours, torch.stack(expected), atol=1e-5)
    if padding_idx is None:
        assert torch.allclose(ours, compute_embedding_norm_sample(layer, [ids], weights)[layer.weight], atol=1e-5)


def test_guarantee_is_recorded_in_the_card_and_served(tmp_path):
    synthetic = generate_shop(n_users=300, days=20, seed=5)
    paths = write_shop(synthetic, tmp_path / "data", "parquet")
    shop = make_shop(tmp_path / "home", f"sqlite:///{tmp_path / 'db.sqlite'}", dp_budget_training=3.0)
    for kind in ("items", "users", "events"):
        shop.import_file(paths[kind], kind, actor="t")
    shop.train(actor="t", time_budget_s=3)  # a non-private champion first
    result = shop.train(actor="t", dp={"epsilon": 2.0, "epochs": 2, "batch_size": 64})
    behaviour = result["behaviour"]
    assert behaviour["promoted"], result  # a private model replaces a non-private champion
    card = shop.registry.card("behaviour", behaviour["version"])
    privacy = card["privacy"]
    # the card says why it serves, whatever the gate said (it read "promoted": false for this served model)
    assert card["metrics"]["put_forward_by"] in ("gate", "private model replaces a non-private one")
    assert "promoted" not in card["metrics"] and shop.registry.current_version("behaviour") == behaviour["version"]
    assert card["item_text"]  # the catalog's title embeddings are public: the private model reads them too
    # One example per user with a next-item target in training: count them from the shop's data.
    from shopmind.evaluation import leave_one_out
    from shopmind.training.pipeline import shop_sequences

    from shopmind.training.pipeline import private_sequences

    everyone = shop_sequences(shop.training_events("personalization"))[0]
    catalog = shop.items_frame()["item_id"].to_list()
    private = private_sequences(everyone, catalog)
    train = leave_one_out(private).train
    n_users = sum(len(seq) >= 2 for seq in train)
    assert privacy["n_users"] == n_users and privacy["delta"] == pytest.approx(1 / n_users)
    # one example per person: anonymous sessions are not examples (a person's sessions would be several)
    assert any(u.startswith("s:") for u in everyone.user_ids) and not any(u.startswith("s:") for u in private.user_ids)
    # what ships is a function of the catalog and the guarantee, not of single users' data
    model_meta = json.loads((shop.registry.root / "behaviour" / behaviour["version"] / "model" / "model.json").read_text())
    assert model_meta["item_ids"] == sorted(catalog)
    assert "data_window_ms" not in card and "n_interactions" not in card
    assert 1.9 <= privacy["epsilon"] <= 2.0
    assert privacy["accountant"] == "prv" and privacy["noise_multiplier"] > 0 and privacy["max_grad_norm"] == 1.0
    assert privacy["epochs"] == 2 and 0 < privacy["sample_rate"] < 1 and n_users > 100
    # the item pairs released beside the network are accounted in the same epsilon, and blended in
    assert privacy["item_pairs"]["epsilon_alone"] == 1.5 and privacy["item_pairs"]["n_users"] == n_users
    assert card["blend"]["with"] == "item pairs, DP release" and card["blend"]["valid_ndcg@10_by_rule_and_weight"] == {}
    # The run is in the privacy ledger, and a second one would pass the training budget (3): refused.
    assert privacy["ledger_seq"] == 1 and privacy["training_epsilon_spent"] == pytest.approx(privacy["epsilon"])
    training = {b["purpose"]: b for b in shop.privacy_budget()}["model_training"]
    assert training["releases"] == 1 and training["epsilon_remaining"] == pytest.approx(3.0 - privacy["epsilon"])
    with pytest.raises(BudgetExceededError, match="model_training"):
        shop.train(actor="t", dp={"epsilon": 2.0, "epochs": 2, "batch_size": 64})
    assert shop.registry.current_version("behaviour") == behaviour["version"]
    # The served model is the private one, and the service exposes its card.
    assert shop.recommend(synthetic.users["user_id"][0], k=3)["model"] == f"behaviour/{behaviour['version']}"
    key = create_key(shop.store, "analyst", frozenset({Scope.analyst}))
    with TestClient(create_app(shop=shop)) as client:
        served = client.get(f"/v1/models/{behaviour['version']}", headers=auth(key))
        assert served.status_code == 200 and served.json()["cards"]["behaviour"]["privacy"] == privacy
        assert client.get("/v1/models/not-a-version", headers=auth(key)).status_code == 422
        assert client.get("/v1/models/v20200101-000000-1", headers=auth(key)).status_code == 404
    shop.close()


def test_a_training_that_no_longer_fits_the_budget_is_discarded_unreleased(tmp_path, monkeypatch):
    """Two DP trainings at once: both pass the check before training; the one that records second finds
    the budget spent, and its model is not registered."""
    from shopmind.privacy import dp_training, ledger

    synthetic = generate_shop(n_users=150, days=10, seed=7)
    paths = write_shop(synthetic, tmp_path / "data", "parquet")
    shop = make_shop(tmp_path / "home", f"sqlite:///{tmp_path / 'db.sqlite'}", dp_budget_training=10.0)
    for kind in ("items", "users", "events"):
        shop.import_file(paths[kind], kind, actor="t")

    def fit_while_another_run_spends(self, seqs, item_content=None):
        ledger.spend(shop.store, shop.settings, ledger.TRAINING, 7.0, 1e-3, {"model": "behaviour"}, "other")
        self.privacy_ = {"epsilon": 6.0, "delta": 1e-3, "epochs": 1, "n_users": 100, "noise_multiplier": 1.0}
        return self

    monkeypatch.setattr(dp_training.PrivateBehaviourRecommender, "fit", fit_while_another_run_spends)
    before = shop.registry.versions("behaviour")
    # delta 1 / users (about 1/100 here) is past the delta budget (0.01): refused before any training
    with pytest.raises(BudgetExceededError, match="delta"):
        shop.train(actor="t", dp={"epsilon": 6.0})
    assert {b["purpose"]: b for b in shop.privacy_budget()}["model_training"]["releases"] == 0
    with pytest.raises(BudgetExceededError):
        shop.train(actor="t", dp={"epsilon": 6.0, "delta": 1e-5})
    assert shop.registry.versions("behaviour") == before
    training = {b["purpose"]: b for b in shop.privacy_budget()}["model_training"]
    assert training["releases"] == 1 and training["epsilon_spent"] == 7.0  # only the other run
    shop.close()


def _memorisation(model, canaries: list[np.ndarray], n_items: int, contexts: int = 5) -> tuple[float, float]:
    """How much a canary's own items, as history, raise each of its next items: the mean over positions of
    log(rank after never-trained histories of the same length) - log(rank after the canary's own), the
    target item the same on both sides (so its popularity cancels), averaged over `contexts` random
    histories disjoint from the canary; and how often the own history puts the next item in the top 10.
    Ranks use every position's whole ranking, so the measure varies far less from run to run than hits."""
    rng = np.random.default_rng(1)
    histories, targets = [], []  # per position: the canary's own history, then `contexts` unseen ones
    for canary in canaries:
        others = np.setdiff1d(np.arange(n_items), canary)
        unseen = [rng.choice(others, len(canary), replace=False) for _ in range(contexts)]
        for t in range(3, len(canary)):
            histories += [canary[:t]] + [u[:t] for u in unseen]
            targets += [int(canary[t])] * (1 + contexts)
    scores = model.score(histories).astype(np.float64)
    for row, history in zip(scores, histories):
        row[history] = -np.inf  # seen items are never recommended
    ranks = 1 + (scores > scores[np.arange(len(targets)), targets][:, None]).sum(axis=1)
    ranks = ranks.reshape(-1, 1 + contexts)  # one row per position: own, then the unseen histories
    advantage = np.log(ranks[:, 1:]).mean(axis=1) - np.log(ranks[:, 0])
    return float(advantage.mean()), float((ranks[:, 0] <= 10).mean())


@pytest.mark.slow
def test_dp_training_suppresses_canaries_that_plain_training_memorises(shop_sequences):
    rng = np.random.default_rng(0)
    n_items = shop_sequences.n_items
    canaries = [rng.choice(n_items, 12, replace=False) for _ in range(20)]   # in training, once each
    data = Sequences(user_ids=shop_sequences.user_ids + [f"canary{i}" for i in range(20)],
                     item_ids=shop_sequences.item_ids, sequences=shop_sequences.sequences + canaries)
    from shopmind.evaluation import leave_one_out

    split = leave_one_out(data)
    split.train = data.sequences  # canaries wholly in the training data
    # window_step=25: this small shop has one 1,837-event user, who with the default step of 10 fills a
    # third of the training windows; the plain model then memorises the canaries less within 40 epochs,
    # which would leave nothing for DP to suppress. The test is about that contrast, so it keeps a
    # memorising model.
    plain = BehaviourRecommender(max_epochs=40, patience=40, dropout=0.1, threads=1, window_step=25).fit(
        data, split=split)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        private = PrivateBehaviourRecommender(epsilon=1.0, epochs=10, batch_size=64, dropout=0.1, threads=1).fit(
            data, split=split)
    plain_advantage, plain_hits = _memorisation(plain, canaries, n_items)
    dp_advantage, dp_hits = _memorisation(private, canaries, n_items)
    # Measured 2026-12-07 (docs/privacy.md, "Membership-inference audit"): plain, seeds 0 and 1, advantage
    # 0.90 and 0.64 with top-10 hits 0.13 and 0.07; DP at epsilon 1 over 16 noise draws, advantage -0.11
    # to 0.22 (mean 0.06, sd 0.10), hits 0 to 0.04. The DP bound is over 4 sd above that mean.
    assert plain_advantage >= 0.6 and plain_hits >= 0.06, (plain_advantage, plain_hits)
    assert dp_advantage <= 0.5 and dp_hits <= plain_hits / 2, (dp_advantage, dp_hits)


def test_auc_and_the_dp_bound():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(0.3, 1, 300), rng.normal(0, 1, 200)
    pairs = (members[:, None] > nonmembers[None, :]).mean() + 0.5 * (members[:, None] == nonmembers[None, :]).mean()
    assert auc(members, nonmembers) == pytest.approx(pairs)
    assert auc(np.ones(5), np.ones(5)) == 0.5
    bound = dp_tpr_bound(1.0, 1e-5, np.array([0.0, 0.01, 0.5, 1.0]))
    assert bound[0] == pytest.approx(1e-5) and bound[1] == pytest.approx(np.e * 0.01 + 1e-5)
    assert bound[-1] == 1.0 and np.all(np.diff(bound) >= 0)


def test_membership_audit_reports_both_attacks(shop_sequences):
    found = membership_audit(shop_sequences, lambda: BehaviourRecommender(max_epochs=3, threads=1), n_bootstrap=50)
    assert found["members"] + found["nonmembers"] + found["reference_users"] <= len(shop_sequences.user_ids)
    for attack in ("loss_attack", "reference_attack"):
        r = found[attack]
        assert 0 <= r["auc_95ci"][0] <= r["auc"] <= r["auc_95ci"][1] <= 1 and 0 <= r["tpr_at_1pct_fpr"] <= 1


def test_privacy_curve_cli(tmp_path, shop_sequences):
    from shopmind.cli.main import app

    path = tmp_path / "seqs.txt"
    path.write_text("\n".join(f"{u} " + " ".join(shop_sequences.item_ids[i] for i in s)
                              for u, s in zip(shop_sequences.user_ids, shop_sequences.sequences) if len(s) >= 3))
    runner = CliRunner()
    result = runner.invoke(app, ["privacy", "curve", "--sequences", str(path), "--epsilons", "4",
                                 "--epochs", "1", "--no-audit", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["model"] for r in rows] == ["non-private", "dp eps=4"]
    assert rows[0]["epsilon"] is None and 3.9 <= rows[1]["epsilon"] <= 4.0 and rows[1]["hr@10"] >= 0
    bad = runner.invoke(app, ["privacy", "curve", "--sequences", str(path), "--epsilons", "0"])
    assert bad.exit_code == 2 and "--epsilons" in bad.output


def test_content_only_trains_no_per_item_vector(shop_sequences):
    """content_only: items are their (public) content vectors projected; the id tables stay zero and
    receive no noisy update, the projections and the transformer learn."""
    content = np.random.default_rng(0).normal(size=(shop_sequences.n_items, 16)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PrivateBehaviourRecommender(epsilon=8.0, epochs=1, batch_size=64, threads=1, content_only=True,
                                            d_model=16).fit(shop_sequences, item_content=content)
    trunk, head = model.model_.trunk, model.model_.heads["next_item"]
    assert not trunk.item_emb.weight.any() and not head.out_vectors.weight.any()
    assert trunk.content_proj.weight.abs().sum() > 0 and head.out_content.weight.abs().sum() > 0
    scores = model.score([np.array([1, 2, 3])])
    assert scores.shape == (1, shop_sequences.n_items) and np.isfinite(scores).all() and scores.std() > 0
    with pytest.raises(InvalidInputError, match="content_only needs item_content"):
        PrivateBehaviourRecommender(content_only=True).fit(shop_sequences)
    from shopmind.cli.main import app

    refused = CliRunner().invoke(app, ["train", "--content-only"])  # without --dp: refused before any work
    assert refused.exit_code == 2 and "--content-only" in refused.output


def test_the_noise_is_secret_and_secure_mode_says_what_it_needs():
    """Two DP trainings of the same data with the same seed differ: the noise and the sampling come from
    the operating system's randomness, not from the (public) seed, which fixes only the initial weights."""
    rng = np.random.default_rng(3)
    data = Sequences([f"u{n}" for n in range(200)], [f"i{n}" for n in range(30)],
                     [rng.integers(0, 30, size=6).astype(np.int64) for _ in range(200)])
    runs = []
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = PrivateBehaviourRecommender(epsilon=8.0, epochs=1, batch_size=32, d_model=16, threads=1).fit(data)
        runs.append(model.model_.trunk.item_emb.weight.detach().clone())
    assert not np.allclose(runs[0].numpy(), runs[1].numpy())
    import importlib.util

    with pytest.raises(InvalidInputError, match="cooccurrence_share to 0"):  # numpy draws the pairs' noise
        PrivateBehaviourRecommender(secure_mode=True, epochs=1).fit(data)
    if importlib.util.find_spec("torchcsprng") is None:
        with pytest.raises(InvalidInputError, match="needs the torchcsprng package"):
            PrivateBehaviourRecommender(secure_mode=True, epochs=1, cooccurrence_share=0).fit(data)


def test_an_empty_poisson_batch_is_a_noise_only_step_the_accountant_counts():
    """With one user expected per batch, about a third of Poisson batches are empty. Each is still a
    DP-SGD step (noise alone, counted by the accountant): skipping them left the recorded epsilon at 3.2
    of a planned 4 while the card claimed every step, and a skipped step says that nobody was drawn."""
    rng = np.random.default_rng(3)
    data = Sequences([f"u{n}" for n in range(60)], [f"i{n}" for n in range(20)],
                     [rng.integers(0, 20, size=5).astype(np.int64) for _ in range(60)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PrivateBehaviourRecommender(epsilon=4.0, epochs=2, batch_size=1, d_model=16, threads=1,
                                            cooccurrence_share=0).fit(data)
    privacy = model.privacy_
    assert privacy["steps"] == 2 * round(1 / privacy["sample_rate"])
    assert 3.9 <= privacy["epsilon"] <= 4.0
    # the training loss is an exact average over the users' data: not kept with a private model
    assert model.history_ and all(set(row) == {"epoch", "seconds"} for row in model.history_)


def test_both_attacks_find_the_members_of_a_model_that_memorises_and_not_of_one_that_learns_nothing():
    from shopmind.evaluation import leave_one_out

    class Memoriser:  # scores high exactly the item that followed this history in a training sequence
        def fit(self, data):
            self.next = {}
            for seq in leave_one_out(data).train:
                for k in range(1, len(seq)):
                    self.next.setdefault(tuple(seq[:k].tolist()), set()).add(int(seq[k]))
            self.n_items = data.n_items
            return self

        def score(self, histories):
            scores = np.zeros((len(histories), self.n_items))
            for row, h in enumerate(histories):
                scores[row, list(self.next.get(tuple(h.tolist()), ()))] = 20.0
            return scores

    class Ignorant(Memoriser):
        def score(self, histories):
            return np.zeros((len(histories), self.n_items))

    rng = np.random.default_rng(1)
    data = Sequences([f"u{n}" for n in range(150)], [f"i{n}" for n in range(300)],
                     [rng.integers(0, 300, size=int(rng.integers(6, 15))).astype(np.int64) for _ in range(150)])
    memorised = membership_audit(data, Memoriser, n_bootstrap=50)
    for attack in ("loss_attack", "reference_attack"):
        assert memorised[attack]["auc"] > 0.95 and memorised[attack]["tpr_at_1pct_fpr"] > 0.5, (attack, memorised)
    ignorant = membership_audit(data, Ignorant, n_bootstrap=50)
    for attack in ("loss_attack", "reference_attack"):
        assert ignorant[attack]["auc"] == pytest.approx(0.5), (attack, ignorant)


def test_the_audit_scores_members_on_what_they_were_trained_on():
    """Every next-item target the membership attack scores for a member was a training target of the
    audited model (its last two events were held out by leave-one-out, and must not be scored)."""
    from shopmind.evaluation import leave_one_out

    class Recorder:
        def fit(self, data):
            self.trained = {tuple(seq.tolist()) for seq in leave_one_out(data).train}
            self.n_items = data.n_items
            return self

        def score(self, histories):
            self.scored = getattr(self, "scored", []) + [tuple(h.tolist()) for h in histories]
            return np.zeros((len(histories), self.n_items))

    rng = np.random.default_rng(0)
    data = Sequences([f"u{n}" for n in range(120)], [f"i{n}" for n in range(50)],
                     [rng.integers(0, 50, size=int(rng.integers(4, 15))).astype(np.int64) for _ in range(120)])
    out = membership_audit(data, Recorder, n_bootstrap=10)
    target = out["model"]
    member_prefixes = {seq[:k] for seq in target.trained for k in range(1, len(seq))}
    scored_by_members = [h for h in target.scored if any(h == p for p in member_prefixes)]
    assert scored_by_members and len(target.scored) >= out["members"]
    # each scored history of a member is a proper prefix of its training sequence (so its target trained)
    for seq in target.trained:
        for k in range(max(1, len(seq) - 10), len(seq)):
            assert seq[:k] in target.scored
    assert not any(h == seq for seq in target.trained for h in target.scored)  # no held-out target scored


def test_the_recorded_epsilon_is_rounded_up_never_below_what_was_spent():
    """round(x, 4) recorded up to 5e-5 less than the accountant's epsilon in the card and the ledger."""
    for spent in (7.99994, 0.123449, 1.0, 3.00001, 2.5e-5):
        assert spent <= round_up(spent) < spent + 1e-4
    assert round_up(7.99994) == 8.0 and round_up(1.0) == 1.0


def test_the_dp_audit_of_a_shop_reads_what_dp_training_reads(shop, monkeypatch):
    """`shopmind privacy audit --dp` on the shop's own events must attack the configuration `train --dp`
    serves: known users only, one example per person, over the catalog. It read anonymous sessions as
    users of their own, so it audited a model whose clipping bounded a session, not a person."""
    import shopmind.cli.main as cli_main
    from shopmind.cli.privacy import _data

    shop.ingest("users", [{"user_id": "known", "consent_personalization": True}], actor="t")
    shop.ingest("items", [{"item_id": f"i{n}", "title": f"Item {n}", "category": "A"} for n in range(6)], actor="t")
    shop.ingest("events", [event(n, user="known", item=f"i{n % 3}") for n in range(4)]
                + [event(10 + n, user=None, item=f"i{3 + n % 2}", session_id="anon-1") for n in range(4)], actor="t")
    monkeypatch.setattr(cli_main, "_shop", lambda **kwargs: shop)
    monkeypatch.setattr(shop, "close", lambda: None)
    everyone = _data(None)
    private = _data(None, private=True)
    assert any(u.startswith("s:") for u in everyone.user_ids)  # what the non-private model trains on
    assert private.user_ids == [shop.pseudonym("known")]
    assert private.item_ids == [f"i{n}" for n in range(6)]  # the catalog, not the items the data holds


def test_dp_training_on_a_shop_without_its_items_feed_says_so(shop):
    """DP training reads events on catalog items only. With the items not imported, the check for enough
    sequences had already passed: a bare ValueError from stacking no title vectors, or (without them) a
    delta of 1/2 refused as an exhausted budget (found by a review). Now the behaviour model is skipped
    with the reason, as for too little data, and nothing is spent."""
    shop.ingest("users", [{"user_id": f"u{n}", "consent_personalization": True} for n in range(30)], actor="t")
    shop.ingest("events", [event(10 * u + n, user=f"u{u}", item=f"i{(u + n) % 7}") for u in range(30) for n in range(6)],
                actor="t")
    result = shop.train(actor="t", dp={"epsilon": 2.0, "epochs": 1})
    assert "catalog" in result["behaviour"]["skipped"]
    assert shop.store.count("privacy_ledger") == 0


def test_the_cli_refuses_a_time_budget_for_dp_training(tmp_path, monkeypatch):
    """--budget stops the non-private model's epochs; a DP run's noise is calibrated to all of its epochs,
    and --budget was silently ignored (found by a review)."""
    from shopmind.cli.main import app

    monkeypatch.setenv("SHOPMIND_HOME", str(tmp_path / "home"))
    r = CliRunner().invoke(app, ["train", "--dp", "--budget", "60"])
    assert r.exit_code == 2 and "--budget" in r.output and "--dp-epochs" in r.output, r.output
