#!/usr/bin/env bash
# mypy --strict over the package as it is installed: the top-level folders are mapped into
# the one namespace `toolgym`, which mypy cannot follow in place, so check a symlinked view.
set -euo pipefail
cd "$(dirname "$0")/.."
view=$(mktemp -d)
trap 'rm -rf "$view"' EXIT
mkdir "$view/toolgym"
for f in toolgym/*; do ln -s "$PWD/$f" "$view/toolgym/$(basename "$f")"; done
for d in server client envs taskgen; do ln -s "$PWD/$d" "$view/toolgym/$d"; done
cd "$view" && "$OLDPWD/.venv/bin/python" -m mypy --config-file "$OLDPWD/pyproject.toml" -p toolgym
