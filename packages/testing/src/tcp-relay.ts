import type { AddressInfo } from 'node:net';
import { connect, createServer, type Socket } from 'node:net';

export interface TcpRelay {
  /** `url` with its host and port those of the relay. */
  url: string;
  /** Cuts every connection at once, as a network does (no goodbye from either side), and stops. */
  close(): Promise<void>;
}

/**
 * A TCP relay to the server `url` names (a database URL, say): `fromServer` passes on (or
 * rewrites) what the server sends to `toClient`; while `passes()` is false nothing goes either
 * way (a network partition).
 */
export async function tcpRelayTo(
  url: string,
  options: { passes?: () => boolean; fromServer?: (bytes: Buffer, toClient: (bytes: Buffer) => void) => void } = {},
): Promise<TcpRelay> {
  const passes = options.passes ?? (() => true);
  const fromServer = options.fromServer ?? ((bytes, toClient) => toClient(bytes));
  const sockets = new Set<Socket>();
  const target = new URL(url);
  const relay = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (bytes) => passes() && upstream.write(bytes));
    upstream.on('data', (bytes) => passes() && fromServer(bytes, (out) => client.write(out)));
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  const relayed = new URL(url);
  relayed.hostname = '127.0.0.1';
  relayed.port = String((relay.address() as AddressInfo).port);
  return {
    url: relayed.toString(),
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => relay.close(resolve));
    },
  };
}
