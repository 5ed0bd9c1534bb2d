#!/usr/bin/env bash
# Build .dvc-template/offline.html: the page `dvc plots show` writes, with vega, vega-lite and vega-embed
# inlined, so the plots render with no network (dvc's own page loads them from a CDN and is blank offline):
#
#   dvc plots show --html-template .dvc-template/offline.html
#
# The three libraries come from the npm registry (`npm pack`, once); the minified files stay in the
# git-ignored .dvc-template/ and are never committed. `--force` rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.dvc-template
VEGA=${VEGA_VERSION:-5.33.1} VEGA_LITE=${VEGA_LITE_VERSION:-5.23.0} VEGA_EMBED=${VEGA_EMBED_VERSION:-6.29.0}
if [ -s "$OUT/offline.html" ] && [ "${1:-}" != "--force" ]; then
  echo "$OUT/offline.html exists (--force rebuilds it)"
  exit 0
fi
command -v npm >/dev/null || { echo "error: npm is needed to fetch vega, vega-lite and vega-embed" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "vega@$VEGA" "vega-lite@$VEGA_LITE" "vega-embed@$VEGA_EMBED" >/dev/null)
mkdir -p "$OUT"
for pkg in "vega-$VEGA" "vega-lite-$VEGA_LITE" "vega-embed-$VEGA_EMBED"; do
  name=${pkg%-*}
  tar -xzf "$tmp/$pkg.tgz" -O "package/build/$name.min.js" > "$OUT/$name.min.js"
  if grep -q "</script" "$OUT/$name.min.js"; then
    echo "error: $name.min.js contains </script and cannot be inlined" >&2
    exit 1
  fi
done
{
  printf '<!DOCTYPE html>\n<html>\n<head>\n    {refresh_tag}\n    <meta charset="utf-8">\n'
  printf '    <title>DVC Plot (offline: vega %s, vega-lite %s, vega-embed %s inlined)</title>\n' "$VEGA" "$VEGA_LITE" "$VEGA_EMBED"
  for name in vega vega-lite vega-embed; do
    printf '    <script type="text/javascript">\n'
    cat "$OUT/$name.min.js"
    printf '\n    </script>\n'
  done
  printf '    <style>\n        table { border-spacing: 15px; }\n    </style>\n</head>\n<body>\n    {plot_divs}\n</body>\n</html>\n'
} > "$OUT/offline.html.tmp"
mv "$OUT/offline.html.tmp" "$OUT/offline.html"
echo "wrote $OUT/offline.html ($(wc -c < "$OUT/offline.html") bytes): dvc plots show --html-template $OUT/offline.html"
