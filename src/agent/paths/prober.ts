/**
 * The packets of the path probes: a UDP echo every agent answers itself. Why UDP and not ICMP: a raw
 * ICMP socket needs CAP_NET_RAW, which the agent's DaemonSet does not grant (it has NET_ADMIN), and Node
 * has no raw sockets, so ICMP would mean a `ping` process per probe (2 a second, for ever). A datagram
 * socket needs no capability at all, costs one socket per agent, and a reply is made by the peer's agent,
 * which proves that agent runs too.
 *
 * The socket is bound to an address of this node's pod CIDR (the bridge gateway, cnio0's 10.200.N.1) on
 * a fixed port, so a probe leaves with a pod-CIDR source, as a pod's packet does: it takes this node's
 * route to the peer's pod CIDR, and the reply (from the peer's gateway to ours) takes the peer's route
 * back to this one. Forwarding is proven on both ends only as far as the kernel delivers to the gateway
 * address; a pod behind the bridge is one hop further (reported in the final report as what is left).
 *
 * Datagrams: 12 bytes, `PRPB` (4), a type (1: request, 2: reply), 3 zero bytes, an id (uint32 BE). A
 * request is answered with a datagram of the same size to its source (no amplification); anything else
 * is dropped unanswered.
 */
import { createSocket, type Socket } from "node:dgram";
import { performance } from "node:perf_hooks";

export const PROBE_MAGIC = Buffer.from("PRPB");
export const PROBE_SIZE = 12;
const REQUEST = 1;
const REPLY = 2;

export function probeDatagram(type: "request" | "reply", id: number): Buffer {
  const buffer = Buffer.alloc(PROBE_SIZE);
  PROBE_MAGIC.copy(buffer, 0);
  buffer[4] = type === "request" ? REQUEST : REPLY;
  buffer.writeUInt32BE(id >>> 0, 8);
  return buffer;
}

/** A probe datagram's type and id, or undefined when it is not one. Pure. */
export function readProbeDatagram(buffer: Buffer): { type: "request" | "reply"; id: number } | undefined {
  if (buffer.length !== PROBE_SIZE || !buffer.subarray(0, 4).equals(PROBE_MAGIC)) return undefined;
  const type = buffer[4] === REQUEST ? "request" : buffer[4] === REPLY ? "reply" : undefined;
  return type && { type, id: buffer.readUInt32BE(8) };
}

export type ProbeResult = { rttMs: number } | { error: string };

interface Pending {
  target: string;
  sentAt: number;
  timer: NodeJS.Timeout;
  resolve: (result: ProbeResult) => void;
}

/** One socket: answers peers' requests and sends this node's. */
export class PathProber {
  private socket: Socket | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  /** Requests from peers answered. */
  answered = 0;

  constructor(private readonly options: { address: string; port: number; timeoutMs: number }) {}

  get bound(): boolean {
    return this.socket !== undefined;
  }

  /** Binds to the pod-CIDR address; rejects (EADDRNOTAVAIL before the CNI made its bridge) and stays unbound. */
  async bind(): Promise<void> {
    if (this.socket) return;
    const socket = createSocket({ type: "udp4" });
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind({ address: this.options.address, port: this.options.port, exclusive: true }, () => {
        socket.off("error", reject);
        resolve();
      });
    }).catch((error: unknown) => {
      socket.close();
      throw error;
    });
    // Answered from here on; an error of one send (a peer's unreachable) is the probe's, not the socket's.
    socket.on("error", () => undefined);
    socket.on("message", (message, from) => this.received(message, from.address, from.port));
    socket.unref();
    this.socket = socket;
  }

  private received(message: Buffer, address: string, port: number): void {
    const datagram = readProbeDatagram(message);
    if (!datagram) return;
    if (datagram.type === "request") {
      this.answered++;
      this.socket?.send(probeDatagram("reply", datagram.id), port, address, () => undefined);
      return;
    }
    const pending = this.pending.get(datagram.id);
    // A reply from anyone but the address probed proves nothing about that path.
    if (!pending || pending.target !== address) return;
    this.finish(datagram.id, { rttMs: performance.now() - pending.sentAt });
  }

  private finish(id: number, result: ProbeResult): void {
    const pending = this.pending.get(id);
    if (!pending) return;
    clearTimeout(pending.timer);
    this.pending.delete(id);
    pending.resolve(result);
  }

  /** One request to `target`'s port: its round trip, or why there was none. Never rejects. */
  probe(target: string): Promise<ProbeResult> {
    const socket = this.socket;
    if (!socket) return Promise.resolve({ error: `not bound to ${this.options.address}:${this.options.port}` });
    const id = this.nextId;
    this.nextId = (this.nextId % 0xffffffff) + 1;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.finish(id, { error: `no reply in ${this.options.timeoutMs} ms` }), this.options.timeoutMs);
      this.pending.set(id, { target, sentAt: performance.now(), timer, resolve });
      socket.send(probeDatagram("request", id), this.options.port, target, (error) => {
        // A blackhole or unreachable route fails the send itself (EINVAL, ENETUNREACH).
        if (error) this.finish(id, { error: `send failed: ${(error as NodeJS.ErrnoException).code ?? error.message}` });
      });
    });
  }

  async close(): Promise<void> {
    for (const id of [...this.pending.keys()]) this.finish(id, { error: "stopped" });
    const socket = this.socket;
    this.socket = undefined;
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }
}
