//go:build tools

// Package tools pins envoyproxy/ratelimit as a dependency of this wrapper module so
// `go build github.com/envoyproxy/ratelimit/src/service_cmd` builds the pinned commit.

package tools

import _ "github.com/envoyproxy/ratelimit/src/service_cmd"
