import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { StorageError } from '../../src/errors';
import { DocumentStore } from '../../src/storage/storage';

describe('DocumentStore', () => {
  const dir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'rf-store-'));

  it('stores a document under its task id and links it with encoded names', async () => {
    const store = new DocumentStore(dir(), 'https://cdn.example.org/pdf/');
    const url = await store.save(
      'T3',
      'Binary Cards (with numbers - a4).pdf',
      Buffer.from('%PDF-1'),
    );
    expect(url).to.equal(
      'https://cdn.example.org/pdf/T3/Binary%20Cards%20(with%20numbers%20-%20a4).pdf',
    );
    expect(
      fs.readFileSync(
        path.join(store.dir, 'T3', 'Binary Cards (with numbers - a4).pdf'),
        'utf8',
      ),
    ).to.equal('%PDF-1');
  });

  it('overwrites its own file when a task is repeated, leaving one object and no temporary files', async () => {
    const store = new DocumentStore(dir(), 'http://x/');
    await store.save('T3', 'a.pdf', Buffer.from('one'));
    await store.save('T3', 'a.pdf', Buffer.from('two'));
    expect(fs.readdirSync(path.join(store.dir, 'T3'))).to.deep.equal(['a.pdf']);
    expect(
      fs.readFileSync(path.join(store.dir, 'T3', 'a.pdf'), 'utf8'),
    ).to.equal('two');
  });

  it('keeps names from climbing out of the folder', () => {
    const store = new DocumentStore('/out', 'http://x/');
    for (const [id, name] of [
      ['../../etc', '../passwd'],
      ['..', '..'],
      ['a\\..\\b', '/etc/passwd'],
    ] as const) {
      const key = store.keyOf(id, name);
      expect(key.split('/')).to.have.length(2);
      expect(path.resolve('/out', key).startsWith('/out/')).to.equal(true);
    }
    expect(store.keyOf('../../etc', '../passwd')).to.equal('etc/__passwd');
  });

  it('stores a Cloud Tasks task under its short id, not its full name', async () => {
    const store = new DocumentStore(dir(), 'http://x/files/');
    const url = await store.save(
      'projects/p/locations/l/queues/q/tasks/0f3a9c',
      'a.pdf',
      Buffer.from('%PDF-1'),
    );
    expect(url).to.equal('http://x/files/0f3a9c/a.pdf');
    expect(fs.readdirSync(store.dir)).to.deep.equal(['0f3a9c']);
  });

  it('fails with a StorageError when the folder cannot be written', async () => {
    const file = path.join(dir(), 'not-a-folder');
    fs.writeFileSync(file, 'x');
    const store = new DocumentStore(file, 'http://x/');
    let error: unknown;
    try {
      await store.save('T', 'a.pdf', Buffer.from('x'));
    } catch (caught) {
      error = caught;
    }
    expect(error).to.be.instanceOf(StorageError);
    expect((error as Error).message).to.match(/could not store T\/a\.pdf/);
  });
});
