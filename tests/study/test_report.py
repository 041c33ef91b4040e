"""The study's report sections, on result files written here: each
section reads its stage's files and the protocol."""

import json

import pytest

from configs import common
from study import grid, settings
from study.report import build

FASHION = settings.FASHION_MNIST

# What a run's results.json says of its data, by protocol.
_VALIDATION = {"split_sizes": {"train": 50000, "validation": 10000,
                               "test": 10000},
               "query_split": "validation", "database_split": "train"}
_TEST = {"split_sizes": {"train": 60000, "test": 10000},
         "query_split": "test", "database_split": "train"}


def _run(root, path, stage, loss, value, seed=0, per_query=None,
         extra=None, metrics=(), settings=None, steps=400, setting=FASHION):
  run_dir = root / path
  run_dir.mkdir(parents=True)
  config = grid.recipe(setting, loss)
  common.set_fields(config, settings or {})
  (run_dir / "config.json").write_text(config.to_json_best_effort())
  results = {"dataset": _TEST if stage in ("final", "ablation") else
             _VALIDATION,
             "exact": {"map": value, "map@100": value, "precision@10": value,
                       "precision@100": value, "num_queries": 4},
             "steps": steps, "run": {"wall_seconds": 60.0}, **(extra or {})}
  if per_query is not None:
    results["per_query_ap"] = per_query
  (run_dir / "results.json").write_text(json.dumps(results))
  record = grid.Run(path, stage, loss, {"optim.name": "sgd",
                                        "optim.learning_rate": 0.05},
                    seed, setting=setting).record()
  (run_dir / "grid.json").write_text(json.dumps(record))
  (run_dir / "metrics.jsonl").write_text("".join(
      json.dumps(m) + "\n" for m in metrics))


def _searches(exact, learned, centroids):
  """results.json "searches" rows: exact mAP, and for stage 1 by the loss's
  own vectors and by the centroids (mAP, P@10, stage-1 accuracy) with one
  label list."""
  rows = [{"search": "exact", "class_vectors": None, "list_source": None,
           "lists": None, "seconds": 1.0, "distance_computations": 60000.0,
           "distance_fraction": 1.0, "stage_one_accuracy": None,
           "metrics": {"map": exact, "precision@10": exact}}]
  for name, (map_, p10, accuracy) in (("learned", learned),
                                      ("centroids", centroids)):
    rows.append({"search": "two_stage", "class_vectors": name,
                 "list_source": "labels", "lists": 1, "seconds": 0.5,
                 "distance_computations": 6010.0,
                 "distance_fraction": 0.1, "stage_one_accuracy": accuracy,
                 "metrics": {"map": map_, "precision@10": p10}})
  return {"searches": rows}


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
  """(root, report text) of a staged study whose every stage has files:
  2 tuning trials per loss, the variants (attract_warmup wins), a length
  run, 3 final seeds of cam and ce, the variant's 3 finals, two ablations,
  the diagnosis. The final runs keep search rows (stage 1 by their own
  class vectors and by the centroids); the ablation runs' and the variant
  finals' results.json are in the format before search rows
  ("two_stage_1" keys): the report reads them upgraded."""
  tmp_path = tmp_path_factory.mktemp("study")
  (tmp_path / "protocol.json").write_text(json.dumps(grid.protocol(FASHION)))
  for k, (cam, ce) in enumerate(((0.70, 0.72), (0.81, 0.60))):
    _run(tmp_path, f"tuning/cam/trial{k}", "tuning", "cam", cam)
    _run(tmp_path, f"tuning/ce/trial{k}", "tuning", "ce", ce)
  _run(tmp_path, "variants/cam/tuned/seed1", "variants", "cam", 0.80, 1)
  for name in grid.VARIANT_TEXT:  # the warm-up wins on both seeds
    for seed, value in ((0, 0.82), (1, 0.805)):
      _run(tmp_path, f"variants/cam/{name}/seed{seed}", "variants", "cam",
           value if name == "attract_warmup" else (0.82, 0.79)[seed], seed)
  curve = [{"step": s, "eval/map": 0.8 + s / 1e5} for s in (200, 400, 600,
                                                              800)]
  _run(tmp_path, "length/ce/epochs12", "length", "ce", 0.808,
       metrics=curve)
  two_stage = {"two_stage_1": {"map": 0.9, "precision@10": 0.85,
                               "distance_fraction": 0.1, "seconds": 0.5}}
  margin, min_norm = (grid.recipe(FASHION, "cam").loss[k] for k in ("margin",
                                                          "min_norm"))
  never_norm = [{"step": s, "train/repel": 0.1, "train/norm": 0.0,
                 "train/min_anchor_distance": 2 * margin,
                 "train/mean_anchor_norm": 4.4} for s in (50, 100)]
  for seed in range(3):
    _run(tmp_path, f"final/full/cam/seed{seed}", "final", "cam",
         0.85 + seed / 100, seed, per_query=[0.9, 0.8, None, 0.85],
         extra=_searches(0.85 + seed / 100, learned=(0.9, 0.85, 0.95),
                         centroids=(0.88, 0.84, 0.93)))
    _run(tmp_path, f"final/full/ce/seed{seed}", "final", "ce", 0.80, seed,
         per_query=[0.7, 0.8, 0.5, 0.75],
         extra=_searches(0.80, learned=(0.70, 0.80, 0.80),
                         centroids=(0.86, 0.83, 0.92)))
    # the variant: +0.005 on every seed; its seed 0 is the ablation's
    # reference (all three terms)
    _run(tmp_path, f"variant_final/full/cam/seed{seed}", "variant_final",
         "cam", 0.855 + seed / 100, seed, extra=two_stage,
         metrics=never_norm)
  _run(tmp_path, "ablation/cam/no_repel/seed0", "ablation", "cam", 0.83,
       extra={"two_stage_anchors_1": {"map": 0.84}},
       settings=grid.ABLATIONS["no_repel"],
       metrics=[{"step": s, "train/repel": r, "train/norm": 0.0,
                 "train/min_anchor_distance": d,
                 "train/mean_anchor_norm": 4.4}
                for s, r, d in ((50, 0.5, 1.0), (100, 0.0, 2.0),
                                (150, 0.0, 2.1), (200, 0.0, 3.0))])
  # the norm term off: the same run to the last digit, as it never acted
  _run(tmp_path, "ablation/cam/no_norm/seed0", "ablation", "cam", 0.855,
       extra=two_stage, metrics=never_norm,
       settings=grid.ABLATIONS["no_norm"])
  _run(tmp_path, "diagnosis/ce/head_batch_norm/seed0", "diagnosis", "ce",
       0.75)
  (tmp_path / "diagnosis").mkdir(exist_ok=True)
  (tmp_path / "diagnosis" / "embedding_choices_ce.json").write_text(
      json.dumps({"loss": "ce", "query_split": "validation",
                  "database_split": "train", "step": 400, "workdir": "w",
                  "choices": {"logits": {"map": 0.5, "precision@10": 0.6,
                                         "map@100": 0.55}}}))
  for seed, value in ((0, 0.7), (1, 0.8)):  # final runs: one table
    (tmp_path / "diagnosis" / f"embedding_choices_ce_final_seed{seed}.json"
     ).write_text(json.dumps(
         {"loss": "ce", "query_split": "test", "database_split": "train",
          "step": 2880, "workdir": f"w{seed}",
          "choices": {"head (l2, as trained)": {
              "map": value - 0.05, "precision@10": 0.9, "map@100": value},
                      "head, on the unit sphere": {
              "map": value, "precision@10": 0.9, "map@100": value},
                      "logits": {
              "map": value - 0.1, "precision@10": 0.9, "map@100": value}}}))
  output = tmp_path / "RESULTS.md"
  build.write_study_report(str(tmp_path), str(output), analyze=False)
  return tmp_path, output.read_text()


def test_the_diagnosis_reads_its_embedding_choices(staged):
  _, report = staged
  assert ("cross-entropy, test queries against the train split, the final"
          " checkpoints of 2 seeds, mean ± std:") in report
  assert ("| head, on the unit sphere | 0.7500 ± 0.0707 | 0.9000 ± 0.0000 |"
          " 0.7500 ± 0.0707 |") in report
  # means over the 2 seeds: as trained 0.70, sphere 0.75, logits 0.65
  assert ("mAP against head (l2, as trained) (0.7000): head, on the unit"
          " sphere +0.0500; logits -0.0500; the best choice is head, on the"
          " unit sphere (0.7500), +0.0500 over the embedding as trained.") in (
      report)
  assert "mAP against logits" not in report  # one choice: nothing to compare
  assert "| logits | 0.5000 | 0.6000 | 0.5500 |" in report
  assert ("cross-entropy with head_batch_norm: validation mAP 0.7500 against"
          " 0.7200 for its best trial as tuned (+0.0300)") in report


def test_tuning_names_the_budget_and_the_split_from_the_files(staged):
  _, report = staged
  assert "## Tuning on the validation split" in report
  assert ("Validation mAP (10,000 held-out training images against the"
          " other 50,000, full ranking)") in report
  assert "| class anchor margin | l2 | 2 of 8 | 0 | 0.8100 |" in report
  assert "| cross-entropy | l2 | 2 of 8 | 0 | 0.7200 |" in report
  assert "The search is not finished: 4 of 56 trials" in report
  assert ("At its best trial the class anchor margin loss ranks 1 of 2 on"
          " validation (0.8100, +0.0900 against cross-entropy") in report
  assert "Search spaces" in report and "log-uniform [0.5, 8]" in report


def test_variants_and_length_state_their_decisions(staged):
  root, report = staged
  assert "## The class anchor margin loss's variants (validation)" in report
  assert "| tuned | 0.8100 | 0.8000 | 0.8050 |" in report
  assert "Adopted: attract_warmup" in report
  assert "seed 0 is the best of its 8 trials" in report
  # beside its best tuning trial (0.72 after the tuning's 2 epochs)
  assert ("| loss | best tuning trial (2 epochs) | epochs | final validation"
          " mAP | gain over the last quarter |") in report
  assert ("| cross-entropy | 0.7200 | 12 | 0.8080 | +0.0020 (converged) |"
          ) in report
  assert ("the final runs train 12 epochs, the shortest length at which"
          " cross-entropy converged.") in report
  assert (root / "RESULTS_figures" / "length_curves.png").exists()


def test_a_length_capped_short_of_convergence_says_so(tmp_path):
  """The baseline still rising at the protocol's longest length: the
  finals train that length (the grid's cap), and the report says it had
  not converged; before it has run there, no length is chosen."""
  from ra_jax.report.build import find
  from study.report import validation
  protocol = grid.protocol(FASHION)
  rising = [{"step": s, "eval/map": 0.7 + s / 24000}
            for s in range(200, 4801, 200)]
  _run(tmp_path, "length/ce/epochs12", "length", "ce", 0.8,
       metrics=rising[:12])
  _run(tmp_path, "length/cam/epochs12", "length", "cam", 0.8,
       metrics=rising[:12])
  runs = find(str(tmp_path))
  assert validation.final_length(runs, protocol) is None
  _run(tmp_path, "length/ce/epochs24", "length", "ce", 0.9, metrics=rising)
  runs = find(str(tmp_path))
  assert validation.final_length(runs, protocol) == (24, "ce", False)
  lines = validation.length_section(runs, protocol, str(tmp_path), "fig")
  assert ("cross-entropy had not converged at 24 epochs, the longest length"
          " the protocol affords: the final runs train 24 epochs, short of"
          " convergence.") in "\n".join(lines)


def test_the_final_group_has_its_table_and_significance(staged):
  _, report = staged
  assert "## final/full" in report
  # labelled with the hyperparameters that differ from the library's
  # defaults: the validated ones of the configs
  assert ("| class anchor margin (margin=6.46, min_norm=2.2) | 3 |"
          " **0.8600 ± 0.0100** |") in report
  # per-query AP averaged over seeds: cam (0.9, 0.8, -, 0.85) vs ce (0.7,
  # 0.8, 0.5, 0.75): differences 0.2, 0, 0.1 on the 3 shared queries
  assert "| cross-entropy | +0.0600 | [+0.0000, +0.2000] |" in report
  assert ("Significance against the best baseline, cross-entropy: mean mAP"
          " difference +0.0600, per seed +0.0500, +0.0600, +0.0700; paired"
          " bootstrap over 3 queries: 95% interval [+0.0000, +0.2000], p =") in (
      report)
  # t = 0.06 / (0.01 / sqrt(3)) = 10.39 on 2 degrees of freedom
  assert ("; paired t-test over the 3 seeds: t = 10.39, p = 0.0091, so the"
          " difference is not significant at the 5% level over queries, and"
          " significant at the 5% level over seeds.") in report
  assert "| +0.0500, +0.0600, +0.0700 | 0.0091 |" in report
  # the two-stage rows of results.json files written before search rows
  assert "| label | 1 | 0.9000 | 0.8500 | 0.100 | 0.500 |" in report


def test_the_answer_leads_with_the_final_verdicts(staged):
  _, report = staged
  answer = report.split("## The answer")[1].split("## Protocol")[0]
  assert ("- **final/full** (2 of 2 losses, 3 of 3 seeds each): The class"
          " anchor margin"
          " loss has the best mean mAP (0.8600), +0.0600 over") in answer
  assert "significant at the 5% level over seeds." in answer
  assert ("one label list gives full-ranking mAP 0.9000 against exact"
          " search's 0.8600, computing 0.1000 of its distances") in answer
  assert ("- Targets: 1 of 6 met; not met: cross-entropy, exact search, mAP"
          " 0.8000 against >= 0.85;") in answer


def test_targets_are_judged_as_printed(staged):
  _, report = staged
  assert "### Targets (final/full, mean over seeds)" in report
  for row in ("| cross-entropy, exact search, mAP | >= 0.85 | 0.8000 | no,"
              " by 0.0500 |",
              "| class anchor margin, exact search, mAP | >= 0.87 | 0.8600 |"
              " no, by 0.0100 |",
              "| class anchor margin, two-stage with 1 label list,"
              " full-ranking mAP | >= 0.93 | 0.9000 | no, by 0.0300 |",
              "| class anchor margin, two-stage with 1 label list, distances"
              " per query, share of exact | <= 0.1 | 0.1000 | yes |",
              "| cross-entropy, exact search, P@10 | >= 0.88 | 0.8000 | no,"
              " by 0.0800 |"):
    assert row in report, row


def test_the_ablation_reads_each_terms_activity(staged):
  _, report = staged
  margin, min_norm = (grid.recipe(FASHION, "cam").loss[k] for k in ("margin",
                                                          "min_norm"))
  assert (f"| no_repel | 0.8300 | 0.8300 | nan | nan | 0.8400 | 25% | 0% |"
          f" {3.0 / (2 * margin):.2f} | {4.4 / min_norm:.2f} |") in report
  assert "No row drops the attractor" in report
  assert ("- no_repel (without the repel term): mAP -0.0250 against all"
          f" three terms; the closest two anchors end {3.0 / (2 * margin):.2f}"
          " x 2m apart.") in report
  assert ("- all three terms and no_norm differ only in the norm term and"
          " give identical results to the last digit: with it on, the term"
          " was > 0 at 0% of the logged steps") in report
  assert "no_repel and no_norm" not in report  # two terms apart
  assert "| all three terms | 0.8550 |" in report


def test_a_directory_without_a_protocol_is_no_study(tmp_path):
  _run(tmp_path, "tuning/cam/trial0", "tuning", "cam", 0.80)
  with pytest.raises(FileNotFoundError, match="holds no study"):
    build.write_study_report(str(tmp_path), str(tmp_path / "R.md"),
                             analyze=False)


def test_variants_not_run_yet_are_listed_and_nothing_is_adopted(tmp_path):
  (tmp_path / "protocol.json").write_text(json.dumps(grid.protocol(FASHION)))
  _run(tmp_path, "tuning/cam/trial0", "tuning", "cam", 0.80)
  _run(tmp_path, "variants/cam/tuned/seed1", "variants", "cam", 0.79, 1)
  for seed in (0, 1):
    _run(tmp_path, f"variants/cam/push/seed{seed}", "variants", "cam", 0.9,
         seed)
  output = tmp_path / "RESULTS.md"
  build.write_study_report(str(tmp_path), str(output), analyze=False)
  report = output.read_text()
  assert "| push | 0.9000 | 0.9000 | 0.9000 |" in report
  assert "| attract_warmup | - | - | - |" in report and "(not run yet)" in (
      report)
  assert "Not every setting has every seed yet." in report
  assert "Adopted" not in report


def test_search_spaces_trials_match_the_report_budget():
  assert grid.protocol(FASHION)["search"]["trials_per_loss"] == (
      FASHION.search.trials)


def test_the_budget_is_counted_per_loss_from_the_files(staged):
  _, report = staged
  section = report.split("## Selection budget per loss")[1].split("\n## ")[0]
  assert ("| class anchor margin | 2 | 800 | 11 | 4,400 | its best trial:"
          " 2 runs, 800 steps |") in section
  assert "| cross-entropy | 2 | 800 | 0 | 0 |" in section
  assert ("The class anchor margin loss had a further round of 11 variant"
          " runs (4,400 steps) that no other loss had") in section


def test_the_variants_gain_is_reported_with_its_budget(staged):
  _, report = staged
  section = report.split("## The adopted variant's final runs")[1].split(
      "\n## ")[0]
  assert "(11 runs, 4,400 steps of validation training" in section
  # the variant's seeds: 0.855, 0.865, 0.875 against 0.85, 0.86, 0.87
  assert ("| final/full | 3 | 0.8600 | 0.8650 | +0.0050, +0.0050, +0.0050 |"
          " +0.0050 | 0.0000 |") in section


def test_two_stage_search_for_every_loss_with_the_centroid_control(staged):
  _, report = staged
  section = report.split("### Two-stage search for every loss (final/full)"
                         )[1].split("\n## ")[0]
  assert ("| class anchor margin | its own | 0.8600 | 0.9000 | nan | nan |"
          " 0.8500 | 0.9500 | 0.100 |") in section
  assert ("| cross-entropy | database centroids | 0.8000 | 0.8600 |") in (
      section)
  assert ("Best with one label list: class anchor margin, stage 1 by its"
          " own (0.9000); with database centroids instead: 0.8800"
          " (+0.0200).") in section
  answer = report.split("## The answer")[1].split("## Protocol")[0]
  assert ("stage 1 by the database's class centroids instead of the anchors"
          " 0.8800.") in answer
  assert ("Of the other losses, cross-entropy reaches the most with one"
          " label list: 0.8600, stage 1 by the database's centroids.") in (
      answer)


def test_a_final_group_with_one_loss_says_there_is_no_comparison_yet(
    tmp_path):
  (tmp_path / "protocol.json").write_text(json.dumps(grid.protocol(FASHION)))
  _run(tmp_path, "tuning/cam/trial0", "tuning", "cam", 0.80)
  _run(tmp_path, "tuning/ce/trial0", "tuning", "ce", 0.70)
  _run(tmp_path, "final/full/cam/seed0", "final", "cam", 0.89)
  output = tmp_path / "RESULTS.md"
  build.write_study_report(str(tmp_path), str(output), analyze=False)
  answer = output.read_text().split("## The answer")[1].split("## ")[0]
  assert ("- **final/full** (1 of 2 losses, 1 of 3 seeds each, not"
          " finished): no comparison yet: it needs a second loss's runs."
          ) in answer


def test_a_carried_setting_reports_its_split_and_its_diverged_trials(
    tmp_path):
  """font_chars: selection on the builder's own validation split, each
  loss's hyperparameters carried over from Fashion-MNIST, and a trial that
  diverged counted in the budget and named, not scored."""
  setting = settings.FONT_CHARS
  (tmp_path / "protocol.json").write_text(json.dumps(grid.protocol(setting)))
  for loss in setting.losses:
    for k in range(setting.search.trials):
      _run(tmp_path, f"tuning/{loss}/trial{k}", "tuning", loss,
           0.3 + k / 100 + (loss == "cam") / 10, setting=setting,
           steps=800)
  diverged = tmp_path / "tuning/triplet/trial3/results.json"
  diverged.write_text(json.dumps({grid.DIVERGED: "non-finite loss at step"
                                  " 150", "steps": 150}))
  output = tmp_path / "RESULTS.md"
  build.write_study_report(str(tmp_path), str(output), analyze=False)
  report = output.read_text()
  assert ("Setting: font_chars (100 classes), ResNet-18 (width 8, 0.20M"
          " parameters).") in report
  assert "the dataset's own 'validation' split as the queries" in report
  assert "carried over from the best trial of setting 'fashion_mnist'" in (
      report)
  assert "| triplet | sphere | 4 of 4 | 1 | 0.3200 |" in report
  assert "- Diverged: tuning/triplet/trial3 (step 150;" in report
  assert "The search is not finished" not in report
  assert "| class anchor margin | l2 | 4 of 4 | 0 | 0.4300 |" in report
  # the budget counts the diverged trial's runs and steps
  assert "| triplet | 4 | 2,550 |" in report
  assert "a selection budget the same for every loss" in report


def test_the_verdict_across_settings_leads_the_first_report(staged,
                                                             tmp_path):
  """Every setting with results gets its report; the first one opens with
  the table across settings: a verdict per final group by the t-test over
  seeds, two-stage search against its controls, and the status of a
  setting still selecting."""
  root, _ = staged
  fonts = tmp_path / "fonts"
  fonts.mkdir()
  font_setting = settings.FONT_CHARS
  (fonts / "protocol.json").write_text(json.dumps(
      grid.protocol(font_setting)))
  for k in range(2):
    _run(fonts, f"tuning/cam/trial{k}", "tuning", "cam", 0.2,
         setting=font_setting)
  # the length stage after the tuning: the focus loss still rising at 12
  # epochs, the baseline converged there (the final length)
  for loss, rise in (("cam", 0.05), ("arcface", 0.001)):
    _run(fonts, f"length/{loss}/epochs12", "length", loss, 0.9,
         setting=font_setting,
         metrics=[{"step": s, "eval/map": 0.8 + rise * s / 800}
                  for s in (200, 400, 600, 800)])
  reports = {"fashion_mnist": (str(root), str(tmp_path / "R.md")),
             "font_chars": (str(fonts), str(tmp_path / "R_font.md")),
             "fashion_mnist_vit": (str(tmp_path / "vit"),
                                   str(tmp_path / "R_vit.md"))}
  # a setting whose first stage has started but no run has finished
  (tmp_path / "vit").mkdir()
  (tmp_path / "vit" / "protocol.json").write_text(json.dumps(
      grid.protocol(settings.FASHION_MNIST_VIT)))
  written = build.write_all(analyze=False, reports=reports)
  assert written == [str(tmp_path / "R.md"), str(tmp_path / "R_font.md")]
  report = (tmp_path / "R.md").read_text()
  header, _, rest = report.partition("## Across settings")
  assert header.startswith("# Results") and "## " not in header
  table = rest.split("\n\n")[2]
  # cam 0.86 against cross-entropy 0.80 on 3 seeds, t-test p = 0.0091
  assert ("| Fashion-MNIST, ResNet-18 (width 8, 0.19M parameters) |"
          " final/full |"
          " 3 of 3 | 0.8600 | cross-entropy | 0.8000 | 0.0091 |") in table
  assert "| **wins** | 0.9000 |" in table
  assert ("| [font_chars (100 classes), ResNet-18 (width 8, 0.20M"
          " parameters)](R_font.md) |"
          " - | - | - | - | - | - | - | selection under way: tuning 2 of 20"
          " runs, length 2 runs (12 epochs chosen) |") in table
  assert "ViT" not in table
  assert rest.index("## The answer") > rest.index("| [font_chars")
  assert "Generated by `python -m study.report` on" in report
  assert (tmp_path / "R_font.md").read_text().startswith("# Results")


def test_the_verdict_word_follows_the_seed_test():
  from study.report import across

  def verdict(focus, baseline, p, seeds=3):
    return across.GroupVerdict("final/full", seeds, 3, focus, "ce",
                               baseline, p, None, *[float("nan")] * 3).word
  assert verdict(0.9, 0.8, 0.01) == "wins"
  assert verdict(0.8, 0.9, 0.01) == "loses"
  assert verdict(0.9, 0.8, 0.2) == "ties"
  assert verdict(0.9, 0.8, None) == "ties"
  assert verdict(0.9, 0.8, 0.01, seeds=2) == "provisional"


def test_runs_retrained_from_scratch_are_listed_with_their_outcome(
    staged, tmp_path):
  import shutil
  from study import reproduce
  root = shutil.copytree(staged[0], tmp_path / "study")
  committed = root / "final/full/cam/seed0"
  rerun = shutil.copytree(committed, tmp_path / "rerun")
  reproduce.record(str(root), "final/full/cam/seed0",
                   *reproduce.compare_runs(str(committed), str(rerun)),
                   str(committed), str(rerun))
  results = json.loads((rerun / "results.json").read_text())
  results["exact"]["map"] += 0.001
  results.setdefault("run", {})["machine"] = {
      "cpu": "AMD EPYC", "cpu_model": "family 99 model 1 stepping 0",
      "isa": ["avx2"], "usable_cores": 1}
  (rerun / "results.json").write_text(json.dumps(results))
  for _ in range(2):  # a second attempt is kept beside the first
    reproduce.record(str(root), "final/full/ce/seed0",
                     *reproduce.compare_runs(str(committed), str(rerun)),
                     str(committed), str(rerun))
  output = tmp_path / "R.md"
  build.write_study_report(str(root), str(output), analyze=False)
  section = output.read_text().split("## Reproduced from scratch")[1]
  assert "1 of 3 attempts reproduce to the bit" in section
  assert "| final/full/cam/seed0 |" in section and "| reproduces |" in (
      section)
  assert section.count("| final/full/ce/seed0 |") == 2
  # the committed run records no machine
  assert ("| **differs** | family 99 model 1 stepping 0, 1 core (not"
          " recorded) |"
          " results.json/exact/map: ") in section
  assert "## Reproduced from scratch" not in staged[1]  # none recorded


def test_a_provisional_verdict_averages_only_the_shared_seeds(tmp_path):
  """While seeds are missing, the focus loss's mean is over the seeds its
  rival has too, not over all of its own."""
  from ra_jax.report import build as report_build
  from study.report import across
  for loss, seed, value in (("cam", 0, 0.80), ("cam", 1, 0.90),
                            ("ce", 0, 0.85)):
    _run(tmp_path, f"final/full/{loss}/seed{seed}", "final", loss, value,
         seed, per_query=[value] * 4,
         extra=_searches(value, learned=(value + 0.05, 0.9, 0.9),
                         centroids=(value + 0.01, 0.9, 0.9)))
  verdict = across.group_verdict(report_build.find(str(tmp_path)),
                                 "final/full", "cam", planned=3)
  assert (verdict.seeds, verdict.word) == (1, "provisional")
  assert verdict.focus_map == pytest.approx(0.80)  # seed 0 only, not 0.85
  assert verdict.baseline_map == pytest.approx(0.85)
  assert verdict.two_stage == pytest.approx(0.85)
  assert verdict.two_stage_centroids == pytest.approx(0.81)


def test_the_answer_ranks_the_losses_on_the_seeds_every_loss_has(tmp_path):
  """Over all of each loss's seeds the class anchor margin loss would lead
  (0.875 over seeds 0 and 1, against cross-entropy's seed 0 alone); the
  answer and the table across settings rank on seed 0, which every loss
  has, and say so, while the group's table shows every seed."""
  (tmp_path / "protocol.json").write_text(json.dumps(grid.protocol(FASHION)))
  for loss, seed, value in (("cam", 0, 0.80), ("cam", 1, 0.95),
                            ("ce", 0, 0.85), ("triplet", 0, 0.84),
                            ("triplet", 1, 0.70)):
    _run(tmp_path, f"final/full/{loss}/seed{seed}", "final", loss, value,
         seed, per_query=[value] * 4,
         extra=_searches(value, learned=(value + 0.05, 0.9, 0.9),
                         centroids=(value + 0.01, 0.9, 0.9)))
  report = build.study_report(str(tmp_path), str(tmp_path / "R.md"),
                              analyze=False)
  text = "\n".join(report.lines)
  answer = text.split("## The answer")[1].split("## Protocol")[0]
  assert ("- **final/full** (3 losses, 1 to 2 of 3 seeds each, not"
          " finished; compared on seed 0, which every loss has): The class"
          " anchor margin loss does not win here: cross-entropy has the best"
          " mean mAP (0.8500), the class anchor margin loss is ranked 3 of 3"
          " with 0.8000 (-0.0500).") in answer
  assert "mean mAP difference -0.0500, per seed -0.0500;" in answer
  assert ("one label list gives full-ranking mAP 0.8500 against exact"
          " search's 0.8000") in answer
  [verdict] = report.verdicts
  assert (verdict.baseline, verdict.seeds) == ("ce", 1)
  assert verdict.focus_map == pytest.approx(0.80)
  # the group's own table: every seed; its verdict sentence: seed 0
  section = text.split("## final/full")[1]
  assert "| 2 | **0.8750 ± 0.1061** |" in section
  assert ("is ranked 3 of 3 with 0.8000 (-0.0500). Ranked on seed 0, which"
          " every loss has; the table shows every seed.") in section
