#!/usr/bin/env bash
# The study's runs in the order they are owed, resumable: every run that
# has finished is under results/ and is skipped, an interrupted one resumes
# from its checkpoint. Start (or restart) it in the background with
#   nohup bash study/queue.sh >> runs/queue.log 2>&1 &
# and commit each finished run's files under results/ as they appear.
# Order: issue 29's reruns of the Fashion-MNIST finals first (issue 30 says
# they come first), then issue 30's settings, tuning before length before
# finals, font_chars first (its tuning is the cheaper).
set -u
cd "$(dirname "$0")/.." || exit 1
mkdir -p runs
# A stage that fails is reported and the queue goes on: another setting's
# stages do not depend on it (this setting's later ones say what is missing).
grid() {
  nice -n 10 .venv/bin/python -m study.grid "$@" ||
    echo "study/queue.sh: study.grid $* failed (exit $?)" >&2
}
# font_chars is built from Debian's font packages (1.2 GB to download, once
# per machine; apt-get needs root). Its stages check that the build is the
# one their finished runs used (study/dataset_record.py).
install_fonts() {
  local packages
  packages=$(.venv/bin/python -m ra_jax.data.builders.font_packages) || return 0
  # shellcheck disable=SC2086  # one word per package
  { apt-get install -y -q --no-install-recommends $packages ||
      { apt-get update -q &&
          apt-get install -y -q --no-install-recommends $packages; }
  } > runs/font_packages_apt.log 2>&1 ||
    echo "study/queue.sh: installing font_chars's fonts failed" \
      "(runs/font_packages_apt.log)" >&2
}
# Issue 29's runs all trained as one process on both cores: theirs stay so.
grid --setting fashion_mnist --stage final
grid --setting fashion_mnist --stage variant_final
install_fonts
# Issue 30's settings train two runs at once, one per core: 1.13-1.43x the
# images/s of one run on both (benchmarks/process_split.py,
# docs/benchmarks.md). Every run of these settings is pinned to one core
# (results.json records it): a run's last bits depend on its thread count.
for stage in tuning length final; do
  grid --setting font_chars --stage "$stage" --workers 2
  grid --setting fashion_mnist_vit --stage "$stage" --workers 2
done
