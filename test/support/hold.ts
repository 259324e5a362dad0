// Holds a daemon's sync under test in one of its IPVS dumps (as one of 10 000 Services would keep it busy) until
// the test releases it, and reaches the same in-memory kernel around such a hold.
import { FakeIpvs } from '../../src/dataplane/ipvs/fake.ts';

export function holdNextServiceDump(ipvs: FakeIpvs): {
  /** Whether a dump is being held (the sync reached it). */
  held: () => boolean;
  release: () => void;
  /** The kernel's services, read around the hold. */
  services: FakeIpvs['services'];
} {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const services = ipvs.services.bind(ipvs);
  let held = false;
  ipvs.services = async () => {
    if (!held) {
      held = true;
      await gate;
    }
    return services();
  };
  return { held: () => held, release, services };
}

/** Holds the next destination dump of `ipvs` (a sync's) until released; later ones go through. */
export function holdNextDestinationDump(ipvs: FakeIpvs): { held: () => boolean; release: () => void } {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const dump = ipvs.destinations.bind(ipvs);
  let held = false;
  ipvs.destinations = async (...a: Parameters<FakeIpvs['destinations']>) => {
    if (!held) {
      held = true;
      await gate;
    }
    return dump(...a);
  };
  return { held: () => held, release };
}

/**
 * The same in-memory kernel as another socket would reach it (writes alongside a sync): its methods as the class has
 * them, so what a test patches on `ipvs` itself (a held dump) does not hold these; `onCall` sees each call's name.
 */
export function otherSocket(ipvs: FakeIpvs, onCall: (method: string) => void = () => {}): FakeIpvs {
  return new Proxy(ipvs, {
    get: (target, prop) => {
      const m = Reflect.get(FakeIpvs.prototype, prop) as unknown;
      if (typeof m !== 'function') return Reflect.get(target, prop);
      return (...a: unknown[]) => {
        onCall(String(prop));
        return (m as (...x: unknown[]) => unknown).apply(target, a);
      };
    },
  });
}
