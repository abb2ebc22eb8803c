/**
 * The flags `--target hetzner` and `--nodes hetzner` share, and the client settings they make. The token
 * is read from HCLOUD_TOKEN only (a flag would put it in the process list); the endpoint from
 * `--hcloud-endpoint` or HCLOUD_ENDPOINT, as the hcloud CLI reads it. Pure: no I/O.
 */
import { httpUrl, readOption, type OptionSpec, type ResolvedOptions } from "../../options.js";
import { DEFAULT_HCLOUD_ENDPOINT, type HetznerSettings } from "./api.js";

export const hcloudEndpointOption: OptionSpec<string> = {
  flags: "--hcloud-endpoint <url>",
  description: `hetzner: Hetzner Cloud API base URL (default ${DEFAULT_HCLOUD_ENDPOINT}); the token comes from HCLOUD_TOKEN`,
  env: "HCLOUD_ENDPOINT",
  parse: httpUrl,
};

/** A network by name or id, as `hcloud network describe` takes it. */
export const hetznerNetworkOption: OptionSpec<string> = {
  flags: "--network <name|id>",
  description: "hetzner: the Hetzner Cloud network whose routes podroutes writes, by name or id",
  parse: (text) => {
    if (!/^\S+$/.test(text)) throw new Error("must be a network name or id");
    return text;
  },
};

/** The label of the cluster's servers when --hetzner-selector is not given. */
export function defaultSelector(cluster: string): string {
  return `podroutes.io/cluster=${cluster}`;
}

/** A label selector as the API takes it; checked by the API itself, which names what it cannot parse. */
export const selectorOption: OptionSpec<string> = {
  flags: "--hetzner-selector <selector>",
  description: "hetzner: label selector of the cluster's servers, as `hcloud server list -l` takes it (default podroutes.io/cluster=<cluster>)",
  parse: (text) => {
    if (!text.trim()) throw new Error("must be a label selector (e.g. role=worker,podroutes.io/cluster=prod)");
    return text.trim();
  },
};

/** The client settings of a target or source: the token from the environment, the endpoint from the flag or HCLOUD_ENDPOINT. */
export function hetznerSettingsFrom(options: ResolvedOptions): HetznerSettings {
  const endpoint = readOption(hcloudEndpointOption, options);
  return {
    env: options.env,
    ...(endpoint ? { endpoint } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.calls ? { calls: options.calls } : {}),
  };
}
