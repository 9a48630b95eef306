#!/usr/bin/env bash
# The dependency floors in pyproject.toml are true: a fresh venv gets the LOWEST version of every direct core
# dependency that [project].dependencies allows (uv's --resolution lowest-direct; what they pull in comes at its
# newest, as it would for a user who installs toxcmp next to those versions), and the tests that need no more than
# the core run there. A floor that does not work fails this script.
#
# Left out on purpose: the `local` extra (torch, transformers, accelerate, gguf), the `data` extra (datasets) and
# llama.cpp. Any torch but 2.13.0 is a multi-GB CUDA download, and transformers/datasets would pull
# huggingface_hub above its floor, which would void the check. A test that reaches for one of them is reported as
# skipped (scripts/floors_plugin.py); the main suite (`make test`) covers them at the versions .venv has.
#
# Usage: scripts/check_floors.sh [extra pytest args]   (FLOORS_VENV=/tmp/toxcmp-floors, PYTHON=python3)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
VENV=${FLOORS_VENV:-/tmp/toxcmp-floors}
PY=$VENV/bin/python

rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV"
"$PY" -m pip install --quiet uv
uv() { "$VENV/bin/uv" "$@"; }

"$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
  >"$VENV/floors.in"
uv pip install --quiet --python "$PY" --resolution lowest-direct -r "$VENV/floors.in"
uv pip freeze --python "$PY" >"$VENV/floors.txt"
# toxcmp itself (editable) and its test tools (the dev extra), with every installed version held where it is
uv pip install --quiet --python "$PY" -c "$VENV/floors.txt" -e '.[dev]'
if ! cmp -s "$VENV/floors.txt" <(uv pip freeze --python "$PY" | grep -F -x -f "$VENV/floors.txt"); then
  echo "check_floors: installing the test tools moved a floor" >&2
  exit 1
fi
names=$(sed -E 's/^([A-Za-z0-9_.-]+).*/\1/' "$VENV/floors.in" | tr '\n' ' ')
echo "check_floors: $(for n in $names; do grep -i -E "^${n//_/[-_]}==" "$VENV/floors.txt"; done | tr '\n' ' ')"

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=scripts
unset TOXCMP_REQUIRE_LLAMACPP  # no llama.cpp here: its tests skip (the main suite requires them)
# the same two passes as `make test`, without the slow tests (they load models: torch)
set +e
"$PY" -m pytest -q -p floors_plugin -p no:cacheprovider -n 2 --dist loadfile -m "not slow and not serial" "$@"
parallel=$?
"$PY" -m pytest -q -p floors_plugin -p no:cacheprovider -m "serial and not slow" "$@"
serial=$?
set -e
echo "check_floors: parallel pass exit $parallel, serial pass exit $serial, $((SECONDS - started)) s in all"
for rc in $parallel $serial; do [ "$rc" -eq 0 ] || [ "$rc" -eq 5 ] || exit 1; done
