//go:build tools

// Package tools pins helm as a dependency of this wrapper module so
// `go build helm.sh/helm/v4/cmd/helm` builds the pinned release.

package tools

import _ "helm.sh/helm/v4/cmd/helm"
