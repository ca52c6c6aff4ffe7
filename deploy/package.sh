#!/bin/sh
# Pack a carweb release: every file git tracks (as it is in the working tree) and the built
# browser libraries (static/vendor, from `make assets`). `make build` runs it.
#   deploy/package.sh dist/carweb-VERSION.tar.gz
set -eu

out=$1
cd "$(dirname "$0")/.."
[ -f static/vendor/socket.io.min.js ] || { echo "package.sh: run 'make assets' first" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
{ git ls-files -z; find static/vendor -type f -print0; } | tar --null -czf "$out" -T -
echo "$out"
