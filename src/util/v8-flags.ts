// The V8 flags kube-ipvs runs with, passed on node's command line by every launcher this
// repository ships: the bin's shebang (src/cli.ts), the npm scripts, and the lab. A test keeps
// them in step with this list.
//
// `--optimize-for-size` trades some speed for a smaller resident set: with 10 000 Services x 10
// endpoints, RSS is about 150 MB instead of 200-300 MB and a full plan takes roughly twice as long
// (still well inside the sync budget). perf/plan.bench.ts measures both settings in one run.
//
// `--no-wasm-tier-up`: the only WebAssembly kube-ipvs runs is Node's TypeScript stripper, at module
// load. In the lab VM (qemu TCG) V8 aborted several times inside a WebAssembly tier-up ("Check
// failed: it->second.Size() > offset" from Runtime_WasmTriggerTierUp), with --optimize-for-size
// set on the command line or at run time; never on this host. Keeping that code in the baseline
// compiler avoids the path and costs nothing measurable (about 270 ms per `plan` either way).
// Not applied at run time with v8.setFlagsFromString: the stripper is already compiled by then.
export const DAEMON_V8_FLAGS: readonly string[] = ['--optimize-for-size', '--no-wasm-tier-up'];
