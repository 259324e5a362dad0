// Processes that end with the test process that started them, however it ends: a test file killed
// by its timeout (tap: SIGALRM, then SIGKILL) runs no teardown, and its servers would live on
// (an etcd was seen running half an hour after such a run). Each long-lived child is started
// through `setpriv --pdeathsig KILL` (util-linux): the kernel kills it when its parent dies.
// Children are spawned from the main thread, which is what the parent-death signal follows.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/** `cmd args` prefixed so that the process dies with this one (as is where setpriv is missing). */
export function owned(cmd: string, args: string[]): [string, string[]] {
  return SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', cmd, ...args]] : [cmd, args];
}

/** spawn() of a process that dies with this one. */
export function spawnOwned(cmd: string, args: string[], opts: SpawnOptions): ChildProcess {
  const [c, a] = owned(cmd, args);
  return spawn(c, a, opts);
}

/** Whether children started here really die with us (false: no setpriv on this machine). */
export const childrenDieWithUs = SETPRIV !== undefined;
