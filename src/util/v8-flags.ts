// The V8 flags kube-ipvs runs with, passed on node's command line by every launcher this
// repository ships: the bin's shebang (src/cli.ts), the npm scripts, and the lab. A test keeps
// them in step with this list.
//
// `--optimize-for-size` trades some speed for a smaller resident set: with 10 000 Services x 10
// endpoints, RSS is about 150 MB instead of 200-300 MB and a full plan takes roughly twice as long
// (still well inside the sync budget). perf/plan.bench.ts measures both settings in one run.
//
// `--heap-growing-percent=100`: the old generation may double before the next full collection. With
// `--optimize-for-size` alone V8 lets it grow little, and under churn (each change's objects promoted to the old
// generation) it marked the whole heap again and again: in `npm run bench:race:native` at 10 000 Services (kube-ipvs
// alone, 60 s of 10 writes a second, one run each, 2026-12-04) churn CPU was 7.99 / 7.70 s without it, 5.81 s at
// 50, 4.34 s at 100, 3.07 s at 200; RSS after the churn 328-330 MB for all but 200 (590 MB, as without
// `--optimize-for-size`: 570 MB, 4.26 s). At 1 000 Services (two runs each): 1.06 / 1.19 s against 1.72 / 1.68 s,
// RSS 189-191 MB against 154-155 MB. A larger young generation (`--max-semi-space-size=16`) did not help (7.60 s),
// nor did the compilers (7.94 / 8.28 s). Most of that was the dry run's in-memory kernel (100 000 destinations
// in the heap) being marked: on IPVS in the lab (A/B in one boot at 10 000, two rounds each) churn CPU stayed the
// same (18.8 / 18.7 s against 17.9 / 22.1 s), cold start went 0.8x (150-158 s against 175-208 s) and RSS 1.15x
// (298-304 MB against 259-260 MB). Kept for the cold start, within the memory goal (1.5x kube-proxy's).
//
// `--no-opt --no-maglev --no-sparkplug`: V8's interpreter only, no compiler generating machine code
// for JavaScript (WebAssembly, which `--jitless` would switch off, still works: the HTTP client's
// parser is WebAssembly). kube-ipvs waits on the API server and the kernel; its JavaScript per
// change is tens of microseconds. Measured in one `npm run bench:race` run each (1 000 Services,
// lab VM, kube-ipvs alone, 2026-12-02): RSS after the churn 139 MB with the compilers, 111 MB
// without them (the compilers' code and zones, and the node binary's compiler pages not touched);
// churn CPU 24.4 s vs 20.0 s; cold start 22.7 s vs 22.6 s. Natively (perf/plan.bench.ts, 10 000
// Services) the interpreter costs: one slice change 125 µs instead of 53 µs, the model load 1.0 s
// instead of 0.37 s, a full plan 0.59 s instead of 0.48 s; the synthetic scrape and the health
// bench stayed inside their targets. `--no-opt --no-maglev` alone (Sparkplug kept) measured the
// same RSS and 23.8 CPU s.
//
// `--no-concurrent-sparkplug --no-maglev-build-code-on-background --no-maglev-deopt-data-on-background`
// (EXIT_DEADLOCK_V8_FLAGS, also given to the benchmarks' and the lab's own Node processes):
// the compiler work seen allocating on the JavaScript heap from V8's worker threads moves to the
// main thread. Node 24 can deadlock at
// exit (nodejs/node#54918): process.exit joins V8's worker threads while a background compile job
// allocating there (Sparkplug's whole compile; Maglev's code object and deopt data) waits, in
// AwaitCollectionBackground, for a garbage collection only the exiting main thread could run.
// `kube-ipvs run --once` hung that way in one CI run; with tap's coverage hooks loaded it hung in
// 11 of 120 runs here (gdb: Maglev BuildCodeObject, Sparkplug BaselineCompiler::Build), with these
// flags in 0 of 150 (and 0 of 40 in every test run: test/cli.test.ts). Maglev and TurboFan still
// optimize on the worker threads; no hang seen here was in a TurboFan job. Turning
// concurrent optimization off altogether (--no-concurrent-recompilation) also stopped the hangs
// (with --no-concurrent-sparkplug; alone it still hung 4 in 120) but made the lab's synthetic scrape
// 10-25% slower; these flags measured the same as none there and on this host. test/cli.test.ts
// keeps a diagnostic report if the entry point ever hangs again.
//
// Not applied at run time with v8.setFlagsFromString: the type stripper's WebAssembly is already
// compiled by then, and changing V8 flags after start is unsupported.
export const EXIT_DEADLOCK_V8_FLAGS: readonly string[] = [
  '--no-concurrent-sparkplug',
  '--no-maglev-build-code-on-background',
  '--no-maglev-deopt-data-on-background',
];
export const DAEMON_V8_FLAGS: readonly string[] = [
  '--optimize-for-size',
  '--heap-growing-percent=100',
  '--no-opt',
  '--no-maglev',
  '--no-sparkplug',
  ...EXIT_DEADLOCK_V8_FLAGS,
];
