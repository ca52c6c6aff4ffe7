#!/bin/sh
# Copy the browser libraries the pages load from node_modules (after `npm ci`) into
# static/vendor/: the one list of them, for `make assets` and the Dockerfile.
set -eu
mkdir -p static/vendor
cp node_modules/socket.io-client/dist/socket.io.min.js static/vendor/
cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css static/vendor/
