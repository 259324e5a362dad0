// The V8 flags kube-ipvs runs with, passed on node's command line by every launcher this
// repository ships: the bin's shebang (src/cli.ts), the npm scripts, and the lab. A test keeps
// them in step with this list.
//
// `--optimize-for-size` trades some speed for a smaller resident set: with 10 000 Services x 10
// endpoints, RSS is about 150 MB instead of 200-300 MB and a full plan takes roughly twice as long
// (still well inside the sync budget). perf/plan.bench.ts measures both settings in one run.
//
// `--no-concurrent-recompilation --no-concurrent-sparkplug`: the optimizing (Maglev, TurboFan)
// and baseline (Sparkplug) compilers run on the main thread instead of V8's worker threads. Node 24
// can deadlock at exit (nodejs/node#54918): process.exit joins the worker threads while a
// background compile job waits, in AwaitCollectionBackground, for a garbage collection only the
// exiting main thread could run. `kube-ipvs run --once` hung that way in one CI run; with tap's
// coverage hooks loaded it hung in 11 of 120 runs here, with these flags in 0 of 150 (test/cli.test.ts
// keeps a diagnostic report if it ever hangs again). The plan and scrape benchmarks measured the
// same with and without them, within this machine's noise.
//
// Not applied at run time with v8.setFlagsFromString: the type stripper's WebAssembly is already
// compiled by then, and changing V8 flags after start is unsupported.
export const DAEMON_V8_FLAGS: readonly string[] = ['--optimize-for-size', '--no-concurrent-recompilation', '--no-concurrent-sparkplug'];
