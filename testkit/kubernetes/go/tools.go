//go:build tools

// Package tools pins the real Kubernetes programs the tests and benchmarks run, so that go.mod and
// go.sum hold them: nothing here is built into podroutes.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
