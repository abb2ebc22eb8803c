//go:build tools

// The peers' main packages, required here so go.mod pins their modules.
package tools

import (
	_ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
	_ "github.com/flannel-io/flannel"
)
