import { expect } from 'chai';
import { loadConfig } from '../../src/config';
import { ConfigError } from '../../src/errors';

describe('loadConfig', () => {
  it('needs no variable for the embedded default', () => {
    const config = loadConfig({});
    expect(config.queue).to.equal('sqlite:data/queue.db');
    expect(config.host).to.equal('127.0.0.1');
    expect(config.port).to.equal(8080);
    expect(config.publicUrl).to.equal('http://127.0.0.1:8080/files/');
    expect(config.daemons).to.be.at.least(1);
    expect(config.adminToken).to.equal(undefined);
  });

  it('reads whole numbers with their units', () => {
    const config = loadConfig({
      RENDER_TIMEOUT_SECONDS: '30',
      RENDER_DAEMONS: '3',
    });
    expect(config.timeoutSeconds).to.equal(30);
    expect(config.daemons).to.equal(3);
  });

  it('names the variable, the value and what it accepts', () => {
    expect(() => loadConfig({ RENDER_DAEMONS: 'many' })).to.throw(
      ConfigError,
      /RENDER_DAEMONS: got "many", expected a whole number from 1 to 64/,
    );
    expect(() => loadConfig({ RENDER_PORT: '70000' })).to.throw(
      ConfigError,
      /RENDER_PORT/,
    );
    expect(() => loadConfig({ RENDER_QUEUE: 'redis://x' })).to.throw(
      ConfigError,
      /RENDER_QUEUE: got "redis:\/\/x", expected sqlite:FILE or cloud-tasks:/,
    );
    expect(() => loadConfig({ RENDER_LOG_LEVEL: 'loud' })).to.throw(
      ConfigError,
      /RENDER_LOG_LEVEL/,
    );
    for (const notDecimal of ['1e1', '0x2', '0b1', '2.0'])
      expect(() => loadConfig({ RENDER_DAEMONS: notDecimal })).to.throw(
        ConfigError,
        /RENDER_DAEMONS: got ".*", expected a whole number/,
      );
  });

  it('reports every bad variable at once', () => {
    expect(() => loadConfig({ RENDER_DAEMONS: '0', RENDER_MAX_ATTEMPTS: 'x' }))
      .to.throw(ConfigError)
      .with.property('message')
      .that.matches(/RENDER_DAEMONS/)
      .and.matches(/RENDER_MAX_ATTEMPTS/);
  });

  it('checks combinations: the lease must outlast the render deadline', () => {
    expect(() =>
      loadConfig({ RENDER_LEASE_SECONDS: '30', RENDER_TIMEOUT_SECONDS: '60' }),
    ).to.throw(
      ConfigError,
      /RENDER_LEASE_SECONDS: got 30, expected more than RENDER_TIMEOUT_SECONDS \(60\)/,
    );
    expect(() =>
      loadConfig({
        RENDER_TIMEOUT_SECONDS: '10',
        RENDER_ASSET_TIMEOUT_SECONDS: '10',
      }),
    ).to.throw(
      ConfigError,
      /RENDER_ASSET_TIMEOUT_SECONDS: got 10, expected less than RENDER_TIMEOUT_SECONDS \(10\)/,
    );
    expect(
      loadConfig({
        RENDER_TIMEOUT_SECONDS: '10',
        RENDER_ASSET_TIMEOUT_SECONDS: '9',
      }).assetTimeoutSeconds,
    ).to.equal(9);
    expect(() => loadConfig({ RENDER_HEARTBEAT_MS: '30000' })).to.throw(
      ConfigError,
      /RENDER_HEARTBEAT_MS: got 30000, expected less than RENDER_HEARTBEAT_TIMEOUT_MS/,
    );
  });

  it('takes an empty or blank variable as unset', () => {
    const config = loadConfig({
      RENDER_PORT: ' ',
      RENDER_HOST: '',
      RENDER_PUBLIC_URL: '  ',
      RENDER_ADMIN_TOKEN: ' ',
      RENDER_LOG_LEVEL: '',
    });
    expect(config.port).to.equal(8080);
    expect(config.host).to.equal('127.0.0.1');
    expect(config.publicUrl).to.equal('http://127.0.0.1:8080/files/');
    expect(config.adminToken).to.equal(undefined);
    expect(config.logLevel).to.equal('info');
  });

  it('lets a command choose the log level used when none is set', () => {
    expect(loadConfig({}, { defaultLogLevel: 'warn' }).logLevel).to.equal(
      'warn',
    );
    expect(
      loadConfig({ RENDER_LOG_LEVEL: 'debug' }, { defaultLogLevel: 'warn' })
        .logLevel,
    ).to.equal('debug');
  });

  it('splits the static folders in search order', () => {
    const config = loadConfig({
      RENDER_STATIC_DIRS: 'static:/mnt/bucket/static',
    });
    expect(config.staticDirs).to.have.length(2);
    expect(config.staticDirs[1]).to.equal('/mnt/bucket/static');
  });
});
