import winston from 'winston';

/** Fields every log line of a part may carry. */
export type LogFields = Record<string, unknown>;

/** The logger type the parts receive. */
export type Logger = winston.Logger;

/**
 * The root logger: one JSON object a line on stderr, so stdout stays free
 * for command output (task ids, result lines).
 */
export const rootLogger: Logger = winston.createLogger({
  level: 'info',
  format: winston.format.combine(
    winston.format.timestamp(),
    winston.format.errors({ stack: false }),
    winston.format.json(),
  ),
  defaultMeta: { pid: process.pid },
  transports: [
    new winston.transports.Console({
      stderrLevels: Object.keys(winston.config.npm.levels),
    }),
  ],
});

/** A child logger for one part of the farm (`queue`, `render`, ...). */
export function partLogger(part: string, fields: LogFields = {}): Logger {
  return rootLogger.child({ part, ...fields });
}

/** Sets the level of every logger (`error`, `warn`, `info`, `debug`). */
export function setLogLevel(level: string): void {
  rootLogger.level = level;
}
