import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

import { InvalidArgumentError } from './errors.js';

/** Where the clients look when no address is given (nor `LOCKSERVER_ADDR`). */
export const DEFAULT_ADDR = '127.0.0.1:8080';

/**
 * `host:port`, `http://host:port`, `https://host:port` (or `ws://`, `wss://`), with or without
 * a trailing slash → the base URL `http(s)://host:port`. The port defaults to 8080.
 * @internal
 */
export function parseAddr(addr: string): string {
  const trimmed = addr.trim();
  if (trimmed === '') throw new InvalidArgumentError('the server address is empty');
  let scheme = 'http';
  let rest = trimmed;
  const match = /^([a-z]+):\/\//i.exec(trimmed);
  if (match) {
    const given = match[1]!.toLowerCase();
    if (given === 'http' || given === 'ws') scheme = 'http';
    else if (given === 'https' || given === 'wss') scheme = 'https';
    else throw new InvalidArgumentError(`bad server address ${JSON.stringify(addr)}: unknown scheme ${given}://`);
    rest = trimmed.slice(match[0].length);
  }
  rest = rest.replace(/\/+$/, '');
  if (rest === '' || /\s/.test(rest) || rest.includes('/')) {
    throw new InvalidArgumentError(
      `bad server address ${JSON.stringify(addr)}: expected host:port or http://host:port`,
    );
  }
  const withPort = hasPort(rest) ? rest : `${rest}:8080`;
  return `${scheme}://${withPort}`;
}

function hasPort(host: string): boolean {
  const colon = host.lastIndexOf(':');
  if (colon < 0) return false;
  const head = host.slice(0, colon);
  const port = host.slice(colon + 1);
  // `[::1]:8080` has a port; `[::1]` and `::1` do not.
  return /^\d{1,5}$/.test(port) && Number(port) <= 65535 && (!head.includes(':') || head.endsWith(']'));
}

/** A non-empty environment variable, or undefined. @internal */
export function env(key: string): string | undefined {
  const value = process.env[key];
  return value === undefined || value === '' ? undefined : value;
}

/**
 * The owner label used when none is given (nor `LOCKSERVER_OWNER`): `host:pid:random`, unique
 * to this process, so two processes never share an identity by accident.
 */
export const DEFAULT_OWNER = `${safeHostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;

function safeHostname(): string {
  try {
    return hostname() || 'node';
  } catch {
    return 'node';
  }
}

/**
 * A duration option in milliseconds: a finite number ≥ `min`, rounded up to whole
 * milliseconds (a wait is never shorter than asked). @internal
 */
export function millis(what: string, value: unknown, min = 0): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw new InvalidArgumentError(`${what} must be a number of milliseconds ≥ ${min}, not ${String(value)}`);
  }
  const ms = Math.ceil(value);
  if (ms > Number.MAX_SAFE_INTEGER) throw new InvalidArgumentError(`${what} is too large`);
  return ms;
}

/** A random `request_id` (128 bits, hex). @internal */
export function randomRequestId(): string {
  return randomBytes(16).toString('hex');
}
