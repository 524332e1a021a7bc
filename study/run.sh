#!/usr/bin/env bash
# The fair study (issue 15, study/README.md "The fair study"), its steps in order. Every step resumes from what study/
# holds, so rerun the script after an interruption or on a new checkout, and commit study/ (its records only:
# study/README.md) before a session ends.
#
#   bash study/run.sh             # every step
#   bash study/run.sh full report # some steps, in the order given
#
# Steps: tune (the 66-run grid, hours on 2 cores) -> recipes (bench.study.tune: recipes.json/.md) -> doubling (the
# selected recipes at twice the steps) -> check (bench.study.doubling: doubling.json/.md) -> longer (a 3 200-step link for
# contrastive tau 0.07, relational, similarity and SLidR, seed 0: doubling3200.json/.md) -> caches (the full suite's first
# run for 1 step into runs/warm-caches: generates the test and OOD worlds and fills their teacher-feature caches,
# one-time work kept out of the suite's time) -> full (the 33 students; its wall time is printed: run it from an
# empty study/full with nothing else running) -> references (ceiling, floor, teacher rows; the 4x wider student's ceiling) -> toy -> report.
# The claims study (study/README.md, "The claims study"), not in the default list: claims-tune (its 56-run grid) ->
# claims-recipes (bench.study.tune: claims_recipes.json/.md) -> claims (the 60 students: 4 configurations x 800, 1 600
# and 3 200 steps x seeds 1-5, about 7.5 h; run it from a git worktree pinned at one commit) -> claims-references (the
# few-shot row from random initialisation, seeds 1-5).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(tune recipes doubling check longer caches full references toy report)
for step in "${steps[@]}"; do
  start=$SECONDS
  echo "== $step ($(date -u +%FT%TZ))"
  case $step in
    tune) $py -m bench.run --suite tune --out study/tune --jobs 2 --no-progress ;;
    recipes) $py -m bench.study.tune --suite tune --runs study/tune --out bench/suites/recipes.json ;;
    doubling) $py -m bench.run --suite doubling --out study/doubling1600 --jobs 2 --no-progress ;;
    check) $py -m bench.study.doubling study/tune study/doubling1600 --recipes bench/suites/recipes.json \
             --out study/results/doubling ;;
    longer) for run in $($py -c "from bench.suites import load_suite, run_names
print(*[n for n in run_names(load_suite('doubling').runs)
        if n.startswith(('contrastive-tau0.07-', 'relational-lam', 'similarity-', 'slidr-'))])"); do
              $py -m bench.run --suite doubling --steps 3200 --out study/doubling3200 --run "$run" --no-progress
            done
            $py -m bench.study.doubling study/doubling1600 study/doubling3200 --out study/results/doubling3200 ;;
    caches) first=$($py -c "from bench.suites import load_suite, run_names; print(run_names(load_suite('full').runs)[0])")
            $py -m bench.run --suite full --steps 1 --run "$first" --out runs/warm-caches --no-progress ;;
    full) $py -m bench.run --suite full --out study/full --jobs 2 --no-progress ;;
    references) $py -m bench.study.reference --suite full --rows ceiling floor teacher --out study/full/references \
                  --no-progress
                # the size point of the curve that chose the student: the ceiling of a 4x wider one
                $py -m bench.study.reference --suite full --rows ceiling --name wide --out study/full/references \
                  --set "student_overrides={init_dim: 16, planes: [32, 32, 64, 64, 64, 32, 32, 32]}" --no-progress ;;
    claims-tune) $py -m bench.run --suite claims_tune --out study/claims_tune --jobs 2 --no-progress ;;
    claims-recipes) $py -m bench.study.tune --suite claims_tune --runs study/claims_tune \
                      --out bench/suites/claims_recipes.json ;;
    claims) $py -m bench.run --suite claims --out study/claims --jobs 2 --no-progress ;;
    claims-references) $py -m bench.study.reference --suite claims --rows few_shot_random --seeds 1 2 3 4 5 \
                         --out study/claims/references --no-progress ;;
    toy) $py -m bench.run --suite toy --out runs/toy --no-progress ;;  # 2 min; its figures need snapshots.npz
    report) $py -m geomstruct.report --runs study/full runs/toy ;;
    *) echo "unknown step: $step (tune recipes doubling check longer caches full references claims-tune" \
            "claims-recipes claims claims-references toy report)" >&2; exit 2 ;;
  esac
  echo "== $step done in $((SECONDS - start)) s"
done
