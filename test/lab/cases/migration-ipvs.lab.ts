// A node moves from kube-proxy's ipvs mode to kube-ipvs and back without dropping traffic (support/migration.ts).
import { migrationCase } from '../support/migration.ts';

migrationCase('ipvs', 30102);
