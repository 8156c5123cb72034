import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import type { Browser } from 'puppeteer-core';
import pidtree from 'pidtree';
import type { Logger } from '../logger';

/** Flags every browser of the farm starts with. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-dev-shm-usage',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  // Pages rendering side by side are all "background" tabs but one; without
  // these, Chromium throttles their timers and animation frames and
  // document.fonts.ready can wait for ever.
  '--disable-background-timer-throttling',
  '--disable-backgrounding-occluded-windows',
  '--disable-renderer-backgrounding',
  // A runaway template script crashes its renderer at this heap size
  // instead of eating the machine's memory first.
  '--js-flags=--max-old-space-size=512',
];

/** Prefix of the temporary profile folders, so leftovers can be found. */
export const PROFILE_PREFIX = 'render-farm-profile-';

/** A launched browser with what is needed to watch and retire it. */
export interface BrowserHandle {
  browser: Browser;
  /** Process id of the browser's main process. */
  pid: number;
  /** Temporary profile folder, removed when the browser is retired. */
  profileDir: string;
  launchedAtMs: number;
  /** Renders started on this browser. */
  renders: number;
}

/** Starts Chromium with the farm's flags and a fresh temporary profile. */
export async function launchBrowser(
  executablePath: string,
  protocolTimeoutMs: number,
): Promise<BrowserHandle> {
  const profileDir = fs.mkdtempSync(path.join(os.tmpdir(), PROFILE_PREFIX));
  try {
    const browser = await puppeteer.launch({
      executablePath,
      headless: true,
      args: CHROMIUM_ARGS,
      userDataDir: profileDir,
      protocolTimeout: protocolTimeoutMs,
      // The daemon decides when the browser goes; Chromium must not die
      // with a signal meant for the daemon's own clean-up.
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    });
    const pid = browser.process()?.pid ?? 0;
    return { browser, pid, profileDir, launchedAtMs: Date.now(), renders: 0 };
  } catch (error) {
    removeProfile(profileDir);
    throw error;
  }
}

/**
 * Closes a browser and removes its profile. A browser that does not close
 * within `graceMs` is killed with its whole process tree, so no renderer
 * or zygote process outlives it.
 */
export async function retireBrowser(
  handle: BrowserHandle,
  logger: Logger,
  graceMs = 3_000,
): Promise<void> {
  const tree = await processTree(handle.pid, logger);
  let timer: NodeJS.Timeout | undefined;
  const closed = handle.browser.close().then(
    () => true,
    (error: unknown) => {
      logger.debug('browser close failed; killing it', {
        pid: handle.pid,
        error: String(error),
      });
      return false;
    },
  );
  const timedOut = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), graceMs);
  });
  const ok = await Promise.race([closed, timedOut]);
  clearTimeout(timer);
  // puppeteer starts Chromium as the leader of its own process group; a
  // crashed browser's zygote and renderers are no longer its descendants,
  // but they are still in that group.
  if (!ok) killAll([-handle.pid, handle.pid, ...tree], logger);
  await killProfileSurvivors(handle.profileDir, logger);
  removeProfile(handle.profileDir, logger);
}

/**
 * Process ids of every live (not zombie) process whose command line names
 * the profile folder: what is left of a browser (Linux /proc).
 */
export function processesUsingProfile(
  profileDir: string,
  logger?: Logger,
): number[] {
  const found: number[] = [];
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch (error) {
    // No /proc (not Linux): nothing can be checked, and leftovers of a
    // browser go unnoticed.
    logger?.warn('cannot list processes; browser leftovers not checked', {
      profile: profileDir,
      error: errorText(error),
    });
    return found;
  }
  for (const name of entries) {
    try {
      const cmdline = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8');
      if (cmdline.includes(profileDir)) found.push(Number(name));
    } catch (error) {
      // ENOENT/ESRCH: the process ended while listing, not a survivor.
      // Anything else hides a process that may be one.
      if (isGone(error)) continue;
      logger?.warn('cannot read a process command line', {
        pid: Number(name),
        profile: profileDir,
        error: errorText(error),
      });
    }
  }
  return found;
}

/**
 * Kills processes still using a retired browser's profile and logs an
 * error naming any that survive: a leak the operator must know of.
 */
async function killProfileSurvivors(
  profileDir: string,
  logger: Logger,
): Promise<void> {
  const left = processesUsingProfile(profileDir, logger);
  if (left.length === 0) return;
  logger.warn('browser processes outlived their browser; killing them', {
    pids: left,
    profile: profileDir,
  });
  killAll(left, logger);
  await new Promise((resolve) => setTimeout(resolve, 200));
  const survivors = processesUsingProfile(profileDir, logger);
  if (survivors.length > 0) {
    logger.error('browser processes survived SIGKILL', {
      pids: survivors,
      profile: profileDir,
    });
  }
}

/**
 * Process ids of every descendant of `pid` (empty when it has none, or
 * when they cannot be listed: logged as a warning then, since a kill of
 * the tree would miss them).
 */
export async function processTree(
  pid: number,
  logger?: Logger,
): Promise<number[]> {
  if (!pid) return [];
  try {
    return await pidtree(pid);
  } catch (error) {
    if (!isAlive(pid)) {
      // pidtree fails when the process is already gone: it has no children.
      logger?.debug('process gone; no tree to list', {
        pid,
        error: errorText(error),
      });
    } else {
      logger?.warn('cannot list the process tree; it may be incomplete', {
        pid,
        error: errorText(error),
      });
    }
    return [];
  }
}

/**
 * Memory of a process and its descendants, in bytes (Linux): the sum of
 * their proportional set sizes. Summing RSS instead would count Chromium's
 * shared binary once per process: about 1 GiB for an idle browser.
 */
export async function treeMemoryBytes(
  pid: number,
  logger?: Logger,
): Promise<number> {
  const pids = [pid, ...(await processTree(pid, logger))];
  let total = 0;
  for (const one of pids) total += residentBytes(one, logger);
  return total;
}

function residentBytes(pid: number, logger?: Logger): number {
  try {
    const rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const kb = /^Pss:\s+(\d+)/m.exec(rollup)?.[1];
    if (kb) return Number(kb) * 1024;
  } catch (error) {
    // Kernels before 4.14 have no smaps_rollup: fall back to RSS below.
    // Not allowed to read it (another user's process): the memory limit
    // cannot see this process, which the operator must know.
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      if (!isGone(error)) {
        logger?.warn('cannot read process memory; counted as 0', {
          pid,
          error: errorText(error),
        });
      }
      return 0;
    }
  }
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = /VmRSS:\s+(\d+)/.exec(status)?.[1];
    return kb ? Number(kb) * 1024 : 0;
  } catch (error) {
    // The process ended between listing and reading: it holds no memory.
    if (!isGone(error)) {
      logger?.warn('cannot read process memory; counted as 0', {
        pid,
        error: errorText(error),
      });
    }
    return 0;
  }
}

/** Whether a process exists (a zombie counts); EPERM means it does. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether a /proc read failed because the process is gone. */
function isGone(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ESRCH';
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function killAll(pids: number[], logger: Logger): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch (error) {
      logger.debug('process already gone', { pid, error: String(error) });
    }
  }
}

/** Removes a browser's temporary profile folder; missing is fine. */
export function removeProfile(dir: string, logger?: Logger): void {
  // Chromium keeps its singleton socket in a folder of its own in the temp
  // folder, linked from the profile; it removes it only on a clean exit.
  const socketDir = singletonSocketDir(dir, logger);
  if (socketDir) fs.rmSync(socketDir, { recursive: true, force: true });
  fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** The folder the profile's singleton socket link points into, if any. */
function singletonSocketDir(
  profileDir: string,
  logger?: Logger,
): string | undefined {
  let target: string;
  try {
    target = fs.readlinkSync(path.join(profileDir, 'SingletonSocket'));
  } catch (error) {
    // ENOENT: no browser ever ran on it, or it exited cleanly. Anything
    // else may leave Chromium's socket folder behind in the temp folder.
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT')
      logger?.warn('cannot read the singleton socket link of a profile', {
        profile: profileDir,
        error: errorText(error),
      });
    return undefined;
  }
  const folder = path.dirname(target);
  // Only Chromium's own folder, never whatever a link might point at.
  return path.dirname(folder) === os.tmpdir() &&
    /^\.?org\.chromium\.Chromium\.\w+$/.test(path.basename(folder))
    ? folder
    : undefined;
}
