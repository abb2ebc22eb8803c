/**
 * Routes that survive a reboot (`--persist`). The choice: a systemd oneshot unit,
 * `podroutes-routes.service`, ordered after network-online.target, that runs
 * `/sbin/ip -force -batch /etc/podroutes/routes.batch`; the file holds one `route replace DEST via
 * NEXTHOP proto N` line per route podroutes owns on the node.
 *
 * Why this and not the alternatives:
 * - It replays exactly what podroutes applies, with the same `ip` and the same protocol mark, so after
 *   a reboot `podroutes plan` shows "No changes" and ownership still works (`route del ... proto N`).
 * - `route replace` with `-force` is idempotent and does not stop at one bad line, so a re-run (or a
 *   restart of the unit) is harmless.
 * - It does not depend on how the host configures its network: systemd-networkd drop-ins, netplan,
 *   ifupdown and NetworkManager each need their own format and only one of them is in charge on a given
 *   host; a unit reading an `ip` batch works beside any of them.
 * - The file is rewritten atomically (write then rename) on every apply that changes it, and removed,
 *   with the unit, by `delete` (when no owned route is left on the node).
 *
 * Where systemd is not running (no /run/systemd/system: containers, the lab), the unit is enabled the
 * way `systemctl enable` does it offline: a symlink in multi-user.target.wants.
 *
 * The remote scripts below are constants: nothing from the inventory is in them. Route data reaches the
 * node on stdin and lands in the file verbatim; `ip` parses it at boot, no shell does.
 */
import { compareCidrs } from "../../model.js";

export const PERSIST_DIR = "/etc/podroutes";
export const BATCH_FILE = `${PERSIST_DIR}/routes.batch`;
export const UNIT_NAME = "podroutes-routes.service";
export const UNIT_FILE = `/etc/systemd/system/${UNIT_NAME}`;
export const UNIT_LINK = `/etc/systemd/system/multi-user.target.wants/${UNIT_NAME}`;

/** The command the unit runs at boot; tests run exactly this after flushing a node's routes. */
export const BOOT_COMMAND = ["/sbin/ip", "-force", "-batch", BATCH_FILE];

export const UNIT_TEXT = `[Unit]
Description=podroutes: pod network routes of this node, re-applied at boot
Documentation=man:ip-route(8)
Wants=network-online.target
After=network-online.target
ConditionPathExists=${BATCH_FILE}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=${BOOT_COMMAND.join(" ")}

[Install]
WantedBy=multi-user.target
`;

/** The ExecStart of a unit file's text, as an argument array. */
export function execStartOf(unitText: string): string[] {
  const line = unitText.split("\n").find((l) => l.startsWith("ExecStart="));
  if (!line) throw new Error("persist: the unit has no ExecStart");
  return line.slice("ExecStart=".length).trim().split(/\s+/);
}

/** The route file for a node: sorted, with a header saying who wrote it. Empty routes → empty string. */
export function renderBatch(routes: { destination: string; nextHop: string }[], options: { proto: number; node: string; cluster: string }): string {
  if (routes.length === 0) return "";
  const lines = [...routes]
    .sort((a, b) => compareCidrs(a.destination, b.destination))
    .map((route) => `route replace ${route.destination} via ${route.nextHop} proto ${options.proto}\n`);
  return `# podroutes: pod routes of node ${options.node} (cluster ${options.cluster}); written by podroutes apply --persist, do not edit\n${lines.join("")}`;
}

/** Prints the installed route file, or nothing when the unit is not installed and enabled. */
export const STATUS_SCRIPT = `if [ -f ${UNIT_FILE} ] && [ -L ${UNIT_LINK} ] && [ -f ${BATCH_FILE} ]; then cat ${BATCH_FILE}; fi`;

/** Installs the unit and the route file read from stdin; atomic renames, so a dropped connection leaves the old file. */
export const INSTALL_SCRIPT = `set -e
umask 022
mkdir -p ${PERSIST_DIR} /etc/systemd/system/multi-user.target.wants
cat > ${BATCH_FILE}.new
mv -f ${BATCH_FILE}.new ${BATCH_FILE}
cat > ${UNIT_FILE}.new <<PODROUTES_UNIT
${UNIT_TEXT}PODROUTES_UNIT
mv -f ${UNIT_FILE}.new ${UNIT_FILE}
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --quiet ${UNIT_NAME}
else
  ln -sf ../${UNIT_NAME} ${UNIT_LINK}
fi`;

/** Removes the unit and the route file (routes already on the node stay until podroutes deletes them). */
export const REMOVE_SCRIPT = `set -e
if [ -d /run/systemd/system ] && [ -f ${UNIT_FILE} ]; then systemctl disable --quiet ${UNIT_NAME} || true; fi
rm -f ${UNIT_LINK} ${UNIT_FILE} ${BATCH_FILE} ${BATCH_FILE}.new
rmdir ${PERSIST_DIR} 2>/dev/null || true
if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi`;
