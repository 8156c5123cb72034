import { execFileSync } from 'node:child_process';
import { Renderer } from '../../src/render/renderer';
import type { RendererOptions } from '../../src/render/renderer';
import { partLogger } from '../../src/logger';
import { Catalogue } from '../../src/resources/catalogue';
import { checkTask } from '../../src/resources/task';
import type { RenderJob } from '../../src/resources/task';
import { STATIC_DIR, taskFor } from './resources';

/** Renderer settings for tests: short deadlines, the system Chromium. */
export function testRendererOptions(
  overrides: Partial<RendererOptions> = {},
): RendererOptions {
  return {
    chromiumPath: process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium',
    staticDirs: [STATIC_DIR],
    timeoutMs: 20_000,
    assetTimeoutMs: 3_000,
    pages: 2,
    browserMaxRenders: 1_000,
    browserMaxAgeMs: 3_600_000,
    browserMaxMemoryBytes: 8 * 1024 ** 3,
    ...overrides,
  };
}

/** A renderer over a resources root, with a job builder for its views. */
export function testRenderer(
  root: string,
  overrides: Partial<RendererOptions> = {},
) {
  const catalogue = Catalogue.load(root);
  const renderer = new Renderer(
    testRendererOptions(overrides),
    catalogue,
    partLogger('test-render'),
  );
  const job = (
    view: string,
    extra: Record<string, unknown> = {},
    taskId = 'test-task',
  ): RenderJob =>
    checkTask(taskFor(view, extra), taskId, catalogue, {
      maxCopies: 50,
      maxTaskBytes: 1_000_000,
    });
  return { renderer, catalogue, job };
}

/**
 * Live (not zombie) Chromium processes of a process tree: the descendants
 * of `rootPid` (daemons' browsers, renderers, zygotes) and any process that
 * names one of `profileDirs` (an orphan reparented to init). What
 * `pgrep -c chrom` counts, without the other suites running on the machine.
 * One `ps` line each.
 */
export function chromiumProcessesOf(
  rootPid: number,
  profileDirs: Iterable<string>,
): string[] {
  const lines = execFileSync('ps', ['-eo', 'pid=,ppid=,stat=,args='], {
    encoding: 'utf8',
  })
    .split('\n')
    .filter((line) => line.trim() !== '');
  const rows = lines.map((line) => {
    const [pid, ppid, stat, ...args] = line.trim().split(/\s+/);
    return {
      pid: Number(pid),
      ppid: Number(ppid),
      stat: stat ?? '',
      command: args[0] ?? '',
      args: args.join(' '),
      line,
    };
  });
  const children = new Map<number, number[]>();
  for (const row of rows)
    children.set(row.ppid, [...(children.get(row.ppid) ?? []), row.pid]);
  const tree = new Set<number>();
  const stack = [rootPid];
  while (stack.length > 0) {
    for (const child of children.get(stack.pop() as number) ?? []) {
      if (tree.has(child)) continue;
      tree.add(child);
      stack.push(child);
    }
  }
  const profiles = [...profileDirs];
  return rows
    .filter(
      (row) =>
        !row.stat.startsWith('Z') &&
        /chrom/i.test(row.command) &&
        (tree.has(row.pid) || profiles.some((dir) => row.args.includes(dir))),
    )
    .map((row) => row.line);
}
