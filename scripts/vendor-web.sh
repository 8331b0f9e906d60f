#!/usr/bin/env bash
# Refreshes the dashboard's vendored files in api/web/vendor from npm:
#   uPlot (MIT) for the charts, and the US states' shapes from us-atlas
#   (ISC; the shapes are the U.S. Census Bureau's cartographic boundaries,
#   public domain), turned into one SVG path per state by d3-geo.
# The dashboard is served from the binary, so `cargo run` needs no npm;
# this script runs only when a version changes. The versions are pinned here.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm init -y >/dev/null && npm install --no-audit --no-fund --silent \
  uplot@1.6.32 us-atlas@3.0.1 topojson-client@3.1.0 d3-geo@3.1.2)
out=api/web/vendor
cp "$work/node_modules/uplot/dist/uPlot.iife.min.js" "$work/node_modules/uplot/dist/uPlot.min.css" "$out/"
cp "$work/node_modules/uplot/LICENSE" "$out/LICENSE.uPlot"
cp "$work/node_modules/us-atlas/LICENSE" "$out/LICENSE.us-atlas"
NODE_PATH="$work/node_modules" node scripts/us-states.mjs "$work/node_modules/us-atlas/states-albers-10m.json" > "$out/us-states.json"
echo "vendored into $out:"; ls -l "$out"
