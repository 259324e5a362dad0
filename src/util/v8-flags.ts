// The V8 flags kube-ipvs runs with, passed on node's command line by every launcher this
// repository ships: the bin's shebang (src/cli.ts), the npm scripts, and the lab. A test keeps
// them in step with this list.
//
// `--optimize-for-size` trades some speed for a smaller resident set: with 10 000 Services x 10
// endpoints, RSS is about 150 MB instead of 200-300 MB and a full plan takes roughly twice as long
// (still well inside the sync budget). perf/plan.bench.ts measures both settings in one run.
//
// Not applied at run time with v8.setFlagsFromString: the type stripper's WebAssembly is already
// compiled by then, and changing V8 flags after start is unsupported.
export const DAEMON_V8_FLAGS: readonly string[] = ['--optimize-for-size'];
