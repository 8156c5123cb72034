import fs from 'node:fs/promises';
import path from 'node:path';
import { StorageError, errorMessage } from '../errors';
import { partLogger } from '../logger';
import type { Logger } from '../logger';
import { shortTaskId } from '../queue/queue';

/**
 * Where linked documents go: a directory (locally `data/output`, in
 * production a mounted bucket) and the public base URL links are built
 * from. A document is stored under its task's short id (the last segment of
 * a Cloud Tasks name), so a repeated task overwrites its own file and never
 * another's.
 */
export class DocumentStore {
  /**
   * @param dir folder the documents are written under
   * @param publicUrl base of the links, ending in `/`
   * @param logger where clean-up failures go; default the `storage` part
   */
  constructor(
    readonly dir: string,
    readonly publicUrl: string,
    private readonly logger: Logger = partLogger('storage'),
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
      await this.removeTemporary(temporary);
      throw new StorageError(`could not store ${key}: ${errorMessage(error)}`, {
        cause: error,
      });
    }
    return this.urlOf(key);
  }

  /**
   * The storage key of a task's document: `<short task id>/<file name>`,
   * each segment kept from climbing out of its folder.
   */
  keyOf(taskId: string, filename: string): string {
    return `${safeSegment(shortTaskId(taskId))}/${safeSegment(filename)}`;
  }

  /** The public URL of a key, each segment percent-encoded. */
  urlOf(key: string): string {
    return this.publicUrl + key.split('/').map(encodeURIComponent).join('/');
  }

  /** Removes a failed write's temporary file; a leftover is only logged. */
  private async removeTemporary(file: string): Promise<void> {
    try {
      await fs.rm(file, { force: true });
    } catch (error) {
      this.logger.warn('could not remove a temporary file', {
        file,
        error: errorMessage(error),
      });
    }
  }
}

/** A path segment that cannot climb out of its folder. */
function safeSegment(name: string): string {
  const cleaned = name.replace(/[/\\\0]/g, '_').replace(/^\.+/, '_');
  return cleaned === '' ? '_' : cleaned;
}
