"""One loss (the report's focus) against every other loss of a group of
runs: paired significance tests (bootstrap over queries, t-test over seeds)
and the two-stage search table from the runs' search rows."""

import math
import statistics
import warnings
from typing import Optional, Sequence

import numpy as np

from ra_jax import retrieval
from ra_jax.report import runs as runs_lib
from ra_jax.report import significance

_map = runs_lib.exact_value  # a run's exact mAP (or another metric)
_title = runs_lib.loss_title


def _by_loss(runs: Sequence[runs_lib.RunRecord], group: str
             ) -> dict[str, list[runs_lib.RunRecord]]:
  """The runs of `group`, by loss."""
  by_loss: dict[str, list] = {}
  for run in runs:
    if run.group == group:
      by_loss.setdefault(run.loss, []).append(run)
  return by_loss


def on_common_seeds(runs: Sequence[runs_lib.RunRecord],
                    prefix: str = "final/") -> list[runs_lib.RunRecord]:
  """`runs` with each group whose name starts with `prefix` cut to the seeds
  every loss of that group has. While some losses miss seeds, a mean over
  all of each loss's seeds would compare different seeds: a ranking or a
  verdict is made on the seeds all of them share."""
  seeds: dict[str, dict[str, set]] = {}
  for run in runs:
    if run.group.startswith(prefix):
      seeds.setdefault(run.group, {}).setdefault(run.loss, set()).add(
          run.seed)
  common = {group: set.intersection(*by_loss.values())
            for group, by_loss in seeds.items()}
  return [r for r in runs
          if r.group not in common or r.seed in common[r.group]]


def best_baseline(by_loss: dict[str, list[runs_lib.RunRecord]],
                  focus: str) -> str:
  """The loss other than `focus` with the best mean exact mAP over its
  runs."""
  return max((loss for loss in by_loss if loss != focus),
             key=lambda loss: statistics.fmean(map(_map, by_loss[loss])))


def paired_tests(runs: Sequence[runs_lib.RunRecord], group: str, focus: str
                 ) -> dict[str, tuple[list[float],
                                      Optional[significance.PairedTest]]]:
  """Per other loss of `group`: the `focus` loss's mAP minus the other's on
  each seed both have, and a paired bootstrap over queries of per-query AP
  averaged over those seeds (None without per-query APs)."""
  by_loss = _by_loss(runs, group)
  ours = {r.seed: r for r in by_loss.pop(focus, [])}
  out = {}
  for loss, others in sorted(by_loss.items()):
    theirs = {r.seed: r for r in others}
    seeds = sorted(set(ours) & set(theirs))
    if not seeds:
      continue
    per_seed = [_map(ours[s]) - _map(theirs[s]) for s in seeds]
    test = None
    if all("per_query_ap" in ours[s].results and
           "per_query_ap" in theirs[s].results for s in seeds):
      with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN queries
        a = np.nanmean([_per_query(ours[s]) for s in seeds], axis=0)
        b = np.nanmean([_per_query(theirs[s]) for s in seeds], axis=0)
      test = significance.paired_bootstrap(a, b)
    out[loss] = (per_seed, test)
  return out


def significance_sentence(runs: Sequence[runs_lib.RunRecord], group: str,
                          focus: str, tests=None) -> Optional[str]:
  """The `focus` loss against the best other loss of `group` (by mean
  mAP): mean and per-seed mAP differences, the bootstrap over queries, the
  t-test over seeds, and whether each is significant at 5 %."""
  tests = paired_tests(runs, group, focus) if tests is None else tests
  if not tests:
    return None
  by_loss = _by_loss(runs, group)
  best = best_baseline({loss: by_loss[loss] for loss in tests}, focus)
  per_seed, test = tests[best]
  sentence = (f"Significance against the best baseline, {_title(best)}:"
              f" mean mAP difference {statistics.fmean(per_seed):+.4f}, per"
              f" seed {', '.join(f'{d:+.4f}' for d in per_seed)}")
  verdicts = []
  if test is not None:
    sentence += (f"; paired bootstrap over {test.num_queries} queries: 95%"
                 f" interval [{test.low:+.4f}, {test.high:+.4f}], p ="
                 f" {test.p_value:.4f}")
    verdicts.append(("over queries", test.p_value))
  else:
    sentence += " (no per-query APs: no bootstrap)"
  seed_test = significance.paired_t_test(per_seed)
  if seed_test is not None:
    sentence += (f"; paired t-test over the {seed_test.num_seeds} seeds:"
                 f" t = {seed_test.t:.2f}, p = {seed_test.p_value:.4f}")
    verdicts.append(("over seeds", seed_test.p_value))
  return sentence + "".join(
      f"{', so the difference is' if k == 0 else ', and'}"
      f" {'' if p < 0.05 else 'not '}significant at the 5% level {where}"
      for k, (where, p) in enumerate(verdicts)) + (
          " (one seed: no test over seeds yet)." if seed_test is None
          else ".")


def final_significance(runs: Sequence[runs_lib.RunRecord], group: str,
                       focus: str, tests=None) -> list[str]:
  """The verdict's significance against the best other loss (by mean
  mAP), then a table against every other loss: mean mAP difference, paired
  bootstrap over queries, per-seed differences, t-test over seeds.
  `tests`: `paired_tests(runs, group, focus)` if already computed."""
  tests = paired_tests(runs, group, focus) if tests is None else tests
  if not tests:
    return []
  sentence = significance_sentence(runs, group, focus, tests)
  lines = [sentence, "",
           "| against | mAP difference (mean over seeds) | 95% bootstrap"
           " interval (queries) | p (bootstrap) | per-seed differences |"
           " p (t-test over seeds) |", "|---|---|---|---|---|---|"]
  for loss, (per_seed, test) in tests.items():
    cells = (["-", "-"] if test is None else
             [f"[{test.low:+.4f}, {test.high:+.4f}]", f"{test.p_value:.4f}"])
    seed_test = significance.paired_t_test(per_seed)
    lines.append(f"| {_title(loss)} | {statistics.fmean(per_seed):+.4f} | "
                 + " | ".join(cells) + " | " +
                 ", ".join(f"{d:+.4f}" for d in per_seed) + " | "
                 + ("-" if seed_test is None else f"{seed_test.p_value:.4f}")
                 + " |")
  return lines + ["", "Paired over the same queries: the bootstrap resamples"
                  " queries (10,000 times) and recomputes the mean"
                  " difference of per-query AP averaged over seeds; p is the"
                  " two-sided share of resamples on the other side of 0."
                  " It holds the trained models fixed; the t-test over"
                  " seeds (Student's, on the per-seed mAP differences) is"
                  " the one that sees training's own variance.", ""]


def _per_query(run) -> np.ndarray:
  return np.asarray([math.nan if v is None else v
                     for v in run.results["per_query_ap"]], np.float64)


def search_row(run: runs_lib.RunRecord, list_source: Optional[str],
               lists: Optional[int],
               class_vectors: Optional[str] = retrieval.LEARNED
               ) -> Optional[dict]:
  """`run`'s search row (the exact one: list_source = lists = None)."""
  search = retrieval.EXACT if lists is None else retrieval.TWO_STAGE
  return retrieval.find_row(run.results.get("searches", ()), search,
                            list_source, lists, class_vectors)


def mean_search_value(runs: Sequence[runs_lib.RunRecord],
                      list_source: Optional[str], lists: Optional[int],
                      key: str,
                      class_vectors: Optional[str] = retrieval.LEARNED
                      ) -> float:
  """Mean over `runs` of a search row's value: a metric of its full ranking
  ("map", "precision@10") or one of the row's own ("seconds",
  "distance_fraction", "stage_one_accuracy"); NaN where no run has it."""
  values = []
  for run in runs:
    row = search_row(run, list_source, lists, class_vectors) or {}
    value = row.get("metrics", {}).get(key, row.get(key))
    if value is not None:
      values.append(value)
  return statistics.fmean(values) if values else math.nan


def two_stage_section(runs: Sequence[runs_lib.RunRecord], group: str,
                      loss: str) -> list[str]:
  """`loss`'s two-stage search rows in `group`, means over its seeds."""
  members = sorted((r for r in runs if r.group == group and r.loss == loss),
                   key=lambda r: r.seed)
  keys = []
  for run in members:
    for row in run.results.get("searches", ()):
      key = (row["list_source"], row["lists"])
      if (row["search"] == retrieval.TWO_STAGE and key not in keys and
          row.get("class_vectors", retrieval.LEARNED) == retrieval.LEARNED):
        keys.append(key)
  if not members or not keys:
    return []
  exact = lambda key: mean_search_value(members, None, None, key)
  lines = [f"### Two-stage search ({group}, {runs_lib.loss_title(loss)})",
           "", "| lists | kept | full-ranking mAP | P@10 | distances per query"
           " (share of exact) | top-100 seconds |", "|---|---|---|---|---|---|",
           f"| exact | all | {exact('map'):.4f} | {exact('precision@10'):.4f} |"
           f" 1.00 | {exact('seconds'):.3f} |"]
  for source, lists in sorted(keys, key=lambda key: (key[0] != "labels",
                                                     key)):
    mean = lambda key, s=source, n=lists: mean_search_value(members, s, n,
                                                            key)
    lines.append(f"| {source.removesuffix('s')} | {lists} |"
                 f" {mean('map'):.4f} | {mean('precision@10'):.4f} |"
                 f" {mean('distance_fraction'):.3f} | {mean('seconds'):.3f} |")
  return lines + ["", f"Means over {len(members)} seed(s). Full-ranking mAP:"
                  " the kept lists' items by distance, then the rest by"
                  " distance. Label lists: an item is in its class's list;"
                  " anchor lists: in its nearest anchor's. Distances per"
                  " query count the query's distances to every class anchor"
                  " and to the kept lists' items.", ""]


_VECTORS_TEXT = {retrieval.LEARNED: "its own", retrieval.CENTROIDS:
                 "database centroids"}


def two_stage_comparison(runs: Sequence[runs_lib.RunRecord], group: str,
                         lists: Sequence[int] = (1, 2, 3)) -> list[str]:
  """Two-stage search for every loss of `group`, stage 1 by its own class
  vectors and by the database's class centroids: per list source a table
  of full-ranking mAP with 1, 2, ... lists kept, and with one list its
  P@10, stage-1 accuracy and share of exact search's distances (means over
  seeds); then which (loss, class vectors) has the best mAP with one label
  list."""
  by_loss = _by_loss(runs, group)
  combos = [(loss, vectors) for loss in sorted(by_loss)
            for vectors in (retrieval.LEARNED, retrieval.CENTROIDS)
            if any(search_row(r, "labels", 1, vectors) for r in by_loss[loss])]
  if not combos:
    return []
  lines = [f"### Two-stage search for every loss ({group})", "",
           "Stage 1 by the loss's own class vectors (the class anchor margin"
           " loss's anchors and center loss's centres by L2 distance,"
           " ArcFace's weights and proxy-anchor's proxies by cosine, the"
           " softmax classifier by logit) or by the class centroids of the"
           " database's embeddings (labels only: the control); full-ranking"
           " mAP (the kept lists' items first), means over seeds.", ""]
  best = None
  for source, title in (("labels", "label lists (an item is in its"
                         " class's list)"),
                        ("anchors", "class-vector lists (an item is in the"
                         " list of its best class vector; no database labels"
                         " needed)")):
    header = ["loss", "stage 1 by", "exact mAP"] + [
        f"mAP, {n} list{'s' if n > 1 else ''}" for n in lists] + [
            "P@10, 1 list", "stage-1 acc.", "distances, 1 list"]
    rows = []
    for loss, vectors in combos:
      members = by_loss[loss]
      mean = lambda key, n=1: mean_search_value(members, source, n, key,
                                                vectors)
      if math.isnan(mean("map")):
        continue
      rows.append(
          [_title(loss), _VECTORS_TEXT[vectors],
           f"{statistics.fmean(map(_map, members)):.4f}"] +
          [f"{mean('map', n):.4f}" for n in lists] +
          [f"{mean('precision@10'):.4f}", f"{mean('stage_one_accuracy'):.4f}",
           f"{mean('distance_fraction'):.3f}"])
      if source == "labels" and (best is None or mean("map") > best[2]):
        best = (loss, vectors, mean("map"))
    if rows:
      lines += [f"With {title}:", "", "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header)]
      lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
  if best is not None:
    loss, vectors, value = best
    own = [(l, v) for l, v in combos if l == loss and v != vectors]
    against = ""
    if own:
      other = mean_search_value(by_loss[loss], "labels", 1, "map", own[0][1])
      against = (f"; with {_VECTORS_TEXT[own[0][1]]} instead:"
                 f" {other:.4f} ({value - other:+.4f})")
    lines += [f"Best with one label list: {_title(loss)}, stage 1 by"
              f" {_VECTORS_TEXT[vectors]} ({value:.4f}){against}.", ""]
  return lines
