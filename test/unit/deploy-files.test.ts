// The deployment files: shell scripts pass bash -n and shellcheck, both
// Dockerfiles lint clean and name only files and scripts that exist, and the
// bucket and shutdown scripts fail (or succeed) the way they say they do.
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { validate } from 'dockerfile-utils';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const SCRIPTS = path.join(ROOT, 'scripts');
const ENTRYPOINT = path.join(SCRIPTS, 'docker-entrypoint.sh');
const DOCKERFILES = ['Dockerfile', 'Dockerfile-local'];
/** The LSP severity of an error, as dockerfile-utils reports it. */
const SEVERITY_ERROR = 1;

function shellScripts(): string[] {
  return fs
    .readdirSync(SCRIPTS)
    .filter((name) => name.endsWith('.sh'))
    .map((name) => path.join(SCRIPTS, name));
}

/** One Dockerfile instruction: keyword and its text, continuations joined. */
interface Instruction {
  keyword: string;
  args: string;
}

function instructions(file: string): Instruction[] {
  const text = fs
    .readFileSync(path.join(ROOT, file), 'utf8')
    .replace(/\\\n/g, ' ');
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const [keyword = '', ...rest] = line.split(/\s+/);
      return { keyword: keyword.toUpperCase(), args: rest.join(' ') };
    });
}

/** The words of a shell-form or JSON exec-form command. */
function commandWords(args: string): string[] {
  const text = args.replace(/^--\S+\s+/g, '').trim();
  if (text.startsWith('[')) return JSON.parse(text) as string[];
  return text.split(/\s+/);
}

function packageScripts(): Record<string, string> {
  const manifest = JSON.parse(
    fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'),
  ) as { scripts?: Record<string, string> };
  return manifest.scripts ?? {};
}

/** `npm run NAME` and `npm test` calls in a command text. */
function npmScriptsNamed(text: string): string[] {
  const names = [...text.matchAll(/npm run (\S+)/g)].map((m) => m[1] ?? '');
  if (/npm test\b/.test(text)) names.push('test');
  return names;
}

describe('deployment scripts', function () {
  it('finds the scripts it checks', function () {
    const names = shellScripts().map((file) => path.basename(file));
    for (const name of [
      'docker-entrypoint.sh',
      'mount-bucket.sh',
      'shutdown-script.sh',
    ]) {
      assert.ok(names.includes(name), `scripts/${name} is missing`);
    }
  });

  for (const file of shellScripts()) {
    const name = path.relative(ROOT, file);

    it(`${name} parses with bash -n`, function () {
      const run = spawnSync('bash', ['-n', file], { encoding: 'utf8' });
      assert.equal(run.status, 0, run.stderr);
    });

    it(`${name} passes shellcheck`, function () {
      const run = spawnSync('shellcheck', ['--format=gcc', file], {
        encoding: 'utf8',
      });
      assert.equal(run.error, undefined, 'shellcheck is not installed');
      assert.equal(run.status, 0, run.stdout + run.stderr);
    });

    it(`${name} stops on errors (set -euo pipefail) and is executable`, function () {
      const text = fs.readFileSync(file, 'utf8');
      assert.match(text, /^set -euo pipefail$/m);
      assert.ok((fs.statSync(file).mode & 0o111) !== 0, 'not executable');
    });
  }

  it('shellcheck reports a broken script (the check can fail)', function () {
    const run = spawnSync('shellcheck', ['-'], {
      input: '#!/usr/bin/env bash\nrm -rf $1/*\n',
      encoding: 'utf8',
    });
    assert.notEqual(run.status, 0);
  });
});

describe('Dockerfiles', function () {
  for (const file of DOCKERFILES) {
    it(`${file} lints without errors or warnings`, function () {
      const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
      const problems = validate(text).map(
        (d) => `line ${d.range.start.line + 1}: ${d.message}`,
      );
      assert.deepEqual(problems, []);
    });

    it(`${file} copies only paths that exist`, function () {
      const copies = instructions(file).filter(
        (i) => i.keyword === 'COPY' && !/--from=/.test(i.args),
      );
      for (const copy of copies) {
        const words = copy.args.split(/\s+/).filter((w) => !w.startsWith('--'));
        for (const source of words.slice(0, -1)) {
          assert.ok(
            fs.existsSync(path.join(ROOT, source)),
            `${file}: COPY ${source} does not exist`,
          );
        }
      }
    });

    it(`${file} runs only scripts and npm scripts that exist`, function () {
      const scripts = packageScripts();
      for (const i of instructions(file)) {
        if (!['RUN', 'CMD', 'ENTRYPOINT', 'HEALTHCHECK'].includes(i.keyword)) {
          continue;
        }
        for (const name of npmScriptsNamed(i.args)) {
          assert.ok(name in scripts, `${file}: npm script "${name}" missing`);
        }
        if (i.keyword === 'RUN') continue;
        for (const word of commandWords(i.args)) {
          if (!/^[\w.-]+\/[\w./-]+$/.test(word)) continue;
          const target = path.join(ROOT, word);
          assert.ok(fs.existsSync(target), `${file}: ${word} does not exist`);
          fs.accessSync(target, fs.constants.X_OK);
        }
      }
    });
  }

  it('the production image runs render-farm start through tini and the entrypoint', function () {
    const entry = instructions('Dockerfile').find(
      (i) => i.keyword === 'ENTRYPOINT',
    );
    const cmd = instructions('Dockerfile').find((i) => i.keyword === 'CMD');
    assert.deepEqual(commandWords(entry?.args ?? '[]'), [
      '/usr/bin/tini',
      '--',
      'scripts/docker-entrypoint.sh',
    ]);
    assert.deepEqual(commandWords(cmd?.args ?? '[]'), ['render-farm', 'start']);
    const link = instructions('Dockerfile').find(
      (i) =>
        i.keyword === 'RUN' && i.args.includes('/usr/local/bin/render-farm'),
    );
    assert.match(link?.args ?? '', /ln -s \/app\/bin\/render-farm\.js /);
  });

  it('the entrypoint becomes its command (same pid), render-farm start by default', function () {
    const bin = fakeBin({
      'render-farm': 'echo "pid=$$ args=$*"',
    });
    const run = (args: string[]) =>
      spawnSync(
        'bash',
        ['-c', 'echo "shell=$$"; exec "$0" "$@"', ENTRYPOINT, ...args],
        { encoding: 'utf8', env: { PATH: `${bin}:/usr/bin:/bin` } },
      );
    const plain = run([]);
    assert.equal(plain.status, 0, plain.stderr);
    const shell = /shell=(\d+)/.exec(plain.stdout)?.[1];
    assert.match(plain.stdout, new RegExp(`pid=${shell} args=start`));
    const other = run(['render-farm', 'resources', '--json']);
    assert.match(other.stdout, /args=resources --json/);
  });

  it('the entrypoint refuses half a bucket setting', function () {
    const result = spawnSync(ENTRYPOINT, [], {
      encoding: 'utf8',
      env: { PATH: '/usr/bin:/bin', RENDER_BUCKET: 'b' },
    });
    assert.equal(result.status, 64);
    assert.match(result.stderr, /set both RENDER_BUCKET and RENDER_BUCKET_DIR/);
  });

  it('the linter reports a broken Dockerfile (the check can fail)', function () {
    const errors = validate('FROM\nCOPY onlyone\nEXPOSE notaport\n').filter(
      (d) => d.severity === SEVERITY_ERROR,
    );
    assert.ok(errors.length >= 2, JSON.stringify(errors));
  });
});

/** A folder of stand-in commands put first (or alone) on PATH. */
function fakeBin(tools: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'deploy-bin-'));
  for (const [name, body] of Object.entries(tools)) {
    const file = path.join(dir, name);
    fs.writeFileSync(file, `#!/bin/bash\n${body}\n`);
    fs.chmodSync(file, 0o755);
  }
  // The real tools the script needs, and nothing else: no gcsfuse.
  for (const name of ['bash', 'mkdir', 'getent', 'mountpoint', 'cat']) {
    const real = ['/usr/bin', '/bin']
      .map((d) => path.join(d, name))
      .find((p) => fs.existsSync(p));
    if (real && !(name in tools)) fs.symlinkSync(real, path.join(dir, name));
  }
  return dir;
}

function mountBucket(args: string[], env: Record<string, string>) {
  return spawnSync(path.join(SCRIPTS, 'mount-bucket.sh'), args, {
    encoding: 'utf8',
    env,
  });
}

describe('scripts/mount-bucket.sh', function () {
  let work: string;

  beforeEach(function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'mount-bucket-'));
  });

  afterEach(function () {
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('explains its usage when arguments are missing', function () {
    const run = mountBucket([], { PATH: fakeBin({}) });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /usage: mount-bucket\.sh BUCKET DIR/);
  });

  it('says so when gcsfuse is not installed', function () {
    const run = mountBucket(['my-bucket', path.join(work, 'mnt')], {
      PATH: fakeBin({}),
    });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /gcsfuse is not installed/);
    assert.equal(fs.existsSync(path.join(work, 'mnt')), false);
  });

  it('rejects a bucket name that cannot exist', function () {
    const run = mountBucket(['My Bucket!', path.join(work, 'mnt')], {
      PATH: fakeBin({}),
    });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /bucket: got "My Bucket!"/);
  });

  it('names an unreadable credentials file and does not call gcsfuse', function () {
    const calls = path.join(work, 'calls');
    const bin = fakeBin({ gcsfuse: `echo "$@" >> ${calls}` });
    const run = mountBucket(['my-bucket', path.join(work, 'mnt')], {
      PATH: bin,
      GOOGLE_APPLICATION_CREDENTIALS: path.join(work, 'missing-key.json'),
    });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /GOOGLE_APPLICATION_CREDENTIALS: cannot read/);
    assert.equal(fs.existsSync(calls), false);
  });

  it('reports a failed mount with what to check', function () {
    const key = path.join(work, 'key.json');
    fs.writeFileSync(key, '{}');
    const bin = fakeBin({
      gcsfuse: 'echo "fuse: device not found" >&2; exit 1',
    });
    const run = mountBucket(['my-bucket', path.join(work, 'mnt')], {
      PATH: bin,
      GOOGLE_APPLICATION_CREDENTIALS: key,
    });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /could not mount gs:\/\/my-bucket/);
    assert.match(run.stderr, /\/dev\/fuse/);
  });

  it('mounts with the key file when everything is there', function () {
    const key = path.join(work, 'key.json');
    const calls = path.join(work, 'calls');
    fs.writeFileSync(key, '{}');
    const bin = fakeBin({ gcsfuse: `echo "$@" >> ${calls}` });
    const dir = path.join(work, 'mnt');
    const run = mountBucket(['gs://my-bucket', dir], {
      PATH: bin,
      GOOGLE_APPLICATION_CREDENTIALS: key,
    });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(
      fs.readFileSync(calls, 'utf8').trim(),
      `--implicit-dirs --key-file ${key} my-bucket ${dir}`,
    );
    assert.ok(fs.statSync(dir).isDirectory());
  });
});

/** Runs the shutdown script; resolves with its exit code and stderr. */
function shutdownScript(
  env: Record<string, string>,
): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      path.join(SCRIPTS, 'shutdown-script.sh'),
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } },
      (error, _stdout, stderr) => {
        const code = error ? Number(error.code ?? 1) : 0;
        resolve({ code, stderr });
      },
    );
  });
}

/**
 * A stand-in supervisor: a process that exits 0 some 300 ms after SIGTERM,
 * or ignores it. Resolves once its signal handler is installed.
 */
async function fakeSupervisor(ignoreTerm: boolean) {
  const onTerm = ignoreTerm
    ? '() => {}'
    : '() => setTimeout(() => process.exit(0), 300)';
  const body =
    `process.on('SIGTERM', ${onTerm}); setInterval(() => {}, 1000);` +
    " process.stdout.write('ready\\n');";
  const child = spawn(process.execPath, ['-e', body], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', () => reject(new Error('fake supervisor died')));
  });
  return { child, exited };
}

describe('scripts/shutdown-script.sh', function () {
  this.timeout(15_000);
  let work: string;

  beforeEach(function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shutdown-'));
  });

  afterEach(function () {
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('sends SIGTERM to the PID in the pid file and waits for the exit', async function () {
    const { child, exited } = await fakeSupervisor(false);
    const pidFile = path.join(work, 'supervisor.pid');
    fs.writeFileSync(pidFile, `${child.pid}\n`);

    const run = await shutdownScript({
      RENDER_PID_FILE: pidFile,
      RENDER_PORT: '1',
    });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(await exited, 0);
    assert.match(run.stderr, /supervisor exited/);
  });

  it('gives up after the wait when the supervisor does not exit', async function () {
    const { child, exited } = await fakeSupervisor(true);
    const pidFile = path.join(work, 'supervisor.pid');
    fs.writeFileSync(pidFile, `${child.pid}\n`);
    try {
      const run = await shutdownScript({
        RENDER_PID_FILE: pidFile,
        RENDER_SHUTDOWN_WAIT_SECONDS: '1',
        RENDER_PORT: '1',
      });
      assert.equal(run.code, 1);
      assert.match(run.stderr, /still running after 1 s/);
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
  });

  it('POSTs /api/drain with the admin token and waits until it stops', async function () {
    const seen: string[] = [];
    const server = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.authorization}`);
      if (req.method === 'POST' && req.url === '/api/drain') {
        res.writeHead(202).end();
        // The drained supervisor exits a moment later.
        setTimeout(() => server.close(), 500);
        server.closeIdleConnections();
        return;
      }
      res.writeHead(200).end('ok');
    });
    await new Promise<void>((resolve) =>
      server.listen(0, '127.0.0.1', resolve),
    );
    const { port } = server.address() as AddressInfo;

    const run = await shutdownScript({
      RENDER_ADMIN_TOKEN: 's3cret',
      RENDER_HOST: '0.0.0.0',
      RENDER_PORT: String(port),
      RENDER_PID_FILE: path.join(work, 'none.pid'),
    });
    server.close();
    assert.equal(run.code, 0, run.stderr);
    assert.equal(seen[0], 'POST /api/drain Bearer s3cret');
    assert.match(run.stderr, /drain accepted/);
  });
});
