// Keeping lab case files apart inside the one VM they share:
// - resetNode(): whatever an earlier case file left (it hung and was killed, or its teardown
//   failed) is removed before a case builds its node: stray processes, network namespaces, the
//   bridge and dummy interface, IPVS services, kube-ipvs' iptables chains and ipsets, conntrack.
// - watchExit(): a case file still alive some seconds after its teardown reports what keeps it
//   alive (open handles, child processes) and exits non-zero, instead of hanging until tap's
//   timeout kills it with nothing said.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';

const run = (cmd: string, ...args: string[]) => {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
  } catch {
    return '';
  }
};

const BUILTIN: Record<string, string[]> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
  raw: ['PREROUTING', 'OUTPUT'],
  security: ['INPUT', 'FORWARD', 'OUTPUT'],
};

interface Proc {
  pid: number;
  ppid: number;
  state: string;
  cmd: string;
}

function procs(): Proc[] {
  const out: Proc[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').join(' ').trim();
      out.push({ pid: Number(d), ppid: Number(rest[1]), state: rest[0]!, cmd });
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/** This process and its ancestors. */
function lineage(all: Proc[]): Set<number> {
  const byPid = new Map(all.map((p) => [p.pid, p]));
  const keep = new Set<number>();
  for (let p = byPid.get(process.pid); p && !keep.has(p.pid); p = byPid.get(p.ppid)) keep.add(p.pid);
  return keep;
}

/**
 * Removes what earlier case files left. In the guest, PID 1 runs the one command and every
 * orphan is reparented to it: any user process under PID 1 that is not one of our ancestors is
 * a leftover (an earlier case's kube-ipvs, backends, clients).
 */
/** The lab's host-side veth ends of its backends (`vbe1`, `vbe2`...), as `ip -o link` lists them. */
export function hostVeths(): string[] {
  return [...run('ip', '-o', 'link', 'show').matchAll(/^\d+: (vbe\d+)[@:]/gm)].map((m) => m[1]!);
}

export function resetNode(): string[] {
  // Killing every orphan is right in the VM, where PID 1 runs only the lab; never on a host.
  if (!existsSync('/lab-results/cmd.sh')) throw new Error('resetNode() runs only inside the lab VM');
  const done: string[] = [];
  const all = procs();
  const mine = lineage(all);
  const stray = all.filter((p) => p.ppid === 1 && !mine.has(p.pid) && p.cmd !== '');
  for (const p of stray) {
    try {
      process.kill(p.pid, 'SIGKILL');
      done.push(`killed ${p.pid} ${p.cmd.slice(0, 120)}`);
    } catch {
      /* gone */
    }
  }
  // The host ends of the backends' veth pairs first: deleting a link takes its peer with it at once, while a
  // deleted namespace's devices go later, from the kernel's cleanup work, and a `vbeN` still there then makes the
  // next build's `ip link add vbeN` fail with "File exists" (one CI run lost all three migration cases so).
  for (const l of hostVeths()) {
    run('ip', 'link', 'del', l);
    done.push(`link ${l}`);
  }
  for (const n of run('ip', 'netns', 'list')
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter(Boolean)) {
    run('ip', 'netns', 'del', n);
    done.push(`netns ${n}`);
  }
  for (const l of ['kbr0', 'kube-ipvs0', 'vclient', 'vext']) {
    if (run('ip', 'link', 'show', l)) {
      run('ip', 'link', 'del', l);
      done.push(`link ${l}`);
    }
  }
  if (run('ipvsadm', '-Sn').trim()) {
    run('ipvsadm', '-C');
    done.push('ipvs services');
  }
  // The guest is ours alone: every table any case touched goes back to empty with ACCEPT policies.
  for (const family of ['iptables', 'ip6tables']) {
    for (const backend of ['nft', 'legacy']) {
      const text = run(`${family}-${backend}-save`);
      if (!/^-A |^:(KIPVS|KUBE)-/m.test(text)) continue;
      const tables = [...text.matchAll(/^\*(\w+)$/gm)].map((m) => m[1]!);
      const empty = tables
        .map((t) => `*${t}\n${(BUILTIN[t] ?? []).map((c) => `:${c} ACCEPT [0:0]`).join('\n')}\nCOMMIT\n`)
        .join('');
      try {
        execFileSync(`${family}-${backend}-restore`, [], {
          input: empty,
          stdio: ['pipe', 'ignore', 'pipe'],
          timeout: 30_000,
        });
        done.push(`${family}-${backend}: ${tables.join(', ')} emptied`);
      } catch (e) {
        done.push(`${family}-${backend}: could not empty (${(e as Error).message.split('\n')[0]})`);
      }
    }
  }
  // kube-proxy's too (the migration cases run it): its ipsets and nftables tables.
  for (const table of ['ip kube-proxy', 'ip6 kube-proxy']) {
    if (run('nft', 'list', 'table', ...table.split(' '))) {
      run('nft', 'delete', 'table', ...table.split(' '));
      done.push(`nftables ${table}`);
    }
  }
  const sets = run('ipset', 'list', '-n')
    .split('\n')
    .filter((s) => /^(KIPVS6?|KUBE)-/.test(s));
  for (const s of sets) run('ipset', 'destroy', s);
  if (sets.length) done.push(`${sets.length} ipsets`);
  run('conntrack', '-F');
  return done;
}

/** Describes what keeps this process's event loop alive and which children are still running. */
export function aliveReport(): string {
  const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles().map((h) => {
    const o = h as {
      constructor?: { name?: string };
      pid?: number;
      spawnfile?: string;
      remoteAddress?: string;
      remotePort?: number;
      localPort?: number;
      address?: () => unknown;
      fd?: number;
    };
    const name = o.constructor?.name ?? typeof h;
    if (o.pid) return `${name} pid ${o.pid} ${o.spawnfile ?? ''}`;
    if (o.remoteAddress) return `${name} ${o.remoteAddress}:${o.remotePort}`;
    if (typeof o.address === 'function') {
      try {
        return `${name} ${JSON.stringify(o.address())}`;
      } catch {
        /* not bound */
      }
    }
    return o.fd !== undefined ? `${name} fd ${o.fd}` : name;
  });
  const kids = procs()
    .filter((p) => p.ppid === process.pid)
    .map((p) => `${p.pid} [${p.state}] ${p.cmd.slice(0, 160)}`);
  return `resources: ${process.getActiveResourcesInfo().join(', ') || 'none'}\nhandles: ${handles.join('; ') || 'none'}\nchildren: ${kids.join('; ') || 'none'}`;
}

/**
 * Call when a case file is done (its teardown): if the process has not exited `ms` later, print
 * what is alive, kill the children and exit 1. The timer never keeps the process alive itself.
 */
export function watchExit(ms = 20_000): void {
  setTimeout(() => {
    process.stderr.write(
      `lab: ${process.argv[1]} did not exit ${ms / 1000} s after its teardown; still alive:\n${aliveReport()}\n`,
    );
    for (const p of procs().filter((x) => x.ppid === process.pid)) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    process.exit(1);
  }, ms).unref();
}
