/**
 * The few EC2 calls podroutes makes, as thin helpers over the official SDK (`@aws-sdk/client-ec2`), so
 * the target and the node source speak in route tables, interfaces and instances rather than commands
 * and paginators. The SDK is imported lazily: `--help` and the other targets never load it.
 *
 * Throttling (`RequestLimitExceeded`) is retried by the SDK's own retry strategy, not by p-retry: the
 * SDK already classifies EC2's throttling codes (and 5xx, timeouts) as retryable, backs off
 * exponentially with jitter (500 ms base for throttling), keeps a retry quota so a real outage does not
 * retry forever, and covers every call in one place, pagination included. Wrapping calls in p-retry
 * as well would multiply the attempts. podroutes only raises the attempt count (3 by default is too
 * few for a burst of route writes) unless `AWS_MAX_ATTEMPTS` says otherwise.
 */
import { setMaxListeners } from "node:events";
import type { EC2Client, Filter, Instance, NetworkInterface, RouteTable } from "@aws-sdk/client-ec2";
import { httpUrl, readOption, type CallObserver, type OptionSpec } from "../../options.js";

/** Shared by `--target aws` and `--nodes aws`: one flag, as the CLI merges options by long flag. */
export const regionOption: OptionSpec<string> = {
  flags: "--region <region>",
  description: "AWS region (aws)",
  env: ["AWS_REGION", "AWS_DEFAULT_REGION"],
  required: "the AWS region of the cluster (e.g. eu-west-1)",
};
export const endpointOption: OptionSpec<string> = {
  flags: "--endpoint <url>",
  description: "EC2 endpoint URL instead of the region's (aws; a VPC endpoint, a test server)",
  parse: httpUrl,
};

/** How a route reaches a node: its network interface, or its instance (`--next-hop`). */
export type NextHopRef = { kind: "eni"; id: string } | { kind: "instance"; id: string };

export interface Ec2Settings {
  region: string;
  endpoint?: string;
  /** Explicit credentials; otherwise the SDK's default chain (environment, profiles, SSO, metadata). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  maxAttempts?: number;
  /** Aborts every call in flight and refuses new ones (a controller's leadership ended). */
  signal?: AbortSignal;
  calls?: CallObserver;
}

/** What the target and the node source need from EC2; a fake implements it in unit tests. */
export interface Ec2Api {
  /** Route tables by id (every id must exist), or every table carrying the tag key. */
  routeTables(selector: { ids: string[] } | { tagKey: string }): Promise<RouteTable[]>;
  /**
   * Interfaces of one VPC holding any of these private IPv4/IPv6 addresses (primary or secondary). The
   * VPC is required: private ranges overlap between the VPCs of an account, so an address alone may
   * name another VPC's interface.
   */
  networkInterfacesByAddress(addresses: string[], vpcId: string): Promise<NetworkInterface[]>;
  /** Interfaces that still exist among these ids (a deleted one is simply absent). */
  networkInterfacesById(ids: string[]): Promise<NetworkInterface[]>;
  /** Instances matching EC2 filters (`tag:Role`, `instance-id`, `tag-key`, ...). */
  instances(filters: Filter[]): Promise<Instance[]>;
  createRoute(tableId: string, destination: string, hop: NextHopRef): Promise<void>;
  replaceRoute(tableId: string, destination: string, hop: NextHopRef): Promise<void>;
  deleteRoute(tableId: string, destination: string): Promise<void>;
  /** Turns the source/destination check off, on the interface or on the instance. */
  disableSourceDestCheck(hop: NextHopRef): Promise<void>;
  /** Calls `listener` each time EC2 throttles a call (which the SDK then retries): how targets pace their writes. */
  onThrottle?(listener: () => void): void;
  close(): void;
}

/** EC2's throttling answers (the SDK retries them with backoff). */
const THROTTLING_CODES = new Set(["RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequestsException"]);

export function isThrottle(error: unknown): boolean {
  const status = (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
  return error instanceof Error && (THROTTLING_CODES.has(error.name) || status === 429);
}

/** EC2 filters take at most 200 values; larger inventories are looked up in chunks. */
const FILTER_VALUES = 200;

/** Builds an SDK client and the helpers over it. */
export async function createEc2(settings: Ec2Settings): Promise<Ec2Api> {
  // The SDK prints nine lines on every process under Node < 22; podroutes says it once, itself
  // (cli/node-support.ts). A user who set the variable keeps their choice.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
  const sdk = await import("@aws-sdk/client-ec2");
  const client = new sdk.EC2Client({
    region: settings.region,
    ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
    ...(settings.credentials ? { credentials: settings.credentials } : {}),
    ...(settings.maxAttempts ? { maxAttempts: settings.maxAttempts } : {}),
  });
  return new SdkEc2(sdk, client, settings);
}

type Sdk = typeof import("@aws-sdk/client-ec2");

/** `DestinationCidrBlock` or `DestinationIpv6CidrBlock`, by the destination's family. */
function destinationField(destination: string): { DestinationCidrBlock: string } | { DestinationIpv6CidrBlock: string } {
  return destination.includes(":") ? { DestinationIpv6CidrBlock: destination } : { DestinationCidrBlock: destination };
}

function hopField(hop: NextHopRef): { NetworkInterfaceId: string } | { InstanceId: string } {
  return hop.kind === "eni" ? { NetworkInterfaceId: hop.id } : { InstanceId: hop.id };
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

class SdkEc2 implements Ec2Api {
  private readonly throttleListeners: (() => void)[] = [];
  /** Extra arguments of every `send` (and paginator): the abort signal, when there is one. */
  private readonly sendOptions: { abortSignal?: AbortSignal };

  constructor(
    private readonly sdk: Sdk,
    readonly client: EC2Client,
    settings: Pick<Ec2Settings, "signal" | "calls"> = {},
  ) {
    this.sendOptions = settings.signal ? { abortSignal: settings.signal } : {};
    // Each call in flight (up to --max-in-flight) listens on this one signal until it is answered: no leak,
    // so no MaxListenersExceededWarning on stderr once more than 10 run at once.
    if (settings.signal) setMaxListeners(0, settings.signal);
    // Inside the SDK's retry loop (which sits in the finalizeRequest step), so it sees every attempt.
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const finished = settings.calls?.started(String(context.commandName ?? "?").replace(/Command$/, ""));
        try {
          const output = await next(args);
          finished?.("ok");
          return output;
        } catch (error) {
          finished?.(awsErrorCode(error) ?? "error");
          if (isThrottle(error)) {
            settings.calls?.throttled();
            for (const listener of this.throttleListeners) listener();
          }
          throw error;
        }
      },
      { step: "deserialize", priority: "high", name: "podroutesThrottleSignal" },
    );
  }

  onThrottle(listener: () => void): void {
    this.throttleListeners.push(listener);
  }

  async routeTables(selector: { ids: string[] } | { tagKey: string }): Promise<RouteTable[]> {
    const input = "ids" in selector ? { RouteTableIds: selector.ids } : { Filters: [{ Name: "tag-key", Values: [selector.tagKey] }] };
    const tables: RouteTable[] = [];
    for await (const page of this.sdk.paginateDescribeRouteTables({ client: this.client }, input, this.sendOptions)) tables.push(...(page.RouteTables ?? []));
    return tables;
  }

  async networkInterfacesByAddress(addresses: string[], vpcId: string): Promise<NetworkInterface[]> {
    const v4 = addresses.filter((a) => !a.includes(":"));
    const v6 = addresses.filter((a) => a.includes(":"));
    const inVpc: Filter = { Name: "vpc-id", Values: [vpcId] };
    const found = await Promise.all([
      ...chunks(v4, FILTER_VALUES).map((values) => this.interfaces([inVpc, { Name: "addresses.private-ip-address", Values: values }])),
      ...chunks(v6, FILTER_VALUES).map((values) => this.interfaces([inVpc, { Name: "ipv6-addresses.ipv6-address", Values: values }])),
    ]);
    return unique(found.flat(), (eni) => eni.NetworkInterfaceId);
  }

  async networkInterfacesById(ids: string[]): Promise<NetworkInterface[]> {
    // A filter rather than NetworkInterfaceIds: a deleted interface is absent instead of failing the call.
    const found = await Promise.all(chunks(ids, FILTER_VALUES).map((values) => this.interfaces([{ Name: "network-interface-id", Values: values }])));
    return found.flat();
  }

  private async interfaces(filters: Filter[]): Promise<NetworkInterface[]> {
    const out: NetworkInterface[] = [];
    for await (const page of this.sdk.paginateDescribeNetworkInterfaces({ client: this.client }, { Filters: filters }, this.sendOptions)) {
      out.push(...(page.NetworkInterfaces ?? []));
    }
    return out;
  }

  async instances(filters: Filter[]): Promise<Instance[]> {
    // Chunk the one filter that may carry many values (instance ids); the others are few.
    const big = filters.find((f) => (f.Values?.length ?? 0) > FILTER_VALUES);
    const variants = big ? chunks(big.Values!, FILTER_VALUES).map((values) => filters.map((f) => (f === big ? { ...f, Values: values } : f))) : [filters];
    const out: Instance[] = [];
    for (const variant of variants) {
      for await (const page of this.sdk.paginateDescribeInstances({ client: this.client }, { Filters: variant }, this.sendOptions)) {
        for (const reservation of page.Reservations ?? []) out.push(...(reservation.Instances ?? []));
      }
    }
    return unique(out, (instance) => instance.InstanceId);
  }

  async createRoute(tableId: string, destination: string, hop: NextHopRef): Promise<void> {
    await this.client.send(new this.sdk.CreateRouteCommand({ RouteTableId: tableId, ...destinationField(destination), ...hopField(hop) }), this.sendOptions);
  }

  async replaceRoute(tableId: string, destination: string, hop: NextHopRef): Promise<void> {
    await this.client.send(new this.sdk.ReplaceRouteCommand({ RouteTableId: tableId, ...destinationField(destination), ...hopField(hop) }), this.sendOptions);
  }

  async deleteRoute(tableId: string, destination: string): Promise<void> {
    await this.client.send(new this.sdk.DeleteRouteCommand({ RouteTableId: tableId, ...destinationField(destination) }), this.sendOptions);
  }

  async disableSourceDestCheck(hop: NextHopRef): Promise<void> {
    if (hop.kind === "eni") {
      await this.client.send(new this.sdk.ModifyNetworkInterfaceAttributeCommand({ NetworkInterfaceId: hop.id, SourceDestCheck: { Value: false } }), this.sendOptions);
    } else {
      await this.client.send(new this.sdk.ModifyInstanceAttributeCommand({ InstanceId: hop.id, SourceDestCheck: { Value: false } }), this.sendOptions);
    }
  }

  close(): void {
    this.client.destroy();
  }
}

function unique<T>(items: T[], key: (item: T) => string | undefined): T[] {
  const seen = new Set<string>();
  return items.filter((item) => {
    const k = key(item);
    if (k === undefined || seen.has(k)) return k === undefined;
    seen.add(k);
    return true;
  });
}

/** EC2's error code (`RouteAlreadyExists`, `InvalidRoute.NotFound`): the SDK names its exceptions by it. */
export function awsErrorCode(error: unknown): string | undefined {
  return error instanceof Error && error.name !== "Error" ? error.name : undefined;
}

/** The SDK's error in one line: `RouteAlreadyExists: The route identified by ... already exists.` */
export function awsErrorText(error: unknown): string {
  if (error instanceof Error) return error.name && error.name !== "Error" && !error.message.startsWith(error.name) ? `${error.name}: ${error.message}` : error.message;
  return String(error);
}

/** Settings from resolved CLI options: region (flag or AWS_REGION), endpoint, and credentials from `env`. */
export function settingsFrom(options: { region?: unknown; endpoint?: unknown; env: NodeJS.ProcessEnv; signal?: AbortSignal; calls?: CallObserver }): Ec2Settings {
  const region = readOption(regionOption, options)!;
  const endpoint = readOption(endpointOption, options);
  const env = options.env;
  // The options' environment, not necessarily process.env: explicit keys there win over the default chain.
  const credentials =
    env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY
      ? { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY, ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}) }
      : undefined;
  const attempts = Number(env.AWS_MAX_ATTEMPTS);
  return {
    region,
    ...(endpoint ? { endpoint } : {}),
    ...(credentials ? { credentials } : {}),
    maxAttempts: Number.isInteger(attempts) && attempts > 0 ? attempts : 10,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.calls ? { calls: options.calls } : {}),
  };
}
