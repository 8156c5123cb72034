import fs from 'node:fs/promises';
import path from 'node:path';
import { StorageError } from '../errors';

/**
 * Where linked documents go: a directory (locally `data/output`, in
 * production a mounted bucket) and the public base URL links are built
 * from. A document is stored under its task id, so a repeated task
 * overwrites its own file and never another's.
 */
export class DocumentStore {
  constructor(
    readonly dir: string,
    readonly publicUrl: string,
  ) {}

  /**
   * Writes a document atomically (a temporary file renamed into place) and
   * returns its public URL. Throws a {@link StorageError} when it cannot.
   */
  async save(taskId: string, filename: string, pdf: Buffer): Promise<string> {
    const key = this.keyOf(taskId, filename);
    const target = path.join(this.dir, key);
    const temporary = `${target}.${process.pid}.${Date.now()}.part`;
    try {
      await fs.mkdir(path.dirname(target), { recursive: true });
      await fs.writeFile(temporary, pdf);
      await fs.rename(temporary, target);
    } catch (error) {
      await fs.rm(temporary, { force: true }).catch(() => undefined);
      throw new StorageError(
        `could not store ${key}: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
    return this.urlOf(key);
  }

  /** The storage key of a task's document: `<task id>/<file name>`. */
  keyOf(taskId: string, filename: string): string {
    return `${safeSegment(taskId)}/${safeSegment(filename)}`;
  }

  /** The public URL of a key, each segment percent-encoded. */
  urlOf(key: string): string {
    return this.publicUrl + key.split('/').map(encodeURIComponent).join('/');
  }
}

/** A path segment that cannot climb out of its folder. */
function safeSegment(name: string): string {
  const cleaned = name.replace(/[/\\\0]/g, '_').replace(/^\.+/, '_');
  return cleaned === '' ? '_' : cleaned;
}
