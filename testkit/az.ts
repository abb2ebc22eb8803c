/**
 * Runs the real Azure CLI (Debian's azure-cli 2.45) against the local ARM test server, offline: a config
 * dir of its own in a temp dir (AZURE_CONFIG_DIR), the server registered as a cloud (`az cloud register`)
 * whose Active Directory endpoint is the server's ADFS authority (MSAL for Python then skips its instance
 * discovery at login.microsoftonline.com, as it does for Azure Stack Hub), the server's test CA trusted
 * (REQUESTS_CA_BUNDLE), telemetry off, and every connection that is not to 127.0.0.1 sent to a closed
 * local port (HTTPS_PROXY, NO_PROXY), so nothing can reach a real cloud. Argument arrays only.
 *
 * One shim, because Debian's packages do not fit together: azure-cli 2.45's `latest` API profile names
 * Microsoft.Network API version 2022-01-01, and Debian's python3-azure (20230112, azure-mgmt-network
 * 23.0.0b1) has no `azure.mgmt.network.v2022_01_01` (its newest is 2022-07-01, and only its models are
 * versioned). Without the shim every `az network ...` command fails while loading its arguments with
 * `AttributeError: 'NoneType' object has no attribute 'standard_medium'`. A sitecustomize.py on
 * PYTHONPATH points the profile at 2022-07-01 and the versioned operations module at the package's own.
 * Microsoft.Compute likewise: `az vm list` fails with `API version 2022-11-01 does not have operation
 * group 'virtual_machines'` (Debian's azure-mgmt-compute 29.0.0 ends at 2022-08-01, which the shim names).
 * The route-table commands are az's own generated REST code (aaz) and do not touch the SDK at all.
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cloudCli, type CloudCli } from "./cloud-cli.js";

export type Az = CloudCli;

const SHIM = `# podroutes tests: Debian's azure-cli 2.45 with Debian's azure-mgmt-network 23.0.0b1 (see testkit/az.ts)
import importlib, sys
from azure.cli.core.profiles import ResourceType
from azure.cli.core.profiles._shared import AZURE_API_PROFILES
AZURE_API_PROFILES["latest"][ResourceType.MGMT_NETWORK] = "2022-07-01"
sys.modules["azure.mgmt.network.v2022_07_01.operations"] = importlib.import_module("azure.mgmt.network.operations")
# Likewise Microsoft.Compute: the profile names 2022-11-01, Debian's azure-mgmt-compute 29.0.0 ends at 2022-08-01.
AZURE_API_PROFILES["latest"][ResourceType.MGMT_COMPUTE].profile[None] = "2022-08-01"
`;

export async function azCli(server: { endpoint: string; caFile: string; tenantId: string; clientId: string; clientSecret: string }): Promise<Az> {
  const dir = mkdtempSync(join(tmpdir(), "podroutes-az-"));
  mkdirSync(join(dir, "shim"));
  writeFileSync(join(dir, "shim", "sitecustomize.py"), SHIM);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: dir,
    PYTHONPATH: join(dir, "shim"),
    AZURE_CONFIG_DIR: join(dir, "config"),
    REQUESTS_CA_BUNDLE: server.caFile,
    AZURE_CORE_COLLECT_TELEMETRY: "false",
    AZURE_CORE_ONLY_SHOW_ERRORS: "true",
    AZURE_CORE_NO_COLOR: "true",
    HTTPS_PROXY: "http://127.0.0.1:9",
    HTTP_PROXY: "http://127.0.0.1:9",
    NO_PROXY: "127.0.0.1,localhost",
  };
  const az = cloudCli("az", { env, dir, jsonFlag: ["-o", "json"], timeoutMs: 120_000 });
  const must = async (args: string[]) => {
    const result = await az.run(args);
    if (result.code !== 0) throw new Error(`az ${args.join(" ")} exited ${result.code}: ${result.stderr}`);
    return result;
  };
  try {
    await must([
      "cloud", "register", "--name", "podroutes-test",
      "--endpoint-resource-manager", `${server.endpoint}/`,
      "--endpoint-active-directory", `${server.endpoint}/adfs`,
      "--endpoint-active-directory-resource-id", "https://management.core.windows.net/",
      "--endpoint-active-directory-graph-resource-id", "https://graph.windows.net/",
      "--endpoint-management", "https://management.core.windows.net/",
    ]);
    await must(["cloud", "set", "--name", "podroutes-test"]);
    await must(["login", "--service-principal", "-u", server.clientId, "-p", server.clientSecret, "--tenant", server.tenantId, "-o", "none"]);
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return az;
}
