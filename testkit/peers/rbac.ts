/**
 * The peers' RBAC as their own manifests give it (flannel's Documentation/kube-flannel.yml, kube-router's
 * daemonset/generic-kuberouter-only-advertise-routes.yaml, at the versions testkit/peers/go pins), for
 * `kubectl apply -f -`. The route controller needs none of ours: Kubernetes' bootstrap policy has
 * system:controller:route-controller, bound to kube-system:route-controller.
 */
export const FLANNEL_RBAC = `
apiVersion: v1
kind: Namespace
metadata: {name: kube-flannel}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: flannel, namespace: kube-flannel}
---
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: flannel}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get]}
- {apiGroups: [""], resources: [nodes], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [nodes/status], verbs: [patch]}
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: flannel}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: flannel}
subjects: [{kind: ServiceAccount, name: flannel, namespace: kube-flannel}]
`;

export const KUBE_ROUTER_RBAC = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: kube-router, namespace: kube-system}
---
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: kube-router}
rules:
- {apiGroups: [""], resources: [namespaces, pods, services, nodes, endpoints], verbs: [list, get, watch]}
- {apiGroups: [networking.k8s.io], resources: [networkpolicies], verbs: [list, get, watch]}
- {apiGroups: [extensions], resources: [networkpolicies], verbs: [get, list, watch]}
- {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, create, update]}
- {apiGroups: [""], resources: [services/status], verbs: [update]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [get, list, watch]}
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: kube-router}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kube-router}
subjects: [{kind: ServiceAccount, name: kube-router, namespace: kube-system}]
`;
