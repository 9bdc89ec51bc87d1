//go:build tools

// Package tools pins kubeconform as a dependency of this wrapper module so
// `go build github.com/yannh/kubeconform/cmd/kubeconform` builds the pinned release.

package tools

import _ "github.com/yannh/kubeconform/cmd/kubeconform"
