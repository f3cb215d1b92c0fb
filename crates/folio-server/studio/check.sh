#!/usr/bin/env bash
# Fails when the committed build (dist/, what the folio binary embeds) is
# not what the sources build to: type-checks src/, builds it afresh into a
# temporary directory and compares every file. Run by scripts/e2e.
#
# After changing src/: `npm run build` here, and commit dist/ with it.
set -euo pipefail
cd "$(dirname "$0")"

[[ -d node_modules ]] || npm ci --no-audit --no-fund

fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT

npx --no-install tsc --noEmit
npx --no-install vite build --outDir "$fresh/dist" --emptyOutDir --logLevel warn

if ! diff -rq dist "$fresh/dist"; then
    echo "studio/check.sh: crates/folio-server/studio/dist differs from a fresh build of src/." >&2
    echo "  Run \`npm run build\` in crates/folio-server/studio and commit dist/." >&2
    exit 1
fi
echo "studio/check.sh: dist/ is the build of src/"
