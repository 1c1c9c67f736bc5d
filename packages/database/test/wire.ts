/**
 * PostgreSQL's wire protocol by hand, for tests that must send a message at a time (a Parse now,
 * its Bind later) to the embedded database's socket, as no `pg` call does on purpose.
 */
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import type pg from 'pg';

const cString = (text: string) => Buffer.from(`${text}\0`);
const int16 = (value: number) => {
  const bytes = Buffer.alloc(2);
  bytes.writeInt16BE(value);
  return bytes;
};
const int32 = (value: number) => {
  const bytes = Buffer.alloc(4);
  bytes.writeInt32BE(value);
  return bytes;
};
const typed = (type: string, body: Buffer) => Buffer.concat([Buffer.from(type), int32(body.length + 4), body]);

/** Frontend messages, on the unnamed statement and portal. */
export const frontend = {
  startup: () => {
    const body = Buffer.concat([
      int32(196_608),
      cString('user'),
      cString('postgres'),
      cString('database'),
      cString('postgres'),
      Buffer.from([0]),
    ]);
    return Buffer.concat([int32(body.length + 4), body]);
  },
  query: (sql: string) => typed('Q', cString(sql)),
  parse: (sql: string) => typed('P', Buffer.concat([cString(''), cString(sql), int16(0)])),
  bind: (...values: string[]) =>
    typed(
      'B',
      Buffer.concat([
        cString(''),
        cString(''),
        int16(0),
        int16(values.length),
        ...values.flatMap((value) => [int32(Buffer.byteLength(value)), Buffer.from(value)]),
        int16(0),
      ]),
    ),
  describePortal: () => typed('D', Buffer.concat([Buffer.from('P'), cString('')])),
  execute: (maxRows = 0) => typed('E', Buffer.concat([cString(''), int32(maxRows)])),
  flush: () => typed('H', Buffer.alloc(0)),
  sync: () => typed('S', Buffer.alloc(0)),
  terminate: () => typed('X', Buffer.alloc(0)),
};

/** What a reply said: its rows' first values, its errors' messages, and the types of its messages. */
export interface Reply {
  values: string[];
  errors: string[];
  types: string;
}

/** A connection that speaks the protocol message by message, reading replies as they come. */
export class WireConnection {
  readonly socket: Socket;
  #received = Buffer.alloc(0);
  #waiting: (() => void)[] = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk) => {
      this.#received = Buffer.concat([this.#received, chunk]);
      for (const wake of this.#waiting.splice(0)) wake();
    });
    socket.on('close', () => {
      for (const wake of this.#waiting.splice(0)) wake();
    });
  }

  /**
   * Connects to the socket `pool` uses and starts a session. `allowHalfOpen`: the socket stays
   * open on this side when the server ends its side, as a client that never closes.
   */
  static async open(pool: pg.Pool, options: { allowHalfOpen?: boolean } = {}): Promise<WireConnection> {
    const { host, port } = pool.options as { host: string; port: number };
    const socket = connect({ path: join(host, `.s.PGSQL.${port}`), allowHalfOpen: options.allowHalfOpen ?? false });
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const connection = new WireConnection(socket);
    connection.send(frontend.startup());
    await connection.reply('Z');
    return connection;
  }

  send(...messages: Buffer[]): void {
    this.socket.write(Buffer.concat(messages));
  }

  /** Bytes received and not yet read by `reply`. */
  get unread(): number {
    return this.#received.length;
  }

  /** Waits for whole messages up to one of type `last` (ReadyForQuery, PortalSuspended…), and reads them. */
  async reply(last: string): Promise<Reply> {
    for (;;) {
      const end = this.#endOf(last);
      if (end !== undefined) {
        const bytes = this.#received.subarray(0, end);
        this.#received = this.#received.subarray(end);
        return readReply(bytes);
      }
      if (this.socket.destroyed) throw new Error(`the connection closed before a ${last} message`);
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
  }

  #endOf(type: string): number | undefined {
    let offset = 0;
    while (offset + 5 <= this.#received.length) {
      const next = offset + 1 + this.#received.readInt32BE(offset + 1);
      if (next > this.#received.length) return undefined;
      if (String.fromCharCode(this.#received[offset] as number) === type) return next;
      offset = next;
    }
    return undefined;
  }
}

function readReply(bytes: Buffer): Reply {
  const reply: Reply = { values: [], errors: [], types: '' };
  let offset = 0;
  while (offset < bytes.length) {
    const type = String.fromCharCode(bytes[offset] as number);
    const end = offset + 1 + bytes.readInt32BE(offset + 1);
    reply.types += type;
    if (type === 'D') {
      const length = bytes.readInt32BE(offset + 7);
      reply.values.push(bytes.toString('utf8', offset + 11, offset + 11 + length));
    }
    if (type === 'E') {
      const message = bytes
        .toString('utf8', offset + 5, end)
        .split('\0')
        .find((field) => field.startsWith('M'));
      reply.errors.push(message?.slice(1) ?? '');
    }
    offset = end;
  }
  return reply;
}
