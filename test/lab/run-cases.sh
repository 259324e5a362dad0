#!/bin/sh
# Runs inside the lab VM from the repository root: every case file (or those named), as one TAP stream.
export PATH="$PWD/node_modules/.bin:$PATH"
if [ $# -eq 0 ]; then set -- test/lab/cases/*.lab.ts; fi
# --liftoff-only: see LAB_V8_FLAGS in support/node.ts (V8 under qemu TCG); the
# other three: the exit deadlock in src/util/v8-flags.ts (as package.json tap.node-arg).
# --timeout=420: most case files take 1-3.5 minutes under TCG in a full run (the host busy with the rest of
# the suite); a hang is cut there, and the next file starts from a clean node. The longer ones set
# their own limit (health.lab.ts, the migration cases in support/migration.ts).
exec tap --node-arg=--liftoff-only --node-arg=--no-concurrent-sparkplug --node-arg=--no-maglev-build-code-on-background --node-arg=--no-maglev-deopt-data-on-background --reporter=tap --disable-coverage --allow-empty-coverage --timeout=420 --jobs=1 "$@"
