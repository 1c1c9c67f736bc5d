/**
 * A DNS server on loopback UDP for the document fetch's tests: each name answers its A and AAAA
 * records, is unknown (NXDOMAIN), or is never answered at all (a resolver that hangs: the
 * attacker's own name server). It counts the questions it got.
 */
import { createSocket } from 'node:dgram';
import type { AddressInfo } from 'node:net';

export type FakeDnsAnswer = { a?: string[]; aaaa?: string[] } | 'silent';

export interface FakeDns {
  /** `127.0.0.1:<port>`, for `Resolver#setServers`. */
  server: string;
  questions(name: string): number;
  close(): Promise<void>;
}

const TYPE_A = 1;
const TYPE_AAAA = 28;

export async function startFakeDns(names: Record<string, FakeDnsAnswer>): Promise<FakeDns> {
  const socket = createSocket('udp4');
  const asked = new Map<string, number>();
  socket.on('message', (query, peer) => {
    // The question: labels from byte 12, then its type and class.
    const labels: string[] = [];
    let offset = 12;
    while (query[offset] !== 0 && offset < query.length) {
      const length = query[offset] as number;
      labels.push(query.subarray(offset + 1, offset + 1 + length).toString('ascii'));
      offset += 1 + length;
    }
    const questionEnd = offset + 5;
    const name = labels.join('.').toLowerCase();
    const type = query.readUInt16BE(offset + 1);
    asked.set(name, (asked.get(name) ?? 0) + 1);
    const answer = names[name];
    if (answer === 'silent') return;
    const records =
      answer === undefined ? [] : ((type === TYPE_A ? answer.a : type === TYPE_AAAA ? answer.aaaa : []) ?? []);
    const header = Buffer.alloc(12);
    query.copy(header, 0, 0, 2); // the id
    header.writeUInt16BE(answer === undefined ? 0x8183 : 0x8180, 2); // a response; NXDOMAIN or no error
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(records.length, 6);
    const parts: Buffer[] = [header, query.subarray(12, questionEnd)];
    for (const address of records) {
      const data = type === TYPE_A ? Buffer.from(address.split('.').map(Number)) : ipv6Bytes(address);
      const record = Buffer.alloc(12);
      record.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
      record.writeUInt16BE(type, 2);
      record.writeUInt16BE(1, 4); // IN
      record.writeUInt32BE(60, 6);
      record.writeUInt16BE(data.length, 10);
      parts.push(record, data);
    }
    socket.send(Buffer.concat(parts), peer.port, peer.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return {
    server: `127.0.0.1:${(socket.address() as AddressInfo).port}`,
    questions: (name) => asked.get(name) ?? 0,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

/** The 16 bytes of an IPv6 address written with at most one `::`. */
function ipv6Bytes(address: string): Buffer {
  const [head = '', tail] = address.split('::');
  const groups = (text: string) => (text === '' ? [] : text.split(':'));
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  const all = [...front, ...Array<string>(8 - front.length - back.length).fill('0'), ...back];
  const bytes = Buffer.alloc(16);
  for (const [index, group] of all.entries()) bytes.writeUInt16BE(Number.parseInt(group, 16), index * 2);
  return bytes;
}
