/**
 * A ServiceAccount's permissions as deploy/'s RBAC manifests grant them, in the Kubernetes API test
 * server's rule form: a ClusterRole's rules anywhere, a Role's in its namespace only, resourceNames kept.
 * Tests give a client exactly these, so a call the manifests forgot fails as a real cluster would fail it.
 */
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import type { Rule } from "./kube-server.js";

interface RbacDocument {
  kind: string;
  metadata: { name: string; namespace?: string };
  rules?: { apiGroups?: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }[];
  roleRef?: { kind: string; name: string };
  subjects?: { kind: string; name: string; namespace?: string }[];
}

/** The rules bound to ServiceAccount `namespace/name` in `file`. */
export function serviceAccountRules(file: string, account: { namespace: string; name: string }): Rule[] {
  const documents = parseAllDocuments(readFileSync(file, "utf8")).map((doc) => doc.toJS() as RbacDocument);
  const rules: Rule[] = [];
  for (const binding of documents.filter((d) => d.kind === "ClusterRoleBinding" || d.kind === "RoleBinding")) {
    if (!binding.subjects?.some((s) => s.kind === "ServiceAccount" && s.name === account.name && s.namespace === account.namespace)) continue;
    const role = documents.find((d) => d.kind === binding.roleRef?.kind && d.metadata.name === binding.roleRef?.name && (d.kind === "ClusterRole" || d.metadata.namespace === binding.metadata.namespace));
    if (!role) throw new Error(`${file}: ${binding.kind} ${binding.metadata.name} refers to a missing ${binding.roleRef?.kind} ${binding.roleRef?.name}`);
    const namespaces = binding.kind === "RoleBinding" ? [binding.metadata.namespace!] : undefined;
    for (const rule of role.rules ?? []) {
      rules.push({ verbs: rule.verbs, resources: rule.resources, ...(namespaces ? { namespaces } : {}), ...(rule.resourceNames ? { names: rule.resourceNames } : {}) });
    }
  }
  return rules;
}
