//go:build tools

// Package tools pins kwok as a dependency of this wrapper module so
// `go build sigs.k8s.io/kwok/cmd/kwok` builds the pinned release.

package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
