//go:build tools

// Package tools pins Consul as a dependency of this wrapper module so `go build github.com/hashicorp/consul` builds the pinned release.

package tools

import _ "github.com/hashicorp/consul"
