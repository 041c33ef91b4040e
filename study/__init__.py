"""The study behind docs/RESULTS.md (not installed): which loss retrieves
best on Fashion-MNIST with a width-8 ResNet-18, under an equal selection
budget.

- `grid`: the protocol's plan in stages (tuning, variants, length, final,
  ablation, diagnosis), resumable, each finished run's files kept under
  results/grid (`python -m study.grid --stage STAGE`);
- `search_spaces`: each loss's search space and the shared trials;
- `rules`: the decisions the plan and the report share (adopted variant,
  converged length);
- `embedding_choices`: the diagnosis of where a run's embedding is taken;
- `report`: the study's report (`python -m study.report`), built on
  `ra_jax.report`'s generic sections.
"""
