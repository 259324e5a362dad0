// Reading files that come from outside (a config, a manifest, the state file) as a root daemon
// must: opened without blocking (a FIFO in place of the file must never hang a read), then only
// if it is a regular file, and only up to a size.
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';

export type FileText = { text: string; version: string } | { error: string; missing?: boolean };

const FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;

function opened(e: unknown): FileText {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return { error: 'does not exist (or is a dangling symlink)', missing: true };
  return { error: `cannot be opened (${code ?? (e as Error).message})` };
}

const tooBig = (size: number, max: number) => ({ error: `is ${size} bytes, more than the ${max} allowed` });
const notRegular = { error: 'is not a regular file (a FIFO, a device, a socket or a folder)' };
/** Size, times and inode: a file with the same version has not changed. */
const versionOf = (st: { dev: number; ino: number; size: number; mtimeMs: number; ctimeMs: number }) =>
  `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;

/**
 * The text of a regular file of at most `maxBytes`, or why not. `skipIf(version)` true: returns `{text: '', version}`
 * unread.
 */
export async function readRegularFile(
  path: string,
  maxBytes: number,
  skipIf?: (version: string) => boolean,
): Promise<FileText> {
  let fh;
  try {
    fh = await open(path, FLAGS);
  } catch (e) {
    return opened(e);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return notRegular;
    if (st.size > maxBytes) return tooBig(st.size, maxBytes);
    const version = versionOf(st);
    if (skipIf?.(version)) return { text: '', version };
    const buf = Buffer.alloc(st.size);
    let n = 0;
    while (n < st.size) {
      const { bytesRead } = await fh.read(buf, n, st.size - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    return { text: buf.subarray(0, n).toString('utf8'), version };
  } catch (e) {
    return { error: `cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  } finally {
    await fh.close();
  }
}

/** readRegularFile, synchronously (the ownership record is read at construction). */
export function readRegularFileSync(path: string, maxBytes: number): FileText {
  let fd;
  try {
    fd = openSync(path, FLAGS);
  } catch (e) {
    return opened(e);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return notRegular;
    if (st.size > maxBytes) return tooBig(st.size, maxBytes);
    const buf = Buffer.alloc(st.size);
    let n = 0;
    while (n < st.size) {
      const r = readSync(fd, buf, n, st.size - n, n);
      if (r === 0) break;
      n += r;
    }
    return { text: buf.subarray(0, n).toString('utf8'), version: versionOf(st) };
  } catch (e) {
    return { error: `cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  } finally {
    closeSync(fd);
  }
}
