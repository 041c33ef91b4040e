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
grid --setting fashion_mnist --stage final
grid --setting fashion_mnist --stage variant_final
for stage in tuning length final; do
  grid --setting font_chars --stage "$stage"
  grid --setting fashion_mnist_vit --stage "$stage"
done
