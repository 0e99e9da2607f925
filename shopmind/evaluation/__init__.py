"""Offline evaluation: time-ordered leave-one-out, full ranking over the catalog, seen items excluded.

    seqs = load_sequences("Beauty.txt")          # or Sequences.from_frame(events)
    split = leave_one_out(seqs)
    report = evaluate_ranking(model.score, split, stage="test")   # HR@10, NDCG@10, MRR, coverage
"""

from shopmind.evaluation.metrics import RankingReport, ranking_metrics
from shopmind.evaluation.protocol import ScoreFn, evaluate_ranking
from shopmind.evaluation.sequences import Sequences, Split, leave_one_out, load_sequences

__all__ = ["RankingReport", "ScoreFn", "Sequences", "Split", "evaluate_ranking", "leave_one_out",
           "load_sequences", "ranking_metrics"]
