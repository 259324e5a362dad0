#!/bin/sh
# Runs inside the lab VM from the repository root: every case file (or those named), as one TAP stream.
export PATH="$PWD/node_modules/.bin:$PATH"
if [ $# -eq 0 ]; then set -- test/lab/cases/*.lab.ts; fi
exec tap --reporter=tap --disable-coverage --allow-empty-coverage --timeout=300 --jobs=1 "$@"
